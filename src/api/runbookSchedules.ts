import { z } from "zod";
import { type Access, reaches } from "../domain/access.js";
import type { AuditChange } from "../domain/audit.js";
import { ForbiddenError } from "../domain/errors.js";
import {
  createScheduleSchema,
  retentionSchema,
  type Schedule,
  scheduleSchema,
  updateScheduleSchema,
} from "../domain/runbookSchedules.js";
import type { Identity } from "../store/apiKeys.js";
import { findNamed, type StoreContext } from "../store/common.js";
import {
  createSchedule,
  deleteSchedule,
  getRetention,
  getSchedule,
  getScheduleRow,
  listSchedules,
  setRetention,
  setSchedulePaused,
  updateSchedule,
} from "../store/runbookSchedules.js";
import { getRunbook } from "../store/runbooks.js";
import { checkRunbookScope } from "./editScope.js";
import { defineRoute, pathParams, type RouteSpec } from "./route.js";

/*
 * Routes of a runbook's schedules and run retention (issue 14, parts 3 and 7; ADR 0036).
 * Managing a schedule needs editRunbooks on the project in its environment; creating one
 * needs runRunbooks there too, since its firings run the runbook there.
 */

const base = "/api/v1/projects/:project/runbooks/:runbook";

function scheduleChange({ before, result }: { before: unknown; result: unknown }): AuditChange {
  const schedule = (result ?? before) as Schedule;
  return {
    resource: {
      type: "runbook-schedule",
      id: schedule.id,
      name: `${schedule.project}/${schedule.runbook}/${schedule.name}`,
    },
    ...(before !== undefined && { before: before as Record<string, unknown> }),
    ...(result !== undefined && { after: result as Record<string, unknown> }),
  };
}

export function runbookScheduleRoutes(context: StoreContext): RouteSpec[] {
  const who = (request: { identity?: Identity }) => request.identity?.name ?? "unknown";

  /** editRunbooks on the project in the schedule's own environment. */
  async function checkManage(access: Access, params: { project: string; runbook: string; schedule: string }) {
    const row = await getScheduleRow(context.db, params.project, params.runbook, params.schedule);
    if (!access.allows({ permission: "editRunbooks", project: row.project_id, environment: row.environment_id })) {
      throw new ForbiddenError(
        `changing schedule '${row.name}' needs the 'editRunbooks' permission on project '${params.project}' in its environment; ask an administrator`,
      );
    }
  }

  const scheduleParams = pathParams("project", "runbook", "schedule");
  const action = (name: string, verb: string, paused: boolean) =>
    defineRoute({
      method: "POST",
      path: `${base}/schedules/:schedule/${verb}`,
      tag: "Runbooks",
      summary:
        verb === "pause"
          ? "Pause a schedule: it fires no more until resumed (nothing counts as missed meanwhile)"
          : "Resume a schedule: it fires next at its first time from now",
      access: { kind: "project", permission: "editRunbooks", project: (params) => params.project },
      params: scheduleParams,
      response: scheduleSchema,
      audit: {
        action: name,
        before: ({ params }) => getSchedule(context, params.project, params.runbook, params.schedule),
        change: scheduleChange,
      },
      handler: async ({ params, access }) => {
        await checkManage(access, params);
        return setSchedulePaused(context, params.project, params.runbook, params.schedule, paused);
      },
    });

  return [
    defineRoute({
      method: "GET",
      path: `${base}/schedules`,
      tag: "Runbooks",
      summary: "A runbook's schedules (in the environments you may view; sensitive parameters masked)",
      access: { kind: "project", permission: "view", project: (params) => params.project },
      params: pathParams("project", "runbook"),
      response: z.array(scheduleSchema),
      handler: ({ params, access }) => {
        const reach = access.reach("view");
        return listSchedules(context, params.project, params.runbook, (projectId, environmentId) =>
          reaches(reach, projectId, environmentId),
        );
      },
    }),
    defineRoute({
      method: "POST",
      path: `${base}/schedules`,
      tag: "Runbooks",
      summary: "Schedule a runbook: its published version runs in an environment on a cron expression in a time zone",
      access: {
        kind: "project",
        permission: "editRunbooks",
        project: (params) => params.project,
        environment: ({ body }) => body.environment,
      },
      params: pathParams("project", "runbook"),
      body: createScheduleSchema,
      response: scheduleSchema,
      status: 201,
      audit: { action: "runbook.schedule.create", change: scheduleChange },
      handler: async ({ params, body, access, request }) => {
        const project = await findNamed(context.db, "projects", params.project);
        const environment = await findNamed(context.db, "environments", body.environment);
        // Its firings run the runbook there: whoever schedules it must be allowed to run it there.
        if (!access.allows({ permission: "runRunbooks", project: project.id, environment: environment.id })) {
          throw new ForbiddenError(
            `scheduling a runbook in ${environment.name} also needs the 'runRunbooks' permission on project '${project.slug}' there (its firings run it); ask an administrator`,
          );
        }
        return createSchedule(context, params.project, params.runbook, body, who(request));
      },
    }),
    defineRoute({
      method: "GET",
      path: `${base}/schedules/:schedule`,
      tag: "Runbooks",
      summary: "Show a schedule (by name or id): its next firing and what its last one did",
      access: { kind: "project", permission: "view", project: (params) => params.project },
      params: scheduleParams,
      response: scheduleSchema,
      handler: ({ params }) => getSchedule(context, params.project, params.runbook, params.schedule),
    }),
    defineRoute({
      method: "PATCH",
      path: `${base}/schedules/:schedule`,
      tag: "Runbooks",
      summary: "Change a schedule's expression, time zone, parameters, targets or missed-firing policy",
      access: { kind: "project", permission: "editRunbooks", project: (params) => params.project },
      params: scheduleParams,
      body: updateScheduleSchema,
      response: scheduleSchema,
      audit: {
        action: "runbook.schedule.update",
        before: ({ params }) => getSchedule(context, params.project, params.runbook, params.schedule),
        change: scheduleChange,
      },
      handler: async ({ params, body, access }) => {
        await checkManage(access, params);
        return updateSchedule(context, params.project, params.runbook, params.schedule, body);
      },
    }),
    defineRoute({
      method: "DELETE",
      path: `${base}/schedules/:schedule`,
      tag: "Runbooks",
      summary: "Remove a schedule (runs it queued stay)",
      access: { kind: "project", permission: "editRunbooks", project: (params) => params.project },
      params: scheduleParams,
      status: 204,
      audit: {
        action: "runbook.schedule.delete",
        before: ({ params }) => getSchedule(context, params.project, params.runbook, params.schedule),
        change: scheduleChange,
      },
      handler: async ({ params, access }) => {
        await checkManage(access, params);
        await deleteSchedule(context, params.project, params.runbook, params.schedule);
        return undefined;
      },
    }),
    action("runbook.schedule.pause", "pause", true),
    action("runbook.schedule.resume", "resume", false),
    defineRoute({
      method: "GET",
      path: `${base}/retention`,
      tag: "Runbooks",
      summary: "A runbook's run retention: per environment ('*': the others), how many runs and days to keep",
      access: { kind: "project", permission: "view", project: (params) => params.project },
      params: pathParams("project", "runbook"),
      response: retentionSchema,
      handler: ({ params }) => getRetention(context, params.project, params.runbook),
    }),
    defineRoute({
      method: "PUT",
      path: `${base}/retention`,
      tag: "Runbooks",
      summary:
        "Replace a runbook's run retention (an empty list keeps every run); the newest successful run per environment is always kept",
      access: { kind: "project", permission: "editRunbooks", project: (params) => params.project },
      params: pathParams("project", "runbook"),
      body: retentionSchema,
      response: retentionSchema,
      audit: {
        action: "runbook.retention.update",
        before: ({ params }) => getRetention(context, params.project, params.runbook),
        change: ({ params, before, result }) => ({
          resource: { type: "runbook", name: `${params.project}/${params.runbook}` },
          before: before as Record<string, unknown>,
          after: result as Record<string, unknown>,
        }),
      },
      handler: async ({ params, body, access }) => {
        // Retention deletes a runbook's runs: editRunbooks wherever the runbook runs (ADR 0064).
        await checkRunbookScope(
          context,
          access,
          params.project,
          await getRunbook(context, params.project, params.runbook),
        );
        return setRetention(context, params.project, params.runbook, body);
      },
    }),
  ];
}
