import { setTimeout as sleep } from "node:timers/promises";
import { type ColourRuntime, ROUTE_LABEL, type StartedColour } from "./colours.js";
import { type ContainerStatus, type DockerRuntime, type PublishedPort, publishedOrigin } from "./docker.js";

/** The container port a colour's route sends traffic to (each colour publishes it at a port the engine picks). */
export const PORT_LABEL = "ferry.route-port";
/** The image reference (as pinned by digest) a colour runs: a retained colour is reused only for the same. */
export const IMAGE_LABEL = "ferry.image";

const SETTLE_POLL_MS = 200;

/** Containers as colours of a route: the Docker engine's side of blue/green. */
export function dockerColours(docker: DockerRuntime): ColourRuntime {
  return {
    noun: "container",
    list: (route, signal) => docker.listByLabel(ROUTE_LABEL, route, { signal }),
    async find(name, signal) {
      const found = await docker.inspectContainer(name, { signal });
      return found && { id: found.id, name: found.name, state: found.status, labels: found.labels, created: 0 };
    },
    async start(colour, signal) {
      const started = await docker.startContainer(colour.id, { signal });
      return startedColour(started.id, started.name, colour.labels, started.ports);
    },
    async clone(source, name, labels, signal) {
      const started = await docker.cloneContainer(source.id, name, labels, { signal });
      return startedColour(started.id, started.name, { ...source.labels, ...labels }, started.ports);
    },
    async restart(id, { stopTimeoutSeconds, signal }) {
      await docker.stopContainer(id, { stopTimeoutSeconds, signal });
      await docker.startContainer(id, { signal });
    },
    waitUntilSettled: (id, settleMs, signal) => waitUntilSettled(docker, id, settleMs, signal),
    stop: (id, options) => docker.stopContainer(id, options),
    remove: (id, options) => docker.stopAndRemove(id, options),
    logTail: (name, lines, signal) => docker.logTail(name, lines, { signal }),
  };
}

/**
 * A started container as a colour: its upstream is the host port the engine published for
 * the route's container port (read back after every start: a restart moves it).
 */
export function startedColour(
  id: string,
  name: string,
  labels: Readonly<Record<string, string>>,
  ports: readonly PublishedPort[],
): StartedColour {
  const upstream = publishedOrigin(ports, Number(labels[PORT_LABEL]));
  if (upstream === undefined) throw new Error(`colour ${name} does not publish port ${labels[PORT_LABEL]}`);
  return { id, name, upstream, outputs: containerOutputs(id, name, labels[IMAGE_LABEL] ?? "", ports) };
}

/** containerId, containerName, image, hostPort (the first published port) and hostPort.<container port>[.udp]. */
export function containerOutputs(id: string, name: string, image: string, ports: readonly PublishedPort[]) {
  const outputs: Record<string, string> = { containerId: id, containerName: name, image };
  const [first] = ports;
  if (first) outputs.hostPort = String(first.hostPort);
  for (const port of ports) {
    const key = `hostPort.${port.containerPort}${port.protocol === "tcp" ? "" : `.${port.protocol}`}`;
    outputs[key] ??= String(port.hostPort);
  }
  return outputs;
}

/** Waits `settleMs`; the problem when the container stopped, was removed or was restarted meanwhile. */
export async function waitUntilSettled(
  docker: DockerRuntime,
  id: string,
  settleMs: number,
  signal: AbortSignal,
): Promise<{ failure?: string }> {
  const deadline = Date.now() + settleMs;
  for (;;) {
    const status = await docker.inspectContainer(id, { signal });
    const failure = settleFailure(status, settleMs);
    if (failure !== undefined) return { failure };
    const remaining = deadline - Date.now();
    if (remaining <= 0) return {};
    await sleep(Math.min(SETTLE_POLL_MS, remaining), undefined, { signal });
  }
}

function settleFailure(status: ContainerStatus | undefined, settleMs: number): string | undefined {
  const within = `within ${settleMs / 1000} s of starting`;
  if (status === undefined) return `was removed by someone else ${within}`;
  if (status.restarting || status.restartCount > 0) {
    // While the engine restarts it, the exit code of the run that failed is not reliably shown.
    return `exited ${within} and was restarted by its restart policy${status.running ? "" : ` (exit code ${status.exitCode})`}`;
  }
  if (!status.running) {
    return `exited with code ${status.exitCode} ${within}${status.error ? ` (${status.error})` : ""}`;
  }
  return undefined;
}
