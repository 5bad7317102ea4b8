import { describe, expect, it } from "vitest";
import { testPatternOffThread, testPatternsOffThread } from "./patternWorker.js";

/** How late a 10 ms timer fires, at worst, while `work` runs: what a health check would wait. */
async function worstTimerDelay<T>(work: Promise<T>): Promise<{ result: T; delayMs: number }> {
  let delayMs = 0;
  let expected = performance.now() + 10;
  const timer = setInterval(() => {
    delayMs = Math.max(delayMs, performance.now() - expected);
    expected = performance.now() + 10;
  }, 10);
  try {
    return { result: await work, delayMs };
  } finally {
    clearInterval(timer);
  }
}

/** 1 MiB of a and b in a fixed pseudo-random order: too many DFA states for RE2 to cache, so it simulates the NFA. */
function randomAb(): string {
  let seed = 1;
  return Array.from({ length: 1024 * 1024 }, () => {
    seed = (seed * 1103515245 + 12345) % 2147483648;
    return seed < 1073741824 ? "a" : "b";
  }).join("");
}

describe("testPatternOffThread", () => {
  const body = `${"a".repeat(1024 * 1024)}!`;
  const options = { timeoutMs: 5_000, signal: new AbortController().signal };

  it("answers whether the pattern matches somewhere in the text", async () => {
    expect(await testPatternOffThread("^a+!$", body, options)).toEqual({ kind: "matched" });
    expect(await testPatternOffThread("^(a+)+$", body, options)).toEqual({ kind: "not-matched" });
    expect(await testPatternOffThread("a!", body, options)).toEqual({ kind: "matched" });
  });

  it("stops a pattern RE2 runs slowly at the deadline, while the main thread stays free", async () => {
    // Compiles to ~1,000 instructions; over 1 MiB RE2 needs about 14 s.
    const random = randomAb();
    const started = performance.now();
    const { result, delayMs } = await worstTimerDelay(
      testPatternOffThread("a[ab]{1000}[cd]", random, { ...options, timeoutMs: 1_000 }),
    );
    expect(result).toEqual({ kind: "timed-out" });
    expect(performance.now() - started).toBeLessThan(3_000);
    expect(delayMs).toBeLessThan(500);
  });

  it("gives up when the step is cancelled", async () => {
    const controller = new AbortController();
    const random = randomAb();
    const running = testPatternOffThread("a[ab]{1000}[cd]", random, { timeoutMs: 60_000, signal: controller.signal });
    setTimeout(() => controller.abort(new Error("cancelled by test")), 200);
    await expect(running).rejects.toThrow("cancelled by test");
  });
});

describe("testPatternsOffThread", () => {
  it("answers each check, in order", async () => {
    const outcomes = await testPatternsOffThread(
      [
        { pattern: "^(?:(a+)+)$", text: `${"a".repeat(8191)}!` },
        { pattern: "^(?:[a-z]+)$", text: "backup" },
      ],
      { timeoutMs: 5_000 },
    );
    expect(outcomes).toEqual([{ kind: "not-matched" }, { kind: "matched" }]);
  });

  it("stops at the deadline, keeping what finished and calling the rest timed out, the main thread free", async () => {
    // Each takes RE2 some 50 ms over 8 KiB (1,800 instructions, every thread alive): 200 take ~10 s.
    const check = { pattern: "^(?:[ab]*(?:[ab]{0,900})b)$", text: "ab".repeat(4095).concat("c") };
    const started = performance.now();
    const { result: outcomes, delayMs } = await worstTimerDelay(
      testPatternsOffThread([{ pattern: "^(?:x)$", text: "x" }, ...Array.from({ length: 200 }, () => check)], {
        timeoutMs: 5_000,
      }),
    );
    expect(performance.now() - started).toBeLessThan(8_000);
    expect(outcomes[0]).toEqual({ kind: "matched" });
    expect(outcomes.at(-1)).toEqual({ kind: "timed-out" });
    expect(delayMs).toBeLessThan(1_000);
  });
});
