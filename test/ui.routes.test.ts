import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { setTimeout as sleep } from "node:timers/promises";
import type { FastifyInstance } from "fastify";
import { pino } from "pino";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { buildApp } from "../src/api/app.js";
import { openTestDatabase, type TestDatabase } from "./helpers/databases.js";
import { startTestServer, type TestServer } from "./helpers/server.js";

/*
 * What the web dashboard needs from the server, over HTTP, without a browser: the pages
 * and assets it is served as, and the API routes added for it (live task changes, a
 * project's progression, the sign-in methods), which any client may use.
 */

describe("serving the dashboard", () => {
  let database: TestDatabase;
  let app: FastifyInstance;
  let webRoot: string;

  beforeAll(async () => {
    database = await openTestDatabase("sqlite");
    webRoot = mkdtempSync(join(tmpdir(), "ferry-web-"));
    app = await buildApp({
      store: database.store,
      context: database.context,
      logger: pino({ level: "silent" }),
      version: "test",
      webRoot,
    });
    await app.ready();
  });
  afterAll(async () => {
    await app?.close();
    await database?.dispose();
    rmSync(webRoot, { recursive: true, force: true });
  });

  it("says how to build it when it was not built, and finds it once it is", async () => {
    const before = await app.inject({ method: "GET", url: "/" });
    expect(before.statusCode).toBe(503);
    expect(before.headers["content-type"]).toMatch(/^text\/html/);
    expect(before.body).toContain("npm run build");

    mkdirSync(join(webRoot, "assets"));
    writeFileSync(join(webRoot, "index.html"), '<!doctype html><div id="root"></div>');
    writeFileSync(join(webRoot, "assets", "main-Ab12Cd34.js"), `console.log(${JSON.stringify("x".repeat(5000))});`);
    const after = await app.inject({ method: "GET", url: "/" });
    expect(after.statusCode).toBe(200);
    expect(after.body).toContain('<div id="root">');
  });

  it("answers each page's path with index.html under a Content-Security-Policy that allows nothing inline", async () => {
    for (const url of ["/", "/sign-in", "/projects/shop", "/projects/shop/releases/1.0.0", "/tasks/task_1", "/admin"]) {
      const response = await app.inject({ method: "GET", url });
      expect(response.statusCode, url).toBe(200);
      expect(response.headers["cache-control"]).toBe("no-cache");
      const policy = String(response.headers["content-security-policy"]);
      expect(policy).toContain("default-src 'none'");
      expect(policy).toContain("script-src 'self'");
      expect(policy).toContain("frame-ancestors 'none'");
      expect(policy).not.toMatch(/unsafe|\*|https?:/);
      expect(response.headers["x-content-type-options"]).toBe("nosniff");
    }
  });

  it("serves hashed assets for a year, gzipped when asked", async () => {
    const plain = await app.inject({ method: "GET", url: "/assets/main-Ab12Cd34.js" });
    expect(plain.statusCode).toBe(200);
    expect(plain.headers["content-type"]).toMatch(/^text\/javascript/);
    expect(plain.headers["cache-control"]).toBe("public, max-age=31536000, immutable");
    const gzipped = await app.inject({
      method: "GET",
      url: "/assets/main-Ab12Cd34.js",
      headers: { "accept-encoding": "gzip, br" },
    });
    expect(gzipped.headers["content-encoding"]).toBe("gzip");
    expect(gzipped.rawPayload.length).toBeLessThan(plain.rawPayload.length / 10);
    const missing = await app.inject({ method: "GET", url: "/assets/other-Zz99.js" });
    expect(missing.statusCode).toBe(404);
    expect(missing.headers["content-type"]).toMatch(/^application\/problem\+json/);
  });

  it("leaves every other path to the API: unknown pages are 404 problems, /api/ still needs a key", async () => {
    for (const url of ["/METRICS", "/Projects", "/favicon.ico", "/projects/../etc/passwd", "//projects"]) {
      const response = await app.inject({ method: "GET", url });
      expect(response.statusCode, url).toBe(404);
      expect(JSON.parse(response.body).type, url).toBe("urn:ferry:problem:route-not-found");
    }
    expect((await app.inject({ method: "POST", url: "/projects/shop" })).statusCode).toBe(404);
    const api = await app.inject({ method: "GET", url: "/api/v1/no-such-route" });
    expect(api.statusCode).toBe(401);
  });
});

describe("API routes the dashboard uses", () => {
  let test: TestServer;
  /** A user's API key (a person's grants, as a browser session has them). */
  let developerKey = "";

  const ok = async <T = Record<string, unknown>>(method: string, path: string, body?: unknown) => {
    const response = await test.call<T>(method, path, body);
    expect(response.status, `${method} ${path}: ${JSON.stringify(response.body)}`).toBeLessThan(300);
    return response.body;
  };
  const as = async (key: string, path: string) => {
    const response = await fetch(new URL(path, test.server.url), { headers: { authorization: `Bearer ${key}` } });
    return { status: response.status, body: (await response.json()) as Record<string, unknown> };
  };
  const release = async (project: string, version: string) => {
    const created = await ok<{ deployments: { taskId: string }[] }>("POST", `/api/v1/projects/${project}/releases`, {
      version,
    });
    return created.deployments[0]?.taskId ?? "";
  };

  beforeAll(async () => {
    test = await startTestServer();
    for (const name of ["dev", "test", "prod"]) await ok("POST", "/api/v1/environments", { name });
    await ok("POST", "/api/v1/lifecycles", {
      name: "default",
      phases: [{ environments: ["dev"], autoDeploy: true }, { environments: ["test"] }, { environments: ["prod"] }],
    });
    for (const name of ["shop", "vault"]) {
      await ok("POST", "/api/v1/projects", { name, lifecycle: "default" });
      await ok("PUT", `/api/v1/projects/${name}/process`, {
        steps: [{ name: "deploy", kind: "script", config: { script: "sleep 0.3; echo deployed" } }],
      });
    }
    // A developer: deploys shop to dev, views shop everywhere, never sees vault.
    await ok("POST", "/api/v1/users", { username: "dev", password: "a developer's password" });
    await ok("POST", "/api/v1/teams", {
      name: "Developers",
      members: ["dev"],
      roles: [
        { role: "viewer", projects: ["shop"] },
        { role: "deployer", projects: ["shop"], environments: ["dev"] },
      ],
    });
    developerKey = (await ok<{ key: string }>("POST", "/api/v1/api-keys", { name: "dev's key", user: "dev" })).key;
  }, 60_000);
  afterAll(async () => {
    await test?.close();
  });

  it("tells whether the browser's cookie is signed in, without refusing a signed-out one", async () => {
    const signedOut = await fetch(new URL("/api/v1/session/methods", test.server.url));
    expect(signedOut.status).toBe(200);
    expect(await signedOut.json()).toEqual({ password: true, oidc: false, signedIn: false });
    const session = await fetch(new URL("/api/v1/session", test.server.url), {
      method: "POST",
      headers: { "content-type": "application/json" },
      body: JSON.stringify({ username: "dev", password: "a developer's password" }),
    });
    const cookie = (session.headers.get("set-cookie") ?? "").split(";")[0] ?? "";
    const signedIn = await fetch(new URL("/api/v1/session/methods", test.server.url), { headers: { cookie } });
    expect(await signedIn.json()).toEqual({ password: true, oidc: false, signedIn: true });
    const forged = await fetch(new URL("/api/v1/session/methods", test.server.url), {
      headers: { cookie: `ferry_session=${"a".repeat(43)}` },
    });
    expect(await forged.json()).toMatchObject({ signedIn: false });
  });

  it("streams task changes, only of the projects and environments the caller may view", async () => {
    const controller = new AbortController();
    const response = await fetch(new URL("/api/v1/dashboard/events?follow=1", test.server.url), {
      headers: { authorization: `Bearer ${developerKey}` },
      signal: controller.signal,
    });
    expect(response.status).toBe(200);
    expect(response.headers.get("content-type")).toMatch(/^text\/event-stream/);
    let text = "";
    const reading = (async () => {
      const decoder = new TextDecoder();
      try {
        for await (const chunk of response.body as AsyncIterable<Uint8Array>) text += decoder.decode(chunk);
      } catch {
        // aborted below
      }
    })();
    const shopTask = await release("shop", "1.0.0");
    const vaultTask = await release("vault", "1.0.0");
    await test.waitForTask(shopTask);
    await test.waitForTask(vaultTask);
    await sleep(500);
    controller.abort();
    await reading;
    // The first event is at once: the active tasks (none yet).
    expect(text.startsWith('retry: 3000\nevent: tasks\ndata: {"tasks":[]}\n\n')).toBe(true);
    const changes = [...text.matchAll(/^data: (.*)$/gm)].flatMap(
      (match) => (JSON.parse(match[1] ?? "{}") as { tasks: { taskId: string; state: string }[] }).tasks,
    );
    expect(changes.filter((change) => change.taskId === shopTask).map((change) => change.state)).toContain("succeeded");
    expect(changes.some((change) => change.taskId === vaultTask)).toBe(false);

    // Without follow: the active tasks, filtered the same way.
    const blocked = await ok<{ deployments: { taskId: string }[] }>("PUT", "/api/v1/projects/vault/process", {
      steps: [{ name: "ask", kind: "approval", config: { instructions: "wait" } }],
    });
    expect(blocked).toBeDefined();
    const waiting = await release("vault", "1.1.0");
    for (let attempt = 0; attempt < 100; attempt++) {
      if ((await ok<{ state: string }>("GET", `/api/v1/tasks/${waiting}`)).state === "waiting") break;
      await sleep(50);
    }
    const admin = await ok<{ tasks: { taskId: string; state: string }[] }>("GET", "/api/v1/dashboard/events");
    expect(admin.tasks).toContainEqual(expect.objectContaining({ taskId: waiting, state: "waiting" }));
    const developer = await as(developerKey, "/api/v1/dashboard/events");
    expect(developer.body).toEqual({ tasks: [] });
    await ok("POST", `/api/v1/tasks/${waiting}/cancel`);
  });

  it("says where a release may go and why not, in the words the deployment route refuses with", async () => {
    // shop 1.0.0 succeeded in dev (above): test may have it, prod not yet.
    const progression = await ok<{
      lifecycle: { slug: string };
      environments: {
        environment: { slug: string };
        phase: string;
        live: { release: string } | null;
        promotion: { release: string | null; allowed: boolean; reason: string | null };
        permissions: string[];
      }[];
      releases: { version: string; environments: { environment: string; allowed: boolean; reason: string | null }[] }[];
    }>("GET", "/api/v1/projects/shop/progression");
    expect(progression.lifecycle.slug).toBe("default");
    const [dev, testing, prod] = progression.environments;
    expect(dev).toMatchObject({ environment: { slug: "dev" }, live: { release: "1.0.0" } });
    expect(dev?.promotion).toMatchObject({ allowed: false, release: null });
    expect(testing?.promotion).toEqual({ release: "1.0.0", allowed: true, reason: null });
    expect(prod?.promotion).toEqual({
      release: null,
      allowed: false,
      reason: "no release has been deployed successfully to phase 'test' yet, so there is nothing to promote to 'prod'",
    });
    const cells = progression.releases[0]?.environments ?? [];
    expect(cells.map((cell) => [cell.environment, cell.allowed])).toEqual([
      ["dev", true],
      ["test", true],
      ["prod", false],
    ]);
    const refused = await test.call<{ detail: string }>("POST", "/api/v1/projects/shop/deployments", {
      release: "1.0.0",
      environment: "prod",
    });
    expect(refused.status).toBe(409);
    expect(refused.body.detail).toBe(cells[2]?.reason);
    const promoteRefused = await test.call<{ detail: string }>("POST", "/api/v1/projects/shop/promotions", {
      to: "prod",
    });
    expect(promoteRefused.body.detail).toBe(prod?.promotion.reason);

    // Once test has it, prod may.
    await test.waitForTask(
      (await ok<{ taskId: string }>("POST", "/api/v1/projects/shop/promotions", { to: "test" })).taskId,
    );
    const after = await ok<typeof progression>("GET", "/api/v1/projects/shop/progression?release=1.0.0");
    expect(after.releases.map((each) => each.version)).toEqual(["1.0.0"]);
    expect(after.environments[2]?.promotion).toEqual({ release: "1.0.0", allowed: true, reason: null });
  });

  it("gives each caller their own permissions, and hides what they may not view", async () => {
    const shop = await as(developerKey, "/api/v1/projects/shop/progression");
    expect(shop.status).toBe(200);
    const permissions = Object.fromEntries(
      (shop.body.environments as { environment: { slug: string }; permissions: string[] }[]).map((each) => [
        each.environment.slug,
        each.permissions,
      ]),
    );
    expect(permissions.dev).toEqual(expect.arrayContaining(["view", "deploy"]));
    expect(permissions.test).toEqual(["view"]);
    expect(permissions.prod).toEqual(["view"]);
    const vault = await as(developerKey, "/api/v1/projects/vault/progression");
    expect(vault.status).toBe(404);
  });
});

describe("a server with dashboards open", () => {
  it("ends their event streams when it closes, instead of waiting for every browser to leave", async () => {
    const test = await startTestServer();
    const response = await fetch(new URL("/api/v1/dashboard/events?follow=1", test.server.url), {
      headers: { authorization: `Bearer ${test.apiKey}` },
    });
    const reader = (response.body as ReadableStream<Uint8Array>).getReader();
    await reader.read(); // the first event: the stream is open
    const started = Date.now();
    await test.close();
    expect(Date.now() - started).toBeLessThan(5_000);
    for (;;) if ((await reader.read()).done) break;
  });
});
