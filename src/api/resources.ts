import type { Access } from "../domain/access.js";
import { createEnvironmentSchema, environmentSchema, updateEnvironmentSchema } from "../domain/environments.js";
import { PreconditionError } from "../domain/errors.js";
import { createFeedSchema, feedSchema, updateFeedSchema } from "../domain/feeds.js";
import { createLifecycleSchema, lifecycleSchema, updateLifecycleSchema } from "../domain/lifecycles.js";
import { createProjectSchema, projectSchema, updateProjectSchema } from "../domain/projects.js";
import { createTargetSchema, TARGET_SECRET_FIELDS, targetSchema, updateTargetSchema } from "../domain/targets.js";
import { createVariableSchema, updateVariableSchema, variableSchema } from "../domain/variables.js";
import { checkOutboundUrl, defaultOutboundPolicy, type OutboundPolicy } from "../security/outboundGuard.js";
import type { StoreContext } from "../store/common.js";
import * as environments from "../store/environments.js";
import * as feeds from "../store/feeds.js";
import * as lifecycles from "../store/lifecycles.js";
import * as projects from "../store/projects.js";
import * as targets from "../store/targets.js";
import * as variables from "../store/variables.js";
import { collectionRoutes } from "./crud.js";
import type { RouteSpec } from "./route.js";

/**
 * The routes of the foundation's resources: environments … variables. A feed's URL is
 * checked against the outbound guard when it is saved (and again at each registry call).
 */
/** Shared configuration: any caller reads it, administrators change it. */
const readBySignedIn = {
  list: { kind: "signedIn" },
  read: { kind: "signedIn" },
  create: { kind: "administer" },
  change: { kind: "administer" },
} as const;

/** What a caller may see and change of a project's variables. */
function variableAccess(access: Access): variables.VariableAccess {
  return {
    view: access.reach("view"),
    sensitiveNames: access.reach("viewSensitiveNames"),
    edit: access.reach("editVariables"),
  };
}

export function resourceRoutes(
  context: StoreContext,
  outbound: OutboundPolicy = defaultOutboundPolicy,
  /** Tears down and deletes an ephemeral environment (ADR 0045); absent (no task engine): such a delete is refused. */
  tearDownEnvironment?: (reference: string) => Promise<unknown>,
): RouteSpec[] {
  const checkFeedUrl = (url: string) => checkOutboundUrl(url, outbound, { what: "feed URL", pointer: "/url" });
  return [
    ...collectionRoutes({
      tag: "Environments",
      noun: "environment",
      path: "/api/v1/environments",
      itemParam: "environment",
      itemSchema: environmentSchema,
      createSchema: createEnvironmentSchema,
      updateSchema: updateEnvironmentSchema,
      access: {
        list: { kind: "filtered" },
        read: { kind: "environment", permission: "view", environment: (params) => params.environment ?? "" },
        create: { kind: "administer" },
        change: { kind: "administer" },
      },
      list: (_, paging, access) => environments.listEnvironments(context, paging, access.reach("view")),
      create: (_, body) => environments.createEnvironment(context, body),
      get: (_, reference) => environments.getEnvironment(context, reference),
      update: (_, reference, body) => environments.updateEnvironment(context, reference, body),
      remove: async (_, reference) => {
        const environment = await environments.getEnvironment(context, reference);
        if (!environment.ephemeral) return environments.deleteEnvironment(context, reference);
        // What is deployed there goes first: an ephemeral environment leaves nothing labelled behind.
        if (!tearDownEnvironment) {
          throw new PreconditionError(
            `environment '${environment.name}' is ephemeral and this server runs no task engine to tear it down; delete it through a full server`,
          );
        }
        await tearDownEnvironment(environment.id);
      },
    }),
    ...collectionRoutes({
      tag: "Lifecycles",
      noun: "lifecycle",
      path: "/api/v1/lifecycles",
      itemParam: "lifecycle",
      itemSchema: lifecycleSchema,
      createSchema: createLifecycleSchema,
      updateSchema: updateLifecycleSchema,
      // Shared promotion rules: every caller may read them (ADR 0020), administrators change them.
      access: readBySignedIn,
      list: (_, paging) => lifecycles.listLifecycles(context, paging),
      create: (_, body) => lifecycles.createLifecycle(context, body),
      get: (_, reference) => lifecycles.getLifecycle(context, reference),
      update: (_, reference, body) => lifecycles.updateLifecycle(context, reference, body),
      remove: (_, reference) => lifecycles.deleteLifecycle(context, reference),
    }),
    ...collectionRoutes({
      tag: "Projects",
      noun: "project",
      path: "/api/v1/projects",
      itemParam: "project",
      itemSchema: projectSchema,
      createSchema: createProjectSchema,
      updateSchema: updateProjectSchema,
      access: {
        list: { kind: "filtered" },
        read: { kind: "project", permission: "view", project: (params) => params.project ?? "" },
        create: { kind: "administer" },
        change: { kind: "project", permission: "administer", project: (params) => params.project ?? "" },
      },
      list: (_, paging, access) => projects.listProjects(context, paging, access.reach("view")),
      create: (_, body) => projects.createProject(context, body),
      get: (_, reference) => projects.getProject(context, reference),
      update: (_, reference, body) => projects.updateProject(context, reference, body),
      remove: (_, reference) => projects.deleteProject(context, reference),
    }),
    ...collectionRoutes({
      tag: "Targets",
      noun: "target",
      path: "/api/v1/targets",
      itemParam: "target",
      itemSchema: targetSchema,
      createSchema: createTargetSchema,
      updateSchema: updateTargetSchema,
      // A target is visible to whoever may view every environment it serves.
      access: {
        list: { kind: "filtered" },
        read: { kind: "filtered" },
        create: { kind: "administer" },
        change: { kind: "administer" },
      },
      list: (_, paging, access) => targets.listTargets(context, paging, access.reach("view")),
      create: (_, body) => targets.createTarget(context, body),
      get: (_, reference, access) => targets.getTarget(context, reference, access.reach("view")),
      update: (_, reference, body) => targets.updateTarget(context, reference, body),
      remove: (_, reference) => targets.deleteTarget(context, reference),
      // The SSH private key and its passphrase are never shown: "set", and "(changed)" in the audit log.
      secretFields: (target) => (target.ssh ? TARGET_SECRET_FIELDS : []),
    }),
    ...collectionRoutes({
      tag: "Feeds",
      noun: "feed",
      path: "/api/v1/feeds",
      itemParam: "feed",
      itemSchema: feedSchema,
      createSchema: createFeedSchema,
      updateSchema: updateFeedSchema,
      // Registries name no project or environment; their passwords are never shown (ADR 0020).
      access: readBySignedIn,
      list: (_, paging) => feeds.listFeeds(context, paging),
      create: async (_, body) => {
        await checkFeedUrl(body.url);
        return feeds.createFeed(context, body);
      },
      get: (_, reference) => feeds.getFeed(context, reference),
      update: async (_, reference, body) => {
        if (body.url !== undefined) await checkFeedUrl(body.url);
        return feeds.updateFeed(context, reference, body);
      },
      remove: (_, reference) => feeds.deleteFeed(context, reference),
      secretFields: () => ["password"],
    }),
    ...collectionRoutes({
      tag: "Variables",
      noun: "project variable",
      path: "/api/v1/projects/:project/variables",
      scope: ["project"],
      itemParam: "variable",
      itemSchema: variableSchema,
      createSchema: createVariableSchema,
      updateSchema: updateVariableSchema,
      // Which variables a caller sees and may change depends on their environments (ADR 0020).
      access: {
        list: { kind: "project", permission: "view", project: (params) => params.project ?? "" },
        read: { kind: "project", permission: "view", project: (params) => params.project ?? "" },
        create: { kind: "project", permission: "editVariables", project: (params) => params.project ?? "" },
        change: { kind: "project", permission: "editVariables", project: (params) => params.project ?? "" },
      },
      list: ([project = ""], paging, access) =>
        variables.listVariables(context, project, paging, variableAccess(access)),
      create: async ([project = ""], body, access) => {
        await variables.assertMayEditVariable(context, project, variableAccess(access), { scope: body.scope });
        return variables.createVariable(context, project, body);
      },
      get: ([project = ""], reference, access) =>
        variables.getVariable(context, project, reference, variableAccess(access)),
      update: async ([project = ""], reference, body, access) => {
        await variables.assertMayEditVariable(context, project, variableAccess(access), {
          reference,
          scope: body.scope,
        });
        return variables.updateVariable(context, project, reference, body);
      },
      remove: async ([project = ""], reference, access) => {
        await variables.assertMayEditVariable(context, project, variableAccess(access), { reference });
        return variables.deleteVariable(context, project, reference);
      },
      secretFields: (variable) => (variable.sensitive ? ["value"] : []),
    }),
  ];
}
