/**
 * The canary verdict (ADR 0049): the figures a router counted for the new colour during a
 * stage, against the stable colour's over the same window. Pure: the blue/green strategy
 * reads the router's counters and hands them here.
 */

/** What a router counted for one upstream of one route (cumulative; see figuresBetween). */
export interface UpstreamFigures {
  /** Answered requests, whatever their status. */
  readonly served: number;
  /** Of `served`, answered with a 5xx status. */
  readonly serverErrors: number;
  /** Requests the upstream could not be connected to or that it cut (failed + retried in the router). */
  readonly connectionErrors: number;
  /** Cumulative request counts per upper bound in seconds, and the total. */
  readonly durations: {
    readonly buckets: readonly { readonly le: number; readonly count: number }[];
    readonly count: number;
  };
}

export interface CanaryThresholds {
  /** The new colour's 5xx ratio may exceed the stable colour's by at most this (0.01 = one point). */
  readonly maxErrorRatioIncrease: number;
  /** Its connection-error ratio likewise. */
  readonly maxConnectionErrorRatioIncrease: number;
  /** Its p99 latency may exceed the stable colour's by at most this many milliseconds. */
  readonly maxP99IncreaseMs: number;
  /** Fewer requests than this to the new colour give no verdict (too few to judge). */
  readonly minRequests: number;
}

/** One side's figures over a window, as logged. */
export interface SideSummary {
  readonly requests: number;
  readonly errorRatio: number;
  readonly connectionErrorRatio: number;
  /** Upper bound of the bucket holding the 99th percentile, in ms; null without requests, Infinity past the last bound. */
  readonly p99Ms: number | null;
}

export type CanaryVerdict =
  | { readonly outcome: "healthy"; readonly canary: SideSummary; readonly stable: SideSummary }
  | { readonly outcome: "too-few-requests"; readonly canary: SideSummary; readonly stable: SideSummary }
  | {
      readonly outcome: "unhealthy";
      readonly canary: SideSummary;
      readonly stable: SideSummary;
      /** Each threshold passed, in words ("5xx ratio 5.0 % against 0.0 % (at most +1.0 points)"). */
      readonly reasons: readonly string[];
    };

const NO_FIGURES: UpstreamFigures = {
  served: 0,
  serverErrors: 0,
  connectionErrors: 0,
  durations: { buckets: [], count: 0 },
};

/** The counts of `after` minus those of `before`: one window's figures. */
export function figuresBetween(
  before: UpstreamFigures | undefined,
  after: UpstreamFigures | undefined,
): UpstreamFigures {
  const start = before ?? NO_FIGURES;
  const end = after ?? NO_FIGURES;
  const earlier = new Map(start.durations.buckets.map((bucket) => [bucket.le, bucket.count]));
  return {
    served: end.served - start.served,
    serverErrors: end.serverErrors - start.serverErrors,
    connectionErrors: end.connectionErrors - start.connectionErrors,
    durations: {
      buckets: end.durations.buckets.map((bucket) => ({
        le: bucket.le,
        count: bucket.count - (earlier.get(bucket.le) ?? 0),
      })),
      count: end.durations.count - start.durations.count,
    },
  };
}

function summarise(figures: UpstreamFigures): SideSummary {
  const requests = figures.served + figures.connectionErrors;
  return {
    requests,
    errorRatio: requests === 0 ? 0 : figures.serverErrors / requests,
    connectionErrorRatio: requests === 0 ? 0 : figures.connectionErrors / requests,
    p99Ms: p99Ms(figures.durations),
  };
}

/** The upper bound (ms) of the first bucket holding 99 % of the requests. */
function p99Ms(durations: UpstreamFigures["durations"]): number | null {
  if (durations.count === 0) return null;
  const wanted = Math.ceil(durations.count * 0.99);
  for (const bucket of durations.buckets) if (bucket.count >= wanted) return Math.round(bucket.le * 1000);
  return Number.POSITIVE_INFINITY;
}

/** Compares a stage's figures of the new colour with the stable colour's, over the same window. */
export function judgeCanary(
  canaryFigures: UpstreamFigures,
  stableFigures: UpstreamFigures,
  thresholds: CanaryThresholds,
): CanaryVerdict {
  const canary = summarise(canaryFigures);
  const stable = summarise(stableFigures);
  if (canary.requests < thresholds.minRequests) return { outcome: "too-few-requests", canary, stable };
  const reasons: string[] = [];
  if (canary.errorRatio > stable.errorRatio + thresholds.maxErrorRatioIncrease) {
    reasons.push(
      `5xx ratio ${percent(canary.errorRatio)} against ${percent(stable.errorRatio)} on the stable colour (at most +${points(thresholds.maxErrorRatioIncrease)})`,
    );
  }
  if (canary.connectionErrorRatio > stable.connectionErrorRatio + thresholds.maxConnectionErrorRatioIncrease) {
    reasons.push(
      `connection errors ${percent(canary.connectionErrorRatio)} against ${percent(stable.connectionErrorRatio)} on the stable colour (at most +${points(thresholds.maxConnectionErrorRatioIncrease)})`,
    );
  }
  // Without stable requests in the window there is nothing to compare latency with.
  if (canary.p99Ms !== null && stable.p99Ms !== null && canary.p99Ms - stable.p99Ms > thresholds.maxP99IncreaseMs) {
    reasons.push(
      `p99 ${milliseconds(canary.p99Ms)} against ${milliseconds(stable.p99Ms)} on the stable colour (at most +${thresholds.maxP99IncreaseMs} ms)`,
    );
  }
  return reasons.length > 0
    ? { outcome: "unhealthy", canary, stable, reasons }
    : { outcome: "healthy", canary, stable };
}

/** "new colour: 812 requests, 5xx 5.0 %, connection errors 0.0 %, p99 ≤ 5 ms" */
export function describeSide(label: string, side: SideSummary): string {
  return `${label}: ${side.requests} request(s), 5xx ${percent(side.errorRatio)}, connection errors ${percent(side.connectionErrorRatio)}, p99 ${
    side.p99Ms === null ? "n/a" : `≤ ${milliseconds(side.p99Ms)}`
  }`;
}

function percent(ratio: number): string {
  return `${(ratio * 100).toFixed(1)} %`;
}

function points(ratio: number): string {
  return `${(ratio * 100).toFixed(1)} points`;
}

function milliseconds(value: number): string {
  return Number.isFinite(value) ? `${value} ms` : "over 10 s";
}
