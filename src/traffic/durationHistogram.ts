import type { RequestDurations } from "./router.js";

/**
 * Upper bounds (seconds) of the request duration buckets: Prometheus's defaults, from a
 * cache hit to a slow report. Fixed, so a request costs a few comparisons and no allocation,
 * and shared by every driver, so the histograms of `ferry proxy` and nginx can be compared
 * and added up.
 */
const DURATION_BOUNDS = [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10] as const;

/** Request durations as a driver observes them; `histogram()` gives the shape of `UpstreamTraffic.duration`. */
export class DurationHistogram {
  /** Requests per bucket, not cumulative; one more slot than bounds, for the ones over the last. */
  private readonly counts = new Array<number>(DURATION_BOUNDS.length + 1).fill(0);
  private sum = 0;
  private observed = 0;

  /** Counts a request's duration in the first bucket whose bound it does not exceed (the last slot: over every bound). */
  observe(seconds: number): void {
    let index = 0;
    while (index < DURATION_BOUNDS.length && seconds > (DURATION_BOUNDS[index] ?? Number.POSITIVE_INFINITY)) index += 1;
    this.counts[index] = (this.counts[index] ?? 0) + 1;
    this.sum += seconds;
    this.observed += 1;
  }

  /** How many requests were observed. */
  get count(): number {
    return this.observed;
  }

  /** Cumulative counts per bound, as Prometheus writes them. */
  histogram(): RequestDurations {
    let cumulative = 0;
    const buckets = DURATION_BOUNDS.map((le, index) => {
      cumulative += this.counts[index] ?? 0;
      return { le, count: cumulative };
    });
    return { buckets, sum: this.sum, count: this.observed };
  }
}
