import type { Agent } from "node:http";
import { isIP } from "node:net";
import { isAbsolute, normalize } from "node:path";
import { Transform, Writable } from "node:stream";
import { pipeline } from "node:stream/promises";
import type Docker from "dockerode";
import { InputError } from "../domain/errors.js";
import { LineSplitter } from "../engine/lineSplitter.js";
import { formatImageReference, parseImageReference } from "./imageReference.js";
import type { Runtime } from "./types.js";

/**
 * The Docker engine, through its HTTP API on a Unix socket (dockerode): no `docker` CLI
 * and no shell. Every call has a deadline and follows the caller's abort signal. Every
 * name that reaches the API (image, container, network, label, env) is checked first;
 * the values themselves travel as JSON fields, never as a command line, so no user value
 * can become an option.
 */

const DEFAULT_SOCKET_PATH = "/var/run/docker.sock";
const DEFAULT_CALL_TIMEOUT_MS = 30_000;
const DEFAULT_PULL_TIMEOUT_MS = 10 * 60_000;
/** Most log bytes read for a tail; a container that writes huge lines does not fill the server's memory. */
const MAX_LOG_BYTES = 256 * 1024;
/** Longest line of a pull's progress stream that is read (they are a few hundred bytes). */
const MAX_PULL_LINE_BYTES = 1024 * 1024;

/** Docker's own rule for container names (no leading '/'); at most 128 characters here. */
const containerNamePattern = /^[a-zA-Z0-9][a-zA-Z0-9_.-]{0,127}$/;
const networkNamePattern = /^[a-zA-Z0-9][a-zA-Z0-9_.-]{0,127}$/;
const volumeNamePattern = /^[a-zA-Z0-9][a-zA-Z0-9_.-]{0,127}$/;
const envNamePattern = /^[A-Za-z_][A-Za-z0-9_]{0,254}$/;
const labelKeyPattern = /^[a-z0-9](?:[a-z0-9._-]{0,126}[a-z0-9])?$/;

export const CONTAINER_NAME_HINT =
  "use up to 128 letters, digits, '_', '.' and '-', starting with a letter or digit (e.g. ferry-shop-prod)";
export const ENV_NAME_HINT = "use letters, digits and '_', not starting with a digit";

/** A Docker API call that failed or did not finish in time; the message says which and why. */
class DockerError extends Error {
  override readonly name = "DockerError";
  constructor(
    message: string,
    /** The engine's HTTP status (404: no such container/image), when it answered. */
    readonly statusCode?: number,
    options?: ErrorOptions,
  ) {
    super(message, options);
  }
}

export interface RegistryAuth {
  username: string;
  password: string;
}

interface PortBinding {
  containerPort: number;
  /** Undefined: the engine picks a free port (read it back from StartedContainer.ports). */
  hostPort?: number;
  /** Default 127.0.0.1: nothing is published beyond the host unless asked for. */
  hostIp?: string;
  protocol?: "tcp" | "udp";
}

interface VolumeMount {
  /** A named volume ("shop-data") or an absolute host path (a bind mount). */
  source: string;
  /** Absolute path inside the container. */
  target: string;
  readOnly?: boolean;
  /** The labels a named volume gets when the engine creates it for this container; one that exists keeps its own. */
  labels?: Readonly<Record<string, string>>;
}

export interface ContainerSpec {
  name: string;
  /** A reference parseImageReference accepts; created by digest when it has one. */
  image: string;
  env?: Readonly<Record<string, string>>;
  ports?: readonly PortBinding[];
  volumes?: readonly VolumeMount[];
  /** Networks to join; the first is the container's network mode, the others are connected before start. */
  networks?: readonly string[];
  /** CPU limit in CPUs (0.5 = half of one), sent as NanoCpus. */
  cpus?: number;
  /** Memory limit in MiB, sent as Memory (bytes). */
  memoryMb?: number;
  /** With memoryMb: no swap beyond it (MemorySwap = Memory), so going over the limit is an OOM kill, not a slow crawl. */
  noSwap?: boolean;
  /** Most processes (and threads) the container may have at once (PidsLimit): a fork bomb stops there. */
  pidsLimit?: number;
  labels?: Readonly<Record<string, string>>;
  restartPolicy?: "no" | "always" | "unless-stopped" | "on-failure";
  /** The command (argv), replacing the image's CMD: no shell unless the array names one. */
  command?: readonly string[];
  /** The entrypoint (argv), replacing the image's ENTRYPOINT. */
  entrypoint?: readonly string[];
  workingDir?: string;
  user?: string;
  /** Names other containers of its networks reach it by (a Compose service's name), on every network it joins. */
  networkAliases?: readonly string[];
  /** The engine's health check: test in its form (["CMD", …], ["CMD-SHELL", "…"], ["NONE"]). */
  healthcheck?: {
    test: readonly string[];
    intervalMs?: number | undefined;
    timeoutMs?: number | undefined;
    retries?: number | undefined;
    startPeriodMs?: number | undefined;
  };
}

/** A network or volume Ferry made, as the engine lists it. */
export interface EngineResource {
  /** The engine's id (a volume's is its name). */
  id: string;
  name: string;
  labels: Record<string, string>;
}

export interface PublishedPort {
  containerPort: number;
  protocol: string;
  hostIp: string;
  hostPort: number;
}

export interface StartedContainer {
  id: string;
  name: string;
  ports: PublishedPort[];
}

export interface ContainerStatus {
  id: string;
  name: string;
  image: string;
  running: boolean;
  restarting: boolean;
  restartCount: number;
  exitCode: number;
  /** "running", "exited", "created"… */
  status: string;
  /** The engine's error for a container that could not run (e.g. executable not found). */
  error: string;
  /** The kernel killed it for going beyond its memory limit. */
  oomKilled: boolean;
  labels: Record<string, string>;
  /** "starting", "healthy", "unhealthy"; undefined when the container has no health check. */
  health?: string;
}

export interface ContainerSummary {
  id: string;
  name: string;
  state: string;
  labels: Record<string, string>;
  /** When the container was created (Unix seconds). */
  created: number;
}

interface CallOptions {
  signal?: AbortSignal | undefined;
  timeoutMs?: number | undefined;
}

export interface DockerRuntimeOptions {
  /** Default /var/run/docker.sock. */
  socketPath?: string;
  /**
   * Makes the connections to the engine's socket (an SSH target's: the socket on that host,
   * reached over the SSH connection); default: the socket on this host.
   */
  agent?: Agent;
  /** Deadline of each API call but pulls (default 30 s). */
  callTimeoutMs?: number;
}

/** The Docker engine of one host, through its API (dockerode); the `docker` kind of Runtime. */
export class DockerRuntime implements Runtime {
  readonly kind = "docker" as const;
  private engine: Promise<Docker> | undefined;
  private readonly socketPath: string;
  private readonly callTimeoutMs: number;
  private readonly agent: Agent | undefined;

  constructor(options: DockerRuntimeOptions = {}) {
    this.socketPath = options.socketPath ?? DEFAULT_SOCKET_PATH;
    this.callTimeoutMs = options.callTimeoutMs ?? DEFAULT_CALL_TIMEOUT_MS;
    this.agent = options.agent;
  }

  /**
   * dockerode (and its SSH and protobuf dependencies) is loaded on first use, not at
   * start: a server that never runs a container step starts faster.
   */
  private client(): Promise<Docker> {
    // An explicit socket path: docker-modem would otherwise read DOCKER_HOST itself.
    this.engine ??= import("dockerode").then(
      ({ default: Dockerode }) =>
        new Dockerode({ socketPath: this.socketPath, ...(this.agent && { agent: this.agent }) }),
    );
    return this.engine;
  }

  /**
   * Pulls an image. The engine API does not use the `docker login` of the docker CLI
   * (~/.docker/config.json): without `auth` the pull is anonymous. `onStatus` gets the
   * engine's status lines ("Digest: sha256:…", "Status: Downloaded newer image for …").
   */
  async pullImage(
    image: string,
    options: CallOptions & { auth?: RegistryAuth | undefined; onStatus?: (line: string) => void } = {},
  ): Promise<void> {
    const reference = parseImageReference(image);
    const fromImage = reference.registry ? `${reference.registry}/${reference.repository}` : reference.repository;
    const query = { fromImage, tag: reference.digest ?? reference.tag ?? "latest" };
    const authconfig = options.auth && {
      username: options.auth.username,
      password: options.auth.password,
      serveraddress: reference.registry ?? "https://index.docker.io/v1/",
    };
    await this.call(
      `pulling ${formatImageReference(reference)}`,
      async (signal) => {
        const stream = authconfig
          ? await (await this.client()).createImage(authconfig, { ...query, abortSignal: signal })
          : await (await this.client()).createImage({ ...query, abortSignal: signal });
        await readPullStream(stream, signal, options.onStatus);
      },
      { signal: options.signal, timeoutMs: options.timeoutMs ?? DEFAULT_PULL_TIMEOUT_MS },
    );
  }

  /** Whether the engine has this image (by digest: exactly this content) already. */
  async hasImage(image: string, options: CallOptions = {}): Promise<boolean> {
    const reference = formatImageReference(parseImageReference(image));
    try {
      // Image inspect takes no abort signal in dockerode: the deadline holds through call()'s race.
      await this.call(
        `inspecting image ${reference}`,
        async () => (await this.client()).getImage(reference).inspect(),
        options,
      );
      return true;
    } catch (error) {
      if (error instanceof DockerError && error.statusCode === 404) return false;
      throw error;
    }
  }

  /**
   * Creates and starts a container. If anything after the create fails (a port already
   * taken, a missing network), the half-made container is removed again.
   */
  async createAndStart(spec: ContainerSpec, options: CallOptions = {}): Promise<StartedContainer> {
    const create = containerCreateOptions(spec);
    const moreNetworks = spec.networks?.slice(1) ?? [];
    const created = await this.call(
      `creating container ${spec.name}`,
      async (signal) => (await this.client()).createContainer({ ...create, abortSignal: signal }),
      options,
    );
    try {
      for (const network of moreNetworks) {
        await this.call(
          `connecting container ${spec.name} to network ${network}`,
          async () =>
            (await this.client()).getNetwork(network).connect({
              Container: created.id,
              ...(spec.networkAliases && { EndpointConfig: { Aliases: [...spec.networkAliases] } }),
            }),
          options,
        );
      }
      await this.call(`starting container ${spec.name}`, (signal) => created.start({ abortSignal: signal }), options);
      const inspected = await this.call(
        `inspecting container ${spec.name}`,
        (signal) => created.inspect({ abortSignal: signal }),
        options,
      );
      return { id: created.id, name: spec.name, ports: publishedPorts(inspected.NetworkSettings.Ports) };
    } catch (error) {
      await this.call(`removing container ${spec.name}`, () => created.remove({ force: true, v: true })).catch(
        () => {},
      );
      throw error;
    }
  }

  /**
   * Creates and starts a new container configured as an existing one is: the same image
   * (by id: exactly what runs now, even if its tag moved since), command, environment,
   * mounts, networks, limits and restart policy, with `labels` over its own. Published ports
   * keep their container port and address but get host ports the engine picks: the original
   * still holds its own. A restart's fresh colour of the same release.
   */
  async cloneContainer(
    nameOrId: string,
    name: string,
    labels: Readonly<Record<string, string>>,
    options: CallOptions = {},
  ): Promise<StartedContainer> {
    checkContainerName(nameOrId);
    checkContainerName(name);
    const engine = await this.client();
    const info = await this.call(
      `inspecting container ${nameOrId}`,
      (signal) => engine.getContainer(nameOrId).inspect({ abortSignal: signal }),
      options,
    );
    const host = info.HostConfig;
    const portBindings: Docker.PortMap = {};
    for (const [key, bindings] of Object.entries(host.PortBindings ?? {})) {
      portBindings[key] = ((bindings as { HostIp?: string }[] | null) ?? []).map((binding) => ({
        HostIp: binding.HostIp ?? "",
        HostPort: "",
      }));
    }
    const networkMode = host.NetworkMode ?? "default";
    const moreNetworks = Object.keys(info.NetworkSettings.Networks ?? {}).filter(
      (network) => network !== networkMode && !(networkMode === "default" && network === "bridge"),
    );
    const created = await this.call(
      `creating container ${name}`,
      (signal) =>
        engine.createContainer({
          name,
          Image: info.Image,
          Cmd: info.Config.Cmd,
          Entrypoint: info.Config.Entrypoint,
          Env: info.Config.Env,
          WorkingDir: info.Config.WorkingDir,
          User: info.Config.User,
          ExposedPorts: info.Config.ExposedPorts,
          Labels: { ...(info.Config.Labels ?? {}), ...labels },
          HostConfig: {
            PortBindings: portBindings,
            Binds: host.Binds ?? undefined,
            Mounts: host.Mounts ?? undefined,
            NanoCpus: host.NanoCpus,
            Memory: host.Memory,
            RestartPolicy: host.RestartPolicy,
            NetworkMode: networkMode,
          },
          abortSignal: signal,
        } as Docker.ContainerCreateOptions),
      options,
    );
    try {
      for (const network of moreNetworks) {
        await this.call(
          `connecting container ${name} to network ${network}`,
          () => engine.getNetwork(network).connect({ Container: created.id }),
          options,
        );
      }
      await this.call(`starting container ${name}`, (signal) => created.start({ abortSignal: signal }), options);
      const inspected = await this.call(
        `inspecting container ${name}`,
        (signal) => created.inspect({ abortSignal: signal }),
        options,
      );
      return { id: created.id, name, ports: publishedPorts(inspected.NetworkSettings.Ports) };
    } catch (error) {
      await this.call(`removing container ${name}`, () => created.remove({ force: true, v: true })).catch(() => {});
      throw error;
    }
  }

  /** The container's state; undefined when there is no such container. */
  async inspectContainer(nameOrId: string, options: CallOptions = {}): Promise<ContainerStatus | undefined> {
    checkContainerName(nameOrId);
    try {
      const info = await this.call(
        `inspecting container ${nameOrId}`,
        async (signal) => (await this.client()).getContainer(nameOrId).inspect({ abortSignal: signal }),
        options,
      );
      return {
        id: info.Id,
        name: info.Name.replace(/^\//, ""),
        image: info.Config.Image,
        running: info.State.Running,
        restarting: info.State.Restarting,
        restartCount: info.RestartCount,
        exitCode: info.State.ExitCode,
        status: info.State.Status,
        error: info.State.Error,
        oomKilled: info.State.OOMKilled === true,
        labels: info.Config.Labels ?? {},
        ...(info.State.Health?.Status !== undefined && { health: info.State.Health.Status }),
      };
    } catch (error) {
      if (error instanceof DockerError && error.statusCode === 404) return undefined;
      throw error;
    }
  }

  /**
   * Stops (SIGTERM, then SIGKILL after `stopTimeoutSeconds`) and removes a container.
   * Anonymous volumes are kept: their data stays on disk, recoverable, rather than being
   * deleted by a redeploy (`docker volume prune` clears them). Returns false when there
   * was no such container.
   */
  async stopAndRemove(nameOrId: string, options: CallOptions & { stopTimeoutSeconds?: number } = {}): Promise<boolean> {
    // Already gone is fine here: the remove below says so.
    await this.stopContainer(nameOrId, { ...options, missingIsStopped: true });
    const container = (await this.client()).getContainer(nameOrId);
    try {
      await this.call(`removing container ${nameOrId}`, () => container.remove({ force: true }), options);
      return true;
    } catch (error) {
      if (error instanceof DockerError && error.statusCode === 404) return false;
      throw error;
    }
  }

  /**
   * Stops a container (SIGTERM, then SIGKILL after `stopTimeoutSeconds`) and keeps it, so
   * it can be started again (a retained blue/green colour). Already stopped is fine.
   */
  async stopContainer(
    nameOrId: string,
    options: CallOptions & { stopTimeoutSeconds?: number; missingIsStopped?: boolean } = {},
  ): Promise<void> {
    checkContainerName(nameOrId);
    const stopTimeoutSeconds = options.stopTimeoutSeconds ?? 10;
    const container = (await this.client()).getContainer(nameOrId);
    try {
      await this.call(
        `stopping container ${nameOrId}`,
        (signal) => container.stop({ t: stopTimeoutSeconds, abortSignal: signal }),
        { signal: options.signal, timeoutMs: stopTimeoutSeconds * 1000 + this.callTimeoutMs },
      );
    } catch (error) {
      // 304: already stopped; 404: no such container (fine only when asked).
      const fine =
        error instanceof DockerError &&
        (error.statusCode === 304 || (error.statusCode === 404 && options.missingIsStopped));
      if (!fine) throw error;
    }
  }

  /** Starts an existing container (a no-op when it runs) and returns its published ports. */
  async startContainer(nameOrId: string, options: CallOptions = {}): Promise<StartedContainer> {
    checkContainerName(nameOrId);
    const container = (await this.client()).getContainer(nameOrId);
    try {
      await this.call(`starting container ${nameOrId}`, (signal) => container.start({ abortSignal: signal }), options);
    } catch (error) {
      if (!(error instanceof DockerError && error.statusCode === 304)) throw error;
    }
    const inspected = await this.call(
      `inspecting container ${nameOrId}`,
      (signal) => container.inspect({ abortSignal: signal }),
      options,
    );
    return {
      id: inspected.Id,
      name: inspected.Name.replace(/^\//, ""),
      ports: publishedPorts(inspected.NetworkSettings.Ports),
    };
  }

  /**
   * Creates a network unless one of that name exists; returns whether it was created. A
   * network of that name that lacks `labels` (someone else's) is refused: joining it would
   * mix applications. The one way Ferry makes networks: a Compose application's (kept
   * across deployments) and an isolated test group's (which must be new, and says so when
   * this returns false).
   */
  async ensureNetwork(
    name: string,
    settings: { labels: Readonly<Record<string, string>>; driver?: string | undefined; internal?: boolean },
    options: CallOptions = {},
  ): Promise<boolean> {
    if (!networkNamePattern.test(name)) throw new InputError(`'${name.slice(0, 200)}' is not a network name`);
    return this.ensureOwnResource(
      `network ${name}`,
      settings.labels,
      (engine) => engine.getNetwork(name).inspect(),
      (engine, signal) =>
        engine.createNetwork({
          Name: name,
          CheckDuplicate: true,
          Labels: { ...settings.labels },
          ...(settings.driver !== undefined && { Driver: settings.driver }),
          ...(settings.internal && { Internal: true }),
          abortSignal: signal,
        } as Docker.NetworkCreateOptions),
      options,
    );
  }

  /** Creates a named volume unless it exists (refusing someone else's, as ensureNetwork); whether it was created. */
  async ensureVolume(
    name: string,
    settings: { labels: Readonly<Record<string, string>>; driver?: string | undefined },
    options: CallOptions = {},
  ): Promise<boolean> {
    if (!volumeNamePattern.test(name)) throw new InputError(`'${name.slice(0, 200)}' is not a volume name`);
    return this.ensureOwnResource(
      `volume ${name}`,
      settings.labels,
      (engine) => engine.getVolume(name).inspect(),
      (engine, signal) =>
        engine.createVolume({
          Name: name,
          Labels: { ...settings.labels },
          ...(settings.driver !== undefined && { Driver: settings.driver }),
          abortSignal: signal,
        } as Docker.VolumeCreateOptions),
      options,
    );
  }

  /**
   * What ensureNetwork and ensureVolume share: checks the labels, then creates the resource
   * (`what`: "network x") unless it exists; an existing one must carry every label.
   */
  private async ensureOwnResource(
    what: string,
    labels: Readonly<Record<string, string>>,
    inspect: (engine: Docker) => Promise<{ Labels?: Record<string, string> | null }>,
    create: (engine: Docker, signal: AbortSignal) => Promise<unknown>,
    options: CallOptions,
  ): Promise<boolean> {
    for (const [key, value] of Object.entries(labels)) checkLabel(key, value);
    const engine = await this.client();
    const existing = await this.inspectResource(what, () => inspect(engine), options);
    if (existing) {
      checkOwnLabels(what, existing.Labels, labels);
      return false;
    }
    await this.call(`creating ${what}`, (signal) => create(engine, signal), options);
    return true;
  }

  /** Networks carrying the label `label=value`. */
  async listNetworksByLabel(label: string, value: string, options: CallOptions = {}): Promise<EngineResource[]> {
    checkLabel(label, value);
    const networks = await this.call(
      `listing networks labelled ${label}=${value}`,
      async (signal) =>
        (await this.client()).listNetworks({
          filters: { label: [`${label}=${value}`] },
          abortSignal: signal,
        } as Docker.NetworkListOptions),
      options,
    );
    return networks.map((network) => ({ id: network.Id, name: network.Name, labels: network.Labels ?? {} }));
  }

  /** Volumes carrying the label `label=value`. */
  async listVolumesByLabel(label: string, value: string, options: CallOptions = {}): Promise<EngineResource[]> {
    checkLabel(label, value);
    const answer = await this.call(
      `listing volumes labelled ${label}=${value}`,
      async (signal) =>
        (await this.client()).listVolumes({
          filters: { label: [`${label}=${value}`] },
          abortSignal: signal,
        } as Docker.VolumeListOptions),
      options,
    );
    return (answer.Volumes ?? []).map((volume) => ({
      id: volume.Name,
      name: volume.Name,
      labels: volume.Labels ?? {},
    }));
  }

  /**
   * Removes a network by name or id (gone already is fine); returns whether it was removed.
   * `leaveInUse`: one a container still uses is left (false) rather than an error.
   */
  async removeNetwork(nameOrId: string, options: CallOptions & { leaveInUse?: boolean } = {}): Promise<boolean> {
    if (!networkNamePattern.test(nameOrId)) throw new InputError(`'${nameOrId.slice(0, 200)}' is not a network name`);
    const engine = await this.client();
    // The engine answers 403 for a network with active endpoints.
    return this.removeResource(`network ${nameOrId}`, () => engine.getNetwork(nameOrId).remove(), options, 403);
  }

  /**
   * Removes a volume and its data (gone already is fine); returns whether it was removed.
   * `leaveInUse`: one a container still mounts is left (false) rather than an error.
   */
  async removeVolume(name: string, options: CallOptions & { leaveInUse?: boolean } = {}): Promise<boolean> {
    if (!volumeNamePattern.test(name)) throw new InputError(`'${name.slice(0, 200)}' is not a volume name`);
    const engine = await this.client();
    // The engine answers 409 for a volume a container mounts.
    return this.removeResource(`volume ${name}`, () => engine.getVolume(name).remove(), options, 409);
  }

  private async removeResource(
    what: string,
    remove: () => Promise<unknown>,
    options: CallOptions & { leaveInUse?: boolean },
    inUseStatus: number,
  ): Promise<boolean> {
    try {
      await this.call(`removing ${what}`, remove, options);
      return true;
    } catch (error) {
      if (!(error instanceof DockerError)) throw error;
      if (error.statusCode === 404 || (options.leaveInUse && error.statusCode === inUseStatus)) return false;
      throw error;
    }
  }

  /** The engine's answer for a network or volume; undefined when there is none of that name. */
  private async inspectResource<T>(
    what: string,
    inspect: () => Promise<T>,
    options: CallOptions,
  ): Promise<T | undefined> {
    try {
      return await this.call(`inspecting ${what}`, inspect, options);
    } catch (error) {
      if (error instanceof DockerError && error.statusCode === 404) return undefined;
      throw error;
    }
  }

  /** The engine's version ("24.0.9"): the target health check asks it, and so learns the engine answers. */
  async engineVersion(options: CallOptions = {}): Promise<string> {
    const version = await this.call(
      "asking the Docker engine its version",
      // dockerode takes no signal here: call() stops waiting at the deadline all the same.
      async () => (await this.client()).version(),
      options,
    );
    return String(version.Version);
  }

  /** Containers, running or not, carrying the label `label=value`. */
  async listByLabel(label: string, value: string, options: CallOptions = {}): Promise<ContainerSummary[]> {
    checkLabel(label, value);
    const containers = await this.call(
      `listing containers labelled ${label}=${value}`,
      async (signal) =>
        (await this.client()).listContainers({
          all: true,
          filters: { label: [`${label}=${value}`] },
          abortSignal: signal,
        }),
      options,
    );
    return containers.map((container) => ({
      id: container.Id,
      name: (container.Names[0] ?? container.Id).replace(/^\//, ""),
      state: container.State,
      labels: container.Labels ?? {},
      created: container.Created,
    }));
  }

  /**
   * Removes (killing first) every container labelled `label=value`, with its anonymous
   * volumes: this is clean-up of what one run created. Returns the names removed.
   */
  async removeByLabel(
    label: string,
    value: string,
    options: CallOptions & { keep?: (container: ContainerSummary) => boolean } = {},
  ): Promise<string[]> {
    const removed: string[] = [];
    for (const container of await this.listByLabel(label, value, options)) {
      if (options.keep?.(container)) continue;
      try {
        await this.call(
          `removing container ${container.name}`,
          async () => (await this.client()).getContainer(container.id).remove({ force: true, v: true }),
          options,
        );
        removed.push(container.name);
      } catch (error) {
        // Removed by someone else in between: the goal is reached.
        if (!(error instanceof DockerError && error.statusCode === 404)) throw error;
      }
    }
    return removed;
  }

  /**
   * Waits until a container stops (at most `timeoutMs`), then says how it ended: its exit
   * code and whether the kernel killed it for its memory limit. Undefined: still running at
   * the deadline.
   */
  async waitForExit(
    nameOrId: string,
    timeoutMs: number,
    options: { signal?: AbortSignal | undefined } = {},
  ): Promise<{ exitCode: number; oomKilled: boolean } | undefined> {
    checkContainerName(nameOrId);
    const deadline = Date.now() + timeoutMs;
    // Polling the state rather than holding a /wait request open: the deadline and a
    // cancel end it at once, and no connection stays open to a remote engine meanwhile.
    for (;;) {
      const status = await this.inspectContainer(nameOrId, options);
      if (!status) throw new DockerError(`container ${nameOrId} was removed while it ran`, 404);
      if (!status.running && status.status !== "created") {
        return { exitCode: status.exitCode, oomKilled: status.oomKilled };
      }
      const remaining = deadline - Date.now();
      if (remaining <= 0) return undefined;
      await new Promise<void>((resolve, reject) => {
        const timer = setTimeout(resolve, Math.min(250, remaining));
        options.signal?.addEventListener(
          "abort",
          () => {
            clearTimeout(timer);
            reject(options.signal?.reason);
          },
          { once: true },
        );
      });
    }
  }

  /**
   * Removes the networks and volumes labelled `label=value` (what containers leave beside
   * them). A network a container still uses, or a volume one still mounts, is left (and not
   * named): the containers are removed first by whoever calls this. Returns what was removed.
   */
  async removeResourcesByLabel(label: string, value: string, options: CallOptions = {}): Promise<string[]> {
    const removed: string[] = [];
    for (const network of await this.listNetworksByLabel(label, value, options)) {
      if (await this.removeNetwork(network.id, { ...options, leaveInUse: true }))
        removed.push(`network ${network.name}`);
    }
    for (const volume of await this.listVolumesByLabel(label, value, options)) {
      if (await this.removeVolume(volume.name, { ...options, leaveInUse: true })) removed.push(`volume ${volume.name}`);
    }
    return removed;
  }

  /** The last `lines` lines of a container's stdout and stderr, interleaved as written. */
  async logTail(nameOrId: string, lines: number, options: CallOptions = {}): Promise<string[]> {
    checkContainerName(nameOrId);
    const info = await this.call(
      `inspecting container ${nameOrId}`,
      async (signal) => (await this.client()).getContainer(nameOrId).inspect({ abortSignal: signal }),
      options,
    );
    const engine = await this.client();
    const text = await this.call(
      `reading the log of container ${nameOrId}`,
      (signal) =>
        new Promise<string>((resolve, reject) => {
          engine.modem.dial(
            {
              path: `/containers/${info.Id}/logs?`,
              method: "GET",
              // follow=false: the stream ends after the existing lines.
              options: { stdout: true, stderr: true, follow: false, tail: String(Math.max(1, Math.floor(lines))) },
              isStream: true,
              statusCodes: { 200: true, 404: "no such container", 500: "server error" },
              abortSignal: signal,
            } as Parameters<Docker["modem"]["dial"]>[0],
            (error, stream) => {
              if (error) {
                reject(error);
                return;
              }
              readLogStream(stream as NodeJS.ReadableStream, !info.Config.Tty, MAX_LOG_BYTES, signal).then(
                resolve,
                reject,
              );
            },
          );
        }),
      options,
    );
    return text.replace(/\n$/, "").split(/\r?\n/).slice(-lines);
  }

  /**
   * Runs a command (argv) in a running container (`docker exec`), streaming its output by
   * line; env values travel in the API request, never on a command line. The engine has no
   * call to stop an exec: on timeout or abort the output stream is closed and the command is
   * reported killed, though it may still be running in the container.
   */
  async exec(
    nameOrId: string,
    spec: {
      command: readonly string[];
      env: Readonly<Record<string, string>>;
      user?: string | undefined;
      workingDir?: string | undefined;
      onLine(stream: "stdout" | "stderr", text: string, cut: boolean): void;
    },
    options: CallOptions & { timeoutMs: number },
  ): Promise<{ exitCode: number | null; timedOut: boolean }> {
    checkContainerName(nameOrId);
    const engine = await this.client();
    const execution = await this.call(
      `starting a command in container ${nameOrId}`,
      () =>
        engine.getContainer(nameOrId).exec({
          Cmd: [...spec.command],
          Env: Object.entries(spec.env).map(([name, value]) => `${name}=${value}`),
          AttachStdout: true,
          AttachStderr: true,
          Tty: false,
          ...(spec.user !== undefined && { User: spec.user }),
          ...(spec.workingDir !== undefined && { WorkingDir: spec.workingDir }),
        }),
      options,
    );
    const stream = (await this.call(
      `attaching to a command in container ${nameOrId}`,
      () => execution.start({ hijack: true, stdin: false }),
      options,
    )) as NodeJS.ReadableStream & { destroy(): void };
    const stdout = new LineSplitter((text, cut) => spec.onLine("stdout", text, cut));
    const stderr = new LineSplitter((text, cut) => spec.onLine("stderr", text, cut));
    const timeout = AbortSignal.timeout(options.timeoutMs);
    const signal = options.signal ? AbortSignal.any([options.signal, timeout]) : timeout;
    const ended = await new Promise<boolean>((resolve, reject) => {
      const toText = (target: LineSplitter) =>
        new Writable({
          write(chunk: Buffer, _encoding, done) {
            target.push(chunk.toString("utf8"));
            done();
          },
        });
      engine.modem.demuxStream(stream, toText(stdout), toText(stderr));
      const onAbort = () => {
        stream.destroy();
        resolve(false);
      };
      signal.addEventListener("abort", onAbort, { once: true });
      stream.on("end", () => {
        signal.removeEventListener("abort", onAbort);
        resolve(true);
      });
      stream.on("close", () => {
        signal.removeEventListener("abort", onAbort);
        resolve(!signal.aborted);
      });
      stream.on("error", (error) => {
        signal.removeEventListener("abort", onAbort);
        if (signal.aborted) resolve(false);
        else reject(toDockerError(`reading a command's output in container ${nameOrId}`, error, this.socketPath));
      });
    });
    stdout.end();
    stderr.end();
    if (!ended) {
      if (options.signal?.aborted) throw options.signal.reason;
      return { exitCode: null, timedOut: true };
    }
    // The output can end a moment before the engine records the exit code.
    for (let attempt = 0; ; attempt += 1) {
      const inspected = await this.call(
        `inspecting a command in container ${nameOrId}`,
        () => execution.inspect(),
        options,
      );
      if (!inspected.Running || attempt >= 100) return { exitCode: inspected.ExitCode ?? null, timedOut: false };
      await new Promise((resolve) => setTimeout(resolve, 50));
    }
  }

  /**
   * Streams a container's log into `destination`, paced by it (nothing is held but a frame):
   * stdout and stderr interleaved as written, each line with the engine's RFC 3339 time when
   * `timestamps`, the lines since `since` (Unix seconds) and at most the last `tail`. For
   * collecting logs into an archive; logTail is the bounded read for messages.
   */
  async copyLogs(
    nameOrId: string,
    options: { since?: number | undefined; tail: number; timestamps: boolean; signal?: AbortSignal | undefined },
    destination: Writable,
  ): Promise<void> {
    checkContainerName(nameOrId);
    const info = await this.call(
      `inspecting container ${nameOrId}`,
      async (signal) => (await this.client()).getContainer(nameOrId).inspect({ abortSignal: signal }),
      options,
    );
    const engine = await this.client();
    await this.call(
      `reading the log of container ${nameOrId}`,
      (signal) =>
        new Promise<void>((resolve, reject) => {
          engine.modem.dial(
            {
              path: `/containers/${info.Id}/logs?`,
              method: "GET",
              options: {
                stdout: true,
                stderr: true,
                follow: false,
                timestamps: options.timestamps,
                tail: String(Math.max(1, Math.floor(options.tail))),
                ...(options.since !== undefined && { since: String(Math.floor(options.since)) }),
              },
              isStream: true,
              statusCodes: { 200: true, 404: "no such container", 500: "server error" },
              abortSignal: signal,
            } as Parameters<Docker["modem"]["dial"]>[0],
            (error, stream) => {
              if (error) {
                reject(error);
                return;
              }
              const source = stream as NodeJS.ReadableStream;
              // end: false: the destination (an archive's spool file) is the caller's to close.
              const copied = info.Config.Tty
                ? pipeline(source, destination, { signal, end: false })
                : pipeline(source, logFrames(), destination, { signal, end: false });
              copied.then(resolve, reject);
            },
          );
        }),
      { ...options, timeoutMs: DEFAULT_PULL_TIMEOUT_MS },
    );
  }

  /**
   * Runs one API call with a deadline and the caller's signal. The race makes the deadline
   * hold even where the library does not pass the signal on to the request.
   */
  private async call<T>(what: string, operation: (signal: AbortSignal) => Promise<T>, options: CallOptions = {}) {
    options.signal?.throwIfAborted();
    const timeoutMs = options.timeoutMs ?? this.callTimeoutMs;
    const timeout = AbortSignal.timeout(timeoutMs);
    const signal = options.signal ? AbortSignal.any([options.signal, timeout]) : timeout;
    let onAbort = () => {};
    const aborted = new Promise<never>((_, reject) => {
      onAbort = () => reject(signal.reason);
      signal.addEventListener("abort", onAbort, { once: true });
    });
    try {
      return await Promise.race([operation(signal), aborted]);
    } catch (error) {
      if (options.signal?.aborted) throw options.signal.reason;
      if (timeout.aborted) throw new DockerError(`${what} did not finish within ${formatSeconds(timeoutMs)}`);
      throw toDockerError(what, error, this.socketPath);
    } finally {
      signal.removeEventListener("abort", onAbort);
    }
  }
}

/**
 * The HTTP origin at which a container's TCP port is published ("http://127.0.0.1:32768");
 * a port published on every address is reached on loopback. Undefined when not published.
 */
export function publishedOrigin(ports: readonly PublishedPort[], containerPort: number): string | undefined {
  const published = ports.find((entry) => entry.containerPort === containerPort && entry.protocol === "tcp");
  if (!published) return undefined;
  const host = published.hostIp === "0.0.0.0" || published.hostIp === "" ? "127.0.0.1" : published.hostIp;
  return `http://${host.includes(":") ? `[${host}]` : host}:${published.hostPort}`;
}

/** One runtime per socket: a process talks to one engine (DOCKER_HOST), tests to others. */
const sharedRuntimes = new Map<string, DockerRuntime>();

/** The engine of the server's own host (its socket, default /var/run/docker.sock), shared by every step that runs there. */
export function localDocker(socketPath: string = DEFAULT_SOCKET_PATH): DockerRuntime {
  let runtime = sharedRuntimes.get(socketPath);
  if (!runtime) {
    runtime = new DockerRuntime({ socketPath });
    sharedRuntimes.set(socketPath, runtime);
  }
  return runtime;
}

/**
 * The socket of this host's Docker engine that DOCKER_HOST names: `unix:///path` (absolute),
 * or /var/run/docker.sock when it is unset. Anything else (tcp://, ssh://, npipe://, a bare
 * path) is refused rather than ignored: the server would otherwise use another engine than
 * the one the user meant. A remote engine is a target of its own (ssh or agent transport).
 */
export function dockerSocketOf(dockerHost: string | undefined): string {
  if (dockerHost === undefined || dockerHost === "") return DEFAULT_SOCKET_PATH;
  const path = dockerHost.startsWith("unix://") ? dockerHost.slice("unix://".length) : undefined;
  if (path === undefined) {
    throw new InputError(
      `DOCKER_HOST: ${JSON.stringify(dockerHost)} is not a unix socket; Ferry reaches this host's Docker engine only through one, e.g. unix:///var/run/docker.sock (unset it for that default). A remote engine is a target of its own, reached over ssh or by an agent (docs/targets.md)`,
      [{ pointer: "/DOCKER_HOST", detail: "must be unix:///absolute/path/to/docker.sock" }],
    );
  }
  if (!path.startsWith("/") || path.includes("\0")) {
    throw new InputError(
      `DOCKER_HOST: ${JSON.stringify(dockerHost)} must name the socket by its absolute path, e.g. unix:///var/run/docker.sock`,
      [{ pointer: "/DOCKER_HOST", detail: "must be unix:///absolute/path/to/docker.sock" }],
    );
  }
  return path;
}

/**
 * Removes every container an unfinished task created (label ferry.task=<taskId>), for the
 * deployment task's cleanup after a cancel or an interrupted run, but those `keep` says
 * to keep (a blue/green colour that went live before the task stopped). Returns the names
 * removed.
 */
export function removeTaskContainers(
  taskId: string,
  options: { runtime?: DockerRuntime; keep?: (container: ContainerSummary) => boolean } = {},
): Promise<string[]> {
  return (options.runtime ?? localDocker()).removeByLabel(
    "ferry.task",
    taskId,
    options.keep ? { keep: options.keep } : {},
  );
}

export function isContainerName(name: string): boolean {
  return containerNamePattern.test(name);
}

function isEnvName(name: string): boolean {
  return envNamePattern.test(name);
}

function checkContainerName(name: string): void {
  if (!isContainerName(name))
    throw new InputError(`'${name.slice(0, 200)}' is not a container name: ${CONTAINER_NAME_HINT}`);
}

function checkLabel(key: string, value: string): void {
  if (!labelKeyPattern.test(key)) {
    throw new InputError(`'${key.slice(0, 200)}' is not a label key: use lowercase letters, digits, '.', '_' and '-'`);
  }
  if (value.length > 4096 || value.includes("\0"))
    throw new InputError(`the value of label ${key} is too long or has a NUL`);
}

/** Refuses an existing network or volume that does not carry every one of `labels` (it is not this application's). */
function checkOwnLabels(
  what: string,
  existing: Record<string, string> | null | undefined,
  labels: Readonly<Record<string, string>>,
): void {
  const mismatch = Object.entries(labels).find(([key, value]) => existing?.[key] !== value);
  if (mismatch) {
    throw new InputError(
      `${what} exists but was not made by Ferry for this application (its label ${mismatch[0]} differs); remove or rename it`,
    );
  }
}

function checkNoNul(what: string, value: string): void {
  if (value.includes("\0")) throw new InputError(`${what} contains a NUL character`);
}

/** The create request for a spec, after checking every name and number in it. */
function containerCreateOptions(spec: ContainerSpec): Docker.ContainerCreateOptions {
  checkContainerName(spec.name);
  const image = formatImageReference(parseImageReference(spec.image));
  const env = Object.entries(spec.env ?? {}).map(([name, value]) => {
    if (!isEnvName(name))
      throw new InputError(`'${name.slice(0, 200)}' is not an environment variable name: ${ENV_NAME_HINT}`);
    checkNoNul(`environment variable ${name}`, value);
    return `${name}=${value}`;
  });
  const labels: Record<string, string> = {};
  for (const [key, value] of Object.entries(spec.labels ?? {})) {
    checkLabel(key, value);
    labels[key] = value;
  }
  const exposedPorts: Record<string, Record<string, never>> = {};
  const portBindings: Record<string, { HostIp: string; HostPort: string }[]> = {};
  for (const port of spec.ports ?? []) {
    const protocol = port.protocol ?? "tcp";
    checkPort("container port", port.containerPort);
    if (port.hostPort !== undefined) checkPort("host port", port.hostPort);
    const hostIp = port.hostIp ?? "127.0.0.1";
    if (isIP(hostIp) === 0) throw new InputError(`'${hostIp.slice(0, 100)}' is not an IP address to publish a port on`);
    const key = `${port.containerPort}/${protocol}`;
    exposedPorts[key] = {};
    const bindings = portBindings[key] ?? [];
    bindings.push({ HostIp: hostIp, HostPort: port.hostPort === undefined ? "" : String(port.hostPort) });
    portBindings[key] = bindings;
  }
  const mounts = (spec.volumes ?? []).map((volume): Docker.MountSettings => {
    checkNoNul("a volume path", volume.source + volume.target);
    if (!isNormalisedAbsolutePath(volume.target)) {
      throw new InputError(`volume target '${volume.target.slice(0, 200)}' must be a normalised absolute path`);
    }
    const bind = volume.source.startsWith("/");
    if (bind && !isNormalisedAbsolutePath(volume.source)) {
      throw new InputError(`volume source '${volume.source.slice(0, 200)}' must be a normalised absolute path`);
    }
    if (!bind && !volumeNamePattern.test(volume.source)) {
      throw new InputError(
        `volume source '${volume.source.slice(0, 200)}' must be an absolute host path or a volume name (letters, digits, '_', '.', '-')`,
      );
    }
    for (const [key, value] of Object.entries(volume.labels ?? {})) checkLabel(key, value);
    return {
      Type: bind ? "bind" : "volume",
      Source: volume.source,
      Target: volume.target,
      ReadOnly: volume.readOnly ?? false,
      // dockerode's type insists on NoCopy and DriverConfig, which the engine does not: left out, they are its defaults.
      ...(!bind &&
        volume.labels && {
          VolumeOptions: { Labels: { ...volume.labels } } as Docker.MountSettings["VolumeOptions"],
        }),
    };
  });
  for (const network of spec.networks ?? []) {
    if (!networkNamePattern.test(network)) throw new InputError(`'${network.slice(0, 200)}' is not a network name`);
  }
  for (const argument of [...(spec.command ?? []), ...(spec.entrypoint ?? []), ...(spec.healthcheck?.test ?? [])]) {
    checkNoNul("a command argument", argument);
  }
  const firstNetwork = spec.networks?.[0];
  if (spec.cpus !== undefined && !(spec.cpus > 0 && spec.cpus <= 1024)) throw new InputError("cpus must be above 0");
  if (spec.memoryMb !== undefined && !(Number.isInteger(spec.memoryMb) && spec.memoryMb >= 6)) {
    throw new InputError("memoryMb must be a whole number of at least 6 (the engine's minimum)");
  }
  const nanoseconds = (milliseconds: number | undefined) =>
    milliseconds === undefined ? undefined : Math.round(milliseconds * 1e6);
  if (spec.pidsLimit !== undefined && !(Number.isInteger(spec.pidsLimit) && spec.pidsLimit >= 1)) {
    throw new InputError("pidsLimit must be a whole number of at least 1");
  }
  const aliases = spec.networkAliases ?? [];
  for (const alias of aliases) {
    if (!containerNamePattern.test(alias)) throw new InputError(`'${alias.slice(0, 200)}' is not a network alias`);
  }
  return {
    name: spec.name,
    Image: image,
    Env: env,
    Labels: labels,
    ExposedPorts: exposedPorts,
    ...(spec.command !== undefined && { Cmd: [...spec.command] }),
    ...(spec.entrypoint !== undefined && { Entrypoint: [...spec.entrypoint] }),
    ...(spec.workingDir !== undefined && { WorkingDir: spec.workingDir }),
    ...(spec.user !== undefined && { User: spec.user }),
    ...(spec.healthcheck !== undefined && {
      Healthcheck: {
        Test: [...spec.healthcheck.test],
        Interval: nanoseconds(spec.healthcheck.intervalMs),
        Timeout: nanoseconds(spec.healthcheck.timeoutMs),
        Retries: spec.healthcheck.retries,
        StartPeriod: nanoseconds(spec.healthcheck.startPeriodMs),
      },
    }),
    ...(firstNetwork !== undefined &&
      aliases.length > 0 && { NetworkingConfig: { EndpointsConfig: { [firstNetwork]: { Aliases: [...aliases] } } } }),
    HostConfig: {
      PortBindings: portBindings,
      Mounts: mounts,
      ...(spec.networks?.[0] !== undefined && { NetworkMode: spec.networks[0] }),
      ...(spec.cpus !== undefined && { NanoCpus: Math.round(spec.cpus * 1e9) }),
      ...(spec.memoryMb !== undefined && { Memory: spec.memoryMb * 1024 * 1024 }),
      ...(spec.memoryMb !== undefined && spec.noSwap && { MemorySwap: spec.memoryMb * 1024 * 1024 }),
      ...(spec.pidsLimit !== undefined && { PidsLimit: spec.pidsLimit }),
      RestartPolicy: { Name: spec.restartPolicy ?? "unless-stopped" },
    },
  };
}

/** "/srv/data" or "/srv/data/"; not "relative", "/srv/../etc" or "/srv/./data". */
function isNormalisedAbsolutePath(path: string): boolean {
  const withoutTrailingSlash = (text: string) => text.replace(/(.)\/+$/, "$1");
  return isAbsolute(path) && withoutTrailingSlash(normalize(path)) === withoutTrailingSlash(path);
}

function checkPort(what: string, port: number): void {
  if (!(Number.isInteger(port) && port >= 1 && port <= 65535))
    throw new InputError(`${what} ${port} is not from 1 to 65535`);
}

function publishedPorts(ports: Docker.PortMap | undefined): PublishedPort[] {
  const published: PublishedPort[] = [];
  for (const [key, bindings] of Object.entries(ports ?? {})) {
    const [containerPort = "", protocol = "tcp"] = key.split("/");
    for (const binding of bindings ?? []) {
      published.push({
        containerPort: Number(containerPort),
        protocol,
        hostIp: binding.HostIp ?? "",
        hostPort: Number(binding.HostPort),
      });
    }
  }
  return published;
}

/**
 * Reads a pull's JSON progress stream to its end. The engine reports a failed pull
 * (unknown manifest, unauthorized) as an `error` line in a 200 response, not as a status.
 */
function readPullStream(
  stream: NodeJS.ReadableStream,
  signal: AbortSignal,
  onStatus: ((line: string) => void) | undefined,
): Promise<void> {
  return new Promise<void>((resolve, reject) => {
    let failure: string | undefined;
    const onAbort = () => {
      (stream as NodeJS.ReadableStream & { destroy?: () => void }).destroy?.();
      reject(signal.reason);
    };
    signal.addEventListener("abort", onAbort, { once: true });
    const handle = (line: string) => {
      if (line.trim() === "") return;
      let event: { status?: string; error?: string; progressDetail?: unknown; id?: string };
      try {
        event = JSON.parse(line);
      } catch {
        return;
      }
      if (event.error) failure ??= event.error;
      // Per-layer progress lines have an id; the lines worth a log line have none.
      else if (event.status && event.id === undefined) onStatus?.(event.status);
      else if (event.status && /^(Pull complete|Already exists)$/.test(event.status))
        onStatus?.(`${event.id}: ${event.status}`);
    };
    // The engine's lines are short JSON; one cut at 1 MiB (not JSON any more) is skipped,
    // and splitting does not re-read a long line for every chunk of it.
    const splitter = new LineSplitter((line, cut) => {
      if (!cut) handle(line);
    }, MAX_PULL_LINE_BYTES);
    stream.setEncoding("utf8");
    stream.on("data", (chunk: string) => splitter.push(chunk));
    stream.on("error", (error) => {
      signal.removeEventListener("abort", onAbort);
      reject(error);
    });
    stream.on("end", () => {
      signal.removeEventListener("abort", onAbort);
      splitter.end();
      if (failure !== undefined) reject(new DockerError(failure));
      else resolve();
    });
  });
}

/**
 * Reads a log stream to its end, keeping only the newest `maxBytes` of text. Streams of
 * containers without a TTY are frames (1 byte stream: 1 stdout, 2 stderr; 3 zero bytes;
 * a 4-byte big-endian length; the payload), decoded as they arrive.
 */
/**
 * The payloads of the engine's multiplexed log stream (an 8-byte header per frame: stream,
 * then length) as one byte stream, in order: what a non-TTY container wrote.
 */
function logFrames(): Transform {
  let pending: Buffer = Buffer.alloc(0);
  return new Transform({
    transform(chunk: Buffer, _encoding, callback) {
      pending = pending.length === 0 ? chunk : Buffer.concat([pending, chunk]);
      while (pending.length >= 8) {
        const length = pending.readUInt32BE(4);
        if (pending.length < 8 + length) break;
        this.push(pending.subarray(8, 8 + length));
        pending = pending.subarray(8 + length);
      }
      callback();
    },
  });
}

function readLogStream(
  stream: NodeJS.ReadableStream,
  framed: boolean,
  maxBytes: number,
  signal: AbortSignal,
): Promise<string> {
  return new Promise<string>((resolve, reject) => {
    let pending = Buffer.alloc(0);
    const payloads: Buffer[] = [];
    let size = 0;
    let dropped = false;
    const keep = (payload: Buffer) => {
      payloads.push(payload);
      size += payload.length;
      // Keep only the newest bytes: it is the tail that matters.
      while (size > maxBytes && payloads.length > 1) {
        size -= payloads.shift()?.length ?? 0;
        dropped = true;
      }
    };
    const onAbort = () => {
      (stream as NodeJS.ReadableStream & { destroy?: () => void }).destroy?.();
      reject(signal.reason);
    };
    signal.addEventListener("abort", onAbort, { once: true });
    stream.on("data", (chunk: Buffer) => {
      if (!framed) {
        keep(chunk);
        return;
      }
      pending = Buffer.concat([pending, chunk]);
      while (pending.length >= 8) {
        const length = pending.readUInt32BE(4);
        if (pending.length < 8 + length) break;
        keep(pending.subarray(8, 8 + length));
        pending = pending.subarray(8 + length);
      }
    });
    stream.on("error", (error) => {
      signal.removeEventListener("abort", onAbort);
      reject(error);
    });
    stream.on("end", () => {
      signal.removeEventListener("abort", onAbort);
      const text = Buffer.concat(payloads).toString("utf8");
      // After a drop the first line may have lost its start.
      resolve(dropped ? text.slice(text.indexOf("\n") + 1) : text);
    });
  });
}

/** `socketPath`: the engine's socket (on the target's host), named so a wrong DOCKER_HOST shows. */
function toDockerError(what: string, error: unknown, socketPath: string): DockerError {
  if (error instanceof DockerError) return error;
  const details = error as { statusCode?: number; json?: { message?: string }; message?: string; code?: string };
  if (details.code === "ENOENT" || details.code === "ECONNREFUSED" || details.code === "EACCES") {
    return new DockerError(
      `${what}: cannot reach the Docker engine on ${socketPath} (${details.code}); is dockerd running?`,
      undefined,
      {
        cause: error,
      },
    );
  }
  // docker-modem writes "(HTTP code 404) unexpected - <the engine's message>".
  const message = (details.json?.message ?? details.message ?? String(error)).replace(/^\(HTTP code \d+\) [^-]*- /, "");
  return new DockerError(`${what}: ${message.trim()}`, details.statusCode, { cause: error });
}

function formatSeconds(milliseconds: number): string {
  return `${Math.round(milliseconds / 100) / 10} s`;
}
