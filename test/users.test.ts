import { pino } from "pino";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { buildApp } from "../src/api/app.js";
import { startTestApp, type TestApp } from "./helpers/app.js";
import { dialects } from "./helpers/databases.js";

const HOST = "ferry.example:8080";
const ORIGIN = `http://${HOST}`;

/** Users, sign-in sessions, CSRF, sign-in rate limiting and per-user API keys, on both databases. */
describe.each(dialects)("users and sessions on %s", (dialect) => {
  let test: TestApp;
  const password = "correct horse battery staple";

  const inject = (
    method: "GET" | "POST" | "PATCH" | "DELETE",
    url: string,
    options: { headers?: Record<string, string>; payload?: object } = {},
  ) =>
    test.app.inject({
      method,
      url,
      headers: { host: HOST, ...options.headers },
      ...(options.payload && { payload: options.payload }),
    });

  /** Signs in and returns the cookie header and the CSRF token. */
  const signIn = async (username: string, secret = password, remoteAddress = "127.0.0.1") => {
    const response = await test.app.inject({
      method: "POST",
      url: "/api/v1/session",
      headers: { host: HOST },
      payload: { username, password: secret },
      remoteAddress,
    });
    expect(response.statusCode, response.body).toBe(200);
    const setCookie = String(response.headers["set-cookie"]);
    const token = /ferry_session=([^;]+)/.exec(setCookie)?.[1] ?? "";
    return {
      cookie: `ferry_session=${token}`,
      csrfToken: (response.json() as { csrfToken: string }).csrfToken,
      setCookie,
    };
  };

  beforeAll(async () => {
    test = await startTestApp(dialect);
    for (const [username, isAdmin] of [
      ["alice", true],
      ["bob", false],
      ["carol", false],
      ["dave", false],
      ["erin", false],
    ] as const) {
      const response = await inject("POST", "/api/v1/users", {
        headers: test.auth,
        payload: { username, password, isAdmin },
      });
      expect(response.statusCode, response.body).toBe(201);
    }
  });

  afterAll(async () => {
    await test?.close();
  });

  it("never stores or returns the password or its hash", async () => {
    const list = await inject("GET", "/api/v1/users", { headers: test.auth });
    expect(list.statusCode).toBe(200);
    expect(list.body).not.toContain(password);
    expect(list.body).not.toMatch(/scrypt|hash/i);
    const rows = await test.database.context.db.selectFrom("users").selectAll().execute();
    expect(rows).toHaveLength(5);
    for (const row of rows) {
      expect(row.password_hash).toMatch(/^scrypt\$32768\$8\$1\$/);
      expect(row.password_hash).not.toContain(password);
    }
    // Each user has their own salt: equal passwords give different hashes.
    expect(new Set(rows.map((row) => row.password_hash)).size).toBe(5);
    const audit = await inject("GET", "/api/v1/audit?action=user.create", { headers: test.auth });
    expect(audit.body).toContain("alice");
    expect(audit.body).not.toContain(password);
  });

  it("signs in with an HttpOnly, SameSite=Lax session cookie (not Secure over plain HTTP)", async () => {
    const { setCookie, cookie, csrfToken } = await signIn("bob");
    expect(setCookie).toMatch(/^ferry_session=[A-Za-z0-9_-]{43}; /);
    expect(setCookie).toContain("HttpOnly");
    expect(setCookie).toContain("SameSite=Lax");
    expect(setCookie).toContain("Path=/");
    expect(setCookie).not.toContain("Secure");
    const session = await inject("GET", "/api/v1/session", { headers: { cookie } });
    expect(session.statusCode).toBe(200);
    expect(session.json()).toMatchObject({ user: { username: "bob", isAdmin: false }, csrfToken });
    // The token is stored only as its hash.
    const token = cookie.split("=")[1] ?? "";
    const stored = await test.database.context.db.selectFrom("sessions").select("token_hash").execute();
    expect(stored.map((row) => row.token_hash)).not.toContain(token);
    // A cookie works for reads like a key does.
    expect((await inject("GET", "/api/v1/environments", { headers: { cookie } })).statusCode).toBe(200);
  });

  it("refuses a cross-origin POST with the session cookie, with or without the CSRF token", async () => {
    const { cookie, csrfToken } = await signIn("alice");
    const body = { name: "Cross Site" };
    const withoutToken = await inject("POST", "/api/v1/environments", {
      headers: { cookie, origin: "https://evil.example" },
      payload: body,
    });
    expect(withoutToken.statusCode).toBe(403);
    expect(withoutToken.json()).toMatchObject({ type: "urn:ferry:problem:csrf-failed" });
    const withToken = await inject("POST", "/api/v1/environments", {
      headers: { cookie, origin: "https://evil.example", "x-csrf-token": csrfToken },
      payload: body,
    });
    expect(withToken.statusCode).toBe(403);
    expect(withToken.json()).toMatchObject({ type: "urn:ferry:problem:csrf-failed" });
    // Same origin, but no token (a form post from a page on the same host): refused too.
    const sameOriginNoToken = await inject("POST", "/api/v1/environments", {
      headers: { cookie, origin: ORIGIN },
      payload: body,
    });
    expect(sameOriginNoToken.statusCode).toBe(403);
    const wrongToken = await inject("POST", "/api/v1/environments", {
      headers: { cookie, origin: ORIGIN, "x-csrf-token": `${csrfToken}x` },
      payload: body,
    });
    expect(wrongToken.statusCode).toBe(403);
    const environments = await inject("GET", "/api/v1/environments", { headers: test.auth });
    expect(environments.body).not.toContain("Cross Site");

    const sameOrigin = await inject("POST", "/api/v1/environments", {
      headers: { cookie, origin: ORIGIN, "x-csrf-token": csrfToken },
      payload: { name: "Same Site" },
    });
    expect(sameOrigin.statusCode, sameOrigin.body).toBe(201);
    // The audit log names the user who signed in.
    const audit = await inject("GET", "/api/v1/audit?action=environment.create", { headers: test.auth });
    const entries = (audit.json() as { items: { actor: { name: string }; resource: { name: string } }[] }).items;
    expect(entries.find((entry) => entry.resource.name === "same-site")?.actor.name).toBe("alice");
    // A bearer key carries no ambient credential: no CSRF token needed, whatever the Origin.
    const withKey = await inject("POST", "/api/v1/environments", {
      headers: { ...test.auth, origin: "https://ci.example" },
      payload: { name: "By Key" },
    });
    expect(withKey.statusCode).toBe(201);
  });

  it("refuses a sign-in from another origin and signs out", async () => {
    const crossSite = await inject("POST", "/api/v1/session", {
      headers: { origin: "https://evil.example" },
      payload: { username: "bob", password },
    });
    expect(crossSite.statusCode).toBe(403);
    const { cookie, csrfToken } = await signIn("bob");
    const noToken = await inject("DELETE", "/api/v1/session", { headers: { cookie } });
    expect(noToken.statusCode).toBe(403);
    const out = await inject("DELETE", "/api/v1/session", { headers: { cookie, "x-csrf-token": csrfToken } });
    expect(out.statusCode).toBe(204);
    expect(String(out.headers["set-cookie"])).toContain("Max-Age=0");
    expect((await inject("GET", "/api/v1/session", { headers: { cookie } })).statusCode).toBe(401);
  });

  it("lets only admins manage users", async () => {
    const bob = await signIn("bob");
    const asBob = await inject("POST", "/api/v1/users", {
      headers: { cookie: bob.cookie, "x-csrf-token": bob.csrfToken },
      payload: { username: "mallory", password },
    });
    expect(asBob.statusCode).toBe(403);
    expect(asBob.json()).toMatchObject({ type: "urn:ferry:problem:forbidden" });
    expect((await inject("GET", "/api/v1/users", { headers: { cookie: bob.cookie } })).statusCode).toBe(403);
    const alice = await signIn("alice");
    const asAlice = await inject("PATCH", "/api/v1/users/dave", {
      headers: { cookie: alice.cookie, "x-csrf-token": alice.csrfToken },
      payload: { displayName: "Dave D." },
    });
    expect(asAlice.statusCode).toBe(200);
    expect(asAlice.json()).toMatchObject({ username: "dave", displayName: "Dave D." });
  });

  it("changes a user's own password with the current one", async () => {
    const carol = await signIn("carol");
    const headers = { cookie: carol.cookie, "x-csrf-token": carol.csrfToken };
    const wrong = await inject("POST", "/api/v1/users/me/password", {
      headers,
      payload: { currentPassword: "not the password", newPassword: "a brand new password" },
    });
    expect(wrong.statusCode).toBe(403);
    const changed = await inject("POST", "/api/v1/users/me/password", {
      headers,
      payload: { currentPassword: password, newPassword: "a brand new password" },
    });
    expect(changed.statusCode).toBe(204);
    await signIn("carol", "a brand new password");
    const old = await inject("POST", "/api/v1/session", { payload: { username: "carol", password } });
    expect(old.statusCode).toBe(401);
  });

  it("limits failed sign-ins per username, keeps the limit across a restart, and never says whether the user exists", async () => {
    const address = "192.0.2.10";
    const attempt = (app: TestApp["app"], username: string, secret: string) =>
      app.inject({
        method: "POST",
        url: "/api/v1/session",
        payload: { username, password: secret },
        remoteAddress: address,
      });
    const unknown = await attempt(test.app, "nobody-here", "wrong password");
    const wrong = await attempt(test.app, "dave", "wrong password");
    expect(unknown.statusCode).toBe(401);
    expect(wrong.statusCode).toBe(401);
    expect(unknown.json().detail).toBe(wrong.json().detail);
    for (let i = 0; i < 4; i++) expect((await attempt(test.app, "dave", "wrong password")).statusCode).toBe(401);

    // A new application over the same database: nothing of the count is held in memory.
    const restarted = await buildApp({
      store: test.database.store,
      context: test.database.context,
      logger: pino({ level: "silent" }),
      version: "test",
    });
    try {
      const limited = await attempt(restarted, "dave", password);
      expect(limited.statusCode).toBe(429);
      expect(limited.json()).toMatchObject({ type: "urn:ferry:problem:rate-limited" });
      const retryAfter = Number(limited.headers["retry-after"]);
      expect(retryAfter).toBeGreaterThan(800);
      expect(retryAfter).toBeLessThanOrEqual(900);
      // Another user from another address is not held back by dave's failures.
      const other = await restarted.inject({
        method: "POST",
        url: "/api/v1/session",
        payload: { username: "bob", password },
        remoteAddress: "192.0.2.11",
      });
      expect(other.statusCode).toBe(200);
    } finally {
      await restarted.close();
    }
  });

  it("limits failed sign-ins per client address across usernames", async () => {
    const address = "198.51.100.7";
    const statuses: number[] = [];
    for (let i = 0; i < 21; i++) {
      const response = await test.app.inject({
        method: "POST",
        url: "/api/v1/session",
        payload: { username: `guess-${i}`, password: "wrong password" },
        remoteAddress: address,
      });
      statuses.push(response.statusCode);
    }
    expect(statuses.slice(0, 20).every((status) => status === 401)).toBe(true);
    expect(statuses[20]).toBe(429);
  }, 120_000);

  it("creates per-user API keys shown once, lists prefixes only, refuses revoked and expired keys", async () => {
    const bob = await signIn("bob", password, "203.0.113.5");
    const headers = { cookie: bob.cookie, "x-csrf-token": bob.csrfToken };
    const created = await inject("POST", "/api/v1/api-keys", { headers, payload: { name: "ci", expiresInDays: 30 } });
    expect(created.statusCode, created.body).toBe(201);
    const key = created.json() as { id: string; key: string; prefix: string; userId: string; expiresAt: string };
    expect(key.key).toMatch(/^ferry_/);
    expect(key.key.startsWith(key.prefix)).toBe(true);
    expect(key.prefix.length).toBeGreaterThanOrEqual(8);
    expect(Date.parse(key.expiresAt) - Date.now()).toBeGreaterThan(29 * 24 * 3600 * 1000);

    const byKey = { authorization: `Bearer ${key.key}` };
    const session = await inject("GET", "/api/v1/users/me", { headers: byKey });
    expect(session.json()).toMatchObject({ username: "bob" });
    // Users' keys are not admin keys.
    expect((await inject("GET", "/api/v1/users", { headers: byKey })).statusCode).toBe(403);

    const listed = await inject("GET", "/api/v1/api-keys", { headers: byKey });
    expect(listed.statusCode).toBe(200);
    expect(listed.body).not.toContain(key.key);
    expect(listed.body).not.toMatch(/"hash"/);
    const items = (listed.json() as { items: { id: string; lastUsedAt: string | null }[] }).items;
    expect(items.map((item) => item.id)).toEqual([key.id]);
    expect(items[0]?.lastUsedAt).not.toBeNull();
    // The admin sees every key; bob cannot revoke the admin's.
    const all = await inject("GET", "/api/v1/api-keys", { headers: test.auth });
    const allItems = (all.json() as { items: { id: string; userId: string | null }[] }).items;
    expect(allItems.length).toBeGreaterThanOrEqual(2);
    const adminKey = allItems.find((item) => item.userId === null);
    expect((await inject("DELETE", `/api/v1/api-keys/${adminKey?.id}`, { headers: byKey })).statusCode).toBe(404);

    const revoked = await inject("DELETE", `/api/v1/api-keys/${key.id}`, { headers });
    expect(revoked.statusCode).toBe(204);
    const refused = await inject("GET", "/api/v1/environments", { headers: byKey });
    expect(refused.statusCode).toBe(401);

    const expiring = await inject("POST", "/api/v1/api-keys", { headers, payload: { name: "short" } });
    const expiringKey = expiring.json() as { id: string; key: string };
    expect(
      (await inject("GET", "/api/v1/environments", { headers: { authorization: `Bearer ${expiringKey.key}` } }))
        .statusCode,
    ).toBe(200);
    await test.database.context.db
      .updateTable("api_keys")
      .set({ expires_at: new Date(Date.now() - 1000).toISOString() })
      .where("id", "=", expiringKey.id)
      .execute();
    expect(
      (await inject("GET", "/api/v1/environments", { headers: { authorization: `Bearer ${expiringKey.key}` } }))
        .statusCode,
    ).toBe(401);
  });

  it("updates last-used at most once a minute", async () => {
    const created = await inject("POST", "/api/v1/api-keys", { headers: test.auth, payload: { name: "service" } });
    const key = created.json() as { id: string; key: string; userId: string | null; lastUsedAt: string | null };
    expect(key.userId).toBeNull();
    expect(key.lastUsedAt).toBeNull();
    const lastUsed = async () =>
      (
        await test.database.context.db
          .selectFrom("api_keys")
          .select("last_used_at")
          .where("id", "=", key.id)
          .executeTakeFirstOrThrow()
      ).last_used_at;
    const headers = { authorization: `Bearer ${key.key}` };
    await inject("GET", "/api/v1/environments", { headers });
    const first = await lastUsed();
    expect(first).not.toBeNull();
    await inject("GET", "/api/v1/environments", { headers });
    expect(await lastUsed()).toBe(first);
    const twoMinutesAgo = new Date(Date.now() - 120_000).toISOString();
    await test.database.context.db
      .updateTable("api_keys")
      .set({ last_used_at: twoMinutesAgo })
      .where("id", "=", key.id)
      .execute();
    await inject("GET", "/api/v1/environments", { headers });
    expect(Date.parse((await lastUsed()) ?? "")).toBeGreaterThan(Date.parse(twoMinutesAgo));
  });

  it("ends a disabled user's sessions and keys", async () => {
    const erin = await signIn("erin", password, "203.0.113.9");
    const created = await inject("POST", "/api/v1/api-keys", {
      headers: { cookie: erin.cookie, "x-csrf-token": erin.csrfToken },
      payload: { name: "laptop" },
    });
    const key = (created.json() as { key: string }).key;
    const disabled = await inject("PATCH", "/api/v1/users/erin", { headers: test.auth, payload: { disabled: true } });
    expect(disabled.statusCode).toBe(200);
    expect((await inject("GET", "/api/v1/session", { headers: { cookie: erin.cookie } })).statusCode).toBe(401);
    expect(
      (await inject("GET", "/api/v1/environments", { headers: { authorization: `Bearer ${key}` } })).statusCode,
    ).toBe(401);
    const signIn2 = await test.app.inject({
      method: "POST",
      url: "/api/v1/session",
      payload: { username: "erin", password },
      remoteAddress: "203.0.113.9",
    });
    expect(signIn2.statusCode).toBe(401);
  });
});
