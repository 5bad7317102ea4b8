import { z } from "zod";
import { ConflictError, NotFoundError } from "../domain/errors.js";
import type { StoreContext } from "../store/common.js";
import { type TargetInfo, targetInfo } from "../store/deployments.js";
import { modeBodySchema, routeNameSchema } from "../traffic/proxyState.js";
import type { Router } from "../traffic/router.js";
import type { Target } from "../transports/types.js";
import { defineRoute, type RouteSpec } from "./route.js";

const paramsSchema = z.strictObject({
  target: z.string().min(1).max(200),
  route: routeNameSchema,
});

const modeAnswerSchema = z.object({
  target: z.string(),
  route: z.string(),
  router: z.string().describe("The router's driver: builtin, haproxy…"),
  mode: z
    .enum(["maintenance", "paused"])
    .nullable()
    .describe("What the route does now; null: it serves its live colour again"),
});

/**
 * A route's mode on a target's router (issue 17 part 5, ADR 0071): maintenance (every request
 * answered 503, with a page when given) or paused (requests held up to a timeout, then sent
 * on when resumed), through whichever router the target's host runs. The builtin proxy has
 * both; HAProxy only maintenance, through its runtime API; nginx neither (409 with the reason).
 * Only a router already in use is asked: changing a mode never starts one.
 */
export function targetRouteRoutes(context: StoreContext, targetOf: (info: TargetInfo) => Target): RouteSpec[] {
  /** The router serving the route on the target, or the reason there is none. */
  const routerServing = async (
    params: z.infer<typeof paramsSchema>,
  ): Promise<{ target: TargetInfo; router: Router }> => {
    const target = await targetInfo(context.db, params.target);
    const router = await targetOf(target).routerInUse();
    if (!router) {
      throw new NotFoundError(
        `no router runs on target '${target.name}': a route exists there once a blue/green step has switched it`,
      );
    }
    if ((await router.live(params.route)) === undefined) {
      throw new NotFoundError(
        `the ${router.driver} router of target '${target.name}' has no route '${params.route}'; its routes are named <project>-<environment> unless the step names one`,
      );
    }
    if (!router.setMode) {
      throw new ConflictError(
        `the ${router.driver} router of target '${target.name}' cannot put a route in maintenance or pause it (nginx would need a reload per change, which cuts idle keep-alive connections); use the builtin router (ferry proxy) or HAProxy on that target`,
      );
    }
    return { target, router };
  };
  const audit = (action: string) => ({
    action,
    change: ({ params, body }: { params: z.infer<typeof paramsSchema>; body: unknown }) => {
      const mode = body as z.infer<typeof modeBodySchema> | undefined;
      return {
        resource: { type: "target", name: params.target },
        // The page itself is not kept in the audit log: only whether there was one.
        after: {
          route: params.route,
          mode: mode?.mode ?? null,
          ...(mode?.mode === "maintenance" && { page: mode.page !== undefined }),
          ...(mode?.mode === "paused" && { timeoutSeconds: mode.timeoutSeconds }),
        },
      };
    },
  });
  return [
    defineRoute({
      method: "PUT",
      path: "/api/v1/targets/:target/routes/:route/mode",
      tag: "Targets",
      summary:
        "Put a route of a target's router in maintenance (503 to every request, with an optional HTML page) or pause it (requests held up to timeoutSeconds)",
      params: paramsSchema,
      body: modeBodySchema,
      response: modeAnswerSchema,
      access: { kind: "administer" },
      audit: audit("target.route.mode"),
      handler: async ({ params, body }) => {
        const { target, router } = await routerServing(params);
        await router.setMode?.(params.route, body);
        return { target: target.slug, route: params.route, router: router.driver, mode: body.mode };
      },
    }),
    defineRoute({
      method: "DELETE",
      path: "/api/v1/targets/:target/routes/:route/mode",
      tag: "Targets",
      summary: "Serve a route in maintenance or paused again: held requests go on to the live colour",
      params: paramsSchema,
      response: modeAnswerSchema,
      access: { kind: "administer" },
      audit: audit("target.route.resume"),
      handler: async ({ params }) => {
        const { target, router } = await routerServing(params);
        await router.setMode?.(params.route, null);
        return { target: target.slug, route: params.route, router: router.driver, mode: null };
      },
    }),
  ];
}
