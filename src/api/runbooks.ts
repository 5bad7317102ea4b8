import { z } from "zod";
import { type Access, ALL } from "../domain/access.js";
import type { AuditChange } from "../domain/audit.js";
import { pagingSchema } from "../domain/common.js";
import { ForbiddenError } from "../domain/errors.js";
import { createFreezeSchema, freezeSchema } from "../domain/freezes.js";
import type { Process } from "../domain/process.js";
import {
  createRunbookRunSchema,
  createRunbookSchema,
  publishRunbookSchema,
  type Runbook,
  runbookRunSchema,
  runbookRunSummarySchema,
  runbookSchema,
  updateRunbookSchema,
} from "../domain/runbooks.js";
import type { DeploymentServices } from "../engine/deployments.js";
import { publishRunbookVersion, requestRunbookRun } from "../engine/runbooks.js";
import { hostPathVolumes } from "../steps/container/containerStep.js";
import { validateSteps } from "../steps/registry.js";
import { type Identity, principalOf } from "../store/apiKeys.js";
import { createFreeze, deleteFreeze, getFreeze, listFreezes } from "../store/freezes.js";
import {
  createRunbook,
  deleteRunbook,
  getRunbook,
  latestRunbookRuns,
  listRunbookRuns,
  listRunbooks,
  updateRunbook,
} from "../store/runbooks.js";
import { checkRunbookScope } from "./editScope.js";
import { defineRoute, pathParams, type RouteSpec } from "./route.js";

/*
 * Routes of a project's runbooks (definition, publish, runs) and deployment freezes
 * (issue 14; docs/runbooks.md, docs/decisions/0034-runbooks.md).
 */

function runbookChange(action: string) {
  return ({ before, result }: { before: unknown; result: unknown }): AuditChange => {
    const runbook = (result ?? before) as Runbook;
    return {
      resource: { type: "runbook", id: runbook.id, name: `${runbook.project}/${runbook.slug}` },
      ...(before !== undefined && { before: before as Record<string, unknown> }),
      ...(action !== "runbook.delete" && { after: result as Record<string, unknown> }),
    };
  };
}

/** Steps validated by their kinds; host bind mounts need an administrator, as in the deployment process. */
function checkedProcess(process: Process, access: Access): Process {
  const steps = validateSteps(process.steps, "/process/steps");
  const hostPaths = hostPathVolumes(steps);
  if (hostPaths.length > 0 && !access.isAdministrator) {
    throw new ForbiddenError(
      `bind mounts of host paths (${hostPaths.slice(0, 3).join(", ")}) need an administrator: they give the container the host's files; use a named volume or ask an administrator`,
    );
  }
  return { ...process, steps };
}

export function runbookRoutes(services: DeploymentServices): RouteSpec[] {
  const { context } = services;
  const who = (request: { identity?: Identity }) => request.identity?.name ?? "unknown";
  return [
    defineRoute({
      method: "GET",
      path: "/api/v1/projects/:project/runbooks",
      tag: "Runbooks",
      summary:
        "List a project's runbooks (their drafts, which version is published, and the last run in each environment you may view)",
      access: { kind: "project", permission: "view", project: (params) => params.project },
      params: pathParams("project"),
      response: z.array(runbookSchema.extend({ lastRuns: z.array(runbookRunSummarySchema) })),
      handler: async ({ params, access }) => {
        const [runbooks, lastRuns] = await Promise.all([
          listRunbooks(context, params.project),
          latestRunbookRuns(context, params.project, access.reach("view")),
        ]);
        return runbooks.map((runbook) => ({ ...runbook, lastRuns: lastRuns.get(runbook.id) ?? [] }));
      },
    }),
    defineRoute({
      method: "POST",
      path: "/api/v1/projects/:project/runbooks",
      tag: "Runbooks",
      summary: "Create a runbook (a draft: publish it before runs can use it)",
      access: { kind: "project", permission: "editRunbooks", project: (params) => params.project },
      params: pathParams("project"),
      body: createRunbookSchema,
      response: runbookSchema,
      status: 201,
      audit: { action: "runbook.create", change: runbookChange("runbook.create") },
      handler: async ({ params, body, access, request }) => {
        await checkRunbookScope(context, access, params.project, null, body);
        return createRunbook(
          context,
          params.project,
          { ...body, process: checkedProcess(body.process, access) },
          who(request),
        );
      },
    }),
    defineRoute({
      method: "GET",
      path: "/api/v1/projects/:project/runbooks/:runbook",
      tag: "Runbooks",
      summary: "Show a runbook (by slug or id): its draft and published version",
      access: { kind: "project", permission: "view", project: (params) => params.project },
      params: pathParams("project", "runbook"),
      response: runbookSchema,
      handler: ({ params }) => getRunbook(context, params.project, params.runbook),
    }),
    defineRoute({
      method: "PATCH",
      path: "/api/v1/projects/:project/runbooks/:runbook",
      tag: "Runbooks",
      summary: "Change a runbook's draft (runs keep using the published version until it is published again)",
      access: { kind: "project", permission: "editRunbooks", project: (params) => params.project },
      params: pathParams("project", "runbook"),
      body: updateRunbookSchema,
      response: runbookSchema,
      audit: {
        action: "runbook.update",
        before: ({ params }) => getRunbook(context, params.project, params.runbook),
        change: runbookChange("runbook.update"),
      },
      handler: async ({ params, body, access, request }) => {
        const current = await getRunbook(context, params.project, params.runbook);
        await checkRunbookScope(context, access, params.project, current, {
          environments: body.environments ?? current.environments,
        });
        return updateRunbook(
          context,
          params.project,
          params.runbook,
          { ...body, ...(body.process && { process: checkedProcess(body.process, access) }) },
          who(request),
          // Written only if the runbook is still the one checked.
          { expectedUpdatedAt: current.updatedAt },
        );
      },
    }),
    defineRoute({
      method: "DELETE",
      path: "/api/v1/projects/:project/runbooks/:runbook",
      tag: "Runbooks",
      summary: "Delete a runbook with its versions and runs",
      access: { kind: "project", permission: "editRunbooks", project: (params) => params.project },
      params: pathParams("project", "runbook"),
      status: 204,
      audit: {
        action: "runbook.delete",
        before: ({ params }) => getRunbook(context, params.project, params.runbook),
        change: runbookChange("runbook.delete"),
      },
      handler: async ({ params, access }) => {
        const current = await getRunbook(context, params.project, params.runbook);
        await checkRunbookScope(context, access, params.project, current);
        // Deleted only if the runbook is still the one checked.
        await deleteRunbook(context, params.project, params.runbook, { expectedUpdatedAt: current.updatedAt });
        return undefined;
      },
    }),
    defineRoute({
      method: "POST",
      path: "/api/v1/projects/:project/runbooks/:runbook/publish",
      tag: "Runbooks",
      summary: "Publish the draft: its process and the project's variables now become the version runs use",
      access: { kind: "project", permission: "editRunbooks", project: (params) => params.project },
      params: pathParams("project", "runbook"),
      body: publishRunbookSchema,
      response: runbookSchema,
      audit: {
        action: "runbook.publish",
        before: ({ params }) => getRunbook(context, params.project, params.runbook),
        change: runbookChange("runbook.publish"),
      },
      handler: async ({ params, access, body, request }) => {
        const current = await getRunbook(context, params.project, params.runbook);
        await checkRunbookScope(context, access, params.project, current);
        // Published only if the runbook is still the one checked (the draft itself is compared again inside).
        return publishRunbookVersion(services, params.project, params.runbook, who(request), body, {
          expectedUpdatedAt: current.updatedAt,
        });
      },
    }),
    defineRoute({
      method: "POST",
      path: "/api/v1/projects/:project/runbooks/:runbook/runs",
      tag: "Runbooks",
      summary: "Run a runbook in an environment (its published version, or the draft with draft: true)",
      access: {
        kind: "project",
        permission: "runRunbooks",
        project: (params) => params.project,
        environment: ({ body }) => body.environment,
      },
      params: pathParams("project", "runbook"),
      body: createRunbookRunSchema,
      response: runbookRunSchema.extend({
        freezeOverride: z.object({ freeze: z.string(), reason: z.string() }).optional(),
      }),
      status: 201,
      audit: {
        action: "runbook.run",
        // The answer's parameters: sensitive values are already masked in it.
        change: ({ result }) => {
          const run = result as z.infer<typeof runbookRunSchema>;
          return {
            resource: { type: "runbook-run", id: run.runId, name: `${run.project}/${run.runbook}` },
            after: result as Record<string, unknown>,
          };
        },
      },
      handler: ({ params, body, access, request }) =>
        requestRunbookRun(services, {
          ...body,
          project: params.project,
          runbook: params.runbook,
          createdBy: who(request),
          createdByPrincipal: request.identity ? principalOf(request.identity) : null,
          access,
        }),
    }),
    defineRoute({
      method: "GET",
      path: "/api/v1/projects/:project/runbooks/:runbook/runs",
      tag: "Runbooks",
      summary: "A runbook's runs, newest first (in the environments you may view; sensitive parameters masked)",
      access: { kind: "project", permission: "view", project: (params) => params.project },
      params: pathParams("project", "runbook"),
      query: pagingSchema,
      response: z.array(runbookRunSummarySchema),
      handler: ({ params, query, access }) =>
        listRunbookRuns(context, params.project, params.runbook, access.reach("view"), query),
    }),
    defineRoute({
      method: "GET",
      path: "/api/v1/projects/:project/freezes",
      tag: "Freezes",
      summary: "List a project's deployment freezes",
      access: { kind: "project", permission: "view", project: (params) => params.project },
      params: pathParams("project"),
      response: z.array(freezeSchema),
      handler: ({ params }) => listFreezes(context, params.project),
    }),
    defineRoute({
      method: "POST",
      path: "/api/v1/projects/:project/freezes",
      tag: "Freezes",
      summary:
        "Create a deployment freeze: a one-off or weekly window refusing deployments (and optionally runbook runs)",
      // A freeze stops work in the environments it names: administer on the project everywhere.
      access: {
        kind: "project",
        permission: "administer",
        project: (params) => params.project,
        environment: () => ALL,
      },
      params: pathParams("project"),
      body: createFreezeSchema,
      response: freezeSchema,
      status: 201,
      audit: {
        action: "freeze.create",
        change: ({ result }) => {
          const freeze = result as z.infer<typeof freezeSchema>;
          return {
            resource: { type: "freeze", id: freeze.id, name: `${freeze.project}/${freeze.name}` },
            after: freeze,
          };
        },
      },
      handler: ({ params, body, request }) => createFreeze(context, params.project, body, who(request)),
    }),
    defineRoute({
      method: "DELETE",
      path: "/api/v1/projects/:project/freezes/:freeze",
      tag: "Freezes",
      summary: "Delete a deployment freeze (by name or id)",
      access: {
        kind: "project",
        permission: "administer",
        project: (params) => params.project,
        environment: () => ALL,
      },
      params: pathParams("project", "freeze"),
      status: 204,
      audit: {
        action: "freeze.delete",
        before: ({ params }) => getFreeze(context, params.project, params.freeze),
        change: ({ before }) => {
          const freeze = before as z.infer<typeof freezeSchema>;
          return {
            resource: { type: "freeze", id: freeze.id, name: `${freeze.project}/${freeze.name}` },
            before: freeze,
          };
        },
      },
      handler: async ({ params }) => {
        await deleteFreeze(context, params.project, params.freeze);
        return undefined;
      },
    }),
  ];
}
