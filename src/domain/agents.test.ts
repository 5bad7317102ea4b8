import { describe, expect, it } from "vitest";
import { fullJitterDelay } from "./agents.js";

describe("fullJitterDelay", () => {
  const options = { baseMs: 500, capMs: 30_000 };

  it("draws from [0, base·2^attempt), capped", () => {
    expect(fullJitterDelay(0, options, () => 0.999)).toBe(499);
    expect(fullJitterDelay(3, options, () => 0.5)).toBe(2_000);
    expect(fullJitterDelay(20, options, () => 0.999)).toBe(29_970);
    expect(fullJitterDelay(5, options, () => 0)).toBe(0);
  });

  it("spreads many agents over the whole window instead of one moment", () => {
    const delays = Array.from({ length: 1000 }, () => fullJitterDelay(4, options));
    const buckets = new Set(delays.map((delay) => Math.floor(delay / 800)));
    expect(buckets.size).toBe(10);
    expect(Math.max(...delays)).toBeLessThan(8_000);
  });
});
