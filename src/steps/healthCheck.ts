import { z } from "zod";
import { TaskFailure } from "../engine/types.js";
import { isContainerName } from "../runtimes/docker.js";
import { removeUnhealthyContainer } from "./container/recreate.js";
import { logContainerTail } from "./container/shared.js";
import { probeUntilHealthy } from "./healthProbe.js";
import { renderStepUrl, urlTemplateSchema } from "./http.js";
import type { StepKind } from "./types.js";

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
