import { createRequire } from "node:module";
import { Worker } from "node:worker_threads";

/** The CommonJS build of re2js, loaded by path: an eval'd worker has no module of its own to resolve from. */
const engineModule = createRequire(import.meta.url).resolve("re2js");

/**
 * Runs in the worker: compiles the pattern with RE2 and tests the text (unanchored, as
 * RegExp.prototype.test does). Plain JavaScript, so the same code runs from the sources
 * (tests) and from the build. The worker runs 10 nice steps below the event loop (Linux keeps
 * the value per thread): a long match takes the CPU the server's requests leave.
 */
const workerSource = `
const { parentPort, workerData } = require("node:worker_threads");
const { getPriority, setPriority } = require("node:os");
try { setPriority(Math.min(19, getPriority() + 10)); } catch {}
const { RE2JS } = require(workerData.engineModule);
parentPort.postMessage(RE2JS.compile(workerData.pattern).test(workerData.text));
`;

export type PatternTestOutcome = { kind: "matched" } | { kind: "not-matched" } | { kind: "timed-out" };

/**
 * Tests an RE2 pattern (checked with compileLinearPattern when it was saved) against a
 * text on a worker thread, stopping it after `timeoutMs` or when `signal` aborts.
 *
 * RE2 is linear in the text, but its fallback simulation steps every live thread of the
 * pattern for each character: `a[ab]{1000}[cd]` over 1 MiB runs for about 14 s. On the
 * main thread that would hold every request and health check for as long; on a worker it
 * holds one thread of its own, and only until the deadline.
 */
export async function testPatternOffThread(
  pattern: string,
  text: string,
  options: { timeoutMs: number; signal: AbortSignal },
): Promise<PatternTestOutcome> {
  options.signal.throwIfAborted();
  const worker = new Worker(workerSource, {
    eval: true,
    workerData: { engineModule, pattern, text },
    // The text is at most a few MiB; RE2's state for a capped pattern is far below this.
    resourceLimits: { maxOldGenerationSizeMb: 256 },
  });
  let timer: NodeJS.Timeout | undefined;
  let onAbort: (() => void) | undefined;
  try {
    return await new Promise<PatternTestOutcome>((resolve, reject) => {
      worker.once("message", (matched: boolean) => resolve({ kind: matched ? "matched" : "not-matched" }));
      worker.once("error", reject);
      worker.once("exit", (code) =>
        reject(new Error(`the pattern worker stopped (exit code ${code}) before answering`)),
      );
      timer = setTimeout(() => resolve({ kind: "timed-out" }), options.timeoutMs);
      onAbort = () => reject(options.signal.reason);
      options.signal.addEventListener("abort", onAbort, { once: true });
    });
  } finally {
    clearTimeout(timer);
    if (onAbort) options.signal.removeEventListener("abort", onAbort);
    // Stops a match still running (a timeout, a cancel); a finished worker ends the same way.
    await worker.terminate();
  }
}

/**
 * Runs in the worker: each check in turn (patterns already anchored and checked when they
 * were saved), posting each outcome as it is known, so that a deadline keeps what finished.
 */
const batchWorkerSource = `
const { parentPort, workerData } = require("node:worker_threads");
const { getPriority, setPriority } = require("node:os");
try { setPriority(Math.min(19, getPriority() + 10)); } catch {}
const { RE2JS } = require(workerData.engineModule);
for (const [index, check] of workerData.checks.entries()) {
  parentPort.postMessage({ index, matched: RE2JS.compile(check.pattern).test(check.text) });
}
`;

/**
 * Tests several patterns against their texts on one worker thread, together within
 * `timeoutMs`: the checks a request's values need beyond what the event loop may do (a
 * runbook run's parameters). A check not finished by the deadline is "timed-out".
 */
export async function testPatternsOffThread(
  checks: readonly { pattern: string; text: string }[],
  options: { timeoutMs: number },
): Promise<PatternTestOutcome[]> {
  const outcomes: PatternTestOutcome[] = checks.map(() => ({ kind: "timed-out" }));
  if (checks.length === 0) return outcomes;
  const worker = new Worker(batchWorkerSource, {
    eval: true,
    workerData: { engineModule, checks },
    resourceLimits: { maxOldGenerationSizeMb: 256 },
  });
  let timer: NodeJS.Timeout | undefined;
  try {
    await new Promise<void>((resolve, reject) => {
      let answered = 0;
      worker.on("message", ({ index, matched }: { index: number; matched: boolean }) => {
        outcomes[index] = { kind: matched ? "matched" : "not-matched" };
        if (++answered === checks.length) resolve();
      });
      worker.once("error", reject);
      worker.once("exit", (code) =>
        reject(new Error(`the pattern worker stopped (exit code ${code}) before answering`)),
      );
      timer = setTimeout(resolve, options.timeoutMs);
    });
    return outcomes;
  } finally {
    clearTimeout(timer);
    await worker.terminate();
  }
}
