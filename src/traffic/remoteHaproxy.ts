import type { HaproxyTargetRouter } from "../domain/targets.js";
import { callFerryOnHost } from "../transports/hostCommand.js";
import type { Transport } from "../transports/types.js";
import type { HaproxyHostRequest, HaproxyHostSettings } from "./haproxyHost.js";
import type { HostRouter } from "./hostRouter.js";
import type {
  LiveUpstream,
  Router,
  RouterDrainResult,
  RouterSwitchResult,
  RouteSpec,
  UpstreamTraffic,
} from "./router.js";

/*
 * HAProxy as a remote target's router (docs/decisions/0048-haproxy-router.md): every
 * operation is one `ferry haproxy-router` run on the host through the target's transport,
 * as remoteNginx.ts does for nginx. HAProxy runs on the host, daemonised in a session of its
 * own, so traffic there never depends on the server or the connection; a HAProxy that died
 * is started again from its file by `inUse` (the server's reconciliation) or the next switch.
 */

/** A switch is a runtime API round trip, but a new route reloads HAProxy (its own limit is 10 s per step). */
const SWITCH_TIMEOUT_MS = 60_000;
const READ_TIMEOUT_MS = 30_000;

class RemoteHaproxyRouter implements Router {
  readonly driver = "haproxy";
  readonly #settings: HaproxyHostSettings;
  /** Switches one at a time from this server, as the local driver does. */
  #changes: Promise<unknown> = Promise.resolve();

  constructor(
    private readonly transport: Transport,
    private readonly options: HaproxyTargetRouter,
    private readonly targetName: string,
  ) {
    this.#settings = { binary: options.binary, stateDir: options.stateDir, listen: options.listen };
  }

  async live(route: string): Promise<LiveUpstream | undefined> {
    const found = (await this.routes()).find((candidate) => candidate.name === route);
    return found ? { upstream: found.upstream, colour: found.colour } : undefined;
  }

  routes(): Promise<(RouteSpec & LiveUpstream)[]> {
    return this.call({ operation: "routes", settings: this.#settings }, READ_TIMEOUT_MS);
  }

  switch(route: RouteSpec, target: LiveUpstream): Promise<RouterSwitchResult> {
    const request: HaproxyHostRequest = {
      operation: "switch",
      settings: this.#settings,
      route: { name: route.name, host: route.host, pathPrefix: route.pathPrefix },
      target: { upstream: target.upstream, colour: target.colour },
    };
    const run = this.#changes.then(() => this.call<RouterSwitchResult>(request, SWITCH_TIMEOUT_MS));
    this.#changes = run.catch(() => undefined);
    return run;
  }

  drain(upstream: string, deadlineMs: number): Promise<RouterDrainResult> {
    return this.call(
      { operation: "drain", settings: this.#settings, upstream, deadlineMs: Math.max(0, Math.round(deadlineMs)) },
      deadlineMs + READ_TIMEOUT_MS,
    );
  }

  async traffic(): Promise<UpstreamTraffic[] | undefined> {
    return (
      (await this.call<UpstreamTraffic[] | null>(
        { operation: "traffic", settings: this.#settings },
        READ_TIMEOUT_MS,
      )) ?? undefined
    );
  }

  async close(): Promise<void> {
    await this.#changes;
  }

  /** Whether the host's HAProxy has Ferry's routes (it is started again there when it does not run). */
  inUse(): Promise<boolean> {
    return this.call({ operation: "inUse", settings: this.#settings }, SWITCH_TIMEOUT_MS);
  }

  private call<T>(request: HaproxyHostRequest, timeoutMs: number): Promise<T> {
    return callFerryOnHost<T>(this.transport, {
      command: this.options.command,
      args: ["haproxy-router"],
      request,
      timeoutMs,
      what: `the haproxy router on target '${this.targetName}'`,
    });
  }
}

/** The host's HAProxy as its router; every operation reads the host's file afresh. */
export function haproxyRouterOnHost(
  transport: Transport,
  settings: HaproxyTargetRouter,
  targetName: string,
  _log: (message: string) => void,
): HostRouter {
  const router = new RemoteHaproxyRouter(transport, settings, targetName);
  return {
    get: async () => router,
    inUse: async () => ((await router.inUse()) ? router : undefined),
    close: () => router.close(),
  };
}
