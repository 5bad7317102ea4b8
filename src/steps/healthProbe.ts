import { setTimeout as sleep } from "node:timers/promises";
import type { OutboundPolicy } from "../security/outboundGuard.js";
import type { StepRunContext } from "./types.js";

/*
 * The probe of the health-check step, of blue/green's wait for a new colour and of start-up
 * reconciliation (traffic/reconcile.ts). A module of its own, importing no step: the
 * reconciliation loads it without the step registry.
 */

/** While the answer stays the same, a line every this many probes says the check is still waiting. */
const PROGRESS_EVERY = 10;

/** How a URL is probed: the status that means healthy, and how often and how long to try. */
export interface HealthProbe {
  expectedStatus: number;
  intervalMs: number;
  timeoutMs: number;
  deadlineSeconds: number;
}

/**
 * Probes `url` until it answers `expectedStatus` (healthy) or the deadline passes (not),
 * logging each change of answer. A cancel of the task ends it at once. With `guard`, each
 * probe goes through the outbound guard with that policy (a refusal fails at once).
 */
export async function probeUntilHealthy(
  // Only what a probe uses: start-up reconciliation probes a colour outside any step.
  context: {
    log: Pick<StepRunContext["log"], "info">;
    signal: AbortSignal;
    target: { transport: Pick<StepRunContext["target"]["transport"], "request"> };
  },
  url: URL,
  probe: HealthProbe,
  guard: OutboundPolicy | undefined,
): Promise<{ healthy: boolean; attempts: number; last: string }> {
  const { log, signal } = context;
  const started = Date.now();
  const deadline = started + probe.deadlineSeconds * 1000;
  log.info(`probing ${url.href} every ${probe.intervalMs} ms until it answers HTTP ${probe.expectedStatus}`);
  let attempts = 0;
  let last = "";
  let lastLogged = 0;
  for (;;) {
    attempts++;
    // The last probe never runs past the deadline.
    const timeoutMs = Math.max(1, Math.min(probe.timeoutMs, deadline - Date.now()));
    // From the target's host: a colour listens on that host's loopback.
    const outcome = await context.target.transport.request(url, { timeoutMs, signal, guard });
    let answer: string;
    // A probe the deadline cut short that got no answer says nothing new about the app: the
    // answer before it stays the one reported (a 404 all along is not "no answer in 0.05 s").
    const cutShort = timeoutMs < probe.timeoutMs && !outcome.ok && last !== "";
    if (cutShort) {
      log.info(`probe ${attempts}: cut short by the deadline (${outcome.problem})`);
      break;
    }
    if (outcome.ok) {
      await outcome.response.body?.cancel();
      if (outcome.response.status === probe.expectedStatus) {
        const seconds = ((Date.now() - started) / 1000).toFixed(1);
        log.info(`healthy: HTTP ${outcome.response.status} after ${attempts} probe(s) in ${seconds} s`);
        return { healthy: true, attempts, last: `HTTP ${outcome.response.status}` };
      }
      answer = `HTTP ${outcome.response.status}`;
    } else {
      answer = outcome.problem;
    }
    if (answer !== last || attempts - lastLogged >= PROGRESS_EVERY) {
      log.info(`probe ${attempts}: ${answer}`);
      lastLogged = attempts;
      last = answer;
    }
    const remaining = deadline - Date.now();
    if (remaining <= 0) break;
    await sleep(Math.min(probe.intervalMs, remaining), undefined, { signal });
    if (Date.now() >= deadline) break;
  }
  return { healthy: false, attempts, last };
}
