import { z } from "zod";
import { routeNameSchema } from "../../traffic/proxyState.js";
import { httpTestStep } from "../httpTest.js";

/*
 * What a blue/green deployment is configured with, whichever runtime runs the colours: the
 * route it switches and the checks, drain, bake and retention around the switch. The
 * container and process steps add what starts a colour on their runtime.
 */

/** The route's name, host and path prefix; each step adds how a colour listens. */
export const routeShape = {
  /** The route's name in the proxy; default "<project>-<environment>". */
  name: routeNameSchema.optional(),
  /** Template: the host name the route serves (app.example.com). */
  host: z.string().min(1).max(253),
  pathPrefix: z.string().startsWith("/", "a path prefix starts with '/'").max(1024).default("/"),
};

const healthProbeSchema = z.strictObject({
  /** Path probed on the new colour's private address. */
  path: z.string().startsWith("/", "a path starts with '/'").max(2048).default("/"),
  expectedStatus: z.number().int().min(100).max(599).default(200),
  intervalMs: z.number().int().min(50).max(60_000).default(500),
  timeoutMs: z.number().int().min(50).max(60_000).default(2000),
  deadlineSeconds: z.number().min(1).max(3600).default(60),
});

export const blueGreenOptionsSchema = z.strictObject({
  // prefault: an absent healthCheck is parsed as {}, so its defaults apply.
  healthCheck: healthProbeSchema.prefault({}),
  /**
   * http-test steps run against the new colour before the switch; their templates see
   * #{Ferry.Route.PreviewUrl} (http://127.0.0.1:<its port>). One failing keeps the live colour.
   */
  preSwitchTests: z.array(httpTestStep.config).max(20).default([]),
  /** How long in-flight requests of the old colour may take to finish after the switch. */
  drainSeconds: z.number().min(0).max(3600).default(30),
  /** After the switch, the new colour is probed this long; a failed probe switches back to the old one. */
  bakeSeconds: z.number().min(0).max(3600).default(0),
  /** Earlier colours kept (stopped) for instant rollback; older ones are removed. */
  retain: z.number().int().min(0).max(20).default(3),
  /** Keep the previous colour running (idle) after the switch, so a rollback needs no start. */
  keepPreviousRunning: z.boolean().default(false),
  /**
   * With several targets: `targetByTarget` switches each target's router as soon as its new
   * colour is ready, one target after another; `allAtOnce` starts and checks the new colour
   * on every target first, then switches every router, and switches them all back when any
   * switch (or bake) fails, so no mix of versions is left serving.
   */
  switch: z
    .enum(["targetByTarget", "allAtOnce"], {
      message:
        "write switch: targetByTarget (each target switches when its new colour is ready) or allAtOnce (every target checked first, then all switched together, all switched back if one fails)",
    })
    .default("targetByTarget"),
});
export type BlueGreenOptions = z.infer<typeof blueGreenOptionsSchema>;
