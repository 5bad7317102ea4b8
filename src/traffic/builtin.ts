import { spawn } from "node:child_process";
import { existsSync, openSync } from "node:fs";
import { readFile } from "node:fs/promises";
import { join } from "node:path";
import { setTimeout as sleep } from "node:timers/promises";
import { fileURLToPath } from "node:url";
import { InputError, NotFoundError } from "../domain/errors.js";
import { type ProxyAdminAddress, ProxyAdminClient, ProxyAdminError } from "./proxyClient.js";
import { ensureStateDir, readAdminToken } from "./proxyState.js";
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

/** The Router driver of `ferry proxy`: every call is one call of its admin API. */
export class BuiltinRouter implements Router {
  readonly driver = "builtin";

  constructor(private readonly client: ProxyAdminClient) {}

  async live(route: string): Promise<LiveUpstream | undefined> {
    const found = (await this.client.listRoutes()).find((candidate) => candidate.name === route);
    return found ? { upstream: found.upstream, colour: found.colour } : undefined;
  }

  async routes(): Promise<(RouteSpec & LiveUpstream & { canary?: TrafficSplit })[]> {
    return (await this.client.listRoutes()).map((route) => ({
      name: route.name,
      host: route.host,
      pathPrefix: route.pathPrefix,
      upstream: route.upstream,
      colour: route.colour,
      ...(route.canary && { canary: route.canary }),
    }));
  }

  async switch(route: RouteSpec, target: LiveUpstream): Promise<RouterSwitchResult> {
    const started = performance.now();
    const colour = target.colour ?? undefined;
    // The common case is one call: the route exists where it should and only its upstream changes.
    try {
      const switched = await this.client.switchRoute(route.name, {
        upstream: target.upstream,
        ...(colour !== undefined && { colour }),
      });
      const switchMs = performance.now() - started;
      if (switched.route.host === route.host.toLowerCase() && switched.route.pathPrefix === route.pathPrefix) {
        return { previous: switched.previous, switchMs };
      }
      // The route moved to another host or prefix: it is replaced as a whole below.
      return { previous: switched.previous, switchMs: switchMs + (await this.put(route, target)) };
    } catch (error) {
      if (!(error instanceof ProxyAdminError && error.status === 404)) throw error;
    }
    return { previous: undefined, switchMs: performance.now() - started + (await this.put(route, target)) };
  }

  /** Creates or replaces the route as a whole; how long it took. */
  private async put(route: RouteSpec, target: LiveUpstream): Promise<number> {
    const started = performance.now();
    await this.client.putRoute(route.name, {
      host: route.host,
      pathPrefix: route.pathPrefix,
      upstream: target.upstream,
      ...(target.colour !== null && { colour: target.colour }),
    });
    return performance.now() - started;
  }

  async split(route: string, split: TrafficSplit | null): Promise<{ switchMs: number }> {
    const started = performance.now();
    await this.client.setCanary(
      route,
      split === null
        ? null
        : { upstream: split.upstream, weight: split.weight, ...(split.colour !== null && { colour: split.colour }) },
    );
    return { switchMs: performance.now() - started };
  }

  async setMode(route: string, mode: RouteMode | null): Promise<void> {
    try {
      await this.client.setMode(
        route,
        mode === null
          ? null
          : mode.mode === "paused"
            ? { mode: "paused", timeoutSeconds: mode.timeoutSeconds }
            : { mode: "maintenance", ...(mode.page !== undefined && { page: mode.page }) },
      );
    } catch (error) {
      // The proxy's own refusals keep their meaning through the server's API.
      if (error instanceof ProxyAdminError && error.status === 404) throw new NotFoundError(error.message);
      if (error instanceof ProxyAdminError && error.status === 400) throw new InputError(error.message);
      throw error;
    }
  }

  async drain(upstream: string, deadlineMs: number): Promise<RouterDrainResult> {
    const result = await this.client.drain(upstream, deadlineMs);
    return { drained: result.drained, waitedMs: result.waitedMs, inFlight: result.inFlight };
  }

  async traffic(): Promise<UpstreamTraffic[]> {
    return (await this.client.stats()).map(({ route, upstream, served, failed, duration, serverErrors, retried }) => ({
      route,
      upstream,
      served,
      failed,
      // Older proxies (they outlive server upgrades) do not count these.
      ...(serverErrors !== undefined && { serverErrors }),
      ...(retried !== undefined && { retried }),
      // A proxy started by an earlier Ferry (it outlives server upgrades) does not time requests.
      ...(duration !== undefined && { duration }),
    }));
  }

  close(): Promise<void> {
    return this.client.close();
  }
}

export interface EmbeddedProxyOptions {
  /** The proxy's state directory: routes, admin token, admin socket, its log. */
  stateDir: string;
  /** Where it serves traffic when Ferry starts it ("127.0.0.1:8000"). */
  listen: string;
  /** Serve the admin API on 127.0.0.1 at this port instead of `<stateDir>/admin.sock` (a host reached through a transport). */
  adminPort?: number | undefined;
  /** Processes serving traffic when Ferry starts it (`--workers`, ADR 0055); absent or 1: one process. */
  workers?: number | undefined;
}

const START_TIMEOUT_MS = 10_000;

/**
 * The builtin proxy of the server's host: the one answering on `<stateDir>/admin.sock`, or,
 * when none answers, a `ferry proxy` the server starts there. That process is detached
 * (its own session, no pipes to the server), so traffic keeps flowing when the server
 * stops or crashes; a later server finds it again through the socket.
 */
export async function connectEmbeddedProxy(
  options: EmbeddedProxyOptions,
  onStart: (message: string) => void = () => {},
): Promise<BuiltinRouter> {
  return (await connectOrStartProxy(options, onStart)).router;
}

/** Like connectEmbeddedProxy; also says whether this call started the proxy. */
export async function connectOrStartProxy(
  options: EmbeddedProxyOptions,
  onStart: (message: string) => void = () => {},
): Promise<{ router: BuiltinRouter; started: boolean }> {
  await ensureStateDir(options.stateDir);
  const address = adminAddress(options);
  const existing = await tryConnect(options.stateDir, address);
  if (existing) return { router: new BuiltinRouter(existing), started: false };

  const log = openSync(join(options.stateDir, "proxy.log"), "a", 0o600);
  const child = spawn(
    process.execPath,
    [
      ferryBinary(),
      "proxy",
      "--state-dir",
      options.stateDir,
      "--listen",
      options.listen,
      ...(options.adminPort !== undefined ? ["--admin-port", String(options.adminPort)] : []),
      ...(options.workers !== undefined && options.workers > 1 ? ["--workers", String(options.workers)] : []),
    ],
    // Its own session (detached): nothing that ends the starter's process group ends the proxy.
    { detached: true, stdio: ["ignore", log, log] },
  );
  child.unref();
  onStart(
    `started ferry proxy (pid ${child.pid}) on ${options.listen}; state in ${options.stateDir}, log in proxy.log there`,
  );
  const deadline = Date.now() + START_TIMEOUT_MS;
  while (Date.now() < deadline) {
    await sleep(50);
    if (child.exitCode !== null) break;
    const client = await tryConnect(options.stateDir, address);
    if (client) return { router: new BuiltinRouter(client), started: true };
  }
  throw new Error(
    `ferry proxy did not start within ${START_TIMEOUT_MS / 1000} s; see ${join(options.stateDir, "proxy.log")} (is ${options.listen} taken?)`,
  );
}

/** Where the admin API of a proxy on this state dir answers. */
function adminAddress(options: EmbeddedProxyOptions): ProxyAdminAddress {
  return options.adminPort !== undefined
    ? { url: `http://127.0.0.1:${options.adminPort}` }
    : { socketPath: join(options.stateDir, "admin.sock") };
}

/** Whether a proxy answers on this state dir, or an earlier one left routes there (so it must come back). */
export async function proxyInUse(options: EmbeddedProxyOptions): Promise<boolean> {
  if (existsSync(join(options.stateDir, "routes.json"))) return true;
  const client = await tryConnect(options.stateDir, adminAddress(options)).catch(() => undefined);
  await client?.close();
  return client !== undefined;
}

async function tryConnect(stateDir: string, address: ProxyAdminAddress): Promise<ProxyAdminClient | undefined> {
  let token: string;
  try {
    // The proxy creates its token before it listens: no answer yet means no token either.
    token = await readAdminToken(stateDir);
  } catch {
    return undefined;
  }
  if ("url" in address) await refuseForeignListener(new URL(address.url));
  const client = new ProxyAdminClient(address, token, 2_000);
  try {
    await client.listRoutes();
    return client;
  } catch (error) {
    await client.close();
    if (error instanceof ProxyAdminError && error.status !== 0) throw error;
    return undefined;
  }
}

/**
 * A loopback port is not a private place as the state dir's socket is: any account on the
 * host may listen on it first (after a reboot, before the proxy is back, or while it fails
 * to start) and would be sent the admin token with the first call, then be the "proxy" Ferry
 * switches traffic with. So before the token goes to 127.0.0.1:<port>, the account listening
 * there must be this one (Linux: /proc/net/tcp and tcp6, this network namespace's sockets).
 */
async function refuseForeignListener(url: URL): Promise<void> {
  const port = Number(url.port);
  const own = process.getuid?.();
  if (!Number.isInteger(port) || own === undefined) return;
  const portHex = port.toString(16).toUpperCase().padStart(4, "0");
  const owners = new Set<number>();
  for (const table of ["/proc/net/tcp", "/proc/net/tcp6"]) {
    const text = await readFile(table, "utf8").catch(() => "");
    for (const line of text.split("\n").slice(1)) {
      const fields = line.trim().split(/\s+/);
      const [address, localPort] = (fields[1] ?? "").split(":");
      // Listening (0A) on this port, at an address 127.0.0.1 reaches: loopback or any.
      if (fields[3] !== "0A" || localPort !== portHex || address === undefined) continue;
      const reached = [
        "0100007F",
        "00000000",
        "00000000000000000000000000000000",
        "0000000000000000FFFF00000100007F",
      ].includes(address);
      if (reached) owners.add(Number(fields[7]));
    }
  }
  const foreign = [...owners].filter((uid) => uid !== own);
  if (foreign.length > 0) {
    throw new Error(
      `127.0.0.1:${port} is held by another account (uid ${foreign.join(", ")}), not by a ferry proxy of this one: the admin token is not sent there. Stop that listener, or give the target's router another adminPort`,
    );
  }
}

/** bin/ferry of this installation (the same path from src/ in tests and from dist/). */
function ferryBinary(): string {
  return fileURLToPath(new URL("../../bin/ferry", import.meta.url));
}
