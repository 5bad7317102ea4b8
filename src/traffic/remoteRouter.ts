import { callFerryOnHost } from "../transports/hostCommand.js";
import type { Transport } from "../transports/types.js";
import type { HostRouter } from "./hostRouter.js";
import type {
  LiveUpstream,
  RouteMode,
  Router,
  RouterDrainResult,
  RouterSwitchResult,
  RouteSpec,
  TrafficSplit,
  UpstreamTraffic,
} from "./router.js";
import {
  type HostDriverName,
  type HostRouterRequest,
  type HostRouterSettings,
  hostRouterCommand,
  hostRouterModes,
  hostRouterSplits,
} from "./routerHost.js";

/*
 * A router a remote target's host runs itself: the host's nginx (ADR 0039) or a HAProxy Ferry
 * runs there (ADR 0048). Every operation is one `ferry <driver>-router` run on the host
 * through the target's transport, the request on its standard input (routerHost.ts answers
 * it there), as the process runtime's `ferry processes`. Only `Transport.run`, so nothing
 * here knows SSH. The router itself runs on the host, daemonised in a session of its own:
 * traffic there never depends on the server or the connection; one that died is started
 * again from its files by `inUse` (the server's reconciliation) or the next switch.
 */

/** A switch may write files and reload the router (nginx, a new HAProxy route; its own limit is 10 s per step). */
const SWITCH_TIMEOUT_MS = 60_000;
const READ_TIMEOUT_MS = 30_000;

/** Which router the host runs, with what settings, and the ferry program there that drives it. */
export interface RemoteRouterOptions<D extends HostDriverName> {
  readonly driver: D;
  readonly settings: HostRouterSettings<D>;
  /** The ferry program on the host. */
  readonly command: string;
}

class RemoteHostRouter<D extends HostDriverName> implements Router {
  readonly driver: D;
  /** Present when the host's driver splits traffic (HAProxy): canary stages there. */
  readonly split?: (route: string, split: TrafficSplit | null) => Promise<{ readonly switchMs: number }>;
  /** Present when the host's driver has route modes (HAProxy: maintenance). */
  readonly setMode?: (route: string, mode: RouteMode | null) => Promise<void>;
  /** Switches one at a time from this server, as the local drivers do (the host's files are shared). */
  #changes: Promise<unknown> = Promise.resolve();

  constructor(
    private readonly transport: Transport,
    private readonly options: RemoteRouterOptions<D>,
    private readonly targetName: string,
  ) {
    this.driver = options.driver;
    if (hostRouterSplits(options.driver)) {
      this.split = (route, split) => {
        const request = {
          operation: "split",
          route,
          split: split && { upstream: split.upstream, colour: split.colour, weight: split.weight },
        } as const;
        const run = this.#changes.then(() => this.call<{ switchMs: number }>(request, SWITCH_TIMEOUT_MS));
        this.#changes = run.catch(() => undefined);
        return run;
      };
    }
    if (hostRouterModes(options.driver)) {
      this.setMode = async (route, mode) => {
        const request = { operation: "mode", route, mode: mode && { ...mode } } as const;
        const run = this.#changes.then(() => this.call<null>(request, SWITCH_TIMEOUT_MS));
        this.#changes = run.catch(() => undefined);
        await run;
      };
    }
  }

  async live(route: string): Promise<LiveUpstream | undefined> {
    const found = (await this.routes()).find((candidate) => candidate.name === route);
    return found ? { upstream: found.upstream, colour: found.colour } : undefined;
  }

  routes(): Promise<(RouteSpec & LiveUpstream)[]> {
    return this.call({ operation: "routes" }, READ_TIMEOUT_MS);
  }

  switch(route: RouteSpec, target: LiveUpstream): Promise<RouterSwitchResult> {
    const request = {
      operation: "switch",
      route: { name: route.name, host: route.host, pathPrefix: route.pathPrefix },
      target: { upstream: target.upstream, colour: target.colour },
    } as const;
    const run = this.#changes.then(() => this.call<RouterSwitchResult>(request, SWITCH_TIMEOUT_MS));
    this.#changes = run.catch(() => undefined);
    return run;
  }

  drain(upstream: string, deadlineMs: number): Promise<RouterDrainResult> {
    return this.call(
      { operation: "drain", upstream, deadlineMs: Math.max(0, Math.round(deadlineMs)) },
      deadlineMs + READ_TIMEOUT_MS,
    );
  }

  async traffic(): Promise<UpstreamTraffic[] | undefined> {
    return (await this.call<UpstreamTraffic[] | null>({ operation: "traffic" }, READ_TIMEOUT_MS)) ?? undefined;
  }

  /** The router on the host is the data plane and keeps serving: nothing to close here. */
  async close(): Promise<void> {
    await this.#changes;
  }

  /** Whether the host's router has Ferry's routes (it is started again there when it does not run). */
  inUse(): Promise<boolean> {
    return this.call({ operation: "inUse" }, SWITCH_TIMEOUT_MS);
  }

  /** Runs `ferry <driver>-router` on the host with the request on its standard input; its answer's value. */
  private call<T>(
    request: DistributiveOmit<HostRouterRequest<HostRouterSettings<D>>, "settings">,
    timeoutMs: number,
  ): Promise<T> {
    const command = hostRouterCommand(this.options.driver);
    return callFerryOnHost<T>(this.transport, {
      command: this.options.command,
      args: [command],
      request: { ...request, settings: this.options.settings },
      timeoutMs,
      what: `the ${this.options.driver} router on target '${this.targetName}'`,
    });
  }
}

type DistributiveOmit<T, K extends PropertyKey> = T extends unknown ? Omit<T, K> : never;

/**
 * The host's own router. Nothing to connect: it is started by the first switch (or by
 * `inUse`, when its files record routes and none runs), and every operation reads the host's
 * files afresh, so a restarted server or a rebooted host needs nothing remembered.
 */
export function remoteRouterOnHost<D extends HostDriverName>(
  transport: Transport,
  options: RemoteRouterOptions<D>,
  targetName: string,
): HostRouter {
  const router = new RemoteHostRouter(transport, options, targetName);
  return {
    get: async () => router,
    inUse: async () => ((await router.inUse()) ? router : undefined),
    close: () => router.close(),
  };
}
