import { setTimeout as sleep } from "node:timers/promises";
import { expect } from "vitest";

/**
 * How long /healthz takes at worst (asked every 50 ms) while `attack` runs: what a health
 * check would notice of an attack that holds the event loop. The server shares the test's
 * process, so a blocked loop shows here as a slow answer; every answer must still be 200.
 */
export async function slowestHealthCheckWhile<T>(
  baseUrl: string,
  attack: Promise<T>,
): Promise<{ result: T; slowestMs: number }> {
  let done = false;
  let slowestMs = 0;
  const probe = (async () => {
    while (!done) {
      const started = performance.now();
      const response = await fetch(new URL("/healthz", baseUrl));
      await response.arrayBuffer();
      expect(response.status).toBe(200);
      slowestMs = Math.max(slowestMs, performance.now() - started);
      await sleep(50);
    }
  })();
  try {
    return { result: await attack, slowestMs };
  } finally {
    done = true;
    await probe;
  }
}
