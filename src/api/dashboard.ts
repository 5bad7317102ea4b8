import { dashboardQuerySchema, dashboardSchema } from "../domain/dashboard.js";
import type { StoreContext } from "../store/common.js";
import { getDashboard } from "../store/dashboard.js";
import { defineRoute, type RouteSpec } from "./route.js";

/** The overview a person opens first: what runs where, and what is happening now. */
export function dashboardRoutes(context: StoreContext): RouteSpec[] {
  return [
    defineRoute({
      method: "GET",
      path: "/api/v1/dashboard",
      tag: "Dashboard",
      summary:
        "Projects × environments: the live release, the newest deployment and its state (paged by project, by name)",
      query: dashboardQuerySchema,
      response: dashboardSchema,
      access: { kind: "filtered" },
      handler: ({ query, access }) => getDashboard(context, query, access.reach("view")),
    }),
  ];
}
