import { describe, expect, it } from "vitest";
import { describeSide, figuresBetween, judgeCanary, type UpstreamFigures } from "./canary.js";

const thresholds = {
  maxErrorRatioIncrease: 0.01,
  maxConnectionErrorRatioIncrease: 0.01,
  maxP99IncreaseMs: 500,
  minRequests: 100,
};

/** `served` requests, all under `fastestBucket` seconds but `slow` of them at 2.5 s. */
function figures(served: number, serverErrors = 0, connectionErrors = 0, slow = 0): UpstreamFigures {
  const bounds = [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10];
  const total = served + connectionErrors;
  return {
    served,
    serverErrors,
    connectionErrors,
    durations: { buckets: bounds.map((le) => ({ le, count: le < 2.5 ? total - slow : total })), count: total },
  };
}

describe("judgeCanary", () => {
  it("passes a new colour as good as the stable one", () => {
    expect(judgeCanary(figures(500, 1), figures(5000, 10), thresholds).outcome).toBe("healthy");
  });

  it("fails 5 % of 5xx against none, and says so with both ratios and the threshold", () => {
    const verdict = judgeCanary(figures(400, 20), figures(4000), thresholds);
    expect(verdict).toMatchObject({
      outcome: "unhealthy",
      reasons: ["5xx ratio 5.0 % against 0.0 % on the stable colour (at most +1.0 points)"],
    });
  });

  it("fails connection errors and a p99 slower by more than the allowed milliseconds", () => {
    const verdict = judgeCanary(figures(380, 0, 20, 20), figures(4000), thresholds);
    expect(verdict.outcome).toBe("unhealthy");
    if (verdict.outcome !== "unhealthy") return;
    expect(verdict.reasons).toEqual([
      "connection errors 5.0 % against 0.0 % on the stable colour (at most +1.0 points)",
      "p99 2500 ms against 5 ms on the stable colour (at most +500 ms)",
    ]);
  });

  it("gives no verdict on fewer requests than minRequests, however bad", () => {
    expect(judgeCanary(figures(50, 50), figures(4000), thresholds).outcome).toBe("too-few-requests");
  });

  it("judges a window: the counts since the stage began, not since the proxy started", () => {
    const before = figures(1000, 200);
    const after = figures(1500, 200);
    const window = figuresBetween(before, after);
    expect(window).toMatchObject({ served: 500, serverErrors: 0 });
    expect(judgeCanary(window, figuresBetween(undefined, figures(3000)), thresholds).outcome).toBe("healthy");
    expect(describeSide("new colour", judgeCanary(window, figures(1), thresholds).canary)).toBe(
      "new colour: 500 request(s), 5xx 0.0 %, connection errors 0.0 %, p99 ≤ 5 ms",
    );
  });
});
