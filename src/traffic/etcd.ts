import { Agent, fetch } from "undici";
import { InputError } from "../domain/errors.js";
import type { LiveUpstream, Router, RouterSwitchResult, RouteSpec } from "./router.js";

/**
 * The etcd publisher: a Router that wraps another one (builtin, nginx) and mirrors every
 * switch into etcd, so that confd-style consumers can render their own proxy configuration
 * from it. The wrapped router stays the truth for "which colour is live"; etcd is a copy
 * that may lag (see docs/etcd-routes.md for the key layout and how to consume it).
 */

const DEFAULT_PREFIX = "/ferry/routes";
const DEFAULT_TIMEOUT_MS = 5_000;

/** The fields Ferry writes under `<prefix>/<host>/<route>/`, in this order. */
const ROUTE_FIELDS = ["upstream", "host-port", "colour", "path", "updated"] as const;
type RouteField = (typeof ROUTE_FIELDS)[number];

/** One key of a range answer. Revisions are etcd's int64, as numbers (exact below 2^53). */
export interface EtcdKeyValue {
  readonly key: string;
  readonly value: string;
  readonly modRevision: number;
}

/** etcd could not be reached, did not answer in time, or refused the request. */
export class EtcdError extends Error {
  constructor(
    message: string,
    readonly endpoint: string,
    options?: { cause?: unknown },
  ) {
    super(message, options);
    this.name = "EtcdError";
  }
}

export interface EtcdClientOptions {
  /** Per request; default 5 s. */
  readonly timeoutMs?: number;
}

/**
 * The few etcd v3 calls Ferry needs, over etcd's HTTP/JSON gateway (`POST /v3/kv/…`, keys and
 * values base64). `/v3/` is served from etcd 3.4 on (Debian 12 ships 3.4.23), so no gRPC
 * client and no new dependency. No authentication or TLS client certificates yet.
 */
export class EtcdClient {
  /** "http://127.0.0.1:2379", without a trailing slash. */
  readonly endpoint: string;
  private readonly timeoutMs: number;
  private readonly dispatcher = new Agent();

  constructor(endpoint: string, options: EtcdClientOptions = {}) {
    const url = URL.canParse(endpoint) ? new URL(endpoint) : undefined;
    if (!url || (url.protocol !== "http:" && url.protocol !== "https:") || url.search || url.hash) {
      throw new InputError(`etcd endpoint '${endpoint}' is not an http(s) URL such as http://127.0.0.1:2379`);
    }
    this.endpoint = url.href.replace(/\/+$/, "");
    this.timeoutMs = options.timeoutMs ?? DEFAULT_TIMEOUT_MS;
  }

  /**
   * One transaction: deletes every key under each of `deletePrefixes`, then puts every entry
   * of `values`. All or nothing, and every key written gets the same mod_revision: the
   * revision returned. etcd refuses a transaction that names one key twice and, by default,
   * one of more than 128 operations.
   */
  async putAll(values: Readonly<Record<string, string>>, deletePrefixes: readonly string[] = []): Promise<number> {
    const success = [
      ...deletePrefixes.map((prefix) => ({
        request_delete_range: { key: encode(prefix), range_end: prefixRangeEnd(prefix) },
      })),
      ...Object.entries(values).map(([key, value]) => ({ request_put: { key: encode(key), value: encode(value) } })),
    ];
    const answer = await this.call("kv/txn", { compare: [], success, failure: [] });
    // An empty `compare` always succeeds; anything else would be a gateway we do not understand.
    if (answer.succeeded !== true) throw new EtcdError(`etcd at ${this.endpoint} did not apply the txn`, this.endpoint);
    return headerRevision(answer, this.endpoint);
  }

  /** Every key under `prefix`, sorted by key. */
  async getPrefix(prefix: string): Promise<EtcdKeyValue[]> {
    const answer = await this.call("kv/range", {
      key: encode(prefix),
      range_end: prefixRangeEnd(prefix),
      sort_order: "ASCEND",
      sort_target: "KEY",
    });
    const kvs = Array.isArray(answer.kvs) ? (answer.kvs as Record<string, unknown>[]) : [];
    return kvs.map((entry) => ({
      key: decode(entry.key),
      // The gateway leaves out empty fields: an empty value has no `value`.
      value: decode(entry.value),
      modRevision: Number(entry.mod_revision ?? 0),
    }));
  }

  /** Deletes every key under `prefix`; returns how many there were. */
  async deletePrefix(prefix: string): Promise<number> {
    const answer = await this.call("kv/deleterange", { key: encode(prefix), range_end: prefixRangeEnd(prefix) });
    return Number(answer.deleted ?? 0);
  }

  close(): Promise<void> {
    return this.dispatcher.close();
  }

  private async call(path: string, body: unknown): Promise<Record<string, unknown>> {
    let response: Awaited<ReturnType<typeof fetch>>;
    try {
      response = await fetch(`${this.endpoint}/v3/${path}`, {
        method: "POST",
        dispatcher: this.dispatcher,
        headers: { "content-type": "application/json", accept: "application/json" },
        body: JSON.stringify(body),
        signal: AbortSignal.timeout(this.timeoutMs),
      });
    } catch (error) {
      throw this.unreachable(path, error);
    }
    let text: string;
    try {
      text = await response.text();
    } catch (error) {
      throw this.unreachable(path, error);
    }
    const answer = parseObject(text);
    if (!response.ok) {
      if (response.status === 404) {
        throw new EtcdError(
          `etcd at ${this.endpoint} has no /v3/${path} (HTTP 404): Ferry needs etcd 3.4 or newer, whose HTTP gateway serves /v3/`,
          this.endpoint,
        );
      }
      const reason = typeof answer?.message === "string" ? answer.message : text.slice(0, 200);
      throw new EtcdError(
        `etcd at ${this.endpoint} refused /v3/${path} (HTTP ${response.status}): ${reason}`,
        this.endpoint,
      );
    }
    if (!answer)
      throw new EtcdError(`etcd at ${this.endpoint} answered /v3/${path} with no JSON object`, this.endpoint);
    return answer;
  }

  private unreachable(path: string, error: unknown): EtcdError {
    if (error instanceof Error && (error.name === "TimeoutError" || error.name === "AbortError")) {
      return new EtcdError(
        `etcd at ${this.endpoint} did not answer /v3/${path} within ${this.timeoutMs} ms; is it running and healthy?`,
        this.endpoint,
        { cause: error },
      );
    }
    // undici reports "fetch failed" and puts the socket error (ECONNREFUSED…) in `cause`.
    const cause = error instanceof Error && error.cause instanceof Error ? error.cause : error;
    const detail =
      cause instanceof Error ? ((cause as NodeJS.ErrnoException).code ?? cause.message) : String(cause ?? "unknown");
    return new EtcdError(`could not reach etcd at ${this.endpoint}; is it running? (${detail})`, this.endpoint, {
      cause: error,
    });
  }
}

/** What one write of a route's keys gave: log the revision, consumers see it as mod_revision. */
export interface EtcdPublication {
  readonly route: string;
  readonly host: string;
  readonly upstream: string;
  readonly colour: string | null;
  /** etcd's revision of the txn: every key of the route has it as mod_revision. */
  readonly revision: number;
  /** Why the keys were written: a switch, or republish() repairing them. */
  readonly reason: "switch" | "republish";
}

/** The router switched, but etcd still has the route's previous keys. */
export class EtcdPublishError extends Error {
  constructor(
    message: string,
    readonly route: string,
    readonly endpoint: string,
    options: { cause: unknown },
  ) {
    super(message, options);
    this.name = "EtcdPublishError";
  }
}

export interface EtcdPublisherOptions {
  /** Where the routes go; default "/ferry/routes". Starts with '/', no trailing '/'. */
  readonly prefix?: string;
  /** After each successful write of a route's keys (a switch, or republish()). */
  readonly onPublished?: (publication: EtcdPublication) => void;
  /**
   * When a switch succeeded but writing its keys failed. The switch is not undone and does
   * not fail: the router is the truth and traffic already moved. Default: a process warning.
   */
  readonly onError?: (error: EtcdPublishError) => void;
}

/** A Router that also mirrors its routes into etcd. */
export interface EtcdPublishingRouter extends Router {
  /**
   * Makes etcd say what the router says: writes every route whose keys are missing or
   * different, deletes the keys of routes the router does not have (the publisher owns its
   * prefix). Call it at server start to repair etcd after a failed write. Throws when etcd
   * cannot be reached (unlike a switch, nothing else depends on it).
   */
  republish(): Promise<{
    /** Routes whose keys were written (missing, different or under another host before). */
    readonly written: string[];
    /** Routes whose keys already said what the router says (nothing written: no revision, no reload). */
    readonly unchanged: string[];
    /** `<host>/<route>` pairs deleted because the router has no such route there. */
    readonly removed: string[];
  }>;
}

/**
 * Wraps `router` so that every successful switch is followed by one etcd txn that writes
 * the route's keys (docs/etcd-routes.md):
 *
 *   <prefix>/<host>/<route>/upstream    http://127.0.0.1:32768
 *   <prefix>/<host>/<route>/host-port   127.0.0.1:32768
 *   <prefix>/<host>/<route>/colour      green ("" when the route has no colour)
 *   <prefix>/<host>/<route>/path        /api
 *   <prefix>/<host>/<route>/updated     2026-05-04T10:00:00.000Z (when Ferry wrote them)
 *
 * The same txn deletes the route's keys under any other host, so a route that moved host
 * leaves nothing stale behind. `switch` resolves after the write, and `onPublished` gets
 * the revision; a failed write goes to `onError` and the switch still succeeds.
 */
export function withEtcdPublisher(
  router: Router,
  etcd: EtcdClient,
  options: EtcdPublisherOptions = {},
): EtcdPublishingRouter {
  const prefix = checkedPrefix(options.prefix ?? DEFAULT_PREFIX);
  const onPublished = options.onPublished ?? (() => {});
  const onError = options.onError ?? ((error: EtcdPublishError) => process.emitWarning(error));

  // Writes of one route run one after the other, in the order the switches resolved: two
  // overlapping writes of the same route could otherwise land in etcd in the wrong order.
  const queues = new Map<string, Promise<void>>();
  // Bumped when a switch of the route resolves: republish() skips a route switched since it
  // read router.routes(), as that switch writes fresher keys itself.
  const generations = new Map<string, number>();

  function enqueue<T>(route: string, task: () => Promise<T>): Promise<T> {
    const next = (queues.get(route) ?? Promise.resolve()).then(task);
    const settled = next.then(
      () => {},
      () => {},
    );
    queues.set(route, settled);
    void settled.then(() => {
      if (queues.get(route) === settled) queues.delete(route);
    });
    return next;
  }

  async function write(
    spec: RouteSpec,
    live: LiveUpstream,
    staleHosts: readonly string[],
    reason: EtcdPublication["reason"],
  ): Promise<EtcdPublication> {
    const host = spec.host.toLowerCase();
    const values = routeValues(live, spec.pathPrefix, new Date());
    const keys: Record<string, string> = {};
    for (const field of ROUTE_FIELDS) keys[routeKey(prefix, host, spec.name, field)] = values[field];
    const revision = await etcd.putAll(
      keys,
      staleHosts.map((other) => `${routeKey(prefix, other, spec.name)}/`),
    );
    return { route: spec.name, host, upstream: live.upstream, colour: live.colour, revision, reason };
  }

  return {
    driver: `${router.driver}+etcd`,
    live: (route) => router.live(route),
    routes: () => router.routes(),
    drain: (upstream, deadlineMs) => router.drain(upstream, deadlineMs),
    traffic: () => router.traffic(),
    // A canary is not published: etcd says which colour is live, and that changes only at the promotion's switch.
    ...(router.split && { split: router.split.bind(router) }),
    ...(router.setMode && { setMode: router.setMode.bind(router) }),

    async switch(route: RouteSpec, target: LiveUpstream): Promise<RouterSwitchResult> {
      // Before the switch: a route etcd cannot hold is refused while the old upstream is live.
      checkSegment("host", route.host);
      checkSegment("route name", route.name);
      const result = await router.switch(route, target);
      generations.set(route.name, (generations.get(route.name) ?? 0) + 1);
      let publication: EtcdPublication;
      try {
        publication = await enqueue(route.name, async () => {
          const existing = groupRoutes(prefix, await etcd.getPrefix(`${prefix}/`));
          const host = route.host.toLowerCase();
          const staleHosts = existing.filter((entry) => entry.route === route.name && entry.host !== host);
          return write(
            route,
            target,
            staleHosts.map((entry) => entry.host),
            "switch",
          );
        });
      } catch (error) {
        onError(
          new EtcdPublishError(
            `route '${route.name}' now sends traffic to ${target.upstream}${target.colour ? ` (colour ${target.colour})` : ""}, ` +
              `but its keys under ${routeKey(prefix, route.host.toLowerCase(), route.name)}/ in etcd at ${etcd.endpoint} are stale: ` +
              `${(error as Error).message}. They are rewritten at the next switch of the route or by republish() at server start.`,
            route.name,
            etcd.endpoint,
            { cause: error },
          ),
        );
        return result;
      }
      // Outside the try: a failing callback is the caller's error, not a stale etcd.
      onPublished(publication);
      return result;
    },

    async republish() {
      const seen = new Map(generations);
      const routes = await router.routes();
      const existing = groupRoutes(prefix, await etcd.getPrefix(`${prefix}/`));
      const result = { written: [] as string[], unchanged: [] as string[], removed: [] as string[] };
      const wanted = new Set<string>();

      for (const route of routes) {
        checkSegment("host", route.host);
        checkSegment("route name", route.name);
        const host = route.host.toLowerCase();
        wanted.add(`${host}/${route.name}`);
        const current = existing.find((entry) => entry.host === host && entry.route === route.name);
        const staleHosts = existing
          .filter((entry) => entry.route === route.name && entry.host !== host)
          .map((entry) => entry.host);
        if (current && staleHosts.length === 0 && sameValues(current.values, route, route.pathPrefix)) {
          result.unchanged.push(route.name);
          continue;
        }
        const publication = await enqueue(route.name, async () => {
          if ((generations.get(route.name) ?? 0) !== (seen.get(route.name) ?? 0)) return undefined;
          return write(route, route, staleHosts, "republish");
        });
        if (publication) {
          result.written.push(route.name);
          onPublished(publication);
        }
      }

      for (const entry of existing) {
        if (wanted.has(`${entry.host}/${entry.route}`)) continue;
        // Another host of a route the router has was already deleted by that route's write.
        if (routes.some((route) => route.name === entry.route)) continue;
        await enqueue(entry.route, async () => {
          // A switch created the route after router.routes() was read: its keys are fresh.
          if ((generations.get(entry.route) ?? 0) !== (seen.get(entry.route) ?? 0)) return;
          await etcd.deletePrefix(`${routeKey(prefix, entry.host, entry.route)}/`);
          result.removed.push(`${entry.host}/${entry.route}`);
        });
      }
      return result;
    },

    async close(): Promise<void> {
      // Let writes already started finish, so a closing server leaves etcd as current as it can.
      await Promise.all(queues.values());
      await router.close();
    },
  };
}

function routeKey(prefix: string, host: string, route: string, field?: RouteField): string {
  return field ? `${prefix}/${host}/${route}/${field}` : `${prefix}/${host}/${route}`;
}

function routeValues(live: LiveUpstream, pathPrefix: string, now: Date): Record<RouteField, string> {
  return {
    upstream: live.upstream,
    "host-port": hostPort(live.upstream),
    colour: live.colour ?? "",
    path: pathPrefix,
    updated: now.toISOString(),
  };
}

/** "http://127.0.0.1:32768" → "127.0.0.1:32768"; the port is always there ("http://a" → "a:80"). */
function hostPort(upstream: string): string {
  const url = new URL(upstream);
  const port = url.port || (url.protocol === "https:" ? "443" : "80");
  return `${url.hostname}:${port}`;
}

function sameValues(current: Partial<Record<RouteField, string>>, live: LiveUpstream, pathPrefix: string): boolean {
  const wanted = routeValues(live, pathPrefix, new Date(0));
  // `updated` says when Ferry wrote the keys, not what they say: it is not compared.
  return ROUTE_FIELDS.every((field) => field === "updated" || current[field] === wanted[field]);
}

interface PublishedRoute {
  readonly host: string;
  readonly route: string;
  readonly values: Partial<Record<RouteField, string>>;
}

/** The keys under `<prefix>/`, grouped by host and route; keys of any other shape are ignored. */
function groupRoutes(prefix: string, entries: readonly EtcdKeyValue[]): PublishedRoute[] {
  const routes = new Map<string, PublishedRoute>();
  for (const entry of entries) {
    const parts = entry.key.slice(prefix.length + 1).split("/");
    const [host, route, field] = parts;
    if (parts.length !== 3 || !host || !route || !field) continue;
    const id = `${host}/${route}`;
    let published = routes.get(id);
    if (!published) {
      published = { host, route, values: {} };
      routes.set(id, published);
    }
    if ((ROUTE_FIELDS as readonly string[]).includes(field)) published.values[field as RouteField] = entry.value;
  }
  return [...routes.values()];
}

function checkedPrefix(prefix: string): string {
  const trimmed = prefix.replace(/\/+$/, "");
  if (!trimmed.startsWith("/")) {
    throw new InputError(`etcd prefix '${prefix}' must start with '/' and name a folder, such as ${DEFAULT_PREFIX}`);
  }
  return trimmed;
}

/** A host or route name is one key segment: a '/' would shift every field of the layout. */
function checkSegment(what: string, value: string): void {
  if (value === "" || value === "." || value === ".." || value.includes("/")) {
    throw new InputError(`${what} '${value}' cannot be published to etcd: it must be non-empty and have no '/'`);
  }
}

function encode(text: string): string {
  return Buffer.from(text, "utf8").toString("base64");
}

function decode(value: unknown): string {
  return typeof value === "string" ? Buffer.from(value, "base64").toString("utf8") : "";
}

/** etcd's prefix range end: the prefix with its last byte plus one (bytes 0xff dropped first). */
function prefixRangeEnd(prefix: string): string {
  const bytes = Buffer.from(prefix, "utf8");
  for (let index = bytes.length - 1; index >= 0; index--) {
    const byte = bytes[index] ?? 0xff;
    if (byte < 0xff) {
      const end = Buffer.from(bytes.subarray(0, index + 1));
      end[index] = byte + 1;
      return end.toString("base64");
    }
  }
  // Every byte is 0xff: "\0" means "to the end of the key space".
  return Buffer.from([0]).toString("base64");
}

function parseObject(text: string): Record<string, unknown> | undefined {
  try {
    const value: unknown = JSON.parse(text);
    return value !== null && typeof value === "object" && !Array.isArray(value)
      ? (value as Record<string, unknown>)
      : undefined;
  } catch {
    return undefined;
  }
}

function headerRevision(answer: Record<string, unknown>, endpoint: string): number {
  const header = answer.header as { revision?: unknown } | undefined;
  const revision = Number(header?.revision);
  if (!Number.isSafeInteger(revision) || revision <= 0) {
    throw new EtcdError(`etcd at ${endpoint} answered without a revision`, endpoint);
  }
  return revision;
}
