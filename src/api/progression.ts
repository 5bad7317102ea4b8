import { permissions } from "../domain/access.js";
import { progressionQuerySchema, projectProgressionSchema } from "../domain/projectProgression.js";
import type { StoreContext } from "../store/common.js";
import { getProjectProgression } from "../store/projectProgression.js";
import { defineRoute, pathParams, type RouteSpec } from "./route.js";

/** Where a project's releases are and may go: what a person deciding to deploy or promote needs to see. */
export function progressionRoutes(context: StoreContext): RouteSpec[] {
  return [
    defineRoute({
      method: "GET",
      path: "/api/v1/projects/:project/progression",
      tag: "Deployments",
      summary:
        "A project's progression: per lifecycle environment what runs there, what a promotion would deploy and whether it may (else the lifecycle's reason), and the caller's permissions; per release (paged, newest first) where it was deployed and where it may go",
      access: { kind: "project", permission: "view", project: (params) => params.project },
      params: pathParams("project"),
      query: progressionQuerySchema,
      response: projectProgressionSchema,
      handler: ({ params, query, access }) =>
        getProjectProgression(context, params.project, query, {
          visible: access.reach("view"),
          permissionsOn: (project, environment) =>
            permissions.filter((permission) => access.allows({ permission, project, environment })),
        }),
    }),
  ];
}
