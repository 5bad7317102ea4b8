import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { type RawResponse, raw } from "./helpers/rawHttp.js";
import { startTestServer, type TestServer } from "./helpers/server.js";

/**
 * Issue 5: an unauthenticated crawl of every route the OpenAPI document lists. Only the
 * public routes may answer without a key: liveness, readiness and (once it exists) the
 * sign-in route. The OpenAPI document and the ferry.yml JSON Schema are **not** public (they
 * describe the API to someone who already has a key), so they are crawled like the rest.
 *
 * Everything goes over real HTTP to a real server (engine and metrics included, so every
 * route is registered), with raw request targets: fetch() would normalise `//api`, `./` and
 * `..` away before they reach the server.
 */

/**
 * Routes that answer without a key. `POST /api/v1/session` (sign-in) is allowed only if the
 * server has it, and so are the two steps of OIDC sign-in (test/oidc.test.ts runs them) and
 * the sign-in methods a sign-in page offers (password; OIDC or not).
 */
const PUBLIC_OPERATIONS = new Set([
  "GET /healthz",
  "GET /readyz",
  "POST /api/v1/session",
  "GET /api/v1/session/methods",
  "GET /api/v1/session/oidc/start",
  "GET /api/v1/session/oidc/callback",
  // ferry agent's enrolment: the one-time token in the body is the credential (docs/targets.md).
  "POST /api/v1/agent/enrol",
  // A registry's notification: the feed trigger's secret (Authorization: Bearer) is the credential.
  "POST /api/v1/hooks/registry/{trigger}",
]);

/** A 401 in the problem format, with nothing of the resource in it. */
function expectUnauthenticated(response: RawResponse, what: string): void {
  expect(response.status, `${what} → ${response.status} ${response.body.slice(0, 300)}`).toBe(401);
  if (!what.startsWith("HEAD ")) {
    expect(response.headers["content-type"], what).toMatch(/^application\/problem\+json/);
    expect(JSON.parse(response.body), what).toMatchObject({ type: "urn:ferry:problem:unauthenticated", status: 401 });
  }
}

interface Operation {
  method: string;
  /** OpenAPI template, e.g. /api/v1/projects/{project}/variables/{variable} */
  template: string;
  isPublic: boolean;
}

describe("unauthenticated crawl of every route in the OpenAPI document", () => {
  let test: TestServer;
  let operations: Operation[] = [];
  /** Real ids and names, so that a route that forgot the key check would answer 200, not 404. */
  const values: Record<string, string> = {};

  /** The path with each {param} replaced by an existing resource's id (or a plausible one). */
  const fill = (template: string) =>
    template.replace(/\{(\w+)\}/g, (_, name: string) => encodeURIComponent(values[name] ?? `${name}-1`));

  beforeAll(async () => {
    test = await startTestServer();
    const ok = async (method: string, path: string, body?: unknown) => {
      const response = await test.call(method, path, body);
      expect(response.status, `${method} ${path}: ${JSON.stringify(response.body)}`).toBeLessThan(300);
      return response.body;
    };
    values.environment = String((await ok("POST", "/api/v1/environments", { name: "dev" })).slug ?? "dev");
    values.lifecycle = String(
      (await ok("POST", "/api/v1/lifecycles", { name: "default", phases: [{ environments: ["dev"] }] })).slug ??
        "default",
    );
    values.project = String((await ok("POST", "/api/v1/projects", { name: "shop", lifecycle: "default" })).slug);
    values.variable = String(
      (await ok("POST", `/api/v1/projects/${values.project}/variables`, { name: "Greeting", value: "hi" })).id,
    );
    values.feed = String(
      (await ok("POST", "/api/v1/feeds", { name: "registry", url: "http://127.0.0.1:5000" })).slug ?? "registry",
    );
    values.set = String(
      (await ok("POST", "/api/v1/variable-sets", { name: "common", description: "shared" })).slug ?? "common",
    );
    await ok("POST", `/api/v1/variable-sets/${values.set}/variables`, { name: "Region", value: "eu" });
    values.role = "viewer";
    values.team = String((await ok("POST", "/api/v1/teams", { name: "crawlers" })).slug ?? "crawlers");
    values.target = String(
      (await ok("POST", "/api/v1/targets", { name: "local", environments: ["dev"] })).slug ?? "local",
    );
    await ok("PUT", `/api/v1/projects/${values.project}/process`, {
      steps: [{ name: "hello", kind: "script", config: { script: "echo hello" } }],
    });
    const release = await ok("POST", `/api/v1/projects/${values.project}/releases`, { version: "1.0.0" });
    values.release = String(release.version ?? "1.0.0");
    const deployed = await ok("POST", `/api/v1/projects/${values.project}/deployments`, {
      release: "1.0.0",
      environment: "dev",
    });
    values.task = String((deployed as { taskId?: string }).taskId ?? (deployed as { id?: string }).id);
    await test.waitForTask(values.task);
    const webhook = await test.call("POST", `/api/v1/projects/${values.project}/webhooks`, {
      url: "http://127.0.0.1:9/hook",
      secret: "crawl-webhook-secret",
    });
    values.webhook = String(webhook.body.id ?? "webhook-1");
    // A runbook with a schedule: their routes are crawled with real names.
    values.runbook = String(
      (
        await ok("POST", `/api/v1/projects/${values.project}/runbooks`, {
          name: "ops",
          process: { steps: [{ name: "hello", kind: "script", config: { script: "echo ops" } }] },
        })
      ).slug,
    );
    values.schedule = String(
      (
        await ok("POST", `/api/v1/projects/${values.project}/runbooks/${values.runbook}/schedules`, {
          name: "nightly",
          environment: "dev",
          cron: "0 3 * * *",
          paused: true,
        })
      ).name,
    );
    // Users and API keys exist once the users feature is in; crawl them with real ids when they do.
    const user = await test.call("POST", "/api/v1/users", { username: "crawler", password: "a-long-crawl-password" });
    if (user.status === 201) values.user = String(user.body.id ?? "crawler");
    const key = await test.call("POST", "/api/v1/api-keys", { name: "crawl" });
    if (key.status === 201) values.key = String(key.body.id ?? "key-1");

    const document = await test.call<{ paths: Record<string, Record<string, { security?: unknown[] }>> }>(
      "GET",
      "/api/v1/openapi.json",
    );
    expect(document.status).toBe(200);
    operations = Object.entries(document.body.paths).flatMap(([template, methods]) =>
      Object.entries(methods).map(([method, operation]) => ({
        method: method.toUpperCase(),
        template,
        isPublic: Array.isArray(operation.security) && operation.security.length === 0,
      })),
    );
  }, 60_000);

  afterAll(async () => {
    await test?.close();
  });

  it("lists every route, and marks public exactly health, readiness and (if present) sign-in", async () => {
    expect(operations.length).toBeGreaterThan(30);
    const listed = operations.map((operation) => `${operation.method} ${operation.template}`);
    for (const expected of [
      "GET /api/v1/openapi.json",
      "GET /api/v1/schema/ferry.json",
      "GET /metrics",
      "GET /api/v1/tasks/{task}/log",
      "POST /api/v1/projects/{project}/deployments",
    ]) {
      expect(listed).toContain(expected);
    }
    // With the key, every GET answers as itself (the 401s below come from the key check, not from bad paths).
    const withKey = await Promise.all(
      operations
        .filter((operation) => operation.method === "GET")
        .map(async ({ template }) => {
          const response = await raw(test.server.url, "GET", fill(template), {
            authorization: `Bearer ${test.apiKey}`,
          });
          return `${template} ${response.status}`;
        }),
    );
    const answered = withKey.filter((line) => line.endsWith(" 200"));
    expect(answered.length, withKey.join("\n")).toBeGreaterThan(withKey.length * 0.8);
    for (const line of withKey) expect(line).not.toMatch(/ (401|5\d\d)$/);
    const marked = operations.filter((operation) => operation.isPublic).map((o) => `${o.method} ${o.template}`);
    expect(marked).toEqual(expect.arrayContaining(["GET /healthz", "GET /readyz"]));
    for (const operation of marked) expect(PUBLIC_OPERATIONS, operation).toContain(operation);
  });

  it("answers 401 to every other route without a key, with or without a body", async () => {
    let crawled = 0;
    for (const { method, template } of operations) {
      const path = fill(template);
      const what = `${method} ${path}`;
      if (PUBLIC_OPERATIONS.has(`${method} ${template}`)) {
        const response = await raw(test.server.url, method, path, {}, method === "GET" ? undefined : "{}");
        if (template === "/api/v1/agent/enrol") {
          // Enrolment answers without a key, but without a valid one-time token it makes no target.
          expect(response.status, `${what} → ${response.body}`).toBe(400);
          const wrong = await raw(
            test.server.url,
            method,
            path,
            {},
            JSON.stringify({ token: `ferry_enrol_${"x".repeat(43)}`, name: "crawler", environments: ["dev"] }),
          );
          expect(wrong.status, `${what} with an unknown token → ${wrong.body}`).toBe(401);
          expect((await test.call("GET", "/api/v1/targets/crawler")).status, what).toBe(404);
        } else if (template === "/api/v1/hooks/registry/{trigger}") {
          // Without the trigger's secret (and here without a trigger), a notification creates nothing.
          const envelope = JSON.stringify({
            events: [{ action: "push", target: { repository: "a/b", tag: "1.0.0" } }],
          });
          const wrong = await raw(test.server.url, method, path, {}, envelope);
          expectUnauthenticated(wrong, `${what} without the trigger's secret`);
        } else if (template.startsWith("/api/v1/session/oidc/")) {
          // OIDC sign-in: 404 here (this server has no FERRY_OIDC_*), else a redirect to the provider or
          // a refusal; it never signs anyone in without the provider's answer to a sign-in this browser started.
          expect(response.status, `${what} → ${response.body}`).toBe(404);
          expect(String(response.headers["set-cookie"] ?? ""), what).not.toMatch(/ferry_session=[^;]/);
        } else if (method === "GET") {
          expect(response.status, what).toBe(200);
        } else {
          // Sign-in answers without a key, but without valid credentials it signs nobody in.
          expect(response.status, `${what} → ${response.body}`).toBeGreaterThanOrEqual(400);
          expect(response.headers["set-cookie"], what).toBeUndefined();
          const wrong = await raw(
            test.server.url,
            method,
            path,
            {},
            JSON.stringify({ username: "admin", password: test.apiKey }),
          );
          expect(wrong.status, `${what} with a wrong password → ${wrong.body}`).toBe(401);
          expect(wrong.headers["set-cookie"], what).toBeUndefined();
        }
        continue;
      }
      expectUnauthenticated(await raw(test.server.url, method, path), what);
      expectUnauthenticated(await raw(test.server.url, method, `${path}?limit=1&after=0`), `${what}?query`);
      if (method !== "GET") {
        const body = JSON.stringify({ name: "x", version: "9.9.9", environment: "dev", release: "1.0.0", steps: [] });
        expectUnauthenticated(await raw(test.server.url, method, path, {}, body), `${what} with a body`);
      }
      if (method === "GET") expectUnauthenticated(await raw(test.server.url, "HEAD", path), `HEAD ${path}`);
      crawled++;
    }
    expect(crawled).toBeGreaterThan(30);
  });

  it("answers 401 to malformed, foreign and smuggled credentials", async () => {
    const badAuthorizations = [
      "Bearer",
      "Bearer ",
      "Bearer ferry_",
      "Bearer ferry_notARealKeyButWellFormed123456",
      `Bearer ferry_${"A".repeat(4000)}`,
      "Bearer ' OR '1'='1",
      "Bearer ferry_x ferry_y",
      `Basic ${Buffer.from(`admin:${test.apiKey}`).toString("base64")}`,
      `Token ${test.apiKey}`,
      test.apiKey, // without the scheme
      `Bearer ${test.apiKey.slice(0, -1)}`, // one character short
      `Bearer ${test.apiKey}x`,
      `Bearer ${test.apiKey.toUpperCase()}`,
    ];
    for (const { method, template } of operations) {
      if (PUBLIC_OPERATIONS.has(`${method} ${template}`)) continue;
      const path = fill(template);
      for (const authorization of badAuthorizations) {
        expectUnauthenticated(
          await raw(test.server.url, method, path, { authorization }),
          `${method} ${path} with Authorization: ${authorization.slice(0, 40)}`,
        );
      }
      // Headers a proxy sets, or that some frameworks trust to rewrite the URL, change nothing.
      expectUnauthenticated(
        await raw(test.server.url, method, path, {
          "x-forwarded-for": "127.0.0.1",
          "x-real-ip": "127.0.0.1",
          "x-forwarded-host": "localhost",
          "x-forwarded-proto": "https",
          "x-forwarded-prefix": "/healthz",
          "x-original-url": "/healthz",
          "x-rewrite-url": "/healthz",
          "x-http-method-override": "GET",
          "x-api-key": test.apiKey, // a key anywhere but the Authorization header does not count
          cookie: `ferry_session=${test.apiKey}; ferry_api_key=${test.apiKey}; session=${test.apiKey}`,
        }),
        `${method} ${path} with X-Forwarded-* and rewrite headers`,
      );
    }
    // Session cookies that no sign-in issued.
    for (const cookie of [
      "ferry_session=",
      "ferry_session=x",
      `ferry_session=${"a".repeat(64)}`,
      "ferry_session=../../x",
    ]) {
      expectUnauthenticated(await raw(test.server.url, "GET", "/api/v1/projects", { cookie }), `cookie ${cookie}`);
      expectUnauthenticated(
        await raw(test.server.url, "POST", "/api/v1/environments", { cookie }, JSON.stringify({ name: "x" })),
        `POST with cookie ${cookie}`,
      );
    }
    // The same key that fails above works in the right place (the requests above were not refused for another reason).
    const good = await raw(test.server.url, "GET", "/api/v1/projects", { authorization: `Bearer ${test.apiKey}` });
    expect(good.status).toBe(200);
    expect((await raw(test.server.url, "GET", `/api/v1/projects?api_key=${test.apiKey}`)).status).toBe(401);
  });

  it("answers 401 to encoded, re-cased and padded paths, and 404 to // and dot segments without ever reaching a handler", async () => {
    const authorization = `Bearer ${test.apiKey}`;
    for (const { method, template } of operations) {
      if (PUBLIC_OPERATIONS.has(`${method} ${template}`)) continue;
      const path = fill(template); // e.g. /api/v1/projects/shop
      // Still under /api/ once decoded: the key check covers them whether or not a route matches.
      const underApi = [
        path.replace(/^\/api\//, "/%61pi/"),
        path.replace(/^\/api\//, "/%61%70%69/"),
        path.replace(/^\/api\/v1\//, "/api/%76%31/"),
        path.replace(/^\/api\/v1\//, "/api/v1%2f"),
        `${path}/`,
        path.toUpperCase(),
        path.replace(/^\/api\//, "/API/"),
        path.replace(/^\/api\//, "/Api/"),
        `${path};x=1`,
        `${path}%00`,
        `${path}%2e`,
        `${path}%20`,
        `${path}#fragment`,
        `${path}?/healthz`,
        `${path}?x=/healthz`,
      ];
      for (const target of underApi) {
        const response = await raw(test.server.url, method, target);
        if (path.startsWith("/api/")) {
          expectUnauthenticated(response, `${method} ${target}`);
        } else {
          // /metrics is outside /api/: a variant that matches no route is a 404, one that does a 401.
          const what = `${method} ${target} → ${response.status} ${response.body.slice(0, 200)}`;
          expect([401, 404], what).toContain(response.status);
          expect(JSON.parse(response.body).type, what).toMatch(/^urn:ferry:problem:(unauthenticated|route-not-found)$/);
        }
      }
      // The router neither merges "//" nor resolves dot segments: it matches them literally, so some
      // match no route and others would reach a handler with "." or ".." as a name. Every one of them
      // answers the same 404 route-not-found, with or without a key: no handler ever runs.
      const lastSegment = /\/([^/]+)$/;
      const emptyOrDotSegments = [
        `/${path}`,
        `//${path}`,
        `/./${path.slice(1)}`,
        `/healthz/../${path.slice(1)}`,
        `/healthz/..%2f${path.slice(1)}`,
        `/readyz%2f..%2f${path.slice(1)}`,
        path.replace(/^\/api\/v1\//, "/api//v1//"),
        path.replace(lastSegment, "//$1"),
        path.replace(lastSegment, "/./$1"),
        path.replace(lastSegment, "/x/../$1"),
        path.replace(lastSegment, "/x/%2e%2e/$1"),
        path.replace(lastSegment, "/%2E/$1"),
        `${path}//`,
        `${path}/.`,
        `${path}/..`,
        `${path}/%2e%2e`,
        `${path}/.%2e`,
        `${path}%2f%2e%2e`,
      ].filter((target) => target !== path);
      for (const target of emptyOrDotSegments) {
        for (const withKey of [false, true]) {
          const response = await raw(test.server.url, method, target, withKey ? { authorization } : {});
          const what = `${method} ${target}${withKey ? " with the key" : ""} → ${response.status} ${response.body.slice(0, 200)}`;
          expect(response.status, what).toBe(404);
          expect(JSON.parse(response.body).type, what).toBe("urn:ferry:problem:route-not-found");
        }
      }
    }
  });
});
