import type { RollingConfig } from "./process.js";

/**
 * How many targets of `total` run at once: a count as given (at most `total`), a percentage
 * rounded up — 25 % of 10 targets is 3, never 2, so a window is never empty and the rollout
 * never takes more batches than the percentage promises.
 */
export function windowSize(window: RollingConfig["window"], total: number): number {
  if (total <= 0) return 0;
  const size = typeof window === "number" ? window : Math.ceil((total * Number.parseInt(window, 10)) / 100);
  return Math.max(1, Math.min(total, size));
}

/** The targets in batches of the window's size, in their order (the last batch may be smaller). */
export function rollingBatches<T>(targets: readonly T[], window: RollingConfig["window"]): T[][] {
  const size = windowSize(window, targets.length);
  const batches: T[][] = [];
  for (let start = 0; start < targets.length; start += size) batches.push(targets.slice(start, start + size));
  return batches;
}
