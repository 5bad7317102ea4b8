import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { createServer, type Server } from "node:http";
import type { AddressInfo } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import type { FastifyInstance } from "fastify";
import { exportJWK, generateKeyPair, type JWK } from "jose";
import Provider, { type ClientMetadata } from "oidc-provider";
import { pino } from "pino";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { buildApp } from "../src/api/app.js";
import { logSafeUrl } from "../src/api/oidc.js";
import { generateApiKey } from "../src/security/apiKeys.js";
import { OidcClient, type OidcSettings, oidcSettingsFromEnvironment } from "../src/security/oidc.js";
import { defaultOutboundPolicy, parseOutboundAllow } from "../src/security/outboundGuard.js";
import { insertApiKey } from "../src/store/apiKeys.js";
import { isolatedEnv, testAdminKey, trackedResources } from "./helpers/cli.js";
import { dialects, openTestDatabase, type TestDatabase } from "./helpers/databases.js";

/**
 * OIDC sign-in against a real OpenID Provider: `oidc-provider` (a certified OP) runs on a
 * loopback port with its development login and consent pages, which accept any login name
 * as the subject. The test is the browser: plain HTTP with manual redirects and a cookie
 * jar, Ferry driven with inject() (the provider never calls Ferry; only the browser does),
 * Ferry's own calls (discovery, token, JWKS) going over real HTTP through the outbound guard.
 */

const FERRY_HOST = "ferry.test";
const FERRY_ORIGIN = `http://${FERRY_HOST}`;
const REDIRECT_URL = `${FERRY_ORIGIN}/api/v1/session/oidc/callback`;
const CLIENT_SECRET = "ferry-test-client-secret-that-is-long";
const OTHER_REDIRECT_URL = "http://other.test/callback";

interface TestProvider {
  issuer: string;
  /** The next token response's id_token is replaced by this one (a token the test obtained elsewhere). */
  replaceNextIdToken(idToken: string): void;
  close(): Promise<void>;
}

async function startProvider(keys: JWK[]): Promise<TestProvider> {
  const server: Server = createServer();
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  const issuer = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
  const clients: ClientMetadata[] = [
    {
      client_id: "ferry",
      client_secret: CLIENT_SECRET,
      redirect_uris: [REDIRECT_URL],
      token_endpoint_auth_method: "client_secret_basic",
    },
    {
      client_id: "other",
      client_secret: CLIENT_SECRET,
      redirect_uris: [OTHER_REDIRECT_URL],
      token_endpoint_auth_method: "client_secret_basic",
    },
  ];
  const provider = new Provider(issuer, {
    clients,
    jwks: { keys },
    cookies: { keys: ["oidc-test-cookie-key"] },
    pkce: { required: () => true },
    features: { devInteractions: { enabled: true } },
    claims: { openid: ["sub"], profile: ["name", "preferred_username"], email: ["email"] },
    ttl: { AccessToken: 600, AuthorizationCode: 60, Grant: 600, IdToken: 600, Interaction: 600, Session: 600 },
    // The profile claims in the ID token, as Keycloak, Entra ID and Google do (Ferry calls no userinfo endpoint).
    conformIdTokenClaims: false,
    findAccount: (_context, id) => ({
      accountId: id,
      claims: () => ({ sub: id, preferred_username: id, name: `Person ${id}`, email: `${id}@example.com` }),
    }),
  });
  let replacement: string | undefined;
  // A middleware of the provider itself: its token answer, with another (real, signed) ID token.
  provider.use(async (context, next) => {
    await next();
    const body = context.body as Record<string, unknown> | undefined;
    if (replacement && context.path === "/token" && typeof body?.id_token === "string") {
      context.body = { ...body, id_token: replacement };
      replacement = undefined;
    }
  });
  server.on("request", provider.callback());
  return {
    issuer,
    replaceNextIdToken: (idToken) => {
      replacement = idToken;
    },
    close: () => new Promise((resolve) => server.close(() => resolve())),
  };
}

interface Answer {
  status: number;
  location: string | undefined;
  body: string;
}

/** A browser: one cookie jar (the names of Ferry's and the provider's cookies do not collide), no automatic redirects. */
class Browser {
  readonly cookies = new Map<string, string>();

  constructor(private readonly ferry: () => FastifyInstance) {}

  private cookieHeader(): string {
    return [...this.cookies].map(([name, value]) => `${name}=${value}`).join("; ");
  }

  private remember(setCookies: string[]): void {
    for (const line of setCookies) {
      const [pair = "", ...attributes] = line.split(";");
      const separator = pair.indexOf("=");
      const name = pair.slice(0, separator).trim();
      const value = pair.slice(separator + 1).trim();
      const expired = attributes.some(
        (attribute) => /^\s*max-age=0\s*$/i.test(attribute) || /^\s*expires=.*1970/i.test(attribute),
      );
      if (expired || value === "") this.cookies.delete(name);
      else this.cookies.set(name, value);
    }
  }

  async request(url: string, form?: Record<string, string>): Promise<Answer> {
    const target = new URL(url);
    if (target.origin === FERRY_ORIGIN) {
      const response = await this.ferry().inject({
        method: "GET",
        url: `${target.pathname}${target.search}`,
        headers: { host: FERRY_HOST, ...(this.cookies.size > 0 && { cookie: this.cookieHeader() }) },
      });
      const setCookie = response.headers["set-cookie"];
      this.remember(setCookie === undefined ? [] : Array.isArray(setCookie) ? setCookie : [setCookie]);
      const location = response.headers.location;
      return {
        status: response.statusCode,
        location: location === undefined ? undefined : String(location),
        body: response.body,
      };
    }
    const response = await fetch(target, {
      method: form ? "POST" : "GET",
      redirect: "manual",
      headers: {
        ...(this.cookies.size > 0 && { cookie: this.cookieHeader() }),
        ...(form && { "content-type": "application/x-www-form-urlencoded" }),
      },
      ...(form && { body: new URLSearchParams(form).toString() }),
    });
    this.remember(response.headers.getSetCookie());
    const location = response.headers.get("location");
    return {
      status: response.status,
      location: location === null ? undefined : new URL(location, target).toString(),
      body: await response.text(),
    };
  }

  /**
   * Follows the provider's redirects from an authorization URL, signing in as `login` and
   * consenting on its pages, until it sends the browser elsewhere; returns that URL.
   */
  async signInAtProvider(authorizationUrl: string, login: string): Promise<string> {
    const providerOrigin = new URL(authorizationUrl).origin;
    let url = authorizationUrl;
    for (let step = 0; step < 12; step++) {
      const answer = await this.request(url);
      let next = answer;
      if (answer.status === 200) {
        const action = /<form[^>]*action="([^"]+)"/.exec(answer.body)?.[1];
        if (!action) throw new Error(`the provider's page has no form: ${answer.body.slice(0, 300)}`);
        const submit = new URL(action.replaceAll("&amp;", "&"), url).toString();
        const form: Record<string, string> = answer.body.includes('value="login"')
          ? { prompt: "login", login, password: "any" }
          : { prompt: "consent" };
        next = await this.request(submit, form);
      }
      if (next.location === undefined) throw new Error(`the provider answered ${next.status} without a redirect`);
      if (new URL(next.location).origin !== providerOrigin) return next.location;
      url = next.location;
    }
    throw new Error("the provider kept redirecting");
  }
}

/** A real ID token for `clientId` with `nonce`, obtained from `provider` as that client would (code + PKCE). */
async function idTokenFrom(
  provider: TestProvider,
  clientId: string,
  redirectUri: string,
  nonce: string,
  login: string,
): Promise<string> {
  const verifier = "v".repeat(50);
  const challenge = Buffer.from(await crypto.subtle.digest("SHA-256", new TextEncoder().encode(verifier))).toString(
    "base64url",
  );
  const authorization = new URL(`${provider.issuer}/auth`);
  for (const [name, value] of Object.entries({
    response_type: "code",
    client_id: clientId,
    redirect_uri: redirectUri,
    scope: "openid",
    state: "s",
    nonce,
    code_challenge: challenge,
    code_challenge_method: "S256",
  })) {
    authorization.searchParams.set(name, value);
  }
  const browser = new Browser(() => {
    throw new Error("not Ferry");
  });
  const back = new URL(await browser.signInAtProvider(authorization.toString(), login));
  const response = await fetch(`${provider.issuer}/token`, {
    method: "POST",
    headers: {
      authorization: `Basic ${Buffer.from(`${clientId}:${CLIENT_SECRET}`).toString("base64")}`,
      "content-type": "application/x-www-form-urlencoded",
    },
    body: new URLSearchParams({
      grant_type: "authorization_code",
      code: back.searchParams.get("code") ?? "",
      redirect_uri: redirectUri,
      code_verifier: verifier,
    }).toString(),
  });
  expect(response.status).toBe(200);
  return ((await response.json()) as { id_token: string }).id_token;
}

describe.each(dialects)("OIDC sign-in against a real OpenID Provider, on %s", (dialect) => {
  let provider: TestProvider;
  let otherIssuer: TestProvider;
  let database: TestDatabase;
  let adminKey: string;
  const apps: FastifyInstance[] = [];
  let linkedOnly: FastifyInstance;
  let creating: FastifyInstance;

  const settings = (overrides: Partial<OidcSettings> = {}): OidcSettings => ({
    issuer: provider.issuer,
    clientId: "ferry",
    clientSecret: CLIENT_SECRET,
    redirectUrl: REDIRECT_URL,
    createUsers: false,
    ...overrides,
  });

  const ferryApp = async (oidc: OidcSettings | undefined, outbound = parseOutboundAllow("127.0.0.1")) => {
    const app = await buildApp({
      store: database.store,
      context: database.context,
      logger: pino({ level: "silent" }),
      version: "test",
      outbound,
      ...(oidc && { oidc: new OidcClient(oidc, outbound) }),
    });
    await app.ready();
    apps.push(app);
    return app;
  };

  const admin = (app: FastifyInstance, method: "POST" | "PATCH" | "PUT" | "DELETE", url: string, payload?: object) =>
    app.inject({
      method,
      url,
      headers: { host: FERRY_HOST, authorization: `Bearer ${adminKey}` },
      ...(payload && { payload }),
    });

  /** Starts a sign-in at Ferry; returns the provider's authorization URL. */
  const start = async (browser: Browser, returnTo = "/projects") => {
    const answer = await browser.request(
      `${FERRY_ORIGIN}/api/v1/session/oidc/start?returnTo=${encodeURIComponent(returnTo)}`,
    );
    expect(answer.status, answer.body).toBe(302);
    return answer.location ?? "";
  };

  /** The whole sign-in: start at Ferry, sign in at the provider, come back; returns Ferry's answer to the callback. */
  const signIn = async (app: FastifyInstance, login: string, returnTo = "/projects") => {
    const browser = new Browser(() => app);
    const callback = await browser.signInAtProvider(await start(browser, returnTo), login);
    return { browser, callback, answer: await browser.request(callback) };
  };

  const sessionOf = async (app: FastifyInstance, browser: Browser) =>
    app.inject({
      method: "GET",
      url: "/api/v1/session",
      headers: { host: FERRY_HOST, cookie: `ferry_session=${browser.cookies.get("ferry_session") ?? ""}` },
    });

  beforeAll(async () => {
    const { privateKey } = await generateKeyPair("RS256", { extractable: true });
    const key = { ...(await exportJWK(privateKey)), kid: "test-key", alg: "RS256", use: "sig" };
    provider = await startProvider([key]);
    // Another issuer signing with the same key: its tokens verify against the first one's JWKS.
    otherIssuer = await startProvider([key]);
    database = await openTestDatabase(dialect);
    adminKey = generateApiKey();
    await insertApiKey(database.context, adminKey, { name: "test admin", role: "admin" });
    linkedOnly = await ferryApp(settings());
    creating = await ferryApp(settings({ createUsers: true }));
    for (const username of ["alice", "dave"]) {
      const created = await admin(linkedOnly, "POST", "/api/v1/users", { username, password: "a-long-local-password" });
      expect(created.statusCode, created.body).toBe(201);
      const linked = await admin(linkedOnly, "PUT", `/api/v1/users/${username}/oidc`, { subject: `${username}-sub` });
      expect(linked.statusCode, linked.body).toBe(200);
    }
  }, 60_000);

  afterAll(async () => {
    for (const app of apps) await app.close();
    await database?.dispose();
    await provider?.close();
    await otherIssuer?.close();
  });

  it("signs a linked user in: start → provider login and consent → callback → the session cookie works", async () => {
    const browser = new Browser(() => linkedOnly);
    const authorization = new URL(await start(browser));
    expect(authorization.origin).toBe(provider.issuer);
    expect(Object.fromEntries(authorization.searchParams)).toMatchObject({
      response_type: "code",
      client_id: "ferry",
      redirect_uri: REDIRECT_URL,
      scope: "openid profile email",
      code_challenge_method: "S256",
    });
    expect(authorization.searchParams.get("state")).toMatch(/^[\w-]{43}$/);
    expect(authorization.searchParams.get("nonce")).toMatch(/^[\w-]{43}$/);
    const callback = await browser.signInAtProvider(authorization.toString(), "alice-sub");
    expect(callback.startsWith(`${REDIRECT_URL}?`)).toBe(true);
    const answer = await browser.request(callback);
    expect(answer.status, answer.body).toBe(302);
    expect(answer.location).toBe("/projects");
    expect(browser.cookies.has("ferry_oidc_state")).toBe(false);
    const session = await sessionOf(linkedOnly, browser);
    expect(session.statusCode, session.body).toBe(200);
    expect(session.json()).toMatchObject({ user: { username: "alice", isAdmin: false } });
    // A cookie session like a password sign-in's: reads work, changes need the CSRF token.
    const cookie = `ferry_session=${browser.cookies.get("ferry_session")}`;
    const change = await linkedOnly.inject({
      method: "POST",
      url: "/api/v1/api-keys",
      headers: { host: FERRY_HOST, cookie },
      payload: { name: "x" },
    });
    expect(change.statusCode).toBe(403);
    // The password of an OIDC-linked local user still works; the link adds a way in, it takes none away.
    const password = await linkedOnly.inject({
      method: "POST",
      url: "/api/v1/session",
      headers: { host: FERRY_HOST },
      payload: { username: "alice", password: "a-long-local-password" },
    });
    expect(password.statusCode).toBe(200);
  });

  it("refuses an unknown subject unless FERRY_OIDC_CREATE_USERS, which creates a non-admin user without a usable password", async () => {
    const refused = await signIn(linkedOnly, "newcomer-sub");
    expect(refused.answer.status, refused.answer.body).toBe(403);
    expect(JSON.parse(refused.answer.body).detail).toMatch(/no Ferry user is linked/);
    expect(refused.browser.cookies.has("ferry_session")).toBe(false);

    const created = await signIn(creating, "newcomer-sub", "/");
    expect(created.answer.status, created.answer.body).toBe(302);
    expect(created.answer.location).toBe("/");
    const session = await sessionOf(creating, created.browser);
    expect(session.json()).toMatchObject({
      user: { username: "newcomer-sub", isAdmin: false, displayName: "Person newcomer-sub" },
    });
    // The second sign-in finds the same user.
    const again = await signIn(creating, "newcomer-sub", "/");
    expect((await sessionOf(creating, again.browser)).json()).toMatchObject({ user: { username: "newcomer-sub" } });
    // No password signs the new user in (its hash is of random bytes nobody kept).
    for (const password of ["", "oidc-only", "newcomer-sub"]) {
      const attempt = await creating.inject({
        method: "POST",
        url: "/api/v1/session",
        headers: { host: FERRY_HOST },
        payload: { username: "newcomer-sub", password: password || "x" },
      });
      expect(attempt.statusCode).toBe(401);
    }
    // A local user's name is never taken over by a provider's preferred_username.
    const local = await admin(creating, "POST", "/api/v1/users", {
      username: "mallory",
      password: "a-long-local-password",
    });
    expect(local.statusCode).toBe(201);
    const lookalike = await signIn(creating, "mallory");
    expect(lookalike.answer.status, lookalike.answer.body).toBe(302);
    const lookalikeUser = (await sessionOf(creating, lookalike.browser)).json() as {
      user: { username: string; id: string };
    };
    expect(lookalikeUser.user.username).toMatch(/^mallory-[0-9a-f]{8}$/);
    expect(lookalikeUser.user.id).not.toBe(local.json().id);
  });

  it("refuses a disabled user", async () => {
    const disabled = await admin(linkedOnly, "PATCH", "/api/v1/users/dave", { disabled: true });
    expect(disabled.statusCode, disabled.body).toBe(200);
    const { answer, browser } = await signIn(linkedOnly, "dave-sub");
    expect(answer.status, answer.body).toBe(403);
    expect(JSON.parse(answer.body).detail).toMatch(/disabled/);
    expect(browser.cookies.has("ferry_session")).toBe(false);
  });

  it("refuses a wrong state, a state from another browser and a replayed state", async () => {
    const browser = new Browser(() => linkedOnly);
    const callback = new URL(await browser.signInAtProvider(await start(browser), "alice-sub"));
    const state = callback.searchParams.get("state") ?? "";

    const wrong = new URL(callback);
    wrong.searchParams.set("state", "not-the-state");
    const stateCookie = browser.cookies.get("ferry_oidc_state") ?? "";
    const wrongAnswer = await browser.request(wrong.toString());
    expect(wrongAnswer.status).toBe(401);
    expect(JSON.parse(wrongAnswer.body).detail).toMatch(/state does not match/);

    // The callback URL in another browser (a victim sent the attacker's callback): no state cookie there.
    const victim = new Browser(() => linkedOnly);
    const victimAnswer = await victim.request(callback.toString());
    expect(victimAnswer.status).toBe(401);
    expect(victim.cookies.has("ferry_session")).toBe(false);

    browser.cookies.set("ferry_oidc_state", stateCookie);
    const first = await browser.request(callback.toString());
    expect(first.status, first.body).toBe(302);
    browser.cookies.set("ferry_oidc_state", state);
    browser.cookies.delete("ferry_session");
    const replay = await browser.request(callback.toString());
    expect(replay.status).toBe(401);
    expect(JSON.parse(replay.body).detail).toMatch(/used already/);
    expect(browser.cookies.has("ferry_session")).toBe(false);
  });

  it("writes OIDC sign-ins that came back from the provider to the audit log, successful and failed", async () => {
    const entries = async (action: string) => {
      const response = await linkedOnly.inject({
        url: `/api/v1/audit?limit=500&action=${action}`,
        headers: { host: FERRY_HOST, authorization: `Bearer ${adminKey}` },
      });
      expect(response.statusCode, response.body).toBe(200);
      return (response.json() as { items: Record<string, unknown>[] }).items;
    };
    const signedInBefore = (await entries("session.sign-in")).length;
    const failedBefore = (await entries("session.sign-in-failed")).length;

    const { browser } = await signIn(linkedOnly, "alice-sub");
    const session = (await sessionOf(linkedOnly, browser)).json() as { user: { id: string } };
    const signedIn = await entries("session.sign-in");
    expect(signedIn).toHaveLength(signedInBefore + 1);
    expect(signedIn.at(-1)).toMatchObject({
      actor: { id: session.user.id, name: "alice" },
      source: "127.0.0.1",
      resource: { type: "session", name: "alice" },
      diff: { method: { from: null, to: "oidc" } },
    });

    // A subject no Ferry user is linked to: the provider vouched for it, Ferry refused it.
    expect((await signIn(linkedOnly, "stranger-sub")).answer.status).toBe(403);
    const failed = await entries("session.sign-in-failed");
    expect(failed).toHaveLength(failedBefore + 1);
    expect(failed.at(-1)).toMatchObject({
      actor: { id: null, name: "anonymous" },
      source: "127.0.0.1",
      resource: { type: "session", id: null, name: null },
      diff: {
        method: { from: null, to: "oidc" },
        oidcSubject: { from: null, to: "stranger-sub" },
        reason: { from: null, to: expect.stringMatching(/no Ferry user is linked/) },
      },
    });
    // A callback nobody started here (no state cookie) is no sign-in: anyone could send it, it writes nothing.
    const forged = await new Browser(() => linkedOnly).request(`${REDIRECT_URL}?code=x&state=y`);
    expect(forged.status).toBe(401);
    expect(await entries("session.sign-in-failed")).toHaveLength(failedBefore + 1);
    // Neither the authorization code nor any token is in the log.
    const exported = await linkedOnly.inject({
      url: "/api/v1/audit/export",
      headers: { host: FERRY_HOST, authorization: `Bearer ${adminKey}` },
    });
    expect(exported.body).not.toMatch(/eyJ|code_verifier|a-long-local-password/);
  });

  it("refuses return paths to another origin", async () => {
    const browser = new Browser(() => linkedOnly);
    for (const returnTo of [
      "https://evil.example/",
      "//evil.example/x",
      "/\\evil.example",
      "javascript:alert(1)",
      "projects",
    ]) {
      const answer = await browser.request(
        `${FERRY_ORIGIN}/api/v1/session/oidc/start?returnTo=${encodeURIComponent(returnTo)}`,
      );
      expect(answer.status, returnTo).toBe(400);
      expect(answer.location, returnTo).toBeUndefined();
      expect(JSON.parse(answer.body).type).toBe("urn:ferry:problem:invalid-input");
    }
  });

  /** A sign-in whose token answer carries `idToken` (made with the sign-in's nonce) instead of the real one. */
  const signInWithIdToken = async (makeIdToken: (nonce: string) => Promise<string>) => {
    const browser = new Browser(() => linkedOnly);
    const authorization = await start(browser);
    provider.replaceNextIdToken(await makeIdToken(new URL(authorization).searchParams.get("nonce") ?? ""));
    const answer = await browser.request(await browser.signInAtProvider(authorization, "alice-sub"));
    expect(browser.cookies.has("ferry_session")).toBe(false);
    expect(answer.status, answer.body).toBe(401);
    expect(answer.body).not.toMatch(/eyJ/); // no token, nor any part of one, in the answer
    return JSON.parse(answer.body).detail as string;
  };

  it("refuses an ID token for another client (aud), from another issuer (iss), with a bad signature or alg none", async () => {
    expect(
      await signInWithIdToken((nonce) => idTokenFrom(provider, "other", OTHER_REDIRECT_URL, nonce, "alice-sub")),
    ).toMatch(/meant for another client/);
    expect(
      await signInWithIdToken((nonce) => idTokenFrom(otherIssuer, "ferry", REDIRECT_URL, nonce, "alice-sub")),
    ).toMatch(/another issuer/);
    expect(
      await signInWithIdToken(async (nonce) => {
        const [header, payload, signature = ""] = (
          await idTokenFrom(provider, "ferry", REDIRECT_URL, nonce, "alice-sub")
        ).split(".");
        const flipped = `${signature.slice(0, 10)}${signature[10] === "A" ? "B" : "A"}${signature.slice(11)}`;
        return `${header}.${payload}.${flipped}`;
      }),
    ).toMatch(/signature/);
    expect(
      await signInWithIdToken(async (nonce) => {
        const [, payload] = (await idTokenFrom(provider, "ferry", REDIRECT_URL, nonce, "alice-sub")).split(".");
        return `${Buffer.from(JSON.stringify({ alg: "none" })).toString("base64url")}.${payload}.`;
      }),
    ).toMatch(/algorithm/);
    // The nonce of another sign-in.
    expect(
      await signInWithIdToken(() => idTokenFrom(provider, "ferry", REDIRECT_URL, "another-nonce", "alice-sub")),
    ).toMatch(/nonce/);
  });

  it("refuses a provider whose discovery names another issuer, and calls the provider only through the outbound guard", async () => {
    const mismatched = await ferryApp(
      settings({ issuer: provider.issuer.replace("127.0.0.1", "localhost") }),
      parseOutboundAllow("127.0.0.1,[::1]"),
    );
    const answer = await new Browser(() => mismatched).request(`${FERRY_ORIGIN}/api/v1/session/oidc/start`);
    expect(answer.status, answer.body).toBe(502);
    expect(JSON.parse(answer.body)).toMatchObject({ type: "urn:ferry:problem:identity-provider-error" });
    expect(JSON.parse(answer.body).detail).toMatch(/FERRY_OIDC_ISSUER/);

    const guarded = await ferryApp(settings(), defaultOutboundPolicy);
    const refused = await new Browser(() => guarded).request(`${FERRY_ORIGIN}/api/v1/session/oidc/start`);
    expect(refused.status, refused.body).toBe(400);
    expect(JSON.parse(refused.body).detail).toMatch(/FERRY_OUTBOUND_ALLOW/);
  });

  it("answers that OIDC is not configured when it is not, and lets only admins link", async () => {
    const plain = await ferryApp(undefined);
    const answer = await new Browser(() => plain).request(`${FERRY_ORIGIN}/api/v1/session/oidc/start`);
    expect(answer.status).toBe(404);
    expect(JSON.parse(answer.body).detail).toMatch(/FERRY_OIDC_ISSUER/);
    const conflict = await admin(linkedOnly, "PUT", "/api/v1/users/dave/oidc", { subject: "alice-sub" });
    expect(conflict.statusCode, conflict.body).toBe(409);
    const unlinked = await admin(linkedOnly, "DELETE", "/api/v1/users/dave/oidc");
    expect(unlinked.statusCode, unlinked.body).toBe(204);
  });
});

describe("OIDC in the request log", () => {
  it("leaves the callback's query (the authorization code) out of logged URLs", () => {
    expect(logSafeUrl("/api/v1/session/oidc/callback?code=secret-code&state=s")).toBe(
      "/api/v1/session/oidc/callback?[redacted]",
    );
    expect(logSafeUrl("/%61pi/v1/session/oidc/%63allback?code=secret-code")).not.toMatch(/secret-code/);
    expect(logSafeUrl("/api/v1/projects?limit=1")).toBe("/api/v1/projects?limit=1");
  });
});

describe("OIDC settings from the environment", () => {
  const directory = mkdtempSync(join(tmpdir(), "ferry-oidc-"));
  const secretFile = join(directory, "secret");
  writeFileSync(secretFile, "s3cret-value\n");
  const complete = {
    FERRY_OIDC_ISSUER: "https://login.example.com",
    FERRY_OIDC_CLIENT_ID: "ferry",
    FERRY_OIDC_CLIENT_SECRET_FILE: secretFile,
    FERRY_OIDC_REDIRECT_URL: "https://ferry.example.com/api/v1/session/oidc/callback",
  };
  afterAll(() => rmSync(directory, { recursive: true, force: true }));

  it("is off without the variables, reads the secret from its file, and names each wrong variable", () => {
    expect(oidcSettingsFromEnvironment({})).toBeUndefined();
    expect(oidcSettingsFromEnvironment({ ...complete, FERRY_OIDC_CREATE_USERS: "1" })).toEqual({
      issuer: "https://login.example.com",
      clientId: "ferry",
      clientSecret: "s3cret-value",
      redirectUrl: complete.FERRY_OIDC_REDIRECT_URL,
      createUsers: true,
    });
    const failures: [Record<string, string>, RegExp][] = [
      [
        { FERRY_OIDC_ISSUER: complete.FERRY_OIDC_ISSUER },
        /FERRY_OIDC_CLIENT_ID, FERRY_OIDC_CLIENT_SECRET_FILE, FERRY_OIDC_REDIRECT_URL/,
      ],
      [{ ...complete, FERRY_OIDC_ISSUER: "http://login.example.com" }, /^FERRY_OIDC_ISSUER must use https/],
      [{ ...complete, FERRY_OIDC_ISSUER: "https://login.example.com/?x=1" }, /^FERRY_OIDC_ISSUER/],
      [{ ...complete, FERRY_OIDC_CLIENT_ID: "has space" }, /^FERRY_OIDC_CLIENT_ID/],
      [
        { ...complete, FERRY_OIDC_CLIENT_SECRET_FILE: join(directory, "missing") },
        /^FERRY_OIDC_CLIENT_SECRET_FILE: .*ENOENT/,
      ],
      [{ ...complete, FERRY_OIDC_REDIRECT_URL: "https://ferry.example.com/callback" }, /^FERRY_OIDC_REDIRECT_URL/],
    ];
    for (const [environment, message] of failures) {
      expect(() => oidcSettingsFromEnvironment(environment)).toThrow(message);
    }
    // The secret never appears in a message.
    writeFileSync(secretFile, "");
    expect(() => oidcSettingsFromEnvironment(complete)).toThrow(/FERRY_OIDC_CLIENT_SECRET_FILE/);
    expect(() => oidcSettingsFromEnvironment({ ...complete, FERRY_OIDC_REDIRECT_URL: "x" })).not.toThrow(/s3cret/);
  });
});

describe("OIDC through `ferry server` (real bin/ferry, settings from the environment)", () => {
  const { makeTemporaryDirectory, startFerryServer, cleanUp } = trackedResources("ferry-oidc-e2e-");
  let provider: TestProvider | undefined;

  afterAll(async () => {
    await cleanUp();
    await provider?.close();
  });

  it("reads FERRY_OIDC_* and sends a browser to the provider with PKCE, the secret in no output", async () => {
    const { privateKey } = await generateKeyPair("RS256", { extractable: true });
    provider = await startProvider([{ ...(await exportJWK(privateKey)), kid: "cli-key", alg: "RS256", use: "sig" }]);
    const home = await makeTemporaryDirectory();
    const secretFile = join(home, "oidc-client-secret");
    writeFileSync(secretFile, `${CLIENT_SECRET}\n`, { mode: 0o600 });
    const server = await startFerryServer({
      dataDir: join(home, "data"),
      env: isolatedEnv(home, {
        FERRY_ADMIN_API_KEY: testAdminKey(),
        FERRY_OIDC_ISSUER: provider.issuer,
        FERRY_OIDC_CLIENT_ID: "ferry",
        FERRY_OIDC_CLIENT_SECRET_FILE: secretFile,
        FERRY_OIDC_REDIRECT_URL: REDIRECT_URL,
        FERRY_OUTBOUND_ALLOW: "127.0.0.1",
      }),
    });
    const response = await fetch(`${server.url}/api/v1/session/oidc/start?returnTo=/projects`, { redirect: "manual" });
    expect(response.status, await response.clone().text()).toBe(302);
    const location = new URL(response.headers.get("location") ?? "");
    expect(location.origin).toBe(provider.issuer);
    expect(location.searchParams.get("client_id")).toBe("ferry");
    expect(location.searchParams.get("redirect_uri")).toBe(REDIRECT_URL);
    expect(location.searchParams.get("code_challenge_method")).toBe("S256");
    expect(response.headers.get("set-cookie")).toMatch(/^ferry_oidc_state=/);
    expect(server.stdout() + server.stderr()).not.toContain(CLIENT_SECRET);
  });
});
