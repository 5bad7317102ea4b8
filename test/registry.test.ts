import { execFileSync } from "node:child_process";
import { createHash, createPrivateKey, createPublicKey, type KeyObject, randomBytes, sign } from "node:crypto";
import { mkdtempSync, readFileSync, rmSync } from "node:fs";
import { createServer, type IncomingMessage, type Server, type ServerResponse } from "node:http";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { inspect } from "node:util";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { InputError } from "../src/domain/errors.js";
import { RegistryClient, RegistryError } from "../src/feeds/registry.js";
import { parseOutboundAllow } from "../src/security/outboundGuard.js";
import { freePort, pushTestImage, startRegistry, type TestRegistry } from "./helpers/registry.js";

/**
 * RegistryClient against real registries: Debian's docker-registry (distribution 2.8),
 * started per describe block by test/helpers/registry.ts, images pushed over its HTTP API.
 * Two behaviours distribution 2.8 does not have are imitated by a small node:http proxy in
 * front of the real registry, and the tests that use it say so in their names.
 */

/** The registries, token services and proxies of these tests run on 127.0.0.1. */
const outbound = parseOutboundAllow("127.0.0.1");
const DOCKER_V2_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json";

async function registryError(promise: Promise<unknown>): Promise<RegistryError> {
  const error = await promise.then(
    () => undefined,
    (caught: unknown) => caught,
  );
  expect(error).toBeInstanceOf(RegistryError);
  return error as RegistryError;
}

/** Everything a user or a log could see of an error: message, stack, cause, properties. */
function everythingShown(error: unknown): string {
  return `${String(error)}\n${inspect(error, { depth: 5 })}\n${JSON.stringify(error)}`;
}

async function listen(server: Server): Promise<string> {
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  const address = server.address();
  if (!address || typeof address === "string") throw new Error("server has no port");
  return `http://127.0.0.1:${address.port}`;
}

async function close(server: Server): Promise<void> {
  server.closeAllConnections();
  await new Promise((resolve) => server.close(resolve));
}

describe("docker-registry without authentication", () => {
  let registry: TestRegistry;
  let client: RegistryClient;

  beforeAll(async () => {
    registry = await startRegistry();
    client = new RegistryClient({ outbound, url: registry.url });
    for (const tag of ["1.0.0", "1.1.0", "2.0.0", "2.1.0-rc.1", "latest"]) {
      await pushTestImage(registry.url, "demo/app", tag, { content: `app ${tag}` });
    }
  });
  afterAll(() => registry?.stop());

  it("answers ping and lists every tag of a repository", async () => {
    await client.ping();
    expect((await client.listTags("demo/app")).sort()).toEqual(["1.0.0", "1.1.0", "2.0.0", "2.1.0-rc.1", "latest"]);
    // distribution 2.8 ignores n= and sends all tags in one page: that must work too.
    expect(await client.listTags("demo/app", { pageSize: 2 })).toHaveLength(5);
  });

  it("follows Link pagination with n=2 over three pages (stand-in proxy: distribution 2.8 ignores n= on tags/list, so a node:http proxy pages the real registry's tags as the v2 spec describes)", async () => {
    const proxy = await startStandInProxy(registry.url, "paginate");
    try {
      const tags = await new RegistryClient({ outbound, url: proxy.url }).listTags("demo/app", { pageSize: 2 });
      expect(tags).toEqual(["1.0.0", "1.1.0", "2.0.0", "2.1.0-rc.1", "latest"]);
      expect(proxy.requests).toEqual([
        "GET /v2/demo/app/tags/list?n=2",
        "GET /v2/demo/app/tags/list?n=2&last=1.1.0",
        "GET /v2/demo/app/tags/list?n=2&last=2.1.0-rc.1",
      ]);
    } finally {
      await proxy.stop();
    }
  });

  it("resolves a tag to the digest of its manifest, sees it move when the tag is pushed again, and still resolves the old digest", async () => {
    const first = await pushTestImage(registry.url, "demo/moving", "stable", { content: "first build" });
    expect(await client.resolveDigest("demo/moving", "stable")).toEqual({
      digest: first,
      mediaType: DOCKER_V2_MANIFEST,
    });

    const second = await pushTestImage(registry.url, "demo/moving", "stable", { content: "second build" });
    expect(second).not.toBe(first);
    expect((await client.resolveDigest("demo/moving", "stable")).digest).toBe(second);
    // A release pinned by digest keeps its image, whatever the tag does.
    expect(await client.resolveDigest("demo/moving", first)).toEqual({ digest: first, mediaType: DOCKER_V2_MANIFEST });
  });

  it("falls back to GET and hashes the manifest itself when HEAD is refused and no Docker-Content-Digest is sent (stand-in proxy imitating registries that do so; distribution always sends the header)", async () => {
    const pushed = await pushTestImage(registry.url, "demo/app", "1.2.0", { content: "one two" });
    const proxy = await startStandInProxy(registry.url, "no-head-no-digest");
    try {
      const resolved = await new RegistryClient({ outbound, url: proxy.url }).resolveDigest("demo/app", "1.2.0");
      expect(resolved).toEqual({ digest: pushed, mediaType: DOCKER_V2_MANIFEST });
      expect(proxy.requests).toEqual(["HEAD /v2/demo/app/manifests/1.2.0", "GET /v2/demo/app/manifests/1.2.0"]);
    } finally {
      await proxy.stop();
    }
  });

  it("reports an unknown repository or tag as not-found, saying which", async () => {
    const unknownRepository = await registryError(client.listTags("demo/missing"));
    expect(unknownRepository.reason).toBe("not-found");
    expect(unknownRepository.message).toContain(
      `repository demo/missing does not exist on the registry at ${registry.url}`,
    );

    const unknownTag = await registryError(client.resolveDigest("demo/app", "9.9.9"));
    expect(unknownTag.reason).toBe("not-found");
    expect(unknownTag.message).toContain("tag 9.9.9 of repository demo/app does not exist");

    const unknownDigest = await registryError(client.resolveDigest("demo/app", `sha256:${"0".repeat(64)}`));
    expect(unknownDigest.reason).toBe("not-found");
    expect((await registryError(client.resolveDigest("demo/missing", "1.0.0"))).reason).toBe("not-found");
  });

  it("refuses repository names and tags that could escape into a URL or a command line, before any request", async () => {
    const offline = new RegistryClient({ outbound, url: `http://127.0.0.1:${await freePort()}` });
    const badRepositories = ["Demo/App", "demo/../etc", "demo//app", "/demo", "demo/", "-demo", "demo/app?n=1", ""];
    for (const repository of badRepositories) {
      await expect(offline.listTags(repository), repository).rejects.toThrow(InputError);
    }
    const badTags = ["../x", "-rm", ".hidden", "a b", "1.0;reboot", "x".repeat(129), "tag/../../v2", ""];
    for (const tag of badTags) {
      await expect(offline.resolveDigest("demo/app", tag), tag).rejects.toThrow(InputError);
    }
    await expect(offline.listTags("Demo/App")).rejects.toThrow(/use lowercase letters and digits/);
    expect(() => new RegistryClient({ outbound, url: "http://user:secret@registry.example" })).toThrow(InputError);
  });
});

describe("docker-registry with htpasswd (Basic) authentication", () => {
  const credentials = { username: "ci-bot", password: "correct-horse-battery-staple" };
  let registry: TestRegistry;

  beforeAll(async () => {
    registry = await startRegistry({ auth: credentials });
    await pushTestImage(registry.url, "demo/private", "1.0.0", { auth: credentials });
  });
  afterAll(() => registry?.stop());

  it("lists tags and resolves digests with the right credentials", async () => {
    const client = new RegistryClient({ outbound, url: registry.url, ...credentials });
    await client.ping();
    expect(await client.listTags("demo/private")).toEqual(["1.0.0"]);
    expect((await client.resolveDigest("demo/private", "1.0.0")).digest).toMatch(/^sha256:[0-9a-f]{64}$/);
  });

  it("reports wrong credentials as unauthorized, says what to do, and never shows the password", async () => {
    const wrongPassword = "Wr0ng-Pa55word-do-not-print";
    const client = new RegistryClient({
      outbound,
      url: registry.url,
      username: credentials.username,
      password: wrongPassword,
    });
    // One call at a time: calls started together would reject before they are awaited.
    for (const call of [
      () => client.listTags("demo/private"),
      () => client.resolveDigest("demo/private", "1.0.0"),
      () => client.ping(),
    ]) {
      const error = await registryError(call());
      expect(error.reason).toBe("unauthorized");
      expect(error.message).toContain(`registry at ${registry.url} refused the credentials`);
      expect(error.message).toContain("check the feed's username and password");
      const shown = everythingShown(error);
      expect(shown).not.toContain(wrongPassword);
      expect(shown).not.toContain(Buffer.from(`${credentials.username}:${wrongPassword}`).toString("base64"));
    }
  });

  it("asks for credentials when none are configured", async () => {
    const error = await registryError(new RegistryClient({ outbound, url: registry.url }).listTags("demo/private"));
    expect(error.reason).toBe("unauthorized");
    expect(error.message).toContain("requires credentials for repository demo/private: set the feed's username");
  });
});

describe("docker-registry with bearer-token authentication (real `auth: token` config; the token service is a node:http server in this test)", () => {
  const credentials = { username: "deployer", password: "token-service-password" };
  let tokenService: TokenService;
  let registry: TestRegistry;

  beforeAll(async () => {
    tokenService = await startTokenService(credentials);
    registry = await startRegistry({ token: tokenService.registryConfig });
    await pushTestImage(registry.url, "demo/app", "1.0.0", { auth: credentials });
    await pushTestImage(registry.url, "demo/other", "3.1.4", { auth: credentials });
  });
  afterAll(async () => {
    await registry?.stop();
    await tokenService?.stop();
  });

  it("gets a token from the realm with the feed's credentials, retries once, and reuses the token per scope", async () => {
    tokenService.requests.length = 0;
    const client = new RegistryClient({ outbound, url: registry.url, ...credentials });
    await client.ping();
    expect(await client.listTags("demo/app")).toEqual(["1.0.0"]);
    expect((await client.resolveDigest("demo/app", "1.0.0")).mediaType).toBe(DOCKER_V2_MANIFEST);
    expect(await client.listTags("demo/app")).toEqual(["1.0.0"]);
    expect(await client.listTags("demo/other")).toEqual(["3.1.4"]);
    expect(await client.listTags("demo/other")).toEqual(["3.1.4"]);
    expect(tokenService.requests).toEqual([
      { user: "deployer", service: "ferry-test-registry", scopes: [] },
      { user: "deployer", service: "ferry-test-registry", scopes: ["repository:demo/app:pull"] },
      { user: "deployer", service: "ferry-test-registry", scopes: ["repository:demo/other:pull"] },
    ]);
  });

  it("gets a new token once the cached one has expired", async () => {
    tokenService.requests.length = 0;
    // 2 s: long enough for two calls on a slow machine, short enough to wait out.
    tokenService.expiresInSeconds = 2;
    try {
      const client = new RegistryClient({ outbound, url: registry.url, ...credentials });
      await client.listTags("demo/app");
      await client.listTags("demo/app");
      expect(tokenService.requests).toHaveLength(1);
      await new Promise((resolve) => setTimeout(resolve, 2_000));
      await client.listTags("demo/app");
      expect(tokenService.requests).toHaveLength(2);
    } finally {
      tokenService.expiresInSeconds = 300;
    }
  });

  it("reports credentials the token service refuses as unauthorized, without the password or any token", async () => {
    const wrongPassword = "not-the-token-password";
    const client = new RegistryClient({ outbound, url: registry.url, username: "deployer", password: wrongPassword });
    const error = await registryError(client.resolveDigest("demo/app", "1.0.0"));
    expect(error.reason).toBe("unauthorized");
    expect(error.message).toContain(`the token service at ${tokenService.url}/token`);
    expect(error.message).toContain("refused the credentials for repository demo/app");
    const shown = everythingShown(error);
    expect(shown).not.toContain(wrongPassword);
    expect(shown).not.toMatch(/eyJ[\w-]+\.[\w-]+/);
  });

  it("asks for credentials when the token service grants an anonymous client nothing", async () => {
    const error = await registryError(new RegistryClient({ outbound, url: registry.url }).listTags("demo/app"));
    expect(error.reason).toBe("unauthorized");
    expect(error.message).toContain("requires credentials for repository demo/app");
  });
});

describe("network failures", () => {
  it("reports a registry URL where nothing listens as unreachable", async () => {
    const url = `http://127.0.0.1:${await freePort()}`;
    const error = await registryError(new RegistryClient({ outbound, url }).listTags("demo/app"));
    expect(error.reason).toBe("unreachable");
    expect(error.message).toBe(
      `cannot reach the registry at ${url} (ECONNREFUSED) while listing the tags of demo/app: check the feed's URL and that the registry is running`,
    );
  });

  it("gives up on a registry that never answers after the configured timeout", async () => {
    const silent = createServer(() => {
      // Never answers: the client's timeout has to end the call.
    });
    const url = await listen(silent);
    try {
      const started = Date.now();
      const error = await registryError(
        new RegistryClient({ outbound, url, timeoutMs: 300 }).resolveDigest("demo/app", "1.0"),
      );
      expect(error.reason).toBe("timeout");
      expect(error.message).toContain("did not answer within 300 ms while resolving demo/app:1.0");
      expect(Date.now() - started).toBeLessThan(5_000);
    } finally {
      await close(silent);
    }
  });
});

interface StandInProxy {
  url: string;
  /** "METHOD /path?query" of each request that reached the proxy. */
  requests: string[];
  stop(): Promise<void>;
}

/**
 * A node:http proxy in front of the real registry that adds what distribution 2.8 lacks:
 * - "paginate": tags/list pages of n tags after `last`, with a Link to the next page
 *   (relative on the first page, absolute after, as registries send either);
 * - "no-head-no-digest": HEAD on manifests answers 405 and GET loses Docker-Content-Digest.
 */
async function startStandInProxy(target: string, mode: "paginate" | "no-head-no-digest"): Promise<StandInProxy> {
  const requests: string[] = [];
  let url = "";
  const server = createServer((request, response) => {
    const path = request.url ?? "/";
    requests.push(`${request.method} ${path}`);
    handle(request, path, response).catch((error: unknown) => {
      response.statusCode = 502;
      response.end(String(error));
    });
  });
  const handle = async (request: IncomingMessage, path: string, response: ServerResponse) => {
    const requested = new URL(path, target);
    const tagList = /^\/v2\/(.+)\/tags\/list$/.exec(requested.pathname);
    if (mode === "paginate" && tagList) {
      const upstream = await fetch(`${target}${requested.pathname}`, { headers: forwardedHeaders(request) });
      const { name, tags } = (await upstream.json()) as { name: string; tags: string[] };
      const pageSize = Number(requested.searchParams.get("n") ?? "100");
      const last = requested.searchParams.get("last");
      const remaining = tags.sort().filter((tag) => last === null || tag > last);
      const page = remaining.slice(0, pageSize);
      if (remaining.length > pageSize) {
        const next = `${requested.pathname}?n=${pageSize}&last=${encodeURIComponent(page.at(-1) ?? "")}`;
        response.setHeader("link", `<${last === null ? next : `${url}${next}`}>; rel="next"`);
      }
      response.setHeader("content-type", "application/json");
      response.end(JSON.stringify({ name, tags: page }));
      return;
    }
    const isManifest = /^\/v2\/.+\/manifests\/[^/]+$/.test(requested.pathname);
    if (mode === "no-head-no-digest" && isManifest && request.method === "HEAD") {
      response.statusCode = 405;
      response.end();
      return;
    }
    const upstream = await fetch(`${target}${path}`, { method: request.method, headers: forwardedHeaders(request) });
    response.statusCode = upstream.status;
    for (const [name, value] of upstream.headers) {
      if (name === "content-length" || name === "transfer-encoding" || name === "connection") continue;
      if (mode === "no-head-no-digest" && name === "docker-content-digest") continue;
      response.setHeader(name, value);
    }
    response.end(Buffer.from(await upstream.arrayBuffer()));
  };
  url = await listen(server);
  return { url, requests, stop: () => close(server) };
}

function forwardedHeaders(request: IncomingMessage): Record<string, string> {
  const headers: Record<string, string> = {};
  for (const name of ["accept", "authorization"]) {
    const value = request.headers[name];
    if (typeof value === "string") headers[name] = value;
  }
  return headers;
}

interface TokenService {
  url: string;
  registryConfig: { realm: string; service: string; issuer: string; rootCertificatePem: string };
  /** Who asked for which scopes, in order ("anonymous" when no credentials came). */
  requests: { user: string; service: string | null; scopes: string[] }[];
  expiresInSeconds: number;
  stop(): Promise<void>;
}

/**
 * The token service of Docker's token authentication, as docker-registry's `auth: token`
 * expects it: checks Basic credentials, answers `{token, expires_in}` with an ES256 JWT
 * whose `access` grants the requested repository actions, signed by a key whose
 * self-signed certificate is the registry's rootcertbundle.
 */
async function startTokenService(credentials: { username: string; password: string }): Promise<TokenService> {
  const { privateKey, certificatePem } = makeSigningCertificate();
  const keyId = libtrustKeyId(createPublicKey(certificatePem));
  const service = "ferry-test-registry";
  const issuer = "ferry-test-token-service";
  const state: TokenService = {
    url: "",
    registryConfig: { realm: "", service, issuer, rootCertificatePem: certificatePem },
    requests: [],
    expiresInSeconds: 300,
    stop: async () => undefined,
  };
  const server = createServer((request, response) => {
    const requested = new URL(request.url ?? "/", "http://token.invalid");
    const scopes = requested.searchParams.getAll("scope");
    const basic = /^Basic (.+)$/.exec(request.headers.authorization ?? "")?.[1];
    const [user, password] = basic ? Buffer.from(basic, "base64").toString("utf8").split(":") : [];
    state.requests.push({ user: user ?? "anonymous", service: requested.searchParams.get("service"), scopes });
    if (basic && (user !== credentials.username || password !== credentials.password)) {
      response.statusCode = 401;
      response.end(JSON.stringify({ details: "incorrect username or password" }));
      return;
    }
    // Only the known user gets access; an anonymous client gets a token that grants nothing.
    const access = basic
      ? scopes.flatMap((scope) => {
          const match = /^repository:([^:]+):(.+)$/.exec(scope);
          return match ? [{ type: "repository", name: match[1], actions: match[2]?.split(",") }] : [];
        })
      : [];
    const now = Math.floor(Date.now() / 1000);
    const token = signJwt(
      { typ: "JWT", alg: "ES256", kid: keyId },
      {
        iss: issuer,
        sub: user ?? "",
        aud: service,
        exp: now + state.expiresInSeconds,
        nbf: now - 1,
        iat: now,
        jti: randomBytes(8).toString("hex"),
        access,
      },
      privateKey,
    );
    response.setHeader("content-type", "application/json");
    response.end(JSON.stringify({ token, expires_in: state.expiresInSeconds, issued_at: new Date().toISOString() }));
  });
  state.url = await listen(server);
  state.registryConfig.realm = `${state.url}/token`;
  state.stop = () => close(server);
  return state;
}

/** An EC P-256 key and a self-signed certificate for it, made by openssl in a temporary directory. */
function makeSigningCertificate(): { privateKey: KeyObject; certificatePem: string } {
  const directory = mkdtempSync(join(tmpdir(), "ferry-token-"));
  try {
    const keyPath = join(directory, "key.pem");
    const certificatePath = join(directory, "certificate.pem");
    execFileSync(
      "openssl",
      [
        "req",
        ...["-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"],
        ...["-keyout", keyPath, "-out", certificatePath, "-days", "2", "-subj", "/CN=ferry-test-token-service"],
      ],
      { stdio: ["ignore", "ignore", "pipe"] },
    );
    return {
      privateKey: createPrivateKey(readFileSync(keyPath)),
      certificatePem: readFileSync(certificatePath, "utf8"),
    };
  } finally {
    rmSync(directory, { recursive: true, force: true });
  }
}

/**
 * The key id docker-registry gives each key of its rootcertbundle (libtrust's fingerprint):
 * SHA-256 of the DER public key, first 30 bytes, base32 without padding, in groups of 4.
 */
function libtrustKeyId(publicKey: KeyObject): string {
  const hash = createHash("sha256")
    .update(publicKey.export({ type: "spki", format: "der" }))
    .digest()
    .subarray(0, 30);
  const alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZ234567";
  let bits = "";
  for (const byte of hash) bits += byte.toString(2).padStart(8, "0");
  let base32 = "";
  for (let index = 0; index < bits.length; index += 5) {
    base32 += alphabet[Number.parseInt(bits.slice(index, index + 5).padEnd(5, "0"), 2)];
  }
  return base32.match(/.{1,4}/g)?.join(":") ?? "";
}

function signJwt(header: object, claims: object, privateKey: KeyObject): string {
  const encode = (value: object) => Buffer.from(JSON.stringify(value)).toString("base64url");
  const signingInput = `${encode(header)}.${encode(claims)}`;
  // JWS ES256 signatures are r||s, not DER.
  const signature = sign("sha256", Buffer.from(signingInput), { key: privateKey, dsaEncoding: "ieee-p1363" });
  return `${signingInput}.${signature.toString("base64url")}`;
}
