import { createHash } from "node:crypto";
import { z } from "zod";
import { FerryError, InputError } from "../domain/errors.js";
import { IMAGE_TAG_HINT, isDigest, isImageTag, isRepositoryName, REPOSITORY_NAME_HINT } from "../domain/images.js";
import {
  defaultOutboundPolicy,
  guardedFetch,
  type OutboundPolicy,
  OutboundRefusedError,
} from "../security/outboundGuard.js";

/**
 * A client of the Docker Registry HTTP API v2 (distribution, Harbor, GHCR, Docker Hub…):
 * just what a feed needs — ping, list tags, resolve a tag to its manifest digest.
 *
 * Authentication follows the registry's challenges: anonymous first; HTTP Basic when the
 * registry asks for it; the bearer-token flow (fetch a token from the challenge's realm,
 * cache it per scope until it expires, retry once) when the registry names a token service.
 *
 * Security: error messages never carry the password, an Authorization header, a token or
 * the body of a failed response; a registry answer is only read up to a size limit. Every
 * call (redirects and the token service included) goes through the outbound guard
 * (security/outboundGuard.ts): a refused address throws its OutboundRefusedError.
 */

export type RegistryErrorReason = "unauthorized" | "not-found" | "unreachable" | "timeout" | "bad-response";

/** A registry call that failed; `message` says what to do about it. */
export class RegistryError extends FerryError {
  override readonly name = "RegistryError";
  /** Shown to API clients as a 502 "feed-error" problem: the registry, not the request, failed. */
  readonly code = "feed-error";
  constructor(
    readonly reason: RegistryErrorReason,
    message: string,
    options?: ErrorOptions,
  ) {
    super(message, options);
  }
}

export interface RegistryClientOptions {
  /** Base URL of the registry: "https://registry.example.com" (no credentials, query or fragment). */
  url: string;
  username?: string;
  password?: string;
  /** Limit of each HTTP call (registry or token service), body included. Default 15 s. */
  timeoutMs?: number;
  /** Which addresses may be called (FERRY_OUTBOUND_ALLOW); default: no exception to the deny list. */
  outbound?: OutboundPolicy;
}

export interface ResolvedManifest {
  /** "sha256:…": what a release pins. */
  digest: string;
  /** The manifest's media type, e.g. application/vnd.oci.image.index.v1+json. */
  mediaType: string;
}

const DEFAULT_TIMEOUT_MS = 15_000;
const DEFAULT_PAGE_SIZE = 100;
/** Stop following `Link` headers after this many pages: a registry that loops is broken. */
const MAX_PAGES = 1_000;
/** distribution refuses manifests over 4 MiB; nothing bigger is a manifest. */
const MAX_MANIFEST_BYTES = 4 * 1024 * 1024;
const MAX_JSON_BYTES = 8 * 1024 * 1024;
/** Error bodies are read only to tell "no such repository" from "no such tag". */
const MAX_ERROR_BYTES = 64 * 1024;
/** Tokens without `expires_in` live 60 s (the token specification's default). */
const DEFAULT_TOKEN_SECONDS = 60;
/** A cached token is dropped this long before it expires, so it never expires in flight. */
const TOKEN_EXPIRY_MARGIN_MS = 10_000;

/** Every manifest kind a tag can point to today, most general first. */
const MANIFEST_MEDIA_TYPES = [
  "application/vnd.oci.image.index.v1+json",
  "application/vnd.oci.image.manifest.v1+json",
  "application/vnd.docker.distribution.manifest.list.v2+json",
  "application/vnd.docker.distribution.manifest.v2+json",
];
const MANIFEST_ACCEPT = MANIFEST_MEDIA_TYPES.join(", ");

const tagListSchema = z.object({ tags: z.array(z.string()).nullish() });
const tokenResponseSchema = z.object({
  token: z.string().optional(),
  access_token: z.string().optional(),
  expires_in: z.number().optional(),
});
const errorBodySchema = z.object({ errors: z.array(z.object({ code: z.string() })).min(1) });
const manifestBodySchema = z.object({ mediaType: z.string().optional() });

/** One call to the registry, with what the messages need to say about it. */
interface Call {
  method: "GET" | "HEAD" | "PUT";
  url: URL;
  accept?: string;
  /** A manifest to PUT, with its media type. */
  body?: { bytes: Buffer; mediaType: string };
  /** The token scope this call needs ("repository:team/app:pull"); none for /v2/. */
  scope?: string;
  /** What the call is for, in words: "listing the tags of team/app". */
  purpose: string;
  /** Who the credentials are for, in messages: "repository team/app" or "the registry". */
  subject: string;
  /** Who answers, in messages; the registry unless it is its token service. */
  peer?: string;
}

interface Challenge {
  scheme: string;
  params: Map<string, string>;
}

interface CachedToken {
  value: string;
  expiresAt: number;
}

export class RegistryClient {
  private readonly baseUrl: URL;
  /** Shown in messages: the URL as configured, which never holds credentials. */
  private readonly displayUrl: string;
  private readonly basicAuthorization: string | undefined;
  private readonly timeoutMs: number;
  private readonly outbound: OutboundPolicy;
  /** Set once the registry asked for Basic: later calls send it straight away. */
  private usesBasic = false;
  /** Set once the registry named a token service: later calls look in the cache first. */
  private tokenService: { realm: string; service: string } | undefined;
  private readonly tokens = new Map<string, CachedToken>();

  constructor(options: RegistryClientOptions) {
    this.baseUrl = parseRegistryUrl(options.url);
    this.displayUrl = `${this.baseUrl.origin}${this.baseUrl.pathname.replace(/\/+$/, "")}`;
    const timeoutMs = options.timeoutMs ?? DEFAULT_TIMEOUT_MS;
    if (!Number.isInteger(timeoutMs) || timeoutMs < 1 || timeoutMs > 600_000) {
      throw new InputError("registry timeout must be a whole number of milliseconds between 1 and 600000");
    }
    this.timeoutMs = timeoutMs;
    this.outbound = options.outbound ?? defaultOutboundPolicy;
    const { username, password } = options;
    if (password !== undefined && !username) {
      throw new InputError("a registry password needs a username; set the feed's username too");
    }
    if (username?.includes(":")) {
      throw new InputError("a registry username cannot contain ':' (HTTP Basic authentication forbids it)");
    }
    this.basicAuthorization = username
      ? `Basic ${Buffer.from(`${username}:${password ?? ""}`, "utf8").toString("base64")}`
      : undefined;
  }

  /** Checks that the URL answers as a v2 registry and that the credentials (if any) are accepted. */
  async ping(): Promise<void> {
    const call: Call = {
      method: "GET",
      url: this.endpoint("/v2/"),
      purpose: "checking its API at /v2/",
      subject: "the registry",
    };
    const response = await this.send(call);
    await discard(response);
    if (response.ok) return;
    if (response.status === 404) {
      throw new RegistryError(
        "bad-response",
        `${this.displayUrl} answered HTTP 404 at /v2/, so it is not a Docker registry (HTTP API v2): check the feed's URL`,
      );
    }
    throw this.unexpectedStatus(call, response.status);
  }

  /**
   * Every tag of a repository, in the registry's order, following `Link` pagination with
   * `pageSize` tags per page. Names that are not valid tags are left out.
   */
  async listTags(repository: string, options: { pageSize?: number } = {}): Promise<string[]> {
    checkRepository(repository);
    const pageSize = options.pageSize ?? DEFAULT_PAGE_SIZE;
    if (!Number.isInteger(pageSize) || pageSize < 1 || pageSize > 10_000) {
      throw new InputError("tag page size must be a whole number between 1 and 10000");
    }
    const tags: string[] = [];
    const seen = new Set<string>();
    const visited = new Set<string>();
    let url: URL | undefined = this.endpoint(`/v2/${repository}/tags/list`);
    url.searchParams.set("n", String(pageSize));
    while (url) {
      const call: Call = {
        method: "GET",
        url,
        scope: pullScope(repository),
        purpose: `listing the tags of ${repository}`,
        subject: `repository ${repository}`,
      };
      if (visited.has(url.href) || visited.size >= MAX_PAGES) {
        throw new RegistryError(
          "bad-response",
          `registry at ${this.displayUrl} kept sending more pages while ${call.purpose} (after ${visited.size}): check the registry's version and logs`,
        );
      }
      visited.add(url.href);
      const response = await this.send(call);
      if (response.status === 404) {
        await discard(response);
        throw this.repositoryNotFound(repository);
      }
      if (!response.ok) {
        await discard(response);
        throw this.unexpectedStatus(call, response.status);
      }
      const body = await this.readJson(call, response, tagListSchema, MAX_JSON_BYTES);
      for (const tag of body.tags ?? []) {
        if (isImageTag(tag) && !seen.has(tag)) {
          seen.add(tag);
          tags.push(tag);
        }
      }
      url = this.nextPage(call, response.headers.get("link"));
    }
    return tags;
  }

  /**
   * The digest and media type of the manifest a tag (or digest) points to now: HEAD on the
   * manifest, falling back to GET when HEAD is refused or leaves out the digest.
   */
  async resolveDigest(repository: string, reference: string): Promise<ResolvedManifest> {
    checkRepository(repository);
    const byDigest = isDigest(reference);
    if (!byDigest && !isImageTag(reference)) {
      throw new InputError(`tag ${quote(reference)} is not valid: ${IMAGE_TAG_HINT}, or give a sha256:… digest`);
    }
    const name = byDigest ? `${repository}@${reference}` : `${repository}:${reference}`;
    const url = this.endpoint(`/v2/${repository}/manifests/${reference}`);
    const base = { url, accept: MANIFEST_ACCEPT, scope: pullScope(repository), subject: `repository ${repository}` };

    const headCall: Call = { ...base, method: "HEAD", purpose: `resolving ${name}` };
    const head = await this.send(headCall);
    await discard(head);
    if (head.status === 404) throw this.manifestNotFound(repository, reference, undefined);
    const headerDigest = head.headers.get("docker-content-digest");
    const headerType = contentType(head);
    if (head.ok && headerDigest && headerType) {
      return {
        digest: this.checkDigest(headCall, headerDigest, byDigest ? reference : undefined),
        mediaType: headerType,
      };
    }

    // HEAD refused (some registries answer 405) or said too little: fetch the manifest itself.
    const getCall: Call = { ...base, method: "GET", purpose: `resolving ${name}` };
    const response = await this.send(getCall);
    if (response.status === 404) {
      throw this.manifestNotFound(repository, reference, await readErrorCode(response));
    }
    if (!response.ok) {
      await discard(response);
      throw this.unexpectedStatus(getCall, response.status);
    }
    const body = await this.readBody(getCall, response, MAX_MANIFEST_BYTES);
    const computed = `sha256:${createHash("sha256").update(body).digest("hex")}`;
    const mediaType = contentType(response) ?? manifestMediaType(body);
    if (!mediaType) {
      throw new RegistryError(
        "bad-response",
        `registry at ${this.displayUrl} sent a manifest without a media type while ${getCall.purpose}: check the registry's version`,
      );
    }
    const sentDigest = response.headers.get("docker-content-digest");
    // The header names the digest of exactly these bytes for the manifest kinds we asked
    // for; a mismatch means the bytes were altered on the way or the registry is broken.
    if (sentDigest?.startsWith("sha256:") && MANIFEST_MEDIA_TYPES.includes(mediaType) && sentDigest !== computed) {
      throw new RegistryError(
        "bad-response",
        `registry at ${this.displayUrl} sent a manifest whose content does not match its digest while ${getCall.purpose}: check for a proxy altering responses`,
      );
    }
    return { digest: this.checkDigest(getCall, sentDigest ?? computed, byDigest ? reference : undefined), mediaType };
  }

  /**
   * Gives the manifest `digest` of `repository` the tag `tag` by uploading the manifest's own
   * bytes under the new name (GET by digest, PUT by tag): no layer is pulled or uploaded,
   * and the tag resolves to exactly that digest. A tag that already points elsewhere is
   * refused unless `force`: moving a release's tag silently changes what others deploy.
   */
  async retag(
    repository: string,
    digest: string,
    tag: string,
    options: { force?: boolean } = {},
  ): Promise<{ outcome: "created" | "unchanged" | "moved"; previous?: string }> {
    checkRepository(repository);
    if (!isDigest(digest)) throw new InputError(`${quote(digest)} is not a sha256:… digest`);
    if (!isImageTag(tag)) throw new InputError(`tag ${quote(tag)} is not valid: ${IMAGE_TAG_HINT}`);
    let previous: string | undefined;
    try {
      previous = (await this.resolveDigest(repository, tag)).digest;
    } catch (error) {
      if (!(error instanceof RegistryError && error.reason === "not-found")) throw error;
    }
    if (previous === digest) return { outcome: "unchanged" };
    if (previous && !options.force) {
      throw new RegistryError(
        "bad-response",
        `tag ${tag} of ${repository} already points to ${previous}, not ${digest}; Ferry does not move a tag to another image unless the step says force: true`,
      );
    }
    const manifest = await this.fetchManifest(repository, digest);
    const put: Call = {
      method: "PUT",
      url: this.endpoint(`/v2/${repository}/manifests/${tag}`),
      body: { bytes: manifest.bytes, mediaType: manifest.mediaType },
      scope: pushScope(repository),
      purpose: `tagging ${repository}@${digest} as ${tag}`,
      subject: `repository ${repository}`,
    };
    const response = await this.send(put);
    await discard(response);
    if (response.status === 404) throw this.manifestNotFound(repository, digest, undefined);
    if (response.status !== 201 && !response.ok) throw this.unexpectedStatus(put, response.status);
    const stored = response.headers.get("docker-content-digest");
    if (stored && stored !== digest) {
      throw new RegistryError(
        "bad-response",
        `registry at ${this.displayUrl} stored ${stored} instead of ${digest} while ${put.purpose}: check for a proxy altering requests`,
      );
    }
    return previous ? { outcome: "moved", previous } : { outcome: "created" };
  }

  /** The manifest `digest` as the registry stores it: its exact bytes (checked against the digest) and media type. */
  private async fetchManifest(repository: string, digest: string): Promise<{ bytes: Buffer; mediaType: string }> {
    const call: Call = {
      method: "GET",
      url: this.endpoint(`/v2/${repository}/manifests/${digest}`),
      accept: MANIFEST_ACCEPT,
      scope: pullScope(repository),
      purpose: `reading manifest ${repository}@${digest}`,
      subject: `repository ${repository}`,
    };
    const response = await this.send(call);
    if (response.status === 404) {
      throw this.manifestNotFound(repository, digest, await readErrorCode(response));
    }
    if (!response.ok) {
      await discard(response);
      throw this.unexpectedStatus(call, response.status);
    }
    const bytes = await this.readBody(call, response, MAX_MANIFEST_BYTES);
    if (`sha256:${createHash("sha256").update(bytes).digest("hex")}` !== digest) {
      throw new RegistryError(
        "bad-response",
        `registry at ${this.displayUrl} sent a manifest whose content does not match ${digest} while ${call.purpose}: check for a proxy altering responses`,
      );
    }
    const mediaType = contentType(response) ?? manifestMediaType(bytes);
    if (!mediaType) {
      throw new RegistryError(
        "bad-response",
        `registry at ${this.displayUrl} sent a manifest without a media type while ${call.purpose}: check the registry's version`,
      );
    }
    return { bytes, mediaType };
  }

  private endpoint(path: string): URL {
    const url = new URL(this.baseUrl);
    url.pathname = `${this.baseUrl.pathname.replace(/\/+$/, "")}${path}`;
    return url;
  }

  /**
   * Sends a call with the best authorization known, answers one 401 challenge (Basic or
   * bearer token) and retries once. 401 and 403 never come back from here.
   */
  private async send(call: Call): Promise<Response> {
    const sent = this.knownAuthorization(call.scope);
    const first = await this.fetchWithTimeout(call, call.url, this.headers(call, sent));
    if (first.status === 403) {
      await discard(first);
      throw this.denied(call);
    }
    if (first.status !== 401) return first;
    const challenge = pickChallenge(first.headers.get("www-authenticate"));
    await discard(first);
    const retry = await this.answerChallenge(call, challenge, sent);
    const second = await this.fetchWithTimeout(call, call.url, this.headers(call, retry));
    if (second.status === 401 || second.status === 403) {
      await discard(second);
      throw second.status === 403 ? this.denied(call) : this.refused(call);
    }
    return second;
  }

  private headers(call: Call, authorization: string | undefined): Record<string, string> {
    return {
      ...(call.accept && { accept: call.accept }),
      ...(call.body && { "content-type": call.body.mediaType }),
      ...(authorization && { authorization }),
    };
  }

  /** What to send before any challenge: a cached token for the scope, or Basic once asked for. */
  private knownAuthorization(scope: string | undefined): string | undefined {
    if (this.tokenService) {
      const token = this.cachedToken(tokenKey(this.tokenService.realm, this.tokenService.service, scope ?? ""));
      return token && `Bearer ${token}`;
    }
    return this.usesBasic ? this.basicAuthorization : undefined;
  }

  /** The Authorization header that answers a challenge, or an 'unauthorized' error. */
  private async answerChallenge(
    call: Call,
    challenge: Challenge | undefined,
    sent: string | undefined,
  ): Promise<string> {
    if (challenge?.scheme === "basic") {
      if (!this.basicAuthorization) throw this.credentialsNeeded(call);
      if (sent === this.basicAuthorization) throw this.refused(call);
      this.usesBasic = true;
      return this.basicAuthorization;
    }
    if (challenge?.scheme === "bearer") {
      const realm = challenge.params.get("realm");
      if (!realm) throw this.badChallenge(call);
      const service = challenge.params.get("service") ?? "";
      const scope = challenge.params.get("scope") ?? "";
      this.tokenService = { realm, service };
      const key = tokenKey(realm, service, scope);
      const cached = this.cachedToken(key);
      // A cached token the registry just refused is not worth sending again.
      if (cached && `Bearer ${cached}` !== sent) return `Bearer ${cached}`;
      const token = await this.fetchToken(call, realm, service, scope);
      this.tokens.set(key, token);
      // Also under the scope this call asked for, so the next such call sends it straight
      // away even if the registry spells its scope differently.
      this.tokens.set(tokenKey(realm, service, call.scope ?? ""), token);
      return `Bearer ${token.value}`;
    }
    if (!challenge) throw this.badChallenge(call);
    throw new RegistryError(
      "unauthorized",
      `registry at ${this.displayUrl} asks for '${challenge.scheme.slice(0, 40)}' authentication, which Ferry does not support (only Basic and bearer tokens): check the feed's URL`,
    );
  }

  private cachedToken(key: string): string | undefined {
    const token = this.tokens.get(key);
    if (!token) return undefined;
    if (token.expiresAt > Date.now()) return token.value;
    this.tokens.delete(key);
    return undefined;
  }

  /** The token flow: GET realm?service=…&scope=…, with the feed's credentials if it has any. */
  private async fetchToken(call: Call, realm: string, service: string, scope: string): Promise<CachedToken> {
    let url: URL;
    try {
      url = new URL(realm);
    } catch {
      throw this.badChallenge(call);
    }
    if ((url.protocol !== "https:" && url.protocol !== "http:") || url.username || url.password) {
      throw this.badChallenge(call);
    }
    const tokenServiceUrl = `${url.origin}${url.pathname}`;
    // Never downgrade: credentials given for an https registry do not travel in clear text.
    if (this.basicAuthorization && this.baseUrl.protocol === "https:" && url.protocol === "http:") {
      throw new RegistryError(
        "bad-response",
        `registry at ${this.displayUrl} sends clients to a plain-http token service (${tokenServiceUrl}); Ferry will not send the feed's credentials there: fix the registry's token realm`,
      );
    }
    if (service) url.searchParams.set("service", service);
    for (const part of scope.split(" ")) {
      if (part) url.searchParams.append("scope", part);
    }
    const tokenCall: Call = {
      ...call,
      method: "GET",
      url,
      accept: "application/json",
      peer: `the token service at ${tokenServiceUrl}`,
    };
    const response = await this.fetchWithTimeout(tokenCall, url, this.headers(tokenCall, this.basicAuthorization));
    if (response.status === 401 || response.status === 403) {
      await discard(response);
      throw new RegistryError(
        "unauthorized",
        this.basicAuthorization
          ? `the token service at ${tokenServiceUrl} (of the registry at ${this.displayUrl}) refused the credentials for ${call.subject}: check the feed's username and password`
          : `the token service at ${tokenServiceUrl} (of the registry at ${this.displayUrl}) requires credentials for ${call.subject}: set the feed's username and password`,
      );
    }
    if (!response.ok) {
      await discard(response);
      throw new RegistryError(
        "bad-response",
        `the token service at ${tokenServiceUrl} (of the registry at ${this.displayUrl}) answered HTTP ${response.status} while ${call.purpose}: check the token service's logs`,
      );
    }
    const body = await this.readJson(tokenCall, response, tokenResponseSchema, MAX_ERROR_BYTES);
    const value = body.token || body.access_token;
    // Printable ASCII only: the token goes into a header line.
    if (!value || !/^[\x21-\x7e]+$/.test(value)) {
      throw new RegistryError(
        "bad-response",
        `the token service at ${tokenServiceUrl} (of the registry at ${this.displayUrl}) answered without a usable token while ${call.purpose}: check the token service's version`,
      );
    }
    const lifetimeMs = Math.max(0, body.expires_in ?? DEFAULT_TOKEN_SECONDS) * 1000;
    const margin = Math.min(TOKEN_EXPIRY_MARGIN_MS, lifetimeMs / 10);
    return { value, expiresAt: Date.now() + lifetimeMs - margin };
  }

  /**
   * fetch (through the outbound guard) with the call's timeout; network failures become
   * 'unreachable' or 'timeout', a refusal of the guard is thrown as it is.
   */
  private async fetchWithTimeout(call: Call, url: URL, headers: Record<string, string>): Promise<Response> {
    const name = call.peer ? `${call.peer} (of feed URL ${this.displayUrl})` : `feed URL ${this.displayUrl}`;
    try {
      // The signal also bounds reading the body, which happens later through `response`.
      return await guardedFetch(
        url,
        {
          method: call.method,
          headers,
          ...(call.body && { body: call.body.bytes }),
          signal: AbortSignal.timeout(this.timeoutMs),
          name,
        },
        this.outbound,
      );
    } catch (error) {
      if (error instanceof OutboundRefusedError) throw error;
      throw this.networkError(call, error);
    }
  }

  private peer(call: Call): string {
    return call.peer ?? `the registry at ${this.displayUrl}`;
  }

  private networkError(call: Call, error: unknown): RegistryError {
    const peer = this.peer(call);
    if (error instanceof Error && (error.name === "TimeoutError" || error.name === "AbortError")) {
      return new RegistryError(
        "timeout",
        `${peer} did not answer within ${formatSeconds(this.timeoutMs)} while ${call.purpose}: check that it is up, or raise the feed's timeout`,
        { cause: error },
      );
    }
    const code = systemErrorCode(error);
    return new RegistryError(
      "unreachable",
      `cannot reach ${peer}${code ? ` (${code})` : ""} while ${call.purpose}: check the feed's URL and that the registry is running`,
      { cause: error },
    );
  }

  private async readBody(call: Call, response: Response, limit: number): Promise<Buffer> {
    try {
      const body = await readLimited(response, limit);
      if (body) return body;
    } catch (error) {
      throw this.networkError(call, error);
    }
    throw new RegistryError(
      "bad-response",
      `${this.peer(call)} sent more than ${limit} bytes while ${call.purpose}: check the feed's URL`,
    );
  }

  private async readJson<T>(call: Call, response: Response, schema: z.ZodType<T>, limit: number): Promise<T> {
    const body = await this.readBody(call, response, limit);
    let parsed: unknown;
    try {
      parsed = JSON.parse(body.toString("utf8"));
    } catch {
      parsed = undefined;
    }
    const result = schema.safeParse(parsed);
    if (result.success) return result.data;
    throw new RegistryError(
      "bad-response",
      `${this.peer(call)} sent an answer Ferry does not understand while ${call.purpose}: check that the feed's URL is a Docker registry`,
    );
  }

  /** The `rel="next"` target of a Link header, only if it stays on this registry. */
  private nextPage(call: Call, link: string | null): URL | undefined {
    if (!link) return undefined;
    for (const match of link.matchAll(/<([^>]*)>([^,<]*)/g)) {
      const [, target = "", params = ""] = match;
      if (!/;\s*rel\s*=\s*"?next"?\s*(?:;|$)/i.test(params)) continue;
      let next: URL;
      try {
        next = new URL(target, call.url);
      } catch {
        break;
      }
      // The Authorization header travels with the next request: keep it on this registry.
      if (next.origin !== this.baseUrl.origin) break;
      return next;
    }
    if (/rel\s*=\s*"?next"?/i.test(link)) {
      throw new RegistryError(
        "bad-response",
        `registry at ${this.displayUrl} pointed to a next page Ferry will not follow (not on the same registry) while ${call.purpose}: check the registry's configuration`,
      );
    }
    return undefined;
  }

  private checkDigest(call: Call, digest: string, requested: string | undefined): string {
    if (!isDigest(digest)) {
      throw new RegistryError(
        "bad-response",
        `registry at ${this.displayUrl} sent a malformed digest while ${call.purpose}: check the registry's version`,
      );
    }
    if (requested && digest !== requested) {
      throw new RegistryError(
        "bad-response",
        `registry at ${this.displayUrl} answered with another manifest than the digest asked for while ${call.purpose}: check for a proxy altering responses`,
      );
    }
    return digest;
  }

  private repositoryNotFound(repository: string): RegistryError {
    return new RegistryError(
      "not-found",
      `repository ${repository} does not exist on the registry at ${this.displayUrl}: check the image name, and that an image was pushed to it`,
    );
  }

  private manifestNotFound(repository: string, reference: string, errorCode: string | undefined): RegistryError {
    if (errorCode === "NAME_UNKNOWN") return this.repositoryNotFound(repository);
    const what = isDigest(reference) ? `manifest ${reference}` : `tag ${reference}`;
    return new RegistryError(
      "not-found",
      `${what} of repository ${repository} does not exist on the registry at ${this.displayUrl}: check the image name and the tag, and that it was pushed`,
    );
  }

  private credentialsNeeded(call: Call): RegistryError {
    return new RegistryError(
      "unauthorized",
      `registry at ${this.displayUrl} requires credentials for ${call.subject}: set the feed's username and password`,
    );
  }

  private refused(call: Call): RegistryError {
    if (!this.basicAuthorization) return this.credentialsNeeded(call);
    return new RegistryError(
      "unauthorized",
      `registry at ${this.displayUrl} refused the credentials for ${call.subject}: check the feed's username and password`,
    );
  }

  private denied(call: Call): RegistryError {
    return new RegistryError(
      "unauthorized",
      `registry at ${this.displayUrl} denied access to ${call.subject}: check that the feed's user may ${call.method === "PUT" ? "push to" : "pull from"} it`,
    );
  }

  private badChallenge(call: Call): RegistryError {
    return new RegistryError(
      "unauthorized",
      `registry at ${this.displayUrl} refused ${call.subject} without saying how to authenticate (no usable WWW-Authenticate): check the feed's URL`,
    );
  }

  private unexpectedStatus(call: Call, status: number): RegistryError {
    if (status === 502 || status === 503 || status === 504) {
      return new RegistryError(
        "unreachable",
        `registry at ${this.displayUrl} is unavailable (HTTP ${status}) while ${call.purpose}: try again later, or check the registry's health`,
      );
    }
    const hint = status === 429 ? "it limits the request rate; poll less often" : "check the registry's logs";
    return new RegistryError(
      "bad-response",
      `registry at ${this.displayUrl} answered HTTP ${status} while ${call.purpose}: ${hint}`,
    );
  }
}

function parseRegistryUrl(value: string): URL {
  let url: URL;
  try {
    url = new URL(value);
  } catch {
    throw new InputError("registry URL is not a valid URL: use e.g. https://registry.example.com");
  }
  if (url.protocol !== "http:" && url.protocol !== "https:") {
    throw new InputError("registry URL must start with http:// or https://");
  }
  if (url.username || url.password) {
    throw new InputError("registry URL must not contain credentials: set the feed's username and password instead");
  }
  if (url.search || url.hash) {
    throw new InputError("registry URL must not have a query or fragment: use e.g. https://registry.example.com");
  }
  return url;
}

function checkRepository(repository: string): void {
  if (!isRepositoryName(repository)) {
    throw new InputError(`repository name ${quote(repository)} is not valid: ${REPOSITORY_NAME_HINT}`);
  }
}

/** A user value in a message: quoted, escaped, and cut short. */
function quote(value: string): string {
  return JSON.stringify(value.length > 80 ? `${value.slice(0, 80)}…` : value);
}

function pushScope(repository: string): string {
  return `repository:${repository}:pull,push`;
}

function pullScope(repository: string): string {
  return `repository:${repository}:pull`;
}

function tokenKey(realm: string, service: string, scope: string): string {
  return JSON.stringify([realm, service, scope]);
}

/** The media type from Content-Type, without parameters. */
function contentType(response: Response): string | undefined {
  const value = response.headers.get("content-type")?.split(";")[0]?.trim().toLowerCase();
  return value && value !== "application/octet-stream" ? value : undefined;
}

function manifestMediaType(body: Buffer): string | undefined {
  try {
    const parsed = manifestBodySchema.safeParse(JSON.parse(body.toString("utf8")));
    return parsed.success ? parsed.data.mediaType : undefined;
  } catch {
    return undefined;
  }
}

/** The first error code of a registry error body ("NAME_UNKNOWN"), to choose a message; the body itself is never shown. */
async function readErrorCode(response: Response): Promise<string | undefined> {
  try {
    const body = await readLimited(response, MAX_ERROR_BYTES);
    if (!body) return undefined;
    const parsed = errorBodySchema.safeParse(JSON.parse(body.toString("utf8")));
    return parsed.success ? parsed.data.errors[0]?.code : undefined;
  } catch {
    return undefined;
  }
}

/** The body, or undefined when it is longer than `limit` bytes (then it is not read further). */
async function readLimited(response: Response, limit: number): Promise<Buffer | undefined> {
  const declared = Number(response.headers.get("content-length") ?? "0");
  if (declared > limit) {
    await discard(response);
    return undefined;
  }
  if (!response.body) return Buffer.alloc(0);
  const chunks: Uint8Array[] = [];
  let size = 0;
  const reader = response.body.getReader();
  for (;;) {
    const { done, value } = await reader.read();
    if (done) break;
    size += value.byteLength;
    if (size > limit) {
      await reader.cancel().catch(() => undefined);
      return undefined;
    }
    chunks.push(value);
  }
  return Buffer.concat(chunks);
}

/** Lets go of a body we will not read, so the connection can be reused or closed. */
async function discard(response: Response): Promise<void> {
  if (response.body && !response.bodyUsed) await response.body.cancel().catch(() => undefined);
}

/**
 * The challenge to answer from a WWW-Authenticate header (RFC 7235): bearer if offered,
 * else Basic, else the first. Several challenges may share one header line.
 */
function pickChallenge(header: string | null): Challenge | undefined {
  if (!header) return undefined;
  const challenges = parseChallenges(header);
  return (
    challenges.find((challenge) => challenge.scheme === "bearer") ??
    challenges.find((challenge) => challenge.scheme === "basic") ??
    challenges[0]
  );
}

/[\s,]*(?:([!#$%&'*+.^_`|~0-9A-Za-z-]+)\s*=\s*(?:"((?:[^"\\]|\\.)*)"|([!#$%&'*+.^_`|~0-9A-Za-z-]*))|([!#$%&'*+.^_`|~0-9A-Za-z-]+))/y;

function parseChallenges(header: string): Challenge[] {
  // `name=value` / `name="quoted value"` parameters, or a bare token that starts the next challenge.
  const challengePart =
    /[\s,]*(?:([!#$%&'*+.^_`|~0-9A-Za-z-]+)\s*=\s*(?:"((?:[^"\\]|\\.)*)"|([!#$%&'*+.^_`|~0-9A-Za-z-]*))|([!#$%&'*+.^_`|~0-9A-Za-z-]+))/y;
  const challenges: Challenge[] = [];
  let current: Challenge | undefined;
  for (let match = challengePart.exec(header); match; match = challengePart.exec(header)) {
    const [, name, quoted, bare, scheme] = match;
    if (scheme) {
      current = { scheme: scheme.toLowerCase(), params: new Map() };
      challenges.push(current);
    } else if (name && current) {
      current.params.set(name.toLowerCase(), quoted !== undefined ? quoted.replace(/\\(.)/g, "$1") : (bare ?? ""));
    }
  }
  return challenges;
}

function systemErrorCode(error: unknown): string | undefined {
  let current: unknown = error;
  for (let depth = 0; depth < 5 && current instanceof Error; depth++) {
    const code = (current as Error & { code?: unknown }).code;
    if (typeof code === "string" && /^[A-Z0-9_]{1,64}$/.test(code)) return code;
    current = current.cause;
  }
  return undefined;
}

function formatSeconds(milliseconds: number): string {
  return milliseconds % 1000 === 0 ? `${milliseconds / 1000} s` : `${milliseconds} ms`;
}
