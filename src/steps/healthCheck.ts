import { setTimeout as sleep } from "node:timers/promises";
import { z } from "zod";
import { TaskFailure } from "../engine/types.js";
import { isContainerName } from "../runtimes/docker.js";
import type { OutboundPolicy } from "../security/outboundGuard.js";
import { removeUnhealthyContainer } from "./container/recreate.js";
import { logContainerTail } from "./container/shared.js";
import { renderStepUrl, urlTemplateSchema } from "./http.js";
import type { StepKind, StepRunContext } from "./types.js";

const healthCheckConfigSchema = z.strictObject({
  /** Template of the URL probed, e.g. "http://127.0.0.1:#{Ferry.Step[web].Output.hostPort}/health". */
  url: urlTemplateSchema,
  /** The status that means healthy; redirects are not followed, so a 302 is not a 200. */
  expectedStatus: z.number().int().min(100).max(599).default(200),
  /** Pause between the end of one probe and the start of the next. */
  intervalMs: z.number().int().min(50).max(600_000).default(1000),
  /** Limit of each probe. */
  timeoutMs: z.number().int().min(50).max(600_000).default(5000),
  /** The step fails when no probe got the expected status within this many seconds. */
  deadlineSeconds: z.number().min(1).max(3600).default(60),
  /**
   * Template of a container name whose last log lines go into the task log when the check
   * fails; a container this deployment started with the recreate strategy is then removed.
   */
  containerName: z.string().min(1).max(256).optional(),
});
type HealthCheckConfig = z.infer<typeof healthCheckConfigSchema>;

/** While the answer stays the same, a line every this many probes says the check is still waiting. */
const PROGRESS_EVERY = 10;

/** Probes a URL until it answers the expected status, or fails at the deadline. */
export const healthCheckStep: StepKind<HealthCheckConfig> = {
  kind: "health-check",
  config: healthCheckConfigSchema,

  plan(config, render) {
    return [
      {
        description: `wait up to ${config.deadlineSeconds} s for ${render(config.url)} to answer HTTP ${config.expectedStatus}`,
      },
    ];
  },

  async run(context, config) {
    const { url, guard } = renderStepUrl(context, config.url, "url");
    const containerName = config.containerName === undefined ? undefined : context.render(config.containerName);
    if (containerName !== undefined && !isContainerName(containerName)) {
      throw new TaskFailure(`containerName '${containerName.slice(0, 200)}' is not a container name`);
    }
    const result = await probeUntilHealthy(context, url, config, guard);
    if (result.healthy)
      return { outputs: { status: String(config.expectedStatus), attempts: String(result.attempts) } };
    if (containerName !== undefined) {
      const docker = context.target.runtime("docker");
      await logContainerTail(context, docker, containerName);
      await removeUnhealthyContainer(context, docker, containerName);
    }
    throw new TaskFailure(
      `${url.href} did not answer HTTP ${config.expectedStatus} within ${config.deadlineSeconds} s (${result.attempts} probes; last: ${result.last})`,
    );
  },
};

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
