import type { NginxTargetRouter } from "../domain/targets.js";
import { callFerryOnHost } from "../transports/hostCommand.js";
import type { Transport } from "../transports/types.js";
import type { HostRouter } from "./hostRouter.js";
import type { NginxHostRequest, NginxHostSettings } from "./nginxHost.js";
import type {
  LiveUpstream,
  Router,
  RouterDrainResult,
  RouterSwitchResult,
  RouteSpec,
  UpstreamTraffic,
} from "./router.js";

/*
 * nginx as a remote target's router (docs/decisions/0039-nginx-on-remote-hosts.md): every
 * operation is one `ferry nginx-router` run on the host through the target's transport, the
 * request on its standard input, as the process runtime's `ferry processes`. Only
 * `Transport.run`, so nothing here knows SSH. nginx itself runs on the host, daemonised in a
 * session of its own: traffic there never depends on the server or the connection.
 */

/** A switch writes files, runs `nginx -t` and waits for the reload (its own limit is 10 s per step). */
const SWITCH_TIMEOUT_MS = 60_000;
const READ_TIMEOUT_MS = 30_000;

class RemoteNginxRouter implements Router {
  readonly driver = "nginx";
  readonly #settings: NginxHostSettings;
  /** Switches one at a time from this server, as the local driver does (the host's files are shared). */
  #changes: Promise<unknown> = Promise.resolve();

  constructor(
    private readonly transport: Transport,
    private readonly options: NginxTargetRouter,
    private readonly targetName: string,
  ) {
    this.#settings = {
      binary: options.binary,
      config: options.config,
      sitesDir: options.sitesDir,
      pidFile: options.pidFile,
      listen: options.listen,
      clientKeepalive: options.clientKeepalive,
    };
  }

  async live(route: string): Promise<LiveUpstream | undefined> {
    const found = (await this.routes()).find((candidate) => candidate.name === route);
    return found ? { upstream: found.upstream, colour: found.colour } : undefined;
  }

  routes(): Promise<(RouteSpec & LiveUpstream)[]> {
    return this.call({ operation: "routes", settings: this.#settings }, READ_TIMEOUT_MS);
  }

  switch(route: RouteSpec, target: LiveUpstream): Promise<RouterSwitchResult> {
    const request: NginxHostRequest = {
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

  /** nginx on the host is the data plane and keeps serving: nothing to close here. */
  async close(): Promise<void> {
    await this.#changes;
  }

  /** Whether the host's nginx has Ferry's routes (it is started again there when it does not run). */
  inUse(): Promise<boolean> {
    return this.call({ operation: "inUse", settings: this.#settings }, SWITCH_TIMEOUT_MS);
  }

  /** Runs `ferry nginx-router` on the host with the request on its standard input; its answer's value. */
  private call<T>(request: NginxHostRequest, timeoutMs: number): Promise<T> {
    return callFerryOnHost<T>(this.transport, {
      command: this.options.command,
      args: ["nginx-router"],
      request,
      timeoutMs,
      what: `the nginx router on target '${this.targetName}'`,
    });
  }
}

/**
 * The host's nginx as its router. Nothing to connect: nginx is started by the first switch
 * (or by `inUse`, when the files record routes and no master runs), and every operation reads
 * the host's files afresh, so a restarted server or a rebooted host needs nothing remembered.
 */
export function nginxRouterOnHost(
  transport: Transport,
  settings: NginxTargetRouter,
  targetName: string,
  _log: (message: string) => void,
): HostRouter {
  const router = new RemoteNginxRouter(transport, settings, targetName);
  return {
    get: async () => router,
    inUse: async () => ((await router.inUse()) ? router : undefined),
    close: () => router.close(),
  };
}
