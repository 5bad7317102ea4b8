import http from "node:http";
import type { AddressInfo } from "node:net";
import type { Duplex } from "node:stream";
import { ConflictError, NotFoundError } from "../domain/errors.js";
import { DurationHistogram } from "./durationHistogram.js";
import {
  canaryBodySchema,
  ensureStateDir,
  loadRoutes,
  modeBodySchema,
  type Route,
  type RouteDefinition,
  type RouteMode,
  routeDefinitionSchema,
  saveRoutes,
} from "./proxyState.js";
import type { RequestDurations } from "./router.js";

/**
 * `ferry proxy`, the data plane: a reverse proxy on node:http that sends each request to the
 * live upstream of the route matching its Host and path. Switching a route is one assignment
 * of the route table, so a request sees either the old upstream or the new one, and requests
 * that already picked the old one finish there; `drain` tells when none is left.
 */

/** Hop-by-hop headers (RFC 9110 §7.6.1): they describe one connection and are never forwarded. */
const HOP_BY_HOP = new Set([
  "connection",
  "keep-alive",
  "proxy-authenticate",
  "proxy-authorization",
  "proxy-connection",
  "te",
  "trailer",
  "transfer-encoding",
  "upgrade",
]);

/** Methods safe to send twice (RFC 9110 §9.2.2) — retried only when they carry no body. */
const IDEMPOTENT_METHODS = new Set(["GET", "HEAD", "OPTIONS", "PUT", "DELETE"]);

/** Errors that mean the upstream never saw (or never answered) the request: a retry cannot run it twice. */
const CONNECT_ERRORS = new Set(["ECONNREFUSED", "ECONNRESET", "EPIPE"]);

type Outcome = "served" | "failed" | "retried" | "aborted";

interface Counters {
  served: number;
  failed: number;
  retried: number;
  inFlight: number;
  /** Of `served`, the answers with a 5xx status: a canary's figures are compared with these (ADR 0049). */
  serverErrors: number;
}

export interface RouteStats extends Counters {
  route: string;
  upstream: string;
  /** Durations of the requests counted in `served` and `failed`, from their arrival to their answer's end. */
  duration: RequestDurations;
}

interface UpstreamTarget {
  host: string;
  port: number;
  agent: http.Agent;
}

/** A request counted in flight on one upstream until `end`. */
interface Tracked {
  end(outcome: Outcome, endedAt?: number): void;
  /** Records the upstream's status, counted when the request ends. */
  answered(status: number): void;
  isEnded(): boolean;
}

interface UpstreamEntry extends Counters {
  route: string;
  upstream: string;
  durations: DurationHistogram;
}

export interface DrainResult {
  /** True when nothing is in flight on the upstream and no route sends it new requests. */
  drained: boolean;
  inFlight: number;
  waitedMs: number;
  /** Routes whose live upstream it still is: such an upstream cannot drain (switch first). */
  routedBy: string[];
}

export interface SwitchResult {
  route: Route;
  previous: { upstream: string; colour: string | null };
}

export interface PutRouteResult {
  route: Route;
  created: boolean;
}

export interface CanaryResult {
  route: Route;
  /** The canary the route had before; null when it had none. */
  previous: Route["canary"] | null;
}

interface Match {
  name: string;
  upstream: string;
  /** A Set-Cookie value for the answer: the visitor's canary bucket, when it had none yet. */
  setCookie?: string | undefined;
  /** Maintenance or paused, when the route is. */
  mode?: RouteMode | null | undefined;
}

/** The request header that pins a request to one side of a canary: "new" (the canary) or "stable". */
const PIN_HEADER = "x-ferry-colour";
/** How long a visitor keeps its canary bucket: a day covers a rollout's stages. */
const BUCKET_COOKIE_MAX_AGE_SECONDS = 86_400;

/**
 * What the admin API and `ferry proxy` drive: one process serving traffic itself
 * (`FerryProxy`), or a primary whose workers serve it (`ProxyPrimary`, proxyWorkers.ts).
 */
export interface ProxyControl {
  listRoutes(): Route[];
  putRoute(name: string, definition: RouteDefinition): Promise<PutRouteResult>;
  setRoute(name: string, upstream: string, colour?: string): Promise<SwitchResult>;
  setCanary(
    name: string,
    canary: { upstream: string; colour?: string | undefined; weight: number } | null,
  ): Promise<CanaryResult>;
  setMode(name: string, mode: RouteMode | null): Promise<{ route: Route }>;
  drain(upstream: string, deadlineMs: number): Promise<DrainResult>;
  stats(): RouteStats[] | Promise<RouteStats[]>;
  /** Per-worker counts as of the last `stats()`, when the proxy runs workers. */
  workers?(): WorkerCounts[];
  listen(host: string, port: number): Promise<{ host: string; port: number }>;
  close(graceMs?: number): Promise<{ cutOff: number }>;
}

/** One worker's totals over every route (`GET /stats` of a proxy with workers). */
export interface WorkerCounts {
  pid: number;
  served: number;
  failed: number;
  inFlight: number;
}

/**
 * Called with the new table after it is on disk and before the proxy itself switches to it: a
 * primary pushes it to its workers there and resolves when every one has switched.
 */
type Publish = (routes: readonly Route[]) => Promise<void>;

export class FerryProxy implements ProxyControl {
  /** Replaced as a whole on every change: the assignment in `commit` is the switch. */
  private routes: ReadonlyMap<string, Route>;
  /** The same routes by host, longest path prefix first: what a request looks up. Replaced with `routes`. */
  private routesByHost: ReadonlyMap<string, readonly Route[]>;
  private readonly targets = new Map<string, UpstreamTarget>();
  private readonly counters = new Map<string, UpstreamEntry>();
  private readonly inFlightByUpstream = new Map<string, number>();
  private readonly waiters = new Set<() => void>();
  private readonly upgradedSockets = new Set<Duplex>();
  /** Route changes run one at a time, so the file on disk is written in the order they commit. */
  private changes: Promise<unknown> = Promise.resolve();
  private server: http.Server | undefined;

  private constructor(
    /** Null in a worker: its table comes from the primary, which alone writes the routes file. */
    private readonly stateDir: string | null,
    routes: readonly Route[],
    private readonly publish?: Publish,
  ) {
    this.routes = new Map(routes.map((route) => [route.name, route]));
    this.routesByHost = indexByHost(this.routes);
  }

  /**
   * Opens the proxy on its state dir, with the routes it had when it last stopped. `publish`
   * (a primary's) hears every new table before it takes effect here.
   */
  static async open(stateDir: string, publish?: Publish): Promise<FerryProxy> {
    await ensureStateDir(stateDir);
    return new FerryProxy(stateDir, await loadRoutes(stateDir), publish);
  }

  /** A worker's proxy: it serves the table its primary pushes (`replaceRoutes`) and changes none itself. */
  static replica(routes: readonly Route[]): FerryProxy {
    return new FerryProxy(null, routes);
  }

  /** A worker's switch: the primary's new table, in one synchronous step as `change` does it. */
  replaceRoutes(routes: readonly Route[]): void {
    const next = new Map(routes.map((route) => [route.name, route]));
    this.routes = next;
    this.routesByHost = indexByHost(next);
    this.notify();
  }

  listRoutes(): Route[] {
    return [...this.routes.values()].sort((a, b) => a.name.localeCompare(b.name));
  }

  /** Creates or replaces a route; persisted before it takes effect. */
  putRoute(name: string, definition: RouteDefinition): Promise<PutRouteResult> {
    const parsed = routeDefinitionSchema.parse(definition);
    return this.change((routes) => {
      for (const other of routes.values()) {
        if (other.name !== name && other.host === parsed.host && other.pathPrefix === parsed.pathPrefix) {
          throw new ConflictError(
            `route '${other.name}' already serves ${parsed.host}${parsed.pathPrefix}; switch that route instead`,
          );
        }
      }
      const route: Route = { name, ...parsed, colour: parsed.colour ?? null, updatedAt: new Date().toISOString() };
      const created = !routes.has(name);
      routes.set(name, route);
      return { route, created };
    });
  }

  /**
   * Points a route at another upstream for every request that starts from now on (the commit
   * point of a deployment). Returns the previous upstream, which keeps its in-flight requests.
   */
  setRoute(name: string, upstream: string, colour?: string): Promise<SwitchResult> {
    const parsed = routeDefinitionSchema.shape.upstream.parse(upstream);
    return this.change((routes) => {
      const current = routes.get(name);
      if (!current) throw new NotFoundError(`there is no route '${name}'; create it with PUT /routes/${name}`);
      const route: Route = {
        ...current,
        upstream: parsed,
        colour: colour ?? null,
        // A switch ends any canary: promoted (it is the new upstream) or replaced.
        canary: undefined,
        updatedAt: new Date().toISOString(),
      };
      routes.set(name, route);
      return { route, previous: { upstream: current.upstream, colour: current.colour } };
    });
  }

  /**
   * Sends `weight` per cent of the route's visitors to a second upstream (a canary) from now
   * on, each visitor kept on its side by a bucket cookie; null takes the canary away, so every
   * request that starts afterwards goes to the live upstream again. Persisted before it takes
   * effect, as a switch is.
   */
  setCanary(name: string, canary: { upstream: string; colour?: string | undefined; weight: number } | null) {
    const parsed = canary === null ? null : canaryBodySchema.parse(canary);
    return this.change((routes): CanaryResult => {
      const current = routes.get(name);
      if (!current) throw new NotFoundError(`there is no route '${name}'; create it with PUT /routes/${name}`);
      if (parsed !== null && parsed.upstream === current.upstream) {
        throw new ConflictError(
          `${parsed.upstream} is already the live upstream of route '${name}'; a canary is another upstream`,
        );
      }
      const route: Route = {
        ...current,
        canary:
          parsed === null
            ? undefined
            : { upstream: parsed.upstream, colour: parsed.colour ?? null, weight: parsed.weight },
        updatedAt: new Date().toISOString(),
      };
      routes.set(name, route);
      return { route, previous: current.canary ?? null };
    });
  }

  /**
   * Puts a route in maintenance (every request answered 503) or pauses it (requests held up to
   * a timeout); null resumes it, and held requests go on to the live upstream at once.
   */
  setMode(name: string, mode: RouteMode | null): Promise<{ route: Route }> {
    const parsed = mode === null ? null : modeBodySchema.parse(mode);
    return this.change((routes) => {
      const current = routes.get(name);
      if (!current) throw new NotFoundError(`there is no route '${name}'; create it with PUT /routes/${name}`);
      const route: Route = { ...current, mode: parsed ?? undefined, updatedAt: new Date().toISOString() };
      routes.set(name, route);
      return { route };
    });
  }

  /**
   * Resolves when the upstream has nothing in flight (`drained: true`) or when the deadline
   * passes (`drained: false`, with what is still in flight). An upstream some route still
   * sends new requests to cannot drain: that answer comes at once.
   */
  async drain(upstream: string, deadlineMs: number): Promise<DrainResult> {
    const target = routeDefinitionSchema.shape.upstream.parse(upstream);
    const started = performance.now();
    const routedBy = () =>
      this.listRoutes().flatMap((route) =>
        route.upstream === target || route.canary?.upstream === target ? [route.name] : [],
      );
    if (routedBy().length > 0) {
      return { drained: false, inFlight: this.inFlightOf(target), waitedMs: 0, routedBy: routedBy() };
    }
    const drained = await this.waitUntil(() => this.inFlightOf(target) === 0 && routedBy().length === 0, deadlineMs);
    if (drained) {
      // Nothing sends it requests any more: its kept-alive connections go (a route pointed
      // back at it later opens new ones).
      this.targets.get(target)?.agent.destroy();
      this.targets.delete(target);
    }
    return {
      drained,
      inFlight: this.inFlightOf(target),
      waitedMs: Math.round(performance.now() - started),
      routedBy: routedBy(),
    };
  }

  /**
   * Requests served, failed, retried and in flight, and how long the served and failed ones
   * took, per route and upstream since the proxy started.
   */
  stats(): RouteStats[] {
    return [...this.counters.values()]
      .map(({ durations, ...counters }) => ({ ...counters, duration: durations.histogram() }))
      .sort((a, b) => a.route.localeCompare(b.route) || a.upstream.localeCompare(b.upstream));
  }

  async listen(host: string, port: number): Promise<{ host: string; port: number }> {
    const server = http.createServer((request, response) => this.handleRequest(request, response));
    server.on("upgrade", (request: http.IncomingMessage, socket: Duplex, head: Buffer) =>
      this.handleUpgrade(request, socket, head),
    );
    // A broken client connection must not take the proxy down.
    server.on("clientError", (_error, socket) => {
      if (socket.writable) socket.end("HTTP/1.1 400 Bad Request\r\nConnection: close\r\n\r\n");
      else socket.destroy();
    });
    await new Promise<void>((resolve, reject) => {
      server.once("error", reject);
      server.listen(port, host, () => {
        server.off("error", reject);
        resolve();
      });
    });
    this.server = server;
    const address = server.address() as AddressInfo;
    return { host: address.address, port: address.port };
  }

  /**
   * Stops accepting connections, lets in-flight requests finish for up to `graceMs`, then
   * closes what is left. Returns how many requests were cut off.
   */
  async close(graceMs = 10_000): Promise<{ cutOff: number }> {
    const server = this.server;
    this.server = undefined;
    if (server) {
      const closed = new Promise<void>((resolve) => server.close(() => resolve()));
      server.closeIdleConnections();
      await this.waitUntil(() => this.totalInFlight() === 0, graceMs);
      const cutOff = this.totalInFlight();
      server.closeAllConnections();
      for (const socket of this.upgradedSockets) socket.destroy();
      await closed;
      await this.changes;
      for (const target of this.targets.values()) target.agent.destroy();
      this.targets.clear();
      return { cutOff };
    }
    return { cutOff: 0 };
  }

  private change<T>(apply: (routes: Map<string, Route>) => T): Promise<T> {
    const run = this.changes.then(async () => {
      if (this.stateDir === null) throw new Error("a worker's routes change only through its primary");
      const next = new Map(this.routes);
      const result = apply(next);
      // On disk first: once a caller hears "switched", a restart comes back switched too.
      await saveRoutes(this.stateDir, [...next.values()]);
      // Then every worker, when there are some: "switched" means no process serves the old table.
      await this.publish?.([...next.values()]);
      // The switch: both assignments in one synchronous step, so no request sees half of it.
      this.routes = next;
      this.routesByHost = indexByHost(next);
      this.notify();
      return result;
    });
    this.changes = run.catch(() => undefined);
    return run;
  }

  /** Exact host (case-insensitive, port ignored), then the longest matching path prefix. */
  private resolve(request: http.IncomingMessage): Match | undefined {
    const candidates = this.routesByHost.get(hostName(request.headers.host));
    if (candidates === undefined) return undefined;
    const path = request.url ?? "/";
    let best: Route | undefined;
    for (const route of candidates) {
      if (prefixMatches(route.pathPrefix, path)) {
        best = route;
        break;
      }
    }
    if (!best) return undefined;
    const match = best.canary ? pickSide(best, best.canary, request) : { name: best.name, upstream: best.upstream };
    return best.mode ? { ...match, mode: best.mode } : match;
  }

  /**
   * A request of a route in maintenance gets the 503 page; one of a paused route waits until
   * the route is resumed (then it is resolved again: the route may have been switched
   * meanwhile) or until the pause's timeout (503). Held requests are not in flight on any
   * upstream: a drain does not wait for them.
   */
  private handleHeld(match: Match, request: http.IncomingMessage, response: http.ServerResponse): boolean {
    const mode = match.mode;
    if (!mode) return false;
    if (mode.mode === "maintenance") {
      request.resume();
      if (mode.page === undefined) {
        sendProblem(response, 503, "maintenance", `route '${match.name}' is in maintenance; try again later`);
      } else {
        response.writeHead(503, {
          "content-type": "text/html; charset=utf-8",
          "content-length": Buffer.byteLength(mode.page),
          "cache-control": "no-store",
        });
        response.end(mode.page);
      }
      return true;
    }
    const stillPaused = () => this.routes.get(match.name)?.mode?.mode === "paused";
    void this.waitUntil(() => !stillPaused(), mode.timeoutSeconds * 1000).then((released) => {
      if (response.destroyed) return;
      if (!released) {
        request.resume();
        sendProblem(
          response,
          503,
          "paused",
          `route '${match.name}' was paused for longer than ${mode.timeoutSeconds} s; try again`,
        );
        return;
      }
      this.handleRequest(request, response);
    });
    return true;
  }

  private handleRequest(request: http.IncomingMessage, response: http.ServerResponse): void {
    const match = this.resolve(request);
    if (!match) {
      request.resume();
      sendProblem(response, 404, "no-route", `no route serves ${hostName(request.headers.host)}${request.url ?? "/"}`);
      return;
    }
    if (match.mode && this.handleHeld(match, request, response)) return;
    const hasBody =
      request.headers["transfer-encoding"] !== undefined || Number(request.headers["content-length"] ?? 0) > 0;
    const mayRetry = !hasBody && IDEMPOTENT_METHODS.has(request.method ?? "");
    // From the request's arrival, so a retry's duration includes the attempt that failed.
    const arrivedAt = performance.now();
    // Built once: a retry sends the same head to the other upstream.
    const headers = forwardedRawHeaders(request);
    let current: { tracked: Tracked; upstreamRequest: http.ClientRequest } | undefined;

    const attempt = (upstream: string, retriesLeft: number) => {
      const tracked = this.track(match.name, upstream, arrivedAt);
      const target = this.targetFor(upstream);
      const upstreamRequest = http.request({
        host: target.host,
        port: target.port,
        method: request.method,
        path: request.url,
        headers,
        agent: target.agent,
      });
      current = { tracked, upstreamRequest };

      upstreamRequest.on("response", (upstreamResponse) => {
        const status = upstreamResponse.statusCode ?? 502;
        tracked.answered(status);
        let lengthKnown = false;
        const answer = answerRawHeaders(upstreamResponse.rawHeaders, (name) => {
          if (name === "content-length") lengthKnown = true;
        });
        if (match.setCookie !== undefined) answer.push("set-cookie", match.setCookie);
        response.writeHead(status, upstreamResponse.statusMessage, answer);
        // A body without a length (an event stream, chunks) may be a while coming: send the
        // head now. With a length the head goes out with the first bytes, in one packet.
        if (!lengthKnown) response.flushHeaders();
        upstreamResponse.pipe(response);
        upstreamResponse.on("close", () => {
          if (upstreamResponse.complete) return;
          // The upstream died mid-body: the client must see a cut response, not a short "complete" one.
          tracked.end("failed");
          response.destroy();
        });
      });

      upstreamRequest.on("error", (error: NodeJS.ErrnoException) => {
        if (tracked.isEnded()) return;
        if (response.headersSent) {
          tracked.end("failed");
          response.destroy();
          return;
        }
        if (retriesLeft > 0 && mayRetry && CONNECT_ERRORS.has(error.code ?? "")) {
          // The request never reached an application: send it once to whatever is live *now*
          // (the route may have been switched away from a colour that just stopped).
          const live = this.routes.get(match.name)?.upstream;
          if (live) {
            tracked.end("retried");
            attempt(live, retriesLeft - 1);
            return;
          }
        }
        tracked.end("failed");
        sendProblem(
          response,
          502,
          "upstream-unavailable",
          `the upstream of route '${match.name}' did not answer (${error.code ?? error.message})`,
        );
      });

      if (hasBody) request.pipe(upstreamRequest);
      else upstreamRequest.end();
    };

    response.on("close", () => {
      if (!current) return;
      if (response.writableFinished) {
        current.tracked.end("served");
      } else {
        current.upstreamRequest.destroy();
        current.tracked.end("aborted");
      }
    });
    if (!hasBody) request.resume();
    attempt(match.upstream, 1);
  }

  /** Upgrades (WebSocket and others) are passed through: after the upstream's 101 the two sockets are piped. */
  private handleUpgrade(request: http.IncomingMessage, socket: Duplex, head: Buffer): void {
    socket.on("error", () => socket.destroy());
    const match = this.resolve(request);
    if (!match) {
      writeRawProblem(
        socket,
        404,
        "no-route",
        `no route serves ${hostName(request.headers.host)}${request.url ?? "/"}`,
      );
      return;
    }
    if (match.mode) {
      // A tunnel cannot be held or shown a page: it is refused until the route serves again.
      writeRawProblem(socket, 503, match.mode.mode, `route '${match.name}' is ${match.mode.mode}; try again later`);
      return;
    }
    const { end, upstreamRequest } = this.openUpgrade(match.name, match.upstream, request, performance.now());
    upstreamRequest.on("upgrade", (upstreamResponse, upstreamSocket: Duplex, upstreamHead: Buffer) => {
      // A tunnel may stay open for hours: its duration is the time to the upstream's 101.
      const upgradedAt = performance.now();
      this.upgradedSockets.add(socket);
      socket.write(
        rawHead(upstreamResponse.statusCode ?? 101, upstreamResponse.statusMessage, upstreamResponse.rawHeaders),
      );
      if (upstreamHead.length > 0) socket.write(upstreamHead);
      if (head.length > 0) upstreamSocket.write(head);
      upstreamSocket.pipe(socket);
      socket.pipe(upstreamSocket);
      const closeBoth = () => {
        socket.destroy();
        upstreamSocket.destroy();
        this.upgradedSockets.delete(socket);
        end("served", upgradedAt);
      };
      // Either side ending ends the tunnel: a half-open upgraded connection would never close.
      for (const side of [socket, upstreamSocket]) {
        side.on("error", closeBoth);
        side.on("end", closeBoth);
        side.on("close", closeBoth);
      }
    });
    upstreamRequest.on("response", (upstreamResponse) => {
      // The upstream answered without upgrading: relay its answer and close.
      const headers = withoutHopByHop(upstreamResponse.headers);
      const raw = Object.entries(headers).flatMap(([key, value]) =>
        (Array.isArray(value) ? value : [String(value)]).flatMap((item) => [key, item]),
      );
      socket.write(
        rawHead(upstreamResponse.statusCode ?? 502, upstreamResponse.statusMessage, [...raw, "connection", "close"]),
      );
      upstreamResponse.pipe(socket);
      upstreamResponse.on("end", () => end("served"));
      upstreamResponse.on("error", () => end("failed"));
    });
    upstreamRequest.on("error", (error: NodeJS.ErrnoException) => {
      end("failed");
      writeRawProblem(
        socket,
        502,
        "upstream-unavailable",
        `the upstream of route '${match.name}' did not answer (${error.code ?? error.message})`,
      );
    });
    socket.on("close", () => {
      if (!this.upgradedSockets.has(socket)) {
        upstreamRequest.destroy();
        end("aborted");
      }
    });
    upstreamRequest.end();
  }

  /**
   * Where an upstream's requests go, parsed once, with its agent: kept-alive connections,
   * LIFO (the most recently used socket, the least likely to have been closed by the
   * upstream's idle timeout). Kept until the upstream is drained or the proxy closes.
   */
  private targetFor(upstream: string): UpstreamTarget {
    let target = this.targets.get(upstream);
    if (!target) {
      const url = new URL(upstream);
      target = {
        host: url.hostname,
        port: url.port === "" ? 80 : Number(url.port),
        agent: new http.Agent({ keepAlive: true, scheduling: "lifo" }),
      };
      this.targets.set(upstream, target);
    }
    return target;
  }

  private countersFor(route: string, upstream: string) {
    const key = `${route}\u0000${upstream}`;
    let entry = this.counters.get(key);
    if (!entry) {
      entry = {
        route,
        upstream,
        served: 0,
        failed: 0,
        retried: 0,
        inFlight: 0,
        serverErrors: 0,
        durations: new DurationHistogram(),
      };
      this.counters.set(key, entry);
    }
    return entry;
  }

  /**
   * Counts a request in flight on an upstream until `end` is called once with its outcome;
   * its duration runs from `startedAt` to that call (or to `endedAt`, both performance.now()
   * readings).
   */
  private track(route: string, upstream: string, startedAt: number): Tracked {
    const entry = this.begin(route, upstream);
    let ended = false;
    let status = 0;
    return {
      end: (outcome: Outcome, endedAt = performance.now()) => {
        if (ended) return;
        ended = true;
        this.end(entry, outcome, (endedAt - startedAt) / 1000, status);
      },
      answered: (code) => {
        status = code;
      },
      isEnded: () => ended,
    };
  }

  /** An upgrade's request to the upstream, on a connection of its own (no agent): it becomes a pipe. */
  private openUpgrade(
    route: string,
    upstream: string,
    request: http.IncomingMessage,
    startedAt: number,
  ): { end: Tracked["end"]; upstreamRequest: http.ClientRequest } {
    const { end } = this.track(route, upstream, startedAt);
    const target = new URL(upstream);
    const upstreamRequest = http.request({
      host: target.hostname,
      port: target.port,
      method: request.method,
      path: request.url,
      headers: forwardedHeaders(request, true),
      agent: false,
    });
    return { end, upstreamRequest };
  }

  private begin(route: string, upstream: string): UpstreamEntry {
    const entry = this.countersFor(route, upstream);
    entry.inFlight += 1;
    this.inFlightByUpstream.set(upstream, this.inFlightOf(upstream) + 1);
    return entry;
  }

  private end(entry: UpstreamEntry, outcome: Outcome, seconds: number, status: number): void {
    entry.inFlight -= 1;
    switch (outcome) {
      case "served":
        entry.served += 1;
        if (status >= 500) entry.serverErrors += 1;
        entry.durations.observe(seconds);
        break;
      case "failed":
        entry.failed += 1;
        entry.durations.observe(seconds);
        break;
      case "retried":
        entry.retried += 1;
        break;
      case "aborted":
        break;
      default: {
        const unexpected: never = outcome;
        throw new Error(`unknown outcome ${String(unexpected)}`);
      }
    }
    const remaining = this.inFlightOf(entry.upstream) - 1;
    if (remaining > 0) this.inFlightByUpstream.set(entry.upstream, remaining);
    else this.inFlightByUpstream.delete(entry.upstream);
    if (this.waiters.size > 0) this.notify();
  }

  private inFlightOf(upstream: string): number {
    return this.inFlightByUpstream.get(upstream) ?? 0;
  }

  private totalInFlight(): number {
    let total = 0;
    for (const count of this.inFlightByUpstream.values()) total += count;
    return total;
  }

  private notify(): void {
    for (const waiter of [...this.waiters]) waiter();
  }

  /** Resolves true as soon as `condition` holds (checked after every request ends and every route change), false at the deadline. */
  private waitUntil(condition: () => boolean, deadlineMs: number): Promise<boolean> {
    if (condition()) return Promise.resolve(true);
    return new Promise((resolve) => {
      const check = () => {
        if (!condition()) return;
        cleanup();
        resolve(true);
      };
      const timer = setTimeout(() => {
        cleanup();
        resolve(condition());
      }, deadlineMs);
      const cleanup = () => {
        clearTimeout(timer);
        this.waiters.delete(check);
      };
      this.waiters.add(check);
    });
  }
}

/**
 * Which side of a canary a request goes to: `X-Ferry-Colour: new|stable` pins it; otherwise
 * the visitor's bucket (0–99, from its cookie, or drawn now and sent back in one) below the
 * weight goes to the canary. A bucket, not a colour, is remembered: raising the weight moves
 * only visitors from the stable side to the canary, never back, and a rollback to 0 % moves
 * everyone to the stable side without any cookie having to change.
 */
function pickSide(route: Route, canary: NonNullable<Route["canary"]>, request: http.IncomingMessage): Match {
  const pin = request.headers[PIN_HEADER];
  if (pin === "new") return { name: route.name, upstream: canary.upstream };
  if (pin === "stable") return { name: route.name, upstream: route.upstream };
  const cookieName = bucketCookieName(route.name);
  let bucket = readBucket(request.headers.cookie, cookieName);
  let setCookie: string | undefined;
  if (bucket === undefined) {
    // Not a secret: a bucket only says which side a visitor is on.
    bucket = Math.floor(Math.random() * 100);
    const secure = request.headers["x-forwarded-proto"] === "https" ? "; Secure" : "";
    // A prefix with characters a cookie attribute cannot hold (';', controls) scopes the cookie to the host.
    const path = /^[A-Za-z0-9/._~%+-]+$/.test(route.pathPrefix) ? route.pathPrefix : "/";
    setCookie = `${cookieName}=${bucket}; Path=${path}; Max-Age=${BUCKET_COOKIE_MAX_AGE_SECONDS}; HttpOnly; SameSite=Lax${secure}`;
  }
  return { name: route.name, upstream: bucket < canary.weight ? canary.upstream : route.upstream, setCookie };
}

/** Routes by host, each host's longest path prefix first. */
function indexByHost(routes: ReadonlyMap<string, Route>): Map<string, Route[]> {
  const index = new Map<string, Route[]>();
  for (const route of routes.values()) {
    const list = index.get(route.host);
    if (list) list.push(route);
    else index.set(route.host, [route]);
  }
  for (const list of index.values()) list.sort((a, b) => b.pathPrefix.length - a.pathPrefix.length);
  return index;
}

/** "ferry-canary-shop-prod": one cookie per route, so two routes of a host keep their own buckets. */
export function bucketCookieName(route: string): string {
  return `ferry-canary-${route}`;
}

/** The bucket a Cookie header holds for this name; undefined when absent or not a whole number 0–99. */
function readBucket(header: string | undefined, name: string): number | undefined {
  if (header === undefined) return undefined;
  for (const pair of header.split(";")) {
    const separator = pair.indexOf("=");
    if (separator === -1 || pair.slice(0, separator).trim() !== name) continue;
    const value = pair.slice(separator + 1).trim();
    if (/^\d{1,2}$/.test(value)) return Number(value);
  }
  return undefined;
}

function hostName(header: string | undefined): string {
  if (!header) return "";
  const host = header.trim().toLowerCase();
  // "[::1]:8000" keeps its brackets; "app.example.com:8000" loses its port.
  if (host.startsWith("[")) return host.slice(0, host.indexOf("]") + 1);
  const colon = host.lastIndexOf(":");
  return colon === -1 ? host : host.slice(0, colon);
}

/** "/api" matches "/api", "/api/x" and "/api?x", not "/apix". */
function prefixMatches(prefix: string, path: string): boolean {
  if (prefix === "/" || prefix === path) return true;
  if (!path.startsWith(prefix)) return false;
  if (prefix.endsWith("/")) return true;
  const next = path[prefix.length];
  return next === "/" || next === "?";
}

function withoutHopByHop(headers: http.IncomingHttpHeaders, keep: readonly string[] = []): http.OutgoingHttpHeaders {
  const listed = new Set(
    String(headers.connection ?? "")
      .split(",")
      .map((name) => name.trim().toLowerCase())
      .filter((name) => name !== ""),
  );
  const result: http.OutgoingHttpHeaders = {};
  for (const [name, value] of Object.entries(headers)) {
    if (value === undefined) continue;
    if ((HOP_BY_HOP.has(name) || listed.has(name)) && !keep.includes(name)) continue;
    result[name] = value;
  }
  return result;
}

/**
 * The client's headers minus hop-by-hop ones, Host kept (applications build links from it),
 * plus X-Forwarded-*. X-Forwarded-For is appended to; Proto and Host are kept when a TLS
 * terminator in front of the proxy set them.
 */
function forwardedHeaders(request: http.IncomingMessage, upgrade: boolean): http.OutgoingHttpHeaders {
  const headers = withoutHopByHop(request.headers, upgrade ? ["upgrade"] : []);
  if (upgrade) headers.connection = "Upgrade";
  const client = request.socket.remoteAddress ?? "";
  const previous = request.headers["x-forwarded-for"];
  headers["x-forwarded-for"] = previous ? `${String(previous)}, ${client}` : client;
  headers["x-forwarded-proto"] = request.headers["x-forwarded-proto"] ?? "http";
  headers["x-forwarded-host"] = request.headers["x-forwarded-host"] ?? request.headers.host ?? "";
  return headers;
}

/** The names a Connection header lists (lower case), besides the hop-by-hop ones every message drops. */
function connectionTokens(value: string): Set<string> {
  const tokens = new Set<string>();
  for (const token of value.split(",")) {
    const name = token.trim().toLowerCase();
    if (name !== "" && name !== "close" && name !== "keep-alive") tokens.add(name);
  }
  return tokens;
}

/** Request headers Node.js keeps only the first of when a client repeats them (message.headers). */
const SINGLE_VALUED = new Set([
  "host",
  "content-length",
  "content-type",
  "user-agent",
  "referer",
  "authorization",
  "if-modified-since",
  "if-unmodified-since",
  "from",
  "max-forwards",
]);

/** X-Forwarded-* are replaced as a whole (their values come from `request.headers`, where repeats are joined). */
const FORWARDED = new Set(["x-forwarded-for", "x-forwarded-proto", "x-forwarded-host"]);

/**
 * `forwardedHeaders` for a plain request, as a flat [name, value, …] list (as rawHeaders):
 * made from the client's raw headers in their order, without an object per request. Expect
 * is dropped too: Node.js has answered the client's 100-continue itself.
 */
function forwardedRawHeaders(request: http.IncomingMessage): string[] {
  const raw = request.rawHeaders;
  const connection = request.headers.connection;
  const listed = connection === undefined ? undefined : connectionTokens(connection);
  const headers: string[] = [];
  const singlesSeen: string[] = [];
  for (let index = 0; index + 1 < raw.length; index += 2) {
    const name = raw[index] as string;
    const lower = name.toLowerCase();
    if (HOP_BY_HOP.has(lower) || FORWARDED.has(lower) || lower === "expect" || listed?.has(lower)) continue;
    if (SINGLE_VALUED.has(lower)) {
      // As Node.js reads them (and as the proxy sent them when it forwarded `request.headers`): the first one.
      if (singlesSeen.includes(lower)) continue;
      singlesSeen.push(lower);
    }
    headers.push(name, raw[index + 1] as string);
  }
  const client = request.socket.remoteAddress ?? "";
  const previous = request.headers["x-forwarded-for"];
  headers.push(
    "x-forwarded-for",
    previous ? `${previous}, ${client}` : client,
    "x-forwarded-proto",
    String(request.headers["x-forwarded-proto"] ?? "http"),
    "x-forwarded-host",
    String(request.headers["x-forwarded-host"] ?? request.headers.host ?? ""),
  );
  return headers;
}

/**
 * The upstream's answer headers (its raw list, in order) for the client, minus the
 * hop-by-hop ones and those its Connection header lists; `seen` hears every name kept.
 */
function answerRawHeaders(raw: readonly string[], seen: (lowerName: string) => void): string[] {
  const headers: string[] = [];
  let listed: Set<string> | undefined;
  for (let index = 0; index + 1 < raw.length; index += 2) {
    const name = raw[index] as string;
    const lower = name.toLowerCase();
    if (HOP_BY_HOP.has(lower)) {
      if (lower === "connection") {
        const tokens = connectionTokens(raw[index + 1] as string);
        if (tokens.size > 0) listed = new Set([...(listed ?? []), ...tokens]);
      }
      continue;
    }
    seen(lower);
    headers.push(name, raw[index + 1] as string);
  }
  if (listed === undefined) return headers;
  const kept: string[] = [];
  for (let index = 0; index + 1 < headers.length; index += 2) {
    if (!listed.has((headers[index] as string).toLowerCase()))
      kept.push(headers[index] as string, headers[index + 1] as string);
  }
  return kept;
}

function problemBody(status: number, code: string, detail: string): string {
  const title = status === 404 ? "No route" : status === 503 ? "Service unavailable" : "Bad gateway";
  return JSON.stringify({ type: `urn:ferry:problem:${code}`, title, status, detail });
}

function sendProblem(response: http.ServerResponse, status: number, code: string, detail: string): void {
  const body = problemBody(status, code, detail);
  response.writeHead(status, {
    "content-type": "application/problem+json; charset=utf-8",
    "content-length": Buffer.byteLength(body),
  });
  response.end(body);
}

function writeRawProblem(socket: Duplex, status: number, code: string, detail: string): void {
  const body = problemBody(status, code, detail);
  socket.end(
    `${rawHead(status, http.STATUS_CODES[status], [
      "content-type",
      "application/problem+json; charset=utf-8",
      "content-length",
      String(Buffer.byteLength(body)),
      "connection",
      "close",
    ])}${body}`,
  );
}

function rawHead(status: number, message: string | undefined, rawHeaders: readonly string[]): string {
  let head = `HTTP/1.1 ${status} ${message ?? http.STATUS_CODES[status] ?? ""}\r\n`;
  for (let index = 0; index + 1 < rawHeaders.length; index += 2) {
    head += `${rawHeaders[index]}: ${rawHeaders[index + 1]}\r\n`;
  }
  return `${head}\r\n`;
}
