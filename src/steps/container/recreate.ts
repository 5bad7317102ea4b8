import { TARGET_LABEL } from "../../engine/processRunner.js";
import { TaskFailure } from "../../engine/types.js";
import { CONTAINER_NAME_HINT, type DockerRuntime, isContainerName } from "../../runtimes/docker.js";
import { containerOutputs, waitUntilSettled } from "../../runtimes/dockerColours.js";
import type { StepRunContext } from "../types.js";
import type { RecreateConfig } from "./config.js";
import { describeStart, logContainerTail, pullImage, renderContainerInputs } from "./shared.js";

/**
 * The recreate strategy: the previous container of the same name is stopped and removed
 * after the new image is pulled, and the new one started in its place (a short gap).
 */
export async function runRecreate(context: StepRunContext, config: RecreateConfig, docker: DockerRuntime) {
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
  await removeUntargetedPredecessor(context, config, docker, name);

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

/**
 * The container a step on a target left before default names carried the target
 * (`ferry-<project>-<environment>`, made for this project and environment and labelled for no
 * target): it is this target's previous container, whose ports the new one needs. Targets
 * sharing a host shared it then; the first to deploy now replaces it.
 */
async function removeUntargetedPredecessor(
  context: StepRunContext,
  config: RecreateConfig,
  docker: DockerRuntime,
  name: string,
) {
  if (config.name !== undefined || context.target.slug === undefined) return;
  const { project, environment } = context.scope;
  const legacyName = `ferry-${project.slug}-${environment.slug}`;
  if (legacyName === name) return;
  const legacy = await docker.inspectContainer(legacyName, { signal: context.signal });
  if (
    !legacy ||
    legacy.labels["ferry.project"] !== project.slug ||
    legacy.labels["ferry.env"] !== environment.slug ||
    legacy.labels[TARGET_LABEL] !== undefined
  ) {
    return;
  }
  context.log.info(
    `stopping and removing ${legacyName} (${legacy.id.slice(0, 12)}), named before container names carried the target: ${name} replaces it`,
  );
  await docker.stopAndRemove(legacy.id, { stopTimeoutSeconds: config.stopTimeoutSeconds, signal: context.signal });
}

/** The container's name: the step's, or `ferry-<project>-<environment>[-<target>]`. */
function containerName(context: StepRunContext, config: RecreateConfig): string {
  let name: string;
  if (config.name !== undefined) {
    name = context.render(config.name);
  } else {
    // With the target's slug: two targets on one host must not replace each other's container.
    const target = context.target.slug === undefined ? "" : `-${context.target.slug}`;
    name = `ferry-${context.scope.project.slug}-${context.scope.environment.slug}${target}`;
  }
  if (!isContainerName(name)) {
    throw new TaskFailure(`'${name.slice(0, 200)}' is not a container name: ${CONTAINER_NAME_HINT}`);
  }
  return name;
}
