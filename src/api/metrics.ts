import { EXPOSITION_CONTENT_TYPE } from "../observability/exposition.js";
import type { ServerMetrics } from "../observability/serverMetrics.js";
import { defineRoute, type RouteSpec } from "./route.js";

/**
 * GET /metrics in the Prometheus text format. It needs an API key like every route that
 * is not a health check: Prometheus sends it with `authorization: { credentials_file: … }`.
 */
export function metricsRoutes(metrics: ServerMetrics): RouteSpec[] {
  return [
    defineRoute({
      method: "GET",
      path: "/metrics",
      tag: "Meta",
      summary: "Prometheus metrics (text exposition format 0.0.4): tasks, deployments, locks, database pool, proxy",
      // They name every project and environment: view on all of them (a Viewer team without limits).
      access: { kind: "everywhere", permission: "view" },
      handler: async ({ reply }) => {
        const text = await metrics.render();
        reply.header("content-type", EXPOSITION_CONTENT_TYPE);
        reply.header("cache-control", "no-store");
        return text;
      },
    }),
  ];
}
