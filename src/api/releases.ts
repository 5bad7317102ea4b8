import { z } from "zod";
import { type Access, ALL } from "../domain/access.js";
import type { AuditResource } from "../domain/audit.js";
import { pageSchema, pagingSchema, referenceSchema } from "../domain/common.js";
import { ForbiddenError } from "../domain/errors.js";
import { environmentsChangedBy, type Process, processSchema } from "../domain/process.js";
import { createReleaseSchema, releaseSchema } from "../domain/releases.js";
import { autoDeployNewRelease, promote, requestDeployment, rollback } from "../engine/deploymentRequests.js";
import type { DeploymentServices } from "../engine/deployments.js";
import { planDeployment } from "../engine/plan.js";
import { diffProjectReleases } from "../engine/releaseDiff.js";
import { previewVariables } from "../engine/variablePreview.js";
import { checkImageFeeds, pinImages } from "../feeds/images.js";
import { defaultOutboundPolicy, type OutboundPolicy } from "../security/outboundGuard.js";
import { hostPathVolumes } from "../steps/container/containerStep.js";
import { validateSteps } from "../steps/registry.js";
import { type Identity, principalOf } from "../store/apiKeys.js";
import {
  createRelease,
  getProcess,
  getProcessVersion,
  getRelease,
  listReleases,
  resnapshotVariables,
  setProcess,
} from "../store/releases.js";
import { checkEditScope, type EditScope, editScopeOf } from "./editScope.js";
import { defineRoute, pathParams, type RouteAudit, type RouteSpec } from "./route.js";

const deploymentCreatedSchema = z.object({
  deploymentId: z.string(),
  taskId: z.string(),
  project: z.string(),
  release: z.string(),
  environment: z.string(),
  /** Present when a deployment freeze was overridden: which one, and the reason given. */
  freezeOverride: z.object({ freeze: z.string(), reason: z.string() }).optional(),
});

/** Deploy although a deployment freeze covers the environment: the reason (needs overrideFreezes). */
const freezeOverrideSchema = z
  .string()
  .trim()
  .min(1, { message: "give the reason for overriding the freeze" })
  .max(1000)
  .optional();

const createDeploymentSchema = z.strictObject({
  release: referenceSchema.describe("release version or id"),
  environment: referenceSchema.describe("environment slug or id"),
  /** A failing required step waits for retry / skip / abort (POST /tasks/:id/decisions). */
  guidedFailure: z.boolean().default(false),
  freezeOverride: freezeOverrideSchema,
});

const planQuerySchema = z.strictObject({
  release: referenceSchema.describe("release version or id"),
  environment: referenceSchema.describe("environment slug or id"),
});

const planSchema = z.object({
  project: z.string(),
  release: z.string(),
  environment: z.string(),
  steps: z.array(
    z.object({
      name: z.string(),
      kind: z.string(),
      runs: z.boolean(),
      reason: z.string().optional(),
      targets: z.array(z.string()),
      actions: z.array(z.string()),
    }),
  ),
  variables: z.array(z.object({ name: z.string(), value: z.string(), sensitive: z.boolean() })),
});

const releaseDiffQuerySchema = z.strictObject({
  from: referenceSchema
    .optional()
    .describe("the older release: version or id; default: the release made just before `to`"),
  to: referenceSchema.describe("the newer release: version or id"),
});

const changeKindSchema = z.enum(["added", "removed", "changed"]);
const pinnedSchema = z.object({ repository: z.string(), tag: z.string(), digest: z.string() });
const releaseDiffSchema = z.object({
  project: z.string(),
  from: z.string(),
  to: z.string(),
  images: z.array(
    z.object({
      name: z.string(),
      change: changeKindSchema,
      from: pinnedSchema.optional(),
      to: pinnedSchema.optional(),
    }),
  ),
  steps: z.array(
    z.object({
      name: z.string(),
      kind: z.string(),
      change: changeKindSchema,
      fields: z
        .array(z.object({ field: z.string(), from: z.unknown().optional(), to: z.unknown().optional() }))
        .optional(),
    }),
  ),
  variables: z.array(
    z.object({
      name: z.string(),
      scope: z.object({ environments: z.array(z.string()), roles: z.array(z.string()), targets: z.array(z.string()) }),
      set: z.string().optional().describe("the variable set of the value; absent: the project's own"),
      change: changeKindSchema,
      sensitive: z.boolean().describe("a sensitive variable's values are never shown, only that it changed"),
      from: z.string().optional(),
      to: z.string().optional(),
      note: z.string().optional(),
    }),
  ),
  notes: z.object({ from: z.string(), to: z.string() }).nullable(),
});

const variablePreviewQuerySchema = z.strictObject({
  environment: referenceSchema.describe("environment slug or id"),
  target: referenceSchema.optional().describe("a target of the environment (slug or id): what steps on it see"),
  step: z.string().min(1).max(200).optional().describe("a step of the project's process, by name"),
  release: referenceSchema
    .optional()
    .describe("a release (version or id): its snapshot, as deploying it would give, instead of the variables now"),
});

const previewScopeSchema = z.object({
  environments: z.array(z.string()),
  roles: z.array(z.string()),
  targets: z.array(z.string()),
});
const rankSchema = z.enum(["project", "environment", "role", "target", "step"]);
const previewCandidateSchema = z.object({
  value: z.string().describe("the value, or ******** when sensitive"),
  sensitive: z.boolean(),
  scope: previewScopeSchema,
  rank: rankSchema,
  set: z.string().nullable().describe("the variable set the value comes from; null: the project's own"),
  verdict: z.enum(["won", "tied", "outranked", "not applicable"]),
  reason: z.string(),
});
const variablePreviewSchema = z.object({
  project: z.string(),
  environment: z.string(),
  target: z.string().nullable(),
  step: z.string().nullable(),
  release: z.string().nullable(),
  variables: z.array(
    z.object({
      name: z.string(),
      value: z.string().describe("the effective value, or ******** when sensitive"),
      sensitive: z.boolean(),
      rank: z.union([rankSchema, z.literal("system")]),
      scope: previewScopeSchema.nullable(),
      set: z
        .string()
        .nullable()
        .describe("the variable set the winning value comes from; null: the project's own or system"),
      candidates: z.array(previewCandidateSchema),
    }),
  ),
  ambiguous: z.array(z.object({ name: z.string(), message: z.string(), candidates: z.array(previewCandidateSchema) })),
});

function releaseResource(result: unknown): AuditResource {
  const release = result as { id: string; project: string; version: string };
  return { type: "release", id: release.id, name: `${release.project}/${release.version}` };
}

/** A requested deployment: which release goes to which environment, and its task. */
function deploymentAudit(action: string): RouteAudit {
  return {
    action,
    change: ({ result }) => {
      const created = result as z.infer<typeof deploymentCreatedSchema>;
      return {
        resource: { type: "deployment", id: created.deploymentId, name: `${created.project}/${created.release}` },
        after: created,
      };
    },
  };
}

/** Routes of a project's process, releases and deployments. */
export function releaseRoutes(
  services: DeploymentServices,
  outbound: OutboundPolicy = defaultOutboundPolicy,
): RouteSpec[] {
  const { context } = services;
  const createdBy = (request: { identity?: { name: string } }) => request.identity?.name ?? "unknown";
  /** Who asks, by name for people and by principal for separation of duties. */
  const starter = (request: { identity?: Identity }) => ({
    createdBy: request.identity?.name ?? "unknown",
    createdByPrincipal: request.identity ? principalOf(request.identity) : null,
  });
  return [
    defineRoute({
      method: "GET",
      path: "/api/v1/projects/:project/process",
      tag: "Process",
      summary: "Show a project's deployment process",
      access: { kind: "project", permission: "view", project: (params) => params.project },
      params: pathParams("project"),
      response: processSchema,
      handler: ({ params }) => getProcess(context, params.project),
    }),
    defineRoute({
      method: "PUT",
      path: "/api/v1/projects/:project/process",
      tag: "Process",
      summary: "Replace a project's deployment process (each step's config is validated by its kind)",
      access: { kind: "project", permission: "editProcess", project: (params) => params.project },
      params: pathParams("project"),
      body: processSchema,
      response: processSchema,
      audit: {
        action: "process.update",
        before: ({ params }) => getProcess(context, params.project),
        change: ({ params, before, result }) => ({
          resource: { type: "process", name: params.project },
          before: before as Record<string, unknown> | undefined,
          after: result as Record<string, unknown>,
        }),
      },
      handler: async ({ params, body, access }) => {
        const steps = validateSteps(body.steps);
        // Checked against the process as it is now, and replaced only if it still is.
        const current = await getProcessVersion(context, params.project);
        checkProcessScope(await editScopeOf(context, params.project), current.process, { ...body, steps }, access);
        const hostPaths = hostPathVolumes(steps);
        if (hostPaths.length > 0 && !access.isAdministrator) {
          throw new ForbiddenError(
            `bind mounts of host paths (${hostPaths.slice(0, 3).join(", ")}) need an administrator: they give the container the host's files; use a named volume or ask an administrator`,
          );
        }
        await checkImageFeeds(context, body.images);
        return setProcess(context, params.project, { ...body, steps }, { expected: current.stored });
      },
    }),
    defineRoute({
      method: "GET",
      path: "/api/v1/projects/:project/releases",
      tag: "Releases",
      summary: "List a project's releases, newest first",
      access: { kind: "project", permission: "view", project: (params) => params.project },
      params: pathParams("project"),
      query: pagingSchema,
      response: pageSchema(releaseSchema),
      handler: ({ params, query }) => listReleases(context, params.project, query),
    }),
    defineRoute({
      method: "POST",
      path: "/api/v1/projects/:project/releases",
      tag: "Releases",
      summary: "Create a release: freeze the process and variables",
      // Creating a release deploys nothing by itself (a lifecycle's automatic phase deploys as configured).
      access: { kind: "project", permission: "deploy", project: (params) => params.project },
      params: pathParams("project"),
      body: createReleaseSchema,
      response: releaseSchema.extend({ deployments: z.array(deploymentCreatedSchema) }),
      status: 201,
      audit: {
        action: "release.create",
        change: ({ result }) => ({ resource: releaseResource(result), after: result as Record<string, unknown> }),
      },
      handler: async ({ params, body, request }) => {
        // Registry calls happen before the release's transaction, never inside it.
        const process = await getProcess(context, params.project);
        const images = await pinImages(context, process.images, body.images, outbound);
        const release = await createRelease(context, params.project, body, createdBy(request), { process, images });
        const deployments = await autoDeployNewRelease(
          services,
          params.project,
          release.version,
          "auto-deploy",
          starter(request).createdByPrincipal,
        );
        return { ...release, deployments };
      },
    }),
    defineRoute({
      method: "GET",
      path: "/api/v1/projects/:project/releases/:release",
      tag: "Releases",
      summary: "Show a release (by version or id)",
      access: { kind: "project", permission: "view", project: (params) => params.project },
      params: pathParams("project", "release"),
      response: releaseSchema,
      handler: ({ params }) => getRelease(context, params.project, params.release),
    }),
    defineRoute({
      method: "POST",
      path: "/api/v1/projects/:project/releases/:release/variables-snapshot",
      tag: "Releases",
      summary: "Re-snapshot a release's variables from the project (process and images never change)",
      // It changes what every environment will receive: variables on all of them.
      access: {
        kind: "project",
        permission: "editVariables",
        project: (params) => params.project,
        environment: () => ALL,
      },
      params: pathParams("project", "release"),
      response: releaseSchema,
      audit: {
        action: "release.variables-snapshot",
        before: ({ params }) => getRelease(context, params.project, params.release),
        change: ({ before, result }) => ({
          resource: releaseResource(result),
          before: before as Record<string, unknown> | undefined,
          after: result as Record<string, unknown>,
        }),
      },
      handler: ({ params, request }) =>
        resnapshotVariables(context, params.project, params.release, createdBy(request)),
    }),
    defineRoute({
      method: "POST",
      path: "/api/v1/projects/:project/deployments",
      tag: "Deployments",
      summary: "Deploy a release to an environment (refused when the lifecycle does not allow it yet)",
      access: {
        kind: "project",
        permission: "deploy",
        project: (params) => params.project,
        environment: ({ body }) => body.environment,
      },
      params: pathParams("project"),
      body: createDeploymentSchema,
      response: deploymentCreatedSchema,
      status: 201,
      audit: deploymentAudit("deployment.create"),
      handler: ({ params, body, request, access }) =>
        requestDeployment(services, { project: params.project, ...body, ...starter(request), access }),
    }),
    defineRoute({
      method: "POST",
      path: "/api/v1/projects/:project/promotions",
      tag: "Deployments",
      summary: "Promote: deploy to an environment the release the previous phase runs",
      access: {
        kind: "project",
        permission: "deploy",
        project: (params) => params.project,
        environment: ({ body }) => body.to,
      },
      params: pathParams("project"),
      body: z.strictObject({
        to: referenceSchema.describe("environment slug or id"),
        freezeOverride: freezeOverrideSchema,
      }),
      response: deploymentCreatedSchema,
      status: 201,
      audit: deploymentAudit("deployment.promote"),
      handler: ({ params, body, request, access }) =>
        promote(services, {
          project: params.project,
          to: body.to,
          freezeOverride: body.freezeOverride,
          ...starter(request),
          access,
        }),
    }),
    defineRoute({
      method: "POST",
      path: "/api/v1/projects/:project/rollbacks",
      tag: "Deployments",
      summary: "Roll back: redeploy an earlier release (default: the last one that succeeded before the current)",
      access: {
        kind: "project",
        permission: "deploy",
        project: (params) => params.project,
        environment: ({ body }) => body.environment,
      },
      params: pathParams("project"),
      body: z.strictObject({
        environment: referenceSchema.describe("environment slug or id"),
        to: referenceSchema.optional().describe("release version or id"),
        freezeOverride: freezeOverrideSchema,
      }),
      response: deploymentCreatedSchema,
      status: 201,
      audit: deploymentAudit("deployment.rollback"),
      handler: ({ params, body, request, access }) =>
        rollback(services, { project: params.project, ...body, ...starter(request), access }),
    }),
    defineRoute({
      method: "GET",
      path: "/api/v1/projects/:project/plan",
      tag: "Deployments",
      summary: "Plan: the steps, targets and variables a deployment would use, sensitive values masked",
      access: {
        kind: "project",
        permission: "view",
        project: (params) => params.project,
        environment: ({ query }) => query.environment,
      },
      params: pathParams("project"),
      query: planQuerySchema,
      response: planSchema,
      // The caller's access: sensitive variables' names are left out without viewSensitiveNames there.
      handler: ({ params, query, access }) => planDeployment(services, { project: params.project, ...query }, access),
    }),
    defineRoute({
      method: "GET",
      path: "/api/v1/projects/:project/release-diff",
      tag: "Releases",
      summary:
        "What changed from one release to another: images with digests, steps field by field, variables (sensitive ones only as changed), notes",
      access: { kind: "project", permission: "view", project: (params) => params.project },
      params: pathParams("project"),
      query: releaseDiffQuerySchema,
      response: releaseDiffSchema,
      handler: ({ params, query, access }) =>
        diffProjectReleases(context, { project: params.project, ...query }, access),
    }),
    defineRoute({
      method: "GET",
      path: "/api/v1/projects/:project/variable-preview",
      tag: "Variables",
      summary:
        "Each variable's value for a step on a target of an environment, the scope that won and why every other value lost (sensitive values masked); no release needed",
      access: {
        kind: "project",
        permission: "view",
        project: (params) => params.project,
        environment: ({ query }) => query.environment,
      },
      params: pathParams("project"),
      query: variablePreviewQuerySchema,
      response: variablePreviewSchema,
      // The caller's access: sensitive variables are left out without viewSensitiveNames there.
      handler: ({ params, query, access }) => previewVariables(context, { project: params.project, ...query }, access),
    }),
  ];
}

/**
 * Changing the process needs editProcess on every environment the change alters: a
 * grant on dev alone may change dev-only steps, never a step that runs in prod (or in
 * every environment, which includes environments created later).
 */
function checkProcessScope(scope: EditScope, before: Process, after: Process, access: Access): void {
  if (access.reach("editProcess").boxes === null) return;
  const changed = environmentsChangedBy(
    before,
    after,
    scope.environments.map((environment) => environment.slug),
  );
  checkEditScope(access, "editProcess", scope, changed, `the process of project '${scope.project.slug}'`);
}
