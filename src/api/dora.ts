import { z } from "zod";
import { referenceSchema } from "../domain/common.js";
import { computeDora, doraReportSchema } from "../domain/dora.js";
import { InputError, NotFoundError } from "../domain/errors.js";
import { findNamed, type StoreContext } from "../store/common.js";
import { loadDeploymentRecords } from "../store/dora.js";
import { defineRoute, type RouteSpec } from "./route.js";

const DEFAULT_WINDOW_DAYS = 30;

const doraQuerySchema = z.strictObject({
  project: referenceSchema.optional().describe("project slug or id; all projects when left out"),
  environment: referenceSchema.optional().describe("environment slug or id; each environment separately when left out"),
  from: z.iso.datetime({ offset: true }).optional().describe("window start (inclusive); default: 30 days before `to`"),
  to: z.iso.datetime({ offset: true }).optional().describe("window end (exclusive); default: now"),
});

/** GET /api/v1/dora: deployment frequency, lead time, change failure rate, time to restore (docs/dora.md). */
export function doraRoutes(context: StoreContext): RouteSpec[] {
  return [
    defineRoute({
      method: "GET",
      path: "/api/v1/dora",
      tag: "Metrics",
      summary: "DORA figures per project and environment over a window, from Ferry's deployment records",
      query: doraQuerySchema,
      response: doraReportSchema,
      access: { kind: "filtered" },
      handler: async ({ query, access }) => {
        const to = query.to ? new Date(query.to) : new Date();
        const from = query.from ? new Date(query.from) : new Date(to.getTime() - DEFAULT_WINDOW_DAYS * 86_400_000);
        if (from.getTime() >= to.getTime()) {
          throw new InputError("the window is empty: 'from' must be before 'to'", [
            { pointer: "/from", detail: "give a time before 'to'", in: "query" },
          ]);
        }
        const project = query.project ? await findNamed(context.db, "projects", query.project) : undefined;
        const environment = query.environment
          ? await findNamed(context.db, "environments", query.environment)
          : undefined;
        // Only the pairs the caller may view: a project or environment they cannot is "not found".
        const view = access.reach("view");
        if (project && !access.allows({ permission: "view", project: project.id })) {
          throw new NotFoundError(`no project '${query.project}'; list them with 'ferry project list'`);
        }
        if (environment && !access.allows({ permission: "view", project: project?.id, environment: environment.id })) {
          throw new NotFoundError(`no environment '${query.environment}'; list them with 'ferry env list'`);
        }
        const records = await loadDeploymentRecords(context.db, {
          projectId: project?.id,
          environmentId: environment?.id,
          visible: view,
        });
        const include = project && environment ? [{ project: project.slug, environment: environment.slug }] : [];
        return computeDora(records, { from, to }, include);
      },
    }),
  ];
}
