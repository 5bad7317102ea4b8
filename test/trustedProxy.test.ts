import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { startTestApp, type TestApp } from "./helpers/app.js";

/**
 * FERRY_TRUSTED_PROXIES: behind a TLS-terminating proxy the server sees plain HTTP from the
 * proxy's address. Only a trusted proxy's X-Forwarded-For, -Proto and -Host count; the same
 * headers from anyone else change nothing (inject() sets the peer address as remoteAddress).
 */
describe("trusted proxies", () => {
  let behindProxy: TestApp;
  let direct: TestApp;
  const PROXY = "10.0.0.5";
  const STRANGER = "203.0.113.50";
  const password = "correct horse battery staple";

  const signIn = (
    app: TestApp["app"],
    remoteAddress: string,
    headers: Record<string, string>,
    username = "alice",
    secret = password,
  ) =>
    app.inject({
      method: "POST",
      url: "/api/v1/session",
      headers: { host: "ferry.example", ...headers },
      payload: { username, password: secret },
      remoteAddress,
    });

  /** The audit entry of creating the environment `name`: who the server thinks called. */
  const auditSource = async (test: TestApp, name: string) => {
    const audit = await test.app.inject({ url: "/api/v1/audit?action=environment.create", headers: test.auth });
    const items = (audit.json() as { items: { source: string; resource: { name: string } }[] }).items;
    return items.find((entry) => entry.resource.name === name)?.source;
  };

  beforeAll(async () => {
    behindProxy = await startTestApp("sqlite", { trustedProxies: ["127.0.0.1", "10.0.0.0/8"] });
    direct = await startTestApp("sqlite");
    for (const test of [behindProxy, direct]) {
      const created = await test.app.inject({
        method: "POST",
        url: "/api/v1/users",
        headers: test.auth,
        payload: { username: "alice", password },
      });
      expect(created.statusCode, created.body).toBe(201);
    }
  });

  afterAll(async () => {
    await behindProxy?.close();
    await direct?.close();
  });

  it("marks the session cookie Secure only when a trusted proxy says the client used https", async () => {
    const secure = await signIn(behindProxy.app, PROXY, { "x-forwarded-proto": "https" });
    expect(secure.statusCode, secure.body).toBe(200);
    expect(String(secure.headers["set-cookie"])).toMatch(/; Secure(;|$)/);

    // The same header from a peer that is not a trusted proxy, or when no proxy is trusted: plain HTTP.
    for (const [app, peer] of [
      [behindProxy.app, STRANGER],
      [direct.app, "127.0.0.1"],
    ] as const) {
      const plain = await signIn(app, peer, { "x-forwarded-proto": "https" });
      expect(plain.statusCode, plain.body).toBe(200);
      expect(String(plain.headers["set-cookie"])).not.toContain("Secure");
    }
  });

  it("checks Origin against the scheme and host the trusted proxy forwards", async () => {
    // The browser is on https://ferry.example; the proxy talks to Ferry over http with its own Host.
    const forwarded = { origin: "https://ferry.example", host: "127.0.0.1:8080", "x-forwarded-host": "ferry.example" };
    const viaProxy = await signIn(behindProxy.app, PROXY, { ...forwarded, "x-forwarded-proto": "https" });
    expect(viaProxy.statusCode, viaProxy.body).toBe(200);

    // Without the forwarded scheme the origin is http://…, which is not the browser's.
    const noScheme = await signIn(behindProxy.app, PROXY, forwarded);
    expect(noScheme.statusCode).toBe(403);
    // From an untrusted peer the forwarded headers are ignored: Host 127.0.0.1:8080 over http.
    for (const [app, peer] of [
      [behindProxy.app, STRANGER],
      [direct.app, "127.0.0.1"],
    ] as const) {
      const spoofed = await signIn(app, peer, { ...forwarded, "x-forwarded-proto": "https" });
      expect(spoofed.statusCode, spoofed.body).toBe(403);
      expect(spoofed.json()).toMatchObject({ type: "urn:ferry:problem:csrf-failed" });
      expect(spoofed.headers["set-cookie"]).toBeUndefined();
    }
  });

  it("limits failed sign-ins per client behind a trusted proxy, and per peer when X-Forwarded-For is spoofed", async () => {
    const fail = (remoteAddress: string, forwardedFor: string, i: number) =>
      signIn(behindProxy.app, remoteAddress, { "x-forwarded-for": forwardedFor }, `guess-${remoteAddress}-${i}`, "x");

    // Through the proxy: the client's address is the subject, not the proxy's. A client that
    // prepends its own X-Forwarded-For still gets the address the proxy saw (the rightmost untrusted one).
    const statuses: number[] = [];
    for (let i = 0; i < 21; i++) statuses.push((await fail(PROXY, `192.0.2.99, 198.51.100.30`, i)).statusCode);
    expect(statuses.slice(0, 20).every((status) => status === 401)).toBe(true);
    expect(statuses[20]).toBe(429);
    expect((await fail(PROXY, "198.51.100.31", 0)).statusCode).toBe(401);
    expect((await fail(PROXY, "198.51.100.30", 99)).statusCode).toBe(429);

    // From an untrusted peer a new X-Forwarded-For on every attempt does not make a new subject.
    const spoofed: number[] = [];
    for (let i = 0; i < 21; i++) spoofed.push((await fail(STRANGER, `198.51.100.${100 + i}`, i)).statusCode);
    expect(spoofed.slice(0, 20).every((status) => status === 401)).toBe(true);
    expect(spoofed[20]).toBe(429);
  });

  it("records the client behind a trusted proxy as the audit source, and the peer otherwise", async () => {
    const create = (test: TestApp, name: string, remoteAddress: string) =>
      test.app.inject({
        method: "POST",
        url: "/api/v1/environments",
        headers: { ...test.auth, "x-forwarded-for": "198.51.100.50" },
        payload: { name },
        remoteAddress,
      });
    expect((await create(behindProxy, "via-proxy", PROXY)).statusCode).toBe(201);
    expect((await create(behindProxy, "via-stranger", STRANGER)).statusCode).toBe(201);
    expect((await create(direct, "direct", "127.0.0.1")).statusCode).toBe(201);
    expect(await auditSource(behindProxy, "via-proxy")).toBe("198.51.100.50");
    expect(await auditSource(behindProxy, "via-stranger")).toBe(STRANGER);
    expect(await auditSource(direct, "direct")).toBe("127.0.0.1");
  });
});
