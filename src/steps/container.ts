import { isIP } from "node:net";
import { z } from "zod";
import { TaskFailure } from "../engine/types.js";
import {
  CONTAINER_NAME_HINT,
  type DockerRuntime,
  ENV_NAME_HINT,
  isContainerName,
} from "../runtimes/docker.js";
import { blueGreenOptionsSchema, blueGreenRouteSchema, describeBlueGreen, runBlueGreen } from "./blueGreen.js";
import {
  containerOutputs,
  describeLimits,
  describeStart,
  logContainerTail,
  pullImage,
  renderContainerInputs,
  waitUntilSettled,
} from "./containerShared.js";
import type { StepKind, StepRunContext } from "./types.js";

const portSchema = z.number().int().min(1).max(65535);

const containerConfigSchema = z
  .strictObject({
    /**
     * How the new version replaces the old: `recreate` stops and removes the running
     * container, then starts the new one (a short gap in service); `blueGreen` starts the new
     * colour beside the live one and switches the route to it once healthy (see `route`).
     */
    strategy: z.enum(["recreate", "blueGreen"]).default("recreate"),
    /** blueGreen: the route whose traffic the container serves. */
    route: blueGreenRouteSchema.optional(),
    /** blueGreen: the health check, pre-switch tests, drain, bake and retention around the switch. */
    blueGreen: blueGreenOptionsSchema.optional(),
    /** Template of the image reference, e.g. "#{Ferry.Image[web]}" or "registry:5000/team/app@sha256:…". */
    image: z.string().min(1).max(1024),
    /** Template of the container's name; default "ferry-<project>-<environment>". */
    name: z.string().min(1).max(256).optional(),
    /** Environment variables of the container; each value is a template. */
    env: z
      .record(z.string().regex(/^[A-Za-z_][A-Za-z0-9_]{0,254}$/, { message: ENV_NAME_HINT }), z.string().max(65_536))
      .default({}),
    ports: z
      .array(
        z.strictObject({
          /** Port on the host; absent: the engine picks a free one (see the hostPort output). */
          host: portSchema.optional(),
          container: portSchema,
          protocol: z.enum(["tcp", "udp"]).default("tcp"),
          /** Address the port is published on; 127.0.0.1 unless another is asked for. */
          hostIp: z
            .string()
            .refine((address) => isIP(address) !== 0, {
              message: "use an IPv4 or IPv6 address, e.g. 127.0.0.1 or 0.0.0.0",
            })
            .default("127.0.0.1"),
        }),
      )
      .max(50)
      .default([]),
    volumes: z
      .array(
        z.strictObject({
          /** Template: a volume name ("shop-data") or an absolute host path (a bind mount). */
          source: z.string().min(1).max(4096),
          /** Template: an absolute path inside the container. */
          target: z.string().min(1).max(4096),
          readOnly: z.boolean().default(false),
        }),
      )
      .max(50)
      .default([]),
    /** Networks (which must exist) the container joins; the default bridge when empty. */
    networks: z
      .array(
        z.string().regex(/^[a-zA-Z0-9][a-zA-Z0-9_.-]{0,127}$/, { message: "use letters, digits, '_', '.' and '-'" }),
      )
      .max(10)
      .default([]),
    /** CPU limit in CPUs (0.5 = half of one). */
    cpus: z.number().positive().max(1024).optional(),
    /** Memory limit in MiB (the engine's minimum is 6). */
    memoryMb: z
      .number()
      .int()
      .min(6)
      .max(1024 * 1024)
      .optional(),
    restartPolicy: z.enum(["no", "always", "unless-stopped", "on-failure"]).default("unless-stopped"),
    /** The new container must still be running this long after it started, or the step fails with its log. */
    settleSeconds: z.number().min(0).max(300).default(2),
    /** How long the previous container gets to stop after SIGTERM before it is killed. */
    stopTimeoutSeconds: z.number().int().min(0).max(600).default(10),
    pullTimeoutSeconds: z.number().int().min(1).max(3600).default(600),
  })
  .superRefine((config, issues) => {
    if (config.strategy !== "blueGreen") {
      for (const key of ["route", "blueGreen"] as const) {
        if (config[key] !== undefined) {
          issues.addIssue({ code: "custom", path: [key], message: `${key} is only used with strategy: blueGreen` });
        }
      }
      return;
    }
    if (config.route === undefined) {
      issues.addIssue({
        code: "custom",
        path: ["route"],
        message: "strategy blueGreen needs a route: { host, port } (the container port the proxy sends traffic to)",
      });
    }
    if (config.name !== undefined) {
      issues.addIssue({
        code: "custom",
        path: ["name"],
        message: "blue/green colours are named <project>-<environment>-<release>-<id>; leave `name` out",
      });
    }
    config.ports.forEach((port, index) => {
      if (port.host !== undefined) {
        issues.addIssue({
          code: "custom",
          path: ["ports", index, "host"],
          message:
            "two colours run side by side, so they cannot share a host port; leave `host` out (the engine picks one) and send traffic through the route",
        });
      }
    });
  });
export type ContainerConfig = z.infer<typeof containerConfigSchema>;

/**
 * Runs the release's image as one container on the server's own Docker engine. With the
 * `recreate` strategy the previous container of the same name is stopped and removed
 * after the new image is pulled, and the new one started in its place.
 */
export const containerStep: StepKind<ContainerConfig> = {
  kind: "container",
  config: containerConfigSchema,

  plan(config, render) {
    if (config.strategy === "blueGreen") return [{ description: describeBlueGreen(config, render) }];
    const name = config.name === undefined ? "ferry-<project>-<environment>" : render(config.name);
    return [{ description: `recreate container ${name} from ${render(config.image)}${describeLimits(config)}` }];
  },

  async run(context, config) {
    if (config.strategy === "blueGreen") {
      return runBlueGreen(context, config, context.target.runtime("docker"), await context.target.router());
    }
    return runContainer(context, config, context.target.runtime("docker"));
  },
};

async function runContainer(context: StepRunContext, config: ContainerConfig, docker: DockerRuntime) {
  const { log, signal } = context;
  const { imageText, registry, pinned, env, volumes } = renderContainerInputs(context, config);
  const name = containerName(context, config);
  const { project, environment } = context.scope;

  await pullImage(context, config, docker, imageText, registry, pinned);

  const previous = await docker.inspectContainer(name, { signal });
  if (previous) {
    // Never remove a container Ferry did not start for this project: a name clash with
    // someone else's container must not destroy it.
    if (previous.labels["ferry.project"] !== project.slug || previous.labels["ferry.env"] !== environment.slug) {
      throw new TaskFailure(
        `a container named ${name} exists that Ferry did not start for this project; remove it or give the step another name`,
      );
    }
    log.info(`stopping and removing the previous container ${name} (${previous.id.slice(0, 12)}, ${previous.status})`);
    await docker.stopAndRemove(previous.id, { stopTimeoutSeconds: config.stopTimeoutSeconds, signal });
  }

  log.info(describeStart("container", name, imageText, config, env));
  const started = await docker.createAndStart(
    {
      name,
      image: imageText,
      env,
      ports: config.ports.map((port) => ({
        containerPort: port.container,
        ...(port.host !== undefined && { hostPort: port.host }),
        hostIp: port.hostIp,
        protocol: port.protocol,
      })),
      volumes,
      networks: config.networks,
      ...(config.cpus !== undefined && { cpus: config.cpus }),
      ...(config.memoryMb !== undefined && { memoryMb: config.memoryMb }),
      labels: { ...context.labels, "ferry.step": context.stepName },
      restartPolicy: config.restartPolicy,
    },
    { signal },
  );

  const settled = await waitUntilSettled(docker, started.id, config.settleSeconds * 1000, signal);
  if (settled.failure !== undefined) {
    await logContainerTail(context, docker, name);
    // With a restart policy a crashing container would come back forever: take it away.
    await docker.stopAndRemove(started.id, { stopTimeoutSeconds: 0, signal }).catch(() => false);
    throw new TaskFailure(`container ${name} ${settled.failure}; its last log lines are in the task log`);
  }
  log.info(
    `container ${name} (${started.id.slice(0, 12)}) is running${started.ports
      .map((port) => ` — ${port.hostIp}:${port.hostPort}→${port.containerPort}/${port.protocol}`)
      .join("")}`,
  );
  return { outputs: containerOutputs(started.id, name, imageText, started.ports) };
}

/**
 * Takes away a container this task started with the recreate strategy after it failed its
 * health check (the health-check step that names it in `containerName`): an unhealthy new
 * version must not go on answering. The previous container was removed before it started —
 * recreate has downtime by design — so the log says nothing is left serving. A container of
 * another task, or a blue/green colour (it may be live: that strategy decides for its own),
 * is left alone.
 */
export async function removeUnhealthyContainer(context: StepRunContext, docker: DockerRuntime, name: string) {
  const { log, signal } = context;
  const container = await docker.inspectContainer(name, { signal }).catch(() => undefined);
  if (!container || container.labels["ferry.task"] !== context.taskId) return;
  if (container.labels["ferry.route"] !== undefined) return;
  const removed = await docker.stopAndRemove(container.id, { stopTimeoutSeconds: 0, signal }).catch(() => false);
  if (removed) {
    log.warn(
      `removed container ${name}: it failed its health check. The previous container was already removed before it started (the recreate strategy has downtime), so nothing of this deployment is running; deploy a release that passes`,
    );
  } else {
    log.warn(`could not remove container ${name}, which failed its health check: remove it by hand`);
  }
}

function containerName(context: StepRunContext, config: ContainerConfig): string {
  let name: string;
  if (config.name !== undefined) {
    name = context.render(config.name);
  } else {
    name = `ferry-${context.scope.project.slug}-${context.scope.environment.slug}`;
  }
  if (!isContainerName(name)) {
    throw new TaskFailure(`'${name.slice(0, 200)}' is not a container name: ${CONTAINER_NAME_HINT}`);
  }
  return name;
}

/**
 * The volume sources of a process's container steps that may reach the host's files: an
 * absolute path, or a template (a variable could make it one). Saving a process with any
 * needs the administer permission everywhere (ADR 0020): a bind mount of `/` or the
 * Docker socket is root on the host.
 */
export function hostPathVolumes(steps: readonly { kind: string; config: Record<string, unknown> }[]): string[] {
  return steps.flatMap((step) => {
    if (step.kind !== containerStep.kind) return [];
    const volumes = (step.config as Partial<ContainerConfig>).volumes ?? [];
    return volumes.map((volume) => volume.source).filter((source) => !plainVolumeName.test(source));
  });
}

const plainVolumeName = /^[a-zA-Z0-9][a-zA-Z0-9_.-]{0,127}$/;
