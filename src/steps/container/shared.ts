import type { DockerRuntime } from "../../runtimes/docker.js";
import { DOCKER_HUB_REGISTRY, formatImageReference, parseImageReference } from "../../runtimes/imageReference.js";
import { ownershipLabels } from "../ownership.js";
import type { StepRunContext } from "../types.js";
import type { ContainerConfig } from "./config.js";

/** What the recreate and blue/green strategies of the container step share. */

/** Lines of the container's log put into the task log when it fails to start. */
const FAILURE_LOG_LINES = 20;

/**
 * An image pinned by digest that the engine already has is exactly the content wanted,
 * so it is not pulled again (the registry need not even be up). A tag is pulled every
 * time: what it points at may have moved.
 */
export async function pullImage(
  context: StepRunContext,
  config: Pick<ContainerConfig, "pullTimeoutSeconds">,
  docker: DockerRuntime,
  image: string,
  registry: string,
  pinned: boolean,
): Promise<void> {
  const { log, signal } = context;
  if (pinned && (await docker.hasImage(image, { signal }))) {
    log.info(`image ${image} is already on this host (pinned by digest): not pulling`);
    return;
  }
  if (!pinned) log.warn(`image ${image} is not pinned by digest: pulling whatever the tag points at now`);
  // Credentials come from the project's feeds through the context; a step config never
  // holds registry secrets. The engine API does not use the host's `docker login`
  // either, so without credentials here the pull is anonymous.
  const auth = await context.registryCredentials?.(registry);
  log.info(`pulling ${image}${auth ? ` as ${auth.username}` : " (anonymously)"}`);
  await docker.pullImage(image, {
    auth,
    signal,
    timeoutMs: config.pullTimeoutSeconds * 1000,
    onStatus: (line) => log.info(`  ${line}`),
  });
}

/** Puts the last lines of a container's log into the task log (a failure to read them is logged too). */
export async function logContainerTail(context: StepRunContext, docker: DockerRuntime, name: string) {
  try {
    const lines = await docker.logTail(name, FAILURE_LOG_LINES, { signal: context.signal });
    context.log.warn(`last ${lines.length} log lines of container ${name}:`);
    for (const line of lines) context.log.warn(`  ${line}`);
  } catch (error) {
    context.log.warn(`could not read the log of container ${name}: ${error instanceof Error ? error.message : error}`);
  }
}

function describePorts(config: Pick<ContainerConfig, "ports">): string {
  if (config.ports.length === 0) return "";
  return `; ports ${config.ports
    .map((port) => `${port.hostIp}:${port.host ?? "(any)"}→${port.container}/${port.protocol}`)
    .join(", ")}`;
}

export function describeLimits(config: Pick<ContainerConfig, "cpus" | "memoryMb">): string {
  return `${config.cpus !== undefined ? `; cpus ${config.cpus}` : ""}${
    config.memoryMb !== undefined ? `; memory ${config.memoryMb} MiB` : ""
  }`;
}

/**
 * Renders every template of a container step before anything changes: a missing variable
 * must not leave the environment with the old container stopped and no new one.
 */
export function renderContainerInputs(context: StepRunContext, config: ContainerConfig) {
  const image = parseImageReference(context.render(config.image));
  const env: Record<string, string> = {};
  for (const [variable, template] of Object.entries(config.env)) env[variable] = context.render(template);
  // A named volume the engine creates for the container carries the environment's labels,
  // so tearing an ephemeral environment down removes it; one that exists is used as it is.
  const labels = ownershipLabels(context.scope);
  const volumes = config.volumes.map((volume) => ({
    source: context.render(volume.source),
    target: context.render(volume.target),
    readOnly: volume.readOnly,
    labels,
  }));
  return {
    imageText: formatImageReference(image),
    registry: image.registry ?? DOCKER_HUB_REGISTRY,
    pinned: image.digest !== undefined,
    env,
    volumes,
  };
}

/** "starting <what> <name> from <image>; ports …; env A, B": env values may be secrets, so only their names. */
export function describeStart(
  what: string,
  name: string,
  imageText: string,
  config: ContainerConfig,
  env: Readonly<Record<string, string>>,
): string {
  const names = Object.keys(env);
  return `starting ${what} ${name} from ${imageText}${describePorts(config)}${describeLimits(config)}${
    names.length > 0 ? `; env ${names.join(", ")}` : ""
  }`;
}
