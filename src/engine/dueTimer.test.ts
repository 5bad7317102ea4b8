import { setTimeout as sleep } from "node:timers/promises";
import { afterEach, describe, expect, it } from "vitest";
import { DueTimer } from "./dueTimer.js";

/** A timer whose passes are recorded (their start, ms after the test began), answering from `plan`. */
function recordedTimer(plan: (pass: number) => Date | undefined | Error, maxSleepMs = 60_000) {
  const began = Date.now();
  const passes: number[] = [];
  const errors: unknown[] = [];
  const timer = new DueTimer(
    async () => {
      passes.push(Date.now() - began);
      const answer = plan(passes.length);
      if (answer instanceof Error) throw answer;
      return answer;
    },
    { maxSleepMs, retryMs: 150, onError: (error) => errors.push(error) },
  );
  return { timer, passes, errors };
}

const timers: DueTimer[] = [];
afterEach(async () => {
  for (const timer of timers.splice(0)) await timer.stop();
});

describe("the due timer (no fixed tick: it sleeps until the next due moment)", () => {
  it("runs a pass at start, then sleeps exactly until the moment the pass said is due", async () => {
    const { timer, passes } = recordedTimer(() => new Date(Date.now() + 400));
    timers.push(timer);
    timer.start();
    await sleep(200);
    // Not a tick of its own: nothing runs before the due moment.
    expect(passes.length).toBe(1);
    await sleep(1_000);
    expect(passes.length).toBeGreaterThanOrEqual(2);
    expect((passes[1] ?? 0) - (passes[0] ?? 0)).toBeGreaterThanOrEqual(390);
  });

  it("with nothing due sleeps up to its cap, and a wake() runs a pass at once", async () => {
    const { timer, passes } = recordedTimer(() => undefined, 60_000);
    timers.push(timer);
    timer.start();
    await sleep(300);
    expect(passes.length).toBe(1);
    timer.wake();
    await sleep(200);
    expect(passes.length).toBe(2);
    expect(passes[1]).toBeLessThan(600);
  });

  it("a wake() during a pass runs another pass after it: the pass's answer may be stale", async () => {
    let release: () => void = () => {};
    const gate = new Promise<void>((resolve) => {
      release = resolve;
    });
    const began = Date.now();
    const passes: number[] = [];
    const timer = new DueTimer(
      async () => {
        passes.push(Date.now() - began);
        if (passes.length === 1) await gate;
        return undefined;
      },
      { maxSleepMs: 60_000, retryMs: 150, onError: () => {} },
    );
    timers.push(timer);
    timer.start();
    await sleep(100);
    timer.wake();
    release();
    await sleep(200);
    expect(passes.length).toBe(2);
  });

  it("a failed pass is reported and tried again after the retry delay", async () => {
    const { timer, passes, errors } = recordedTimer((pass) => (pass === 1 ? new Error("database away") : undefined));
    timers.push(timer);
    timer.start();
    await sleep(500);
    expect(errors.map(String)).toEqual(["Error: database away"]);
    expect(passes.length).toBe(2);
    expect((passes[1] ?? 0) - (passes[0] ?? 0)).toBeGreaterThanOrEqual(140);
  });

  it("stopped, it runs no pass any more, woken or not", async () => {
    const { timer, passes } = recordedTimer(() => new Date(Date.now() + 50));
    timer.start();
    await sleep(20);
    await timer.stop();
    const count = passes.length;
    timer.wake();
    await sleep(300);
    expect(passes.length).toBe(count);
  });

  it("plans within its cap (jittered down) and never a negative delay", () => {
    const now = Date.now();
    expect(DueTimer.delayUntil(new Date(now - 5_000), now, 60_000)).toBe(0);
    expect(DueTimer.delayUntil(new Date(now + 1_000), now, 60_000)).toBe(1_000);
    const capped = DueTimer.delayUntil(new Date(now + 3_600_000), now, 60_000);
    expect(capped).toBeGreaterThanOrEqual(45_000);
    expect(capped).toBeLessThanOrEqual(60_000);
    expect(DueTimer.delayUntil(undefined, now, 60_000)).toBeLessThanOrEqual(60_000);
  });
});
