import { randomBytes } from "node:crypto";
import { z } from "zod";
import { TaskFailure } from "../engine/types.js";
import { formatImageReference, parseImageReference } from "../runtimes/imageReference.js";
import { containerEnvSchema, timeoutSecondsSchema } from "./configFields.js";
import { pullImage } from "./container/shared.js";
import { DEFAULT_LIMITS } from "./isolated/config.js";
import type { StepKind } from "./types.js";

/** Lines of the container's output copied into the task log when it ends. */
const OUTPUT_LINES = 200;

const runContainerConfigSchema = z.strictObject({
  /** Template of the image reference, e.g. "#{Ferry.Image[tests]}". */
  image: z.string().min(1).max(1024),
  /** Replaces the image's command (an argument array; no shell unless it names one). Each item is a template. */
  command: z.array(z.string().max(65_536)).min(1).max(200).optional(),
  env: containerEnvSchema,
  /** The container must have ended by then, or it is killed and the step fails. */
  timeoutSeconds: timeoutSecondsSchema(600),
  /** Limits; inside an isolated group they default to the group's (and may be lower, not higher). */
  cpus: z.number().positive().max(64).optional(),
  memoryMb: z
    .number()
    .int()
    .min(6, { message: "memoryMb must be at least 6 (the Docker engine's minimum)" })
    .max(1024 * 1024)
    .optional(),
  pids: z.number().int().min(8).max(1_000_000).optional(),
  pullTimeoutSeconds: z.number().int().min(1).max(3600).default(600),
});
type RunContainerConfig = z.infer<typeof runContainerConfigSchema>;

/**
 * `run-container`: runs a container to its end (functional tests packaged as an image) and
 * fails unless it exits 0, with its output in the task log. It always has CPU, memory (no
 * swap) and pids limits: inside an isolated group (ADR 0045) it joins the group's network —
 * the services answer at #{Ferry.Isolated.Service[web].InternalUrl} — and carries its labels;
 * elsewhere it uses the default bridge and the default limits. A container the kernel kills
 * for its memory limit fails the step saying so (OOMKilled). It is removed at the end.
 */
export const runContainerStep: StepKind<RunContainerConfig> = {
  kind: "run-container",
  config: runContainerConfigSchema,
  plan(config, render) {
    return [
      {
        description: `run ${render(config.image)} to its end${config.command ? ` (${config.command.length} argument(s))` : ""}`,
      },
    ];
  },
  async run(context, config) {
    const { log, signal } = context;
    const isolation = context.isolation;
    // Inside a group its limits are the ceiling (a step may ask for less); elsewhere the step's own or the defaults.
    const limits = isolation
      ? {
          cpus: Math.min(config.cpus ?? isolation.limits.cpus, isolation.limits.cpus),
          memoryMb: Math.min(config.memoryMb ?? isolation.limits.memoryMb, isolation.limits.memoryMb),
          pids: Math.min(config.pids ?? isolation.limits.pids, isolation.limits.pids),
        }
      : {
          cpus: config.cpus ?? DEFAULT_LIMITS.cpus,
          memoryMb: config.memoryMb ?? DEFAULT_LIMITS.memoryMb,
          pids: config.pids ?? DEFAULT_LIMITS.pids,
        };
    const reference = parseImageReference(context.render(config.image));
    const image = formatImageReference(reference);
    const command = config.command?.map((argument) => context.render(argument));
    const env: Record<string, string> = {};
    for (const [name, template] of Object.entries(config.env)) env[name] = context.render(template);
    const docker = context.target.runtime("docker");
    await pullImage(context, config, docker, image, reference.registry ?? "docker.io", reference.digest !== undefined);
    const prefix = isolation?.namePrefix ?? `ferry-run-${context.taskId.replace(/^task_/, "")}`;
    const name = `${prefix}-${randomBytes(3).toString("hex")}`;
    log.info(
      `running ${name} from ${image}${isolation ? ` on network ${isolation.network}` : ""}; cpus ${limits.cpus}, memory ${limits.memoryMb} MiB, pids ${limits.pids}${
        Object.keys(env).length > 0 ? `; env ${Object.keys(env).join(", ")}` : ""
      }`,
    );
    await docker.createAndStart(
      {
        name,
        image,
        env,
        ...(command && { command }),
        ...(isolation && { networks: [isolation.network] }),
        cpus: limits.cpus,
        memoryMb: limits.memoryMb,
        noSwap: true,
        pidsLimit: limits.pids,
        labels: { ...context.labels, "ferry.step": context.stepName },
        restartPolicy: "no",
      },
      { signal },
    );
    try {
      const exit = await docker.waitForExit(name, config.timeoutSeconds * 1000, { signal });
      const lines = await docker.logTail(name, OUTPUT_LINES, { signal }).catch((error: unknown) => {
        log.warn(`could not read the output of ${name}: ${error instanceof Error ? error.message : error}`);
        return [] as string[];
      });
      for (const line of lines) log.info(`  ${line}`);
      if (exit === undefined) {
        throw new TaskFailure(
          `container ${name} was still running after ${config.timeoutSeconds} s (timeoutSeconds): stopped`,
        );
      }
      if (exit.oomKilled) {
        throw new TaskFailure(
          `container ${name} was killed for going beyond its memory limit of ${limits.memoryMb} MiB (OOMKilled, exit code ${exit.exitCode}); raise memoryMb${isolation ? " of the group's limits" : ""} or make the tests use less`,
        );
      }
      if (exit.exitCode !== 0) throw new TaskFailure(`container ${name} exited with code ${exit.exitCode}`);
      log.info(`container ${name} exited with code 0`);
      return { outputs: { exitCode: "0" } };
    } finally {
      // Its output is in the task log; a cancel must remove it too, so no signal here.
      await docker.stopAndRemove(name, { stopTimeoutSeconds: 0 }).catch(() => false);
    }
  },
};
