import { z } from "zod";
import {
  HEALTH_DEADLINE_LABEL,
  HEALTH_INTERVAL_LABEL,
  HEALTH_PATH_LABEL,
  HEALTH_STATUS_LABEL,
  HEALTH_TIMEOUT_LABEL,
} from "../../runtimes/colours.js";
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

export type HealthCheckOptions = z.infer<typeof healthProbeSchema>;

/** Which label of a colour holds which field of its health check. */
const healthCheckLabelOf = {
  path: HEALTH_PATH_LABEL,
  expectedStatus: HEALTH_STATUS_LABEL,
  intervalMs: HEALTH_INTERVAL_LABEL,
  timeoutMs: HEALTH_TIMEOUT_LABEL,
  deadlineSeconds: HEALTH_DEADLINE_LABEL,
} as const satisfies Record<keyof HealthCheckOptions, string>;

/** The labels that say how a colour is health-checked (ADR 0072), read back by colourHealthCheck. */
export function healthCheckLabels(check: HealthCheckOptions): Record<string, string> {
  return {
    [HEALTH_PATH_LABEL]: check.path,
    [HEALTH_STATUS_LABEL]: String(check.expectedStatus),
    [HEALTH_INTERVAL_LABEL]: String(check.intervalMs),
    [HEALTH_TIMEOUT_LABEL]: String(check.timeoutMs),
    [HEALTH_DEADLINE_LABEL]: String(check.deadlineSeconds),
  };
}

/**
 * The health check a colour was deployed with, from its labels: what start-up reconciliation
 * and the restart step probe it with. A label it lacks (a colour deployed before ADR 0072 has
 * only the path) takes the check's default; a label that is not valid throws an error naming it.
 */
export function colourHealthCheck(labels: Readonly<Record<string, string>>): HealthCheckOptions {
  const fields: Record<string, string | number> = {};
  for (const [field, label] of Object.entries(healthCheckLabelOf)) {
    const value = labels[label];
    if (value === undefined) continue;
    // Numbers are written as plain decimals; anything else (an empty label, "1e3") is refused.
    fields[field] = field === "path" ? value : /^\d{1,9}(\.\d{1,6})?$/.test(value) ? Number(value) : Number.NaN;
  }
  const parsed = healthProbeSchema.safeParse(fields);
  if (parsed.success) return parsed.data;
  const issue = parsed.error.issues[0];
  const field = issue?.path[0] as keyof HealthCheckOptions | undefined;
  const label = field === undefined ? "ferry.health-*" : healthCheckLabelOf[field];
  throw new Error(
    `its label ${label} (${JSON.stringify((labels[label] ?? "").slice(0, 100))}) is not valid: ${issue?.message ?? "unknown"}`,
  );
}

/** What a canary stage's figures are held to; each field may be set for the canary and overridden per stage. */
const analysisShape = {
  /** The new colour's 5xx ratio may exceed the stable colour's by at most this (0.01 = one point). */
  maxErrorRatioIncrease: z.number().min(0).max(1),
  /** Its connection-error ratio likewise. */
  maxConnectionErrorRatioIncrease: z.number().min(0).max(1),
  /** Its p99 latency may exceed the stable colour's by at most this many milliseconds. */
  maxP99IncreaseMs: z.number().int().min(0).max(600_000),
  /** Fewer requests than this to the new colour in a stage give no verdict (logged; the rollout goes on). */
  minRequests: z.number().int().min(1).max(1_000_000),
};

const CANARY_ANALYSIS_DEFAULTS = {
  maxErrorRatioIncrease: 0.01,
  maxConnectionErrorRatioIncrease: 0.01,
  maxP99IncreaseMs: 500,
  minRequests: 100,
};

const canaryStepSchema = z
  .strictObject({
    /** Per cent of the visitors sent to the new colour in this stage (0: only requests with X-Ferry-Colour: new). */
    weight: z
      .number({ message: "weight is a whole number of per cent, 0 to 100" })
      .int("weight is a whole number of per cent, 0 to 100")
      .min(0, "weight is a whole number of per cent, 0 to 100")
      .max(100, "weight is a whole number of per cent, 0 to 100"),
    /** How long the stage lasts; its figures are checked every second meanwhile. */
    pauseSeconds: z.number().min(1).max(86_400).optional(),
    /** Or: the stage lasts until someone approves (as an approval step: who may answer, separation of duties). */
    approval: z
      .strictObject({
        instructions: z.string().min(1).max(10_000),
        separateApprover: z.boolean().optional(),
      })
      .optional(),
    /** This stage's own thresholds, over the canary's. */
    analysis: z.strictObject(analysisShape).partial().optional(),
  })
  .superRefine((step, context) => {
    if (step.pauseSeconds !== undefined && step.approval !== undefined) {
      context.addIssue({
        code: "custom",
        path: ["approval"],
        message: "a stage waits either pauseSeconds or for an approval, not both: remove one",
      });
    }
    if (step.weight === 100 && (step.pauseSeconds !== undefined || step.approval !== undefined)) {
      context.addIssue({
        code: "custom",
        path: [step.pauseSeconds !== undefined ? "pauseSeconds" : "approval"],
        message:
          "the weight 100 stage is the switch itself: watch it with blueGreen.bakeSeconds, or put an approval step after this one",
      });
    }
    if (step.weight < 100 && step.pauseSeconds === undefined && step.approval === undefined) {
      context.addIssue({
        code: "custom",
        path: ["pauseSeconds"],
        message: "a stage below weight 100 needs pauseSeconds (how long it lasts) or approval (until someone approves)",
      });
    }
  });

/**
 * Progressive delivery (ADR 0049): before the switch, the new colour gets a growing share of
 * the visitors, stage by stage; each stage's figures are compared with the stable colour's,
 * and one over its thresholds sends everyone back to the stable colour and fails the step.
 */
const canarySchema = z
  .strictObject({
    steps: z
      .array(canaryStepSchema)
      .min(2, "a canary has at least two stages, the last one weight 100 (the switch)")
      .max(20),
    analysis: z.strictObject(analysisShape).partial().optional(),
  })
  .superRefine((canary, context) => {
    for (const [index, step] of canary.steps.entries()) {
      const before = canary.steps[index - 1];
      // A weight out of range has its own issue already (zod runs this refinement anyway).
      if (before !== undefined && before.weight <= 100 && step.weight <= before.weight) {
        context.addIssue({
          code: "custom",
          path: ["steps", index, "weight"],
          message: `weights grow from stage to stage: this one (${step.weight}) is not above the one before (${before.weight})`,
        });
      }
    }
    const last = canary.steps.at(-1);
    if (last !== undefined && last.weight !== 100) {
      context.addIssue({
        code: "custom",
        path: ["steps", canary.steps.length - 1, "weight"],
        message: "the last stage is the switch: give it weight 100",
      });
    }
  });
export type CanaryOptions = z.infer<typeof canarySchema>;

/** A stage's thresholds: its own, over the canary's, over the defaults. */
export function stageThresholds(canary: CanaryOptions, stage: CanaryOptions["steps"][number]) {
  return { ...CANARY_ANALYSIS_DEFAULTS, ...canary.analysis, ...stage.analysis };
}

export const blueGreenOptionsSchema = z
  .strictObject({
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
    /** Weighted stages before the switch (builtin proxy only); absent: one switch of all the traffic. */
    canary: canarySchema.optional(),
  })
  .superRefine((options, context) => {
    if (options.canary !== undefined && options.switch === "allAtOnce") {
      context.addIssue({
        code: "custom",
        path: ["canary"],
        message:
          "a canary runs target by target (each target's figures decide for it): remove canary or switch: allAtOnce",
      });
    }
  });
export type BlueGreenOptions = z.infer<typeof blueGreenOptionsSchema>;
