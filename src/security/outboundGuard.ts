import { type LookupAddress, lookup as lookupCallback } from "node:dns";
import { lookup } from "node:dns/promises";
import { Agent as HttpAgent } from "node:http";
import { Agent as HttpsAgent } from "node:https";
import { createRequire } from "node:module";
import { isIP, isIPv6, type LookupFunction } from "node:net";
import type { Agent, buildConnector, Dispatcher, Response } from "undici";
import { InputError } from "../domain/errors.js";

/**
 * undici, loaded at the first outbound call rather than with this module: every `ferry`
 * command reads FERRY_OUTBOUND_ALLOW through parseOutboundAllow (config/env.ts), and loading
 * undici took ~0.15 s of each command's start. It is CommonJS, so require gives it at once.
 */
let undiciModule: typeof import("undici") | undefined;
function undici(): typeof import("undici") {
  undiciModule ??= createRequire(import.meta.url)("undici") as typeof import("undici");
  return undiciModule;
}

/**
 * The outbound request guard: which addresses the server may call for feeds (registries and
 * their token services), webhooks, OIDC providers, and http-test and health-check steps whose
 * URL a variable chose. Users choose those URLs, so without a guard anyone allowed to create
 * a feed or a webhook, or to edit a variable, could make the server call its own loopback
 * services or the cloud metadata endpoint (SSRF). docs/decisions/0016-outbound-guard.md
 * says what is refused and why (0022 for the steps); docs/security.md tells operators how
 * to allow more.
 *
 * A URL is checked when it is saved (its literal host, then every address its name resolves
 * to now) and again at each request: the connection is made only to an address the guard
 * has just checked (the lookup that checks is the lookup that connects, so a name cannot
 * resolve to a harmless address for the check and to 127.0.0.1 for the connection), and
 * each redirect target is checked before it is followed.
 */

/** One exception to the default deny list, parsed from FERRY_OUTBOUND_ALLOW. */
type OutboundRule =
  | { readonly kind: "range"; readonly bytes: Uint8Array; readonly prefix: number; readonly port?: number }
  | { readonly kind: "host"; readonly host: string; readonly port?: number };

export interface OutboundPolicy {
  /** Exceptions to the default deny list (FERRY_OUTBOUND_ALLOW); empty by default. */
  readonly allow: readonly OutboundRule[];
}

/** Loopback, link-local, metadata, unspecified and multicast addresses refused; no exceptions. */
export const defaultOutboundPolicy: OutboundPolicy = { allow: [] };

/** An outbound call the guard refused; the message says how to allow it. Maps to a 400 problem. */
export class OutboundRefusedError extends InputError {
  override readonly name = "OutboundRefusedError";
}

/** Why a destination is refused: "a loopback address" and what it was ("127.0.0.1"). */
interface Refusal {
  readonly label: string;
  readonly subject: string;
}

/** How the connector tells guardedFetch that it refused a connection (it does not know the URL). */
class RefusedConnectionError extends Error {
  constructor(readonly refusal: Refusal) {
    super(`connection refused by the outbound guard: ${refusal.label} (${refusal.subject})`);
  }
}

interface DeniedRange {
  readonly bytes: Uint8Array;
  readonly prefix: number;
  /** With its article, as messages use it: "a loopback address". */
  readonly label: string;
}

/**
 * Refused unless allowed, most specific first (the first match names the reason). IPv4-mapped
 * IPv6 addresses (::ffff:127.0.0.1) are checked as the IPv4 address they carry; so are the
 * other IPv6 forms that carry one (embeddedAddresses: NAT64, 6to4, SIIT, Teredo).
 */
const deniedRanges: readonly DeniedRange[] = [
  ["0.0.0.0/8", "an unspecified address"], // Linux connects 0.0.0.0 to the local host
  ["127.0.0.0/8", "a loopback address"],
  ["169.254.0.0/16", "a link-local/metadata address"], // 169.254.169.254: AWS, GCP, Azure, OpenStack…
  ["100.100.100.200/32", "a cloud metadata address"], // Alibaba Cloud
  ["224.0.0.0/4", "a multicast address"],
  ["240.0.0.0/4", "a reserved address"], // includes the broadcast address 255.255.255.255
  ["::/128", "an unspecified address"],
  ["::1/128", "a loopback address"],
  ["::/96", "an IPv4-compatible IPv6 address"], // deprecated; never a real destination
  ["fe80::/10", "a link-local address"],
  ["fd00:ec2::254/128", "a cloud metadata address"], // AWS over IPv6
  ["ff00::/8", "a multicast address"],
].map(([range = "", label = ""]) => {
  const parsed = parseRange(range);
  if (!parsed) throw new Error(`bad built-in range ${range}`);
  return { ...parsed, label };
});

/** Names of metadata services, refused even before they are resolved (a resolver may be told anything). */
const deniedNames = new Set(["metadata.google.internal", "metadata.goog"]);

const ALLOW_HINT = "allow it with FERRY_OUTBOUND_ALLOW if you mean it";
const MAX_REDIRECTS = 5;
/** How long saving a URL waits for its name to resolve; a name that does not resolve yet is checked at each request. */
const SAVE_LOOKUP_TIMEOUT_MS = 3000;

/**
 * Parses FERRY_OUTBOUND_ALLOW: comma-separated addresses (127.0.0.1, [::1]), ranges
 * (10.0.0.0/8, fd00::/8) and host names (registry.internal), each address or name with an
 * optional port (127.0.0.1:5000, [::1]:5000, registry.internal:5000). Throws an InputError
 * naming every entry it cannot read.
 */
export function parseOutboundAllow(text: string | undefined): OutboundPolicy {
  const allow: OutboundRule[] = [];
  const problems: string[] = [];
  for (const entry of (text ?? "").split(",").map((part) => part.trim())) {
    if (entry === "") continue;
    const rule = parseRule(entry);
    if (typeof rule === "string") problems.push(`'${entry.slice(0, 100)}' ${rule}`);
    else allow.push(rule);
  }
  if (problems.length > 0) {
    throw new InputError(
      `${problems.join("; ")} (write addresses, ranges or host names, each with an optional port: 127.0.0.1:5000,10.0.0.0/8,registry.internal)`,
    );
  }
  return { allow };
}

/**
 * The policy with one more exception: exactly `url`'s address (or name) and port. A blue/green
 * step checks the new colour at its private address (127.0.0.1 and the port the engine
 * published it on) before any traffic goes there: the requests that check it may call that
 * address and port, and nothing else the policy refuses.
 */
export function allowingOrigin(policy: OutboundPolicy, url: URL): OutboundPolicy {
  const host = hostOf(url);
  const port = portOf(url);
  const bytes = parseAddress(host);
  const rule: OutboundRule = bytes
    ? { kind: "range", bytes, prefix: bytes.length * 8, port }
    : { kind: "host", host: normalizeName(host), port };
  return { allow: [...policy.allow, rule] };
}

/** A rule, or what is wrong with the entry. */
function parseRule(entry: string): OutboundRule | string {
  let host = entry;
  let port: number | undefined;
  const bracketed = /^\[([^\]]+)\](?::(\d+))?$/.exec(entry);
  const withPort = /^([^:/]+):(\d+)$/.exec(entry);
  if (bracketed) {
    host = bracketed[1] ?? "";
    if (bracketed[2] !== undefined) port = Number(bracketed[2]);
    if (!isIPv6(host)) return "has brackets around something that is not an IPv6 address";
  } else if (withPort) {
    host = withPort[1] ?? "";
    port = Number(withPort[2]);
  }
  if (port !== undefined && !(Number.isInteger(port) && port >= 1 && port <= 65535)) {
    return "has a port outside 1-65535";
  }
  const portPart = port === undefined ? {} : { port };
  if (host.includes("/")) {
    if (port !== undefined) return "is a range with a port (a range takes no port)";
    const range = parseRange(host);
    return range ? { kind: "range", ...range } : "is not a valid range (write e.g. 10.0.0.0/8 or fd00::/8)";
  }
  const bytes = parseAddress(host);
  if (bytes) return { kind: "range", bytes, prefix: bytes.length * 8, ...portPart };
  const name = normalizeName(host);
  if (/^(?=.{1,253}$)[a-z0-9_]([a-z0-9_-]{0,61}[a-z0-9_])?(\.[a-z0-9_]([a-z0-9_-]{0,61}[a-z0-9_])?)*$/.test(name)) {
    return { kind: "host", host: name, ...portPart };
  }
  return "is not an address, a range or a host name";
}

/**
 * Checks a URL about to be saved (a feed's or a webhook's): http(s), a host that is not
 * refused, and, when the name resolves now, none of its addresses refused. A name that does
 * not resolve yet is accepted: each request checks it again. `pointer` names the field in
 * the error ("/url"); `originOnly` keeps the path out of messages (a webhook's path may be a
 * credential).
 */
export async function checkOutboundUrl(
  url: string | URL,
  policy: OutboundPolicy,
  options: { what: string; pointer?: string; originOnly?: boolean },
): Promise<void> {
  const refuse = (detail: string): never => {
    throw new OutboundRefusedError(detail, options.pointer ? [{ pointer: options.pointer, detail }] : []);
  };
  let parsed: URL;
  try {
    parsed = new URL(url);
  } catch {
    return refuse(`${options.what} is not a URL: write e.g. https://registry.example.com`);
  }
  const named = `${options.what} ${displayUrl(parsed, options.originOnly ?? false)}`;
  if (parsed.protocol !== "http:" && parsed.protocol !== "https:") {
    return refuse(`${named} must start with http:// or https://`);
  }
  const host = hostOf(parsed);
  const port = portOf(parsed);
  const verdict = checkHost(policy, host, port);
  if (verdict === "allowed") return;
  if (verdict !== "resolve") return refuse(refusalMessage(named, verdict));
  let addresses: LookupAddress[];
  try {
    addresses = await withTimeout(lookup(host, { all: true, verbatim: true }), SAVE_LOOKUP_TIMEOUT_MS);
  } catch {
    return; // does not resolve (yet): every request resolves and checks it again
  }
  const refusal = checkResolved(policy, host, port, addresses);
  if (refusal) refuse(refusalMessage(named, refusal));
}

export interface GuardedRequest {
  method?: string;
  headers?: Record<string, string>;
  body?: string | Uint8Array;
  signal?: AbortSignal;
  /**
   * "follow" (the default): up to 5 redirects, each target checked before it is called;
   * Authorization and Cookie headers are dropped when a redirect leaves the origin.
   * "manual": a 3xx answer is returned as it is.
   */
  redirect?: "follow" | "manual";
  /** How messages name the URL: "feed URL https://registry.example.com". Never with credentials or a query. */
  name: string;
  /**
   * Where connections are made; default: from the server, each checked by the guard. One
   * given (a target's host, over SSH) must check each connection itself (guardedDestination).
   */
  dispatcher?: Dispatcher;
}

/**
 * fetch (undici) through the guard: the URL and every redirect target are checked, and each
 * connection goes to an address checked by the lookup that made it. A refusal throws an
 * OutboundRefusedError; other failures are fetch's own (a TypeError whose cause has the
 * code). The response is returned unread: what to do with a failed call's body (never show
 * it) is the caller's business.
 */
export async function guardedFetch(
  url: string | URL,
  request: GuardedRequest,
  policy: OutboundPolicy,
): Promise<Response> {
  let current = new URL(url);
  let method = request.method ?? "GET";
  let body = request.body;
  let headers: Record<string, string> = { ...request.headers };
  for (let redirects = 0; ; redirects++) {
    const refused = (refusal: Refusal): OutboundRefusedError =>
      new OutboundRefusedError(
        redirects === 0
          ? refusalMessage(request.name, refusal)
          : `${request.name} redirected to ${displayUrl(current, false)}, which points at ${refusal.label} (${refusal.subject}); ${ALLOW_HINT}`,
      );
    const verdict = checkHost(policy, hostOf(current), portOf(current));
    if (verdict !== "allowed" && verdict !== "resolve") throw refused(verdict);
    let response: Response;
    try {
      response = await undici().fetch(current, {
        method,
        headers,
        ...(body !== undefined && { body }),
        ...(request.signal && { signal: request.signal }),
        redirect: "manual",
        dispatcher: request.dispatcher ?? agentFor(policy),
      });
    } catch (error) {
      const refusal = refusalIn(error);
      if (refusal) throw refused(refusal);
      throw error;
    }
    const location = response.headers.get("location");
    if (request.redirect === "manual" || !isRedirect(response.status) || location === null) return response;
    await response.body?.cancel().catch(() => undefined);
    let next: URL;
    try {
      next = new URL(location, current);
    } catch {
      throw new OutboundRefusedError(`${request.name} redirected to something that is not a URL; check the server`);
    }
    if (next.protocol !== "http:" && next.protocol !== "https:") {
      throw new OutboundRefusedError(
        `${request.name} redirected to a ${next.protocol} URL; Ferry follows only http:// and https:// redirects`,
      );
    }
    if (redirects >= MAX_REDIRECTS) {
      throw new OutboundRefusedError(
        `${request.name} redirected more than ${MAX_REDIRECTS} times; Ferry stops there: check the URL`,
      );
    }
    // Credentials never follow a redirect to another origin (as fetch does on its own).
    if (next.origin !== current.origin) headers = withoutHeaders(headers, ["authorization", "cookie"]);
    if (response.status === 303 || ((response.status === 301 || response.status === 302) && method === "POST")) {
      method = method === "HEAD" ? "HEAD" : "GET";
      body = undefined;
      headers = withoutHeaders(headers, ["content-type", "content-length"]);
    }
    current = next;
  }
}

/**
 * What a network failure of fetch was, for logs and task logs: "connection refused
 * (ECONNREFUSED)". Undici says "fetch failed" and puts the reason in `cause`.
 */
export function describeNetworkError(error: unknown): string {
  const cause = (error as { cause?: { code?: string; message?: string } }).cause;
  if (cause?.code === "ECONNREFUSED") return "connection refused (ECONNREFUSED)";
  if (cause?.code === "ECONNRESET") return "connection reset (ECONNRESET)";
  if (cause?.code) return `${cause.message ?? "request failed"} (${cause.code})`;
  if (cause?.message) return cause.message;
  return error instanceof Error ? error.message : String(error);
}

/**
 * For a connection made elsewhere (from a target's host, over SSH): undefined when `host`
 * and port may be called, or the error the connector must fail with, which guardedFetch
 * turns into its refusal. `resolve` looks a name up where the connection is made; the
 * caller connects to one of the addresses it returned, never to the name again.
 */
export async function guardedDestination(
  policy: OutboundPolicy,
  host: string,
  port: number,
  resolve: (name: string) => Promise<readonly string[]>,
): Promise<{ refused: Error } | { address: string }> {
  const verdict = checkHost(policy, host, port);
  if (verdict === "allowed" && isIP(host)) return { address: host };
  if (verdict !== "allowed" && verdict !== "resolve") return { refused: new RefusedConnectionError(verdict) };
  const addresses = (await resolve(host)).map((address) => ({ address, family: isIPv6(address) ? 6 : 4 }));
  const [first] = addresses;
  if (!first) return { refused: notFound(host) };
  // A name allowed by name may resolve anywhere; otherwise every address it has must pass.
  const refusal = verdict === "allowed" ? undefined : checkResolved(policy, host, port, addresses);
  return refusal ? { refused: new RefusedConnectionError(refusal) } : { address: first.address };
}

/** One agent (connection pool) per policy: pooled connections were checked when they were made. */
const agents = new WeakMap<OutboundPolicy, Agent>();

function agentFor(policy: OutboundPolicy): Agent {
  let agent = agents.get(policy);
  if (!agent) {
    agent = new (undici().Agent)({ connect: guardedConnector(policy) });
    agents.set(policy, agent);
  }
  return agent;
}

/**
 * undici's connector with the guard in front: an address host is checked here; a name is
 * checked here (allowed or refused by name) or else by the lookup that resolves it for the
 * connection, which refuses when any of its addresses is refused. That lookup needs the
 * port (rules may name one), so there is one connector per port.
 */
function guardedConnector(policy: OutboundPolicy): buildConnector.connector {
  const { buildConnector } = undici();
  const direct = buildConnector({});
  const byPort = new Map<number, buildConnector.connector>();
  return (options, callback) => {
    const port = Number(options.port) || (options.protocol === "https:" ? 443 : 80);
    const verdict = checkHost(policy, options.hostname, port);
    if (verdict === "allowed") {
      direct(options, callback);
      return;
    }
    if (verdict !== "resolve") {
      process.nextTick(() => callback(new RefusedConnectionError(verdict), null));
      return;
    }
    let connector = byPort.get(port);
    if (!connector) {
      connector = buildConnector({ lookup: guardedLookup(policy, port) });
      byPort.set(port, connector);
    }
    connector(options, callback);
  };
}

/**
 * node:http and node:https agents for clients that make their own connections (the AWS SDK's
 * S3 client) to one port: a name is connected to through the guard's lookup, which refuses it
 * when any address it has is refused (a name FERRY_OUTBOUND_ALLOW allows goes anywhere). An
 * address literal never reaches a lookup: check the URL with checkOutboundUrl first — an
 * address cannot resolve elsewhere later.
 */
export function guardedAgents(policy: OutboundPolicy, port: number): { http: HttpAgent; https: HttpsAgent } {
  const checked = guardedLookup(policy, port);
  const lookup: LookupFunction = (hostname, options, callback) => {
    if (checkHost(policy, hostname, port) === "allowed") lookupCallback(hostname, options, callback);
    else checked(hostname, options, callback);
  };
  return { http: new HttpAgent({ keepAlive: true, lookup }), https: new HttpsAgent({ keepAlive: true, lookup }) };
}

/** dns.lookup that refuses a name when any of its addresses is refused, and connects to the addresses it checked. */
function guardedLookup(policy: OutboundPolicy, port: number): LookupFunction {
  return (hostname, options, callback) => {
    lookupCallback(hostname, { ...options, all: true }, (error, addresses) => {
      if (error) {
        callback(error, []);
        return;
      }
      const refusal = checkResolved(policy, hostname, port, addresses);
      const [first] = addresses;
      if (refusal || !first) {
        callback(refusal ? new RefusedConnectionError(refusal) : notFound(hostname), []);
        return;
      }
      if (options.all) callback(null, addresses);
      else callback(null, first.address, first.family);
    });
  };
}

function notFound(hostname: string): NodeJS.ErrnoException {
  return Object.assign(new Error(`getaddrinfo ENOTFOUND ${hostname}`), { code: "ENOTFOUND" });
}

/**
 * "allowed" (an allowed address or name), "resolve" (a name to check once resolved) or why
 * it is refused. `host` is a URL's hostname without brackets.
 */
function checkHost(policy: OutboundPolicy, host: string, port: number): "allowed" | "resolve" | Refusal {
  if (isIP(host)) return checkAddress(policy, host, port) ?? "allowed";
  const name = normalizeName(host);
  if (policy.allow.some((rule) => rule.kind === "host" && rule.host === name && portMatches(rule, port))) {
    return "allowed";
  }
  if (deniedNames.has(name)) return { label: "a cloud metadata name", subject: name };
  return "resolve";
}

/** The first refused address a name resolved to, if any. */
function checkResolved(
  policy: OutboundPolicy,
  host: string,
  port: number,
  addresses: readonly LookupAddress[],
): Refusal | undefined {
  for (const { address } of addresses) {
    const refusal = checkAddress(policy, address, port);
    if (refusal) return { label: refusal.label, subject: `${host} resolves to ${refusal.subject}` };
  }
  return undefined;
}

function checkAddress(policy: OutboundPolicy, address: string, port: number): Refusal | undefined {
  const bytes = parseAddress(address);
  if (!bytes) return undefined;
  const direct = checkBytes(policy, bytes, address, port);
  if (direct) return direct;
  // An IPv6 range the operator allowed (FERRY_OUTBOUND_ALLOW=64:ff9b::/96) covers what it carries.
  if (allowingRanges(policy, bytes).some((rule) => portMatches(rule, port))) return undefined;
  for (const embedded of embeddedAddresses(bytes)) {
    const refusal = checkBytes(policy, embedded.bytes, embedded.bytes.join("."), port);
    if (refusal) return { label: refusal.label, subject: `${address}, ${embedded.form} ${refusal.subject}` };
  }
  return undefined;
}

function checkBytes(policy: OutboundPolicy, bytes: Uint8Array, address: string, port: number): Refusal | undefined {
  const denied = deniedRanges.find((range) => inRange(bytes, range));
  if (!denied) return undefined;
  const ranges = allowingRanges(policy, bytes);
  if (ranges.some((rule) => portMatches(rule, port))) return undefined;
  // Allowed on other ports only: say which port was refused, or the message looks wrong.
  return { label: denied.label, subject: ranges.length > 0 ? `${address} port ${port}` : address };
}

function allowingRanges(policy: OutboundPolicy, bytes: Uint8Array): OutboundRule[] {
  return policy.allow.filter((rule) => rule.kind === "range" && inRange(bytes, rule));
}

/** An IPv4 address carried inside an IPv6 one, and how ("NAT64 for"), for messages. */
interface EmbeddedAddress {
  readonly bytes: Uint8Array;
  readonly form: string;
}

/**
 * The IPv4 addresses an IPv6 address stands for, where a translator or tunnel on the path
 * (or the host's own stack) turns it into a connection to that IPv4 address: 64:ff9b::7f00:1
 * reaches 127.0.0.1 through a NAT64 gateway. Each is checked like the IPv4 address itself.
 *
 * - NAT64, well-known prefix 64:ff9b::/96 (RFC 6052): the last 32 bits.
 * - NAT64, local-use 64:ff9b:1::/48 (RFC 8215): the operator picks a prefix of /48, /56, /64
 *   or /96 inside it, and the position of the IPv4 bits depends on which (RFC 6052 §2.2), so
 *   every reading the address's zero bits permit is checked, and any refused one refuses it.
 * - SIIT's IPv4-translated form ::ffff:0:a.b.c.d (RFC 2765). The IPv4-mapped form
 *   ::ffff:a.b.c.d is parsed as IPv4 to begin with (parseAddress).
 * - 6to4, 2002::/16 (RFC 3056): bits 16–47.
 * - Teredo, 2001::/32 (RFC 4380): the server's address in bits 32–63 and the client's,
 *   inverted, in the last 32 bits; both are checked.
 */
function embeddedAddresses(bytes: Uint8Array): EmbeddedAddress[] {
  if (bytes.length !== 16) return [];
  const at = (...indexes: number[]) => Uint8Array.from(indexes, (index) => bytes[index] ?? 0);
  const prefix = (...values: number[]) => values.every((value, index) => bytes[index] === value);
  const zeros = (from: number, to: number) => bytes.subarray(from, to).every((byte) => byte === 0);
  if (prefix(0x00, 0x64, 0xff, 0x9b) && zeros(4, 12)) return [{ bytes: at(12, 13, 14, 15), form: "NAT64 for" }];
  if (prefix(0x00, 0x64, 0xff, 0x9b, 0x00, 0x01)) {
    // RFC 6052 §2.2: bits 64–71 (the "u" octet) and the suffix after the IPv4 bits are zero,
    // so a reading whose zeros are not there is not how this address was made.
    const readings = [
      { bytes: at(6, 7, 9, 10), suffix: 11 }, // a /48 prefix
      { bytes: at(7, 9, 10, 11), suffix: 12 }, // a /56 prefix
      { bytes: at(9, 10, 11, 12), suffix: 13 }, // a /64 prefix
    ].filter((reading) => bytes[8] === 0 && zeros(reading.suffix, 16));
    return [...readings, { bytes: at(12, 13, 14, 15) }].map((reading) => ({
      bytes: reading.bytes,
      form: "local-use NAT64 for",
    }));
  }
  if (prefix(0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff, 0, 0)) {
    return [{ bytes: at(12, 13, 14, 15), form: "SIIT-translated form of" }];
  }
  if (prefix(0x20, 0x02)) return [{ bytes: at(2, 3, 4, 5), form: "6to4 for" }];
  if (prefix(0x20, 0x01, 0x00, 0x00)) {
    const client = at(12, 13, 14, 15).map((byte) => byte ^ 0xff);
    return [
      { bytes: at(4, 5, 6, 7), form: "Teredo through server" },
      { bytes: client, form: "Teredo for" },
    ];
  }
  return [];
}

function refusalMessage(named: string, refusal: Refusal): string {
  return `${named} points at ${refusal.label} (${refusal.subject}); ${ALLOW_HINT}`;
}

/**
 * What the guard said when it refused a connection that failed with `error` (made through
 * guardedAgents by a client of its own), naming the destination as `named`; undefined when
 * the failure was not the guard's.
 */
export function guardRefusalIn(error: unknown, named: string): string | undefined {
  const refusal = refusalIn(error);
  return refusal && refusalMessage(named, refusal);
}

/** The guard's refusal inside a fetch error (undici puts the connector's error in `cause`). */
function refusalIn(error: unknown): Refusal | undefined {
  let current: unknown = error;
  for (let depth = 0; depth < 5 && current instanceof Error; depth++) {
    if (current instanceof RefusedConnectionError) return current.refusal;
    current = current.cause;
  }
  return undefined;
}

function portMatches(rule: OutboundRule, port: number): boolean {
  return rule.port === undefined || rule.port === port;
}

function isRedirect(status: number): boolean {
  return status === 301 || status === 302 || status === 303 || status === 307 || status === 308;
}

function withoutHeaders(headers: Record<string, string>, names: readonly string[]): Record<string, string> {
  return Object.fromEntries(Object.entries(headers).filter(([name]) => !names.includes(name.toLowerCase())));
}

/** A URL in a message: origin and path, never a query (a presigned redirect's signature) or credentials. */
function displayUrl(url: URL, originOnly: boolean): string {
  return originOnly ? url.origin : `${url.origin}${url.pathname}`;
}

function hostOf(url: URL): string {
  return url.hostname.replace(/^\[(.*)\]$/, "$1");
}

function portOf(url: URL): number {
  return url.port ? Number(url.port) : url.protocol === "https:" ? 443 : 80;
}

function normalizeName(name: string): string {
  return name.toLowerCase().replace(/\.$/, "");
}

async function withTimeout<T>(promise: Promise<T>, milliseconds: number): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  const timeout = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error("timed out")), milliseconds);
  });
  try {
    return await Promise.race([promise, timeout]);
  } finally {
    clearTimeout(timer);
  }
}

function parseRange(text: string): { bytes: Uint8Array; prefix: number } | undefined {
  const [address = "", prefixText, ...rest] = text.split("/");
  const bytes = parseAddress(address);
  if (!bytes || rest.length > 0 || prefixText === undefined || !/^\d{1,3}$/.test(prefixText)) return undefined;
  const prefix = Number(prefixText);
  return prefix <= bytes.length * 8 ? { bytes, prefix } : undefined;
}

/**
 * The bytes of an IPv4 or IPv6 address (4 or 16), an IPv4-mapped IPv6 address as its IPv4
 * bytes; undefined when the text is not an address.
 */
function parseAddress(text: string): Uint8Array | undefined {
  const address = text.replace(/%.*$/, ""); // an IPv6 zone ("fe80::1%eth0") does not change the address
  const family = isIP(address);
  if (family === 4) return Uint8Array.from(address.split(".").map(Number));
  if (family !== 6) return undefined;
  let groupsText = address;
  const dotted = /(\d+\.\d+\.\d+\.\d+)$/.exec(address);
  if (dotted?.[1]) {
    const [a = 0, b = 0, c = 0, d = 0] = dotted[1].split(".").map(Number);
    groupsText = `${address.slice(0, dotted.index)}${((a << 8) | b).toString(16)}:${((c << 8) | d).toString(16)}`;
  }
  const [left = "", right] = groupsText.split("::");
  const head = left === "" ? [] : left.split(":");
  const tail = right === undefined || right === "" ? [] : right.split(":");
  const groups = [...head, ...Array<string>(8 - head.length - tail.length).fill("0"), ...tail];
  const bytes = new Uint8Array(16);
  for (const [index, group] of groups.entries()) {
    const value = Number.parseInt(group, 16);
    bytes[index * 2] = value >> 8;
    bytes[index * 2 + 1] = value & 0xff;
  }
  const mapped = bytes.subarray(0, 10).every((byte) => byte === 0) && bytes[10] === 0xff && bytes[11] === 0xff;
  return mapped ? bytes.slice(12) : bytes;
}

function inRange(bytes: Uint8Array, range: { bytes: Uint8Array; prefix: number }): boolean {
  if (bytes.length !== range.bytes.length) return false;
  for (let bit = 0; bit < range.prefix; bit += 8) {
    const remaining = range.prefix - bit;
    const mask = remaining >= 8 ? 0xff : (0xff << (8 - remaining)) & 0xff;
    if (((bytes[bit / 8] ?? 0) & mask) !== ((range.bytes[bit / 8] ?? 0) & mask)) return false;
  }
  return true;
}
