import { describe, expect, it } from "vitest";
import {
  blueGreenOptionsSchema,
  type CanaryOptions,
  colourHealthCheck,
  healthCheckLabels,
  stageThresholds,
} from "./config.js";

describe("a colour's health check in its labels (ADR 0072)", () => {
  it("reads back the check a colour was labelled with", () => {
    const check = { path: "/ready?deep=1", expectedStatus: 204, intervalMs: 100, timeoutMs: 750, deadlineSeconds: 2.5 };
    const labels = healthCheckLabels(check);
    expect(labels).toEqual({
      "ferry.health-path": "/ready?deep=1",
      "ferry.health-status": "204",
      "ferry.health-interval-ms": "100",
      "ferry.health-timeout-ms": "750",
      "ferry.health-deadline-seconds": "2.5",
    });
    expect(colourHealthCheck({ ...labels, "ferry.project": "shop" })).toEqual(check);
  });

  it("gives a colour deployed before the labels existed its path and the check's defaults", () => {
    expect(colourHealthCheck({ "ferry.health-path": "/health" })).toEqual({
      path: "/health",
      expectedStatus: 200,
      intervalMs: 500,
      timeoutMs: 2000,
      deadlineSeconds: 60,
    });
    expect(colourHealthCheck({}).path).toBe("/");
  });

  it("refuses a label that is not valid, naming it", () => {
    expect(() => colourHealthCheck({ "ferry.health-status": "" })).toThrow(/label ferry\.health-status \(""\)/);
    expect(() => colourHealthCheck({ "ferry.health-interval-ms": "1e3" })).toThrow(/label ferry\.health-interval-ms/);
    expect(() => colourHealthCheck({ "ferry.health-deadline-seconds": "99999" })).toThrow(
      /label ferry\.health-deadline-seconds \("99999"\) is not valid/,
    );
    expect(() => colourHealthCheck({ "ferry.health-path": "health" })).toThrow(/label ferry\.health-path/);
  });
});

describe("blueGreen.switch", () => {
  it("switches target by target unless asked to switch all at once", () => {
    expect(blueGreenOptionsSchema.parse({}).switch).toBe("targetByTarget");
    expect(blueGreenOptionsSchema.parse({ switch: "allAtOnce" }).switch).toBe("allAtOnce");
  });

  it("refuses anything else, naming both choices", () => {
    const result = blueGreenOptionsSchema.safeParse({ switch: "all" });
    expect(result.success).toBe(false);
    expect(result.error?.issues[0]?.path).toEqual(["switch"]);
    expect(result.error?.issues[0]?.message).toMatch(/targetByTarget .* or allAtOnce/);
  });
});

describe("blueGreen.canary", () => {
  const parse = (canary: unknown, extra: Record<string, unknown> = {}) =>
    blueGreenOptionsSchema.safeParse({ canary, ...extra });
  const issues = (canary: unknown, extra: Record<string, unknown> = {}) =>
    parse(canary, extra).error?.issues.map((issue) => ({ path: issue.path.join("."), message: issue.message })) ?? [];

  it("takes weighted stages with a pause or an approval, ending with the switch at 100", () => {
    const parsed = parse({
      steps: [{ weight: 5, pauseSeconds: 60 }, { weight: 25, approval: { instructions: "check" } }, { weight: 100 }],
    });
    expect(parsed.success).toBe(true);
    expect(stageThresholds(parsed.data?.canary as CanaryOptions, { weight: 5, analysis: { minRequests: 10 } })).toEqual(
      {
        maxErrorRatioIncrease: 0.01,
        maxConnectionErrorRatioIncrease: 0.01,
        maxP99IncreaseMs: 500,
        minRequests: 10,
      },
    );
  });

  it("names the field of each mistake and what to do", () => {
    expect(issues({ steps: [{ weight: 150, pauseSeconds: 1 }, { weight: 100 }] })).toEqual([
      { path: "canary.steps.0.weight", message: "weight is a whole number of per cent, 0 to 100" },
    ]);
    expect(issues({ steps: [{ weight: 50 }, { weight: 100 }] })).toEqual([
      {
        path: "canary.steps.0.pauseSeconds",
        message: "a stage below weight 100 needs pauseSeconds (how long it lasts) or approval (until someone approves)",
      },
    ]);
    expect(
      issues({
        steps: [
          { weight: 50, pauseSeconds: 1 },
          { weight: 20, pauseSeconds: 1 },
        ],
      }),
    ).toEqual([
      {
        path: "canary.steps.1.weight",
        message: "weights grow from stage to stage: this one (20) is not above the one before (50)",
      },
      { path: "canary.steps.1.weight", message: "the last stage is the switch: give it weight 100" },
    ]);
    expect(
      issues({
        steps: [
          { weight: 5, pauseSeconds: 1, approval: { instructions: "x" } },
          { weight: 100, pauseSeconds: 5 },
        ],
      }),
    ).toEqual([
      {
        path: "canary.steps.0.approval",
        message: "a stage waits either pauseSeconds or for an approval, not both: remove one",
      },
      {
        path: "canary.steps.1.pauseSeconds",
        message:
          "the weight 100 stage is the switch itself: watch it with blueGreen.bakeSeconds, or put an approval step after this one",
      },
    ]);
    expect(issues({ steps: [{ weight: 5, pauseSeconds: 1 }, { weight: 100 }], thresholds: {} })[0]?.path).toBe(
      "canary",
    );
    expect(issues({ steps: [{ weight: 5, pauseSeconds: 1 }, { weight: 100 }] }, { switch: "allAtOnce" })).toEqual([
      {
        path: "canary",
        message:
          "a canary runs target by target (each target's figures decide for it): remove canary or switch: allAtOnce",
      },
    ]);
  });
});
