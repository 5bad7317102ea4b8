import { createServer, type Server } from "node:http";
import type { AddressInfo } from "node:net";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { deliverWebhook } from "../src/events/webhookDelivery.js";
import { RegistryClient, RegistryError } from "../src/feeds/registry.js";
import { defaultOutboundPolicy, OutboundRefusedError, parseOutboundAllow } from "../src/security/outboundGuard.js";
import { startTestApp, type TestApp } from "./helpers/app.js";
import { createPostgresDatabase, dialects } from "./helpers/databases.js";
import { type ObservedApp, startObservedApp } from "./helpers/observedApp.js";
import { startTestServer, type TestServer } from "./helpers/server.js";

const HINT = "allow it with FERRY_OUTBOUND_ALLOW if you mean it";
const canary = "REDIRECT-TARGET-BODY-CANARY";

interface Created {
  deployments: { taskId: string }[];
}

interface Problem {
  type: string;
  detail: string;
  errors?: { pointer: string; detail: string }[];
}

/** A node:http server on 127.0.0.1 that counts its requests. */
async function startServer(
  handle: (path: string, response: import("node:http").ServerResponse) => void,
): Promise<{ server: Server; port: number; url: string; hits: string[] }> {
  const hits: string[] = [];
  const server = createServer((request, response) => {
    hits.push(request.url ?? "");
    handle(request.url ?? "", response);
  });
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  const port = (server.address() as AddressInfo).port;
  return { server, port, url: `http://127.0.0.1:${port}`, hits };
}

async function stopServer(server: Server | undefined): Promise<void> {
  if (!server) return;
  server.closeAllConnections();
  await new Promise((resolve) => server.close(resolve));
}

/** A fresh PostgreSQL database for the postgres half, its drop added to `drops`; nothing for SQLite. */
async function databaseFor(
  dialect: (typeof dialects)[number],
  drops: (() => Promise<void>)[],
): Promise<{ databaseUrl?: string }> {
  if (dialect === "sqlite") return {};
  const database = await createPostgresDatabase();
  drops.push(database.drop);
  return { databaseUrl: database.url };
}

async function caught(promise: Promise<unknown>): Promise<unknown> {
  return promise.then(
    () => undefined,
    (error: unknown) => error,
  );
}

describe.each(dialects)(
  "the outbound guard when feeds and webhooks are saved (default policy, %s)",
  { concurrent: true },
  (dialect) => {
    let test: TestApp;
    const send = async (method: "POST" | "PATCH", url: string, payload: object) => {
      const response = await test.app.inject({ method, url, headers: test.auth, payload });
      return { status: response.statusCode, body: response.json() as Problem & Record<string, unknown> };
    };

    beforeAll(async () => {
      test = await startTestApp(dialect, { outbound: defaultOutboundPolicy });
      await send("POST", "/api/v1/environments", { name: "dev" });
      await send("POST", "/api/v1/lifecycles", { name: "one", phases: [{ environments: ["dev"] }] });
      expect((await send("POST", "/api/v1/projects", { name: "shop", lifecycle: "one" })).status).toBe(201);
    });
    afterAll(() => test?.close());

    it.sequential("refuses a feed URL at the metadata address, naming the field", async () => {
      const { status, body } = await send("POST", "/api/v1/feeds", { name: "meta", url: "http://169.254.169.254/" });
      expect(status).toBe(400);
      expect(body.type).toBe("urn:ferry:problem:invalid-input");
      const message = `feed URL http://169.254.169.254/ points at a link-local/metadata address (169.254.169.254); ${HINT}`;
      expect(body.detail).toBe(message);
      expect(body.errors).toEqual([{ pointer: "/url", detail: message }]);
    });

    it.sequential("refuses loopback in every form, and names that resolve to it", async () => {
      for (const url of [
        "http://127.0.0.1:5000",
        "http://localhost:5000",
        "http://[::1]:5000",
        "http://[::ffff:127.0.0.1]:5000",
        "http://0.0.0.0:5000",
        "http://metadata.google.internal/",
      ]) {
        const { status, body } = await send("POST", "/api/v1/feeds", { name: "local", url });
        expect(status, url).toBe(400);
        expect(body.errors?.[0]?.pointer, url).toBe("/url");
        expect(body.detail, url).toContain(HINT);
      }
      const byName = await send("POST", "/api/v1/feeds", { name: "local", url: "http://localhost:5000" });
      expect(byName.body.detail).toMatch(/a loopback address \(localhost resolves to (127\.0\.0\.1|::1)\)/);
    });

    it.sequential("checks a feed's new URL on update and keeps the old one when refused", async () => {
      const created = await send("POST", "/api/v1/feeds", { name: "hub", url: "https://registry.example.com" });
      expect(created.status).toBe(201);
      const moved = await send("PATCH", "/api/v1/feeds/hub", { url: "http://[::1]:5000" });
      expect(moved.status).toBe(400);
      expect(moved.body.errors?.[0]?.pointer).toBe("/url");
      const stored = await test.app.inject({ method: "GET", url: "/api/v1/feeds/hub", headers: test.auth });
      expect(stored.json()).toMatchObject({ url: "https://registry.example.com" });
      expect((await send("PATCH", "/api/v1/feeds/hub", { name: "Hub" })).status).toBe(200);
    });

    it.sequential("refuses URLs the server would call other than as written, and feed usernames Basic auth cannot carry, at save", async () => {
      const urlProblem =
        "remove the space, line break, tab or control character: a URL cannot hold one (percent-encode it)";
      // new URL() drops the tab and line breaks and encodes the space: stored as written, called as something else.
      for (const url of [
        "https://registry.example.com/\r\nv2",
        "https://registry.exa\tmple.com",
        "https://registry.example.com/my repo",
        " https://registry.example.com",
      ]) {
        const feed = await send("POST", "/api/v1/feeds", { name: "spaced", url });
        expect(feed.status, JSON.stringify(url)).toBe(400);
        expect(feed.body.errors, JSON.stringify(url)).toEqual([{ pointer: "/url", detail: urlProblem }]);
        const hook = await send("POST", "/api/v1/projects/shop/webhooks", { url, secret: "whsec-0123456789abcdef" });
        expect(hook.status, JSON.stringify(url)).toBe(400);
        expect(hook.body.errors, JSON.stringify(url)).toEqual([{ pointer: "/url", detail: urlProblem }]);
      }
      const usernameProblem = "remove the ':' or line break: HTTP Basic authentication cannot carry one in a username";
      for (const username of ["ci:admin", "ci\r\nX-Injected: 1"]) {
        const feed = await send("POST", "/api/v1/feeds", {
          name: "creds",
          url: "https://registry.example.com",
          username,
          password: "registry-password",
        });
        expect(feed.status, JSON.stringify(username)).toBe(400);
        expect(feed.body.errors, JSON.stringify(username)).toEqual([{ pointer: "/username", detail: usernameProblem }]);
      }
      const created = await send("POST", "/api/v1/feeds", { name: "creds", url: "https://registry.example.com" });
      expect(created.status).toBe(201);
      const patched = await send("PATCH", "/api/v1/feeds/creds", { username: "ci:admin" });
      expect(patched.body.errors).toEqual([{ pointer: "/username", detail: usernameProblem }]);
      const moved = await send("PATCH", "/api/v1/feeds/creds", { url: "https://registry.example.com/\nv2" });
      expect(moved.body.errors).toEqual([{ pointer: "/url", detail: urlProblem }]);
      const stored = await test.app.inject({ method: "GET", url: "/api/v1/feeds/creds", headers: test.auth });
      expect(stored.json()).toMatchObject({ url: "https://registry.example.com", username: null });
      const feeds = await test.app.inject({ method: "GET", url: "/api/v1/feeds", headers: test.auth });
      expect(feeds.json().items.map((feed: { slug: string }) => feed.slug)).not.toContain("spaced");
    });

    it.sequential("refuses a webhook URL at the metadata address without showing its path", async () => {
      const { status, body } = await send("POST", "/api/v1/projects/shop/webhooks", {
        url: "http://169.254.169.254/hooks/path-credential",
        secret: "whsec-0123456789abcdef",
      });
      expect(status).toBe(400);
      expect(body.errors?.[0]?.pointer).toBe("/url");
      expect(body.detail).toBe(
        `webhook URL http://169.254.169.254 points at a link-local/metadata address (169.254.169.254); ${HINT}`,
      );
      const created = await send("POST", "/api/v1/projects/shop/webhooks", {
        url: "https://hooks.example.com/ferry",
        secret: "whsec-0123456789abcdef",
      });
      expect(created.status).toBe(201);
      const moved = await send("PATCH", `/api/v1/projects/shop/webhooks/${String(created.body.id)}`, {
        url: "http://[::ffff:127.0.0.1]/hook",
      });
      expect(moved.status).toBe(400);
      expect(moved.body.errors?.[0]?.pointer).toBe("/url");
    });
  },
);

describe.each(dialects)(
  "FERRY_OUTBOUND_ALLOW=127.0.0.1:5000 (the local test registry allowed by configuration, %s)",
  { concurrent: true },
  (dialect) => {
    let test: TestApp;
    beforeAll(async () => {
      test = await startTestApp(dialect, { outbound: parseOutboundAllow("127.0.0.1:5000") });
    });
    afterAll(() => test?.close());

    it.sequential("allows that address and port, and nothing else of loopback", async () => {
      const post = (name: string, url: string) =>
        test.app.inject({ method: "POST", url: "/api/v1/feeds", headers: test.auth, payload: { name, url } });
      expect((await post("allowed", "http://127.0.0.1:5000")).statusCode).toBe(201);
      expect((await post("by-name", "http://localhost:5000")).statusCode).toBe(201);
      const otherPort = await post("other-port", "http://127.0.0.1:5001");
      expect(otherPort.statusCode).toBe(400);
      expect(otherPort.json().detail).toContain("a loopback address (127.0.0.1 port 5001)");
      expect((await post("ipv6", "http://[::1]:5000")).statusCode).toBe(400);
    });
  },
);

describe.each(dialects)(
  "a registry that redirects to loopback (node:http registries on 127.0.0.1, %s)",
  { concurrent: true },
  (dialect) => {
    let test: ObservedApp;
    let registry: Awaited<ReturnType<typeof startServer>>;
    let target: Awaited<ReturnType<typeof startServer>>;

    beforeAll(async () => {
      // Where the redirects point: a loopback service that must never be called.
      target = await startServer((_, response) => {
        response.writeHead(500, { "content-type": "text/plain" }).end(canary);
      });
      registry = await startServer((path, response) => {
        if (path === "/v2/") {
          response.writeHead(200, { "content-type": "application/json" }).end("{}");
        } else if (path.startsWith("/v2/demo/app/tags/list")) {
          response.writeHead(302, { location: `http://127.0.0.1:${target.port}/leak?token=signed` }).end();
        } else if (path.startsWith("/v2/demo/named/tags/list")) {
          response.writeHead(307, { location: `http://localhost:${target.port}/leak` }).end();
        } else {
          response.writeHead(404, { "content-type": "application/json" }).end('{"errors":[{"code":"NAME_UNKNOWN"}]}');
        }
      });
      // The registry is allowed explicitly, on its port only; the redirect target is not.
      test = await startObservedApp(dialect, { outbound: parseOutboundAllow(`127.0.0.1:${registry.port}`) });
      await test.call("POST", "/api/v1/environments", { name: "dev" });
      await test.call("POST", "/api/v1/lifecycles", { name: "one", phases: [{ environments: ["dev"] }] });
      expect((await test.call("POST", "/api/v1/feeds", { name: "local", url: registry.url })).status).toBe(201);
      for (const [project, repository] of [
        ["app", "demo/app"],
        ["named", "demo/named"],
      ]) {
        await test.call("POST", "/api/v1/projects", { name: project, lifecycle: "one" });
        const process = await test.call("PUT", `/api/v1/projects/${project}/process`, {
          images: [{ name: "web", feed: "local", repository, version: { kind: "semver", range: "^1.0.0" } }],
          steps: [{ name: "show", kind: "script", config: { script: "echo hi" } }],
        });
        expect(process.status).toBe(200);
      }
    });
    afterAll(async () => {
      await test?.close();
      await stopServer(registry?.server);
      await stopServer(target?.server);
    });

    it.sequential("refuses the release with a clear error; the redirect target is never called", async () => {
      const release = await test.call<Problem>("POST", "/api/v1/projects/app/releases", { version: "1.0.0" });
      expect(release.status).toBe(400);
      expect(release.body.detail).toBe(
        `feed URL ${registry.url} redirected to http://127.0.0.1:${target.port}/leak, which points at a loopback address (127.0.0.1 port ${target.port}); ${HINT}`,
      );
      expect(JSON.stringify(release.body)).not.toContain(canary);
      expect(JSON.stringify(release.body)).not.toContain("token=signed");
      expect(target.hits).toEqual([]);
    });

    it.sequential("refuses a redirect to a name that resolves to loopback, on the connection itself", async () => {
      const release = await test.call<Problem>("POST", "/api/v1/projects/named/releases", { version: "1.0.0" });
      expect(release.status).toBe(400);
      expect(release.body.detail).toMatch(
        /redirected to http:\/\/localhost:\d+\/leak, which points at a loopback address/,
      );
      expect(target.hits).toEqual([]);
    });

    it.sequential("never shows the body of a failed call, even where the redirect is allowed", async () => {
      const client = new RegistryClient({ url: registry.url, outbound: parseOutboundAllow("127.0.0.1") });
      const error = await caught(client.listTags("demo/app"));
      expect(error).toBeInstanceOf(RegistryError);
      expect((error as RegistryError).message).toMatch(/answered HTTP 500/);
      expect((error as RegistryError).message).not.toContain(canary);
      expect(target.hits).toHaveLength(1);
      target.hits.length = 0;
    });

    it.sequential("checks the feed URL again at request time", async () => {
      const metadata = await caught(new RegistryClient({ url: "http://169.254.169.254/" }).ping());
      expect(metadata).toBeInstanceOf(OutboundRefusedError);
      expect((metadata as Error).message).toBe(
        `feed URL http://169.254.169.254 points at a link-local/metadata address (169.254.169.254); ${HINT}`,
      );
      const before = registry.hits.length;
      const byName = await caught(new RegistryClient({ url: `http://localhost:${registry.port}` }).ping());
      expect(byName).toBeInstanceOf(OutboundRefusedError);
      expect((byName as Error).message).toMatch(/localhost resolves to 127\.0\.0\.1/);
      expect(registry.hits.length).toBe(before);
    });
  },
);

describe("webhook deliveries through the outbound guard (node:http receiver on 127.0.0.1)", () => {
  let receiver: Awaited<ReturnType<typeof startServer>>;
  beforeAll(async () => {
    receiver = await startServer((_, response) => response.writeHead(204).end());
  });
  afterAll(() => stopServer(receiver?.server));

  const deliver = (url: string, outbound = defaultOutboundPolicy) =>
    deliverWebhook(
      { url, secret: "whsec-0123456789abcdef" },
      { id: "evt_1", event: "deployment.started", body: "{}", userAgent: "Ferry/test" },
      { timeoutMs: 2000, retryDelaysMs: [10, 10] },
      outbound,
      new AbortController().signal,
    );

  it("refuses a loopback receiver at once (no retries, no request) and says why without the path", async () => {
    for (const url of [`${receiver.url}/hooks/path-credential`, `http://localhost:${receiver.port}/hooks/x`]) {
      const result = await deliver(url);
      expect(result, url).toMatchObject({ delivered: false, attempts: 1 });
      const problem = "problem" in result ? result.problem : "";
      expect(problem, url).toMatch(/^webhook URL http:\/\/(127\.0\.0\.1|localhost):\d+ points at a loopback address/);
      expect(problem, url).not.toContain("path-credential");
    }
    expect(receiver.hits).toEqual([]);
  });

  it("delivers where FERRY_OUTBOUND_ALLOW allows it", async () => {
    const result = await deliver(`${receiver.url}/hook`, parseOutboundAllow(`127.0.0.1:${receiver.port}`));
    expect(result).toEqual({ delivered: true, attempts: 1, status: 204 });
    expect(receiver.hits).toEqual(["/hook"]);
  });
});

/**
 * Issue 11, finding 4: a user who may only edit variables pointed `#{HealthUrl}` (used by an
 * http-test step) at an internal service on the server's loopback; the failed assertions put
 * its answer in the task log, which viewers read. A real server with the guard at its
 * defaults, a real team and role, a node:http "internal service" on 127.0.0.1.
 */
describe.each(dialects)(
  "http steps whose address a variable chose go through the outbound guard (real server, %s)",
  { concurrent: true },
  (dialect) => {
    const internalAnswer = '{"repositories":["internal/INTERNAL-CATALOG-CANARY"]}';
    let internal: Awaited<ReturnType<typeof startServer>>;
    let test: TestServer;
    let editorKey = "";
    const drops: (() => Promise<void>)[] = [];

    const asEditor = async (method: string, path: string, body?: unknown) => {
      const response = await fetch(new URL(path, test.server.url), {
        method,
        headers: {
          authorization: `Bearer ${editorKey}`,
          ...(body !== undefined && { "content-type": "application/json" }),
        },
        ...(body !== undefined && { body: JSON.stringify(body) }),
      });
      return { status: response.status, text: await response.text() };
    };
    const admin = async <T = Record<string, unknown>>(method: string, path: string, body?: unknown) => {
      const response = await test.call<T>(method, path, body);
      expect(response.status, `${method} ${path}: ${JSON.stringify(response.body)}`).toBeLessThan(300);
      return response.body;
    };
    /** A release of the project (auto-deployed to dev); the task as the variable editor sees it, and its log. */
    const release = async (project: string, version: string) => {
      const created = await admin<Created>("POST", `/api/v1/projects/${project}/releases`, { version });
      const taskId = created.deployments[0]?.taskId ?? "";
      await test.waitForTask(taskId);
      const task = JSON.parse((await asEditor("GET", `/api/v1/tasks/${taskId}`)).text) as {
        state: string;
        error: string;
      };
      const log = await asEditor("GET", `/api/v1/tasks/${taskId}/log`);
      expect(log.status).toBe(200);
      const lines = (JSON.parse(log.text) as { lines: { text: string }[] }).lines;
      return { task, log: lines.map((line) => line.text).join("\n") };
    };

    beforeAll(async () => {
      internal = await startServer((path, response) => {
        if (path === "/v2/_catalog")
          response.writeHead(200, { "content-type": "application/json" }).end(internalAnswer);
        else response.writeHead(200).end("ok");
      });
      test = await startTestServer({ outbound: defaultOutboundPolicy, ...(await databaseFor(dialect, drops)) });
      await admin("POST", "/api/v1/environments", { name: "dev" });
      await admin("POST", "/api/v1/lifecycles", { name: "one", phases: [{ environments: ["dev"], autoDeploy: true }] });
      for (const name of ["shop", "single-host"]) await admin("POST", "/api/v1/projects", { name, lifecycle: "one" });
      await admin("PUT", "/api/v1/projects/shop/process", {
        steps: [
          {
            name: "smoke",
            kind: "http-test",
            config: { url: "#{HealthUrl}", timeoutMs: 2000, assertions: { bodyContains: ["ok"] } },
          },
        ],
      });
      await admin("POST", "/api/v1/projects/shop/variables", { name: "HealthUrl", value: "https://shop.example.com/" });
      // The attacker: may view the project and edit its variables, nothing else.
      await admin("POST", "/api/v1/roles", { name: "Variable editor", permissions: ["view", "editVariables"] });
      await admin("POST", "/api/v1/users", { username: "vera", password: "vera-long-password" });
      await admin("POST", "/api/v1/teams", {
        name: "config",
        members: ["vera"],
        roles: [{ role: "variable-editor", projects: ["shop", "single-host"] }],
      });
      editorKey = String(
        (await admin<{ key: string }>("POST", "/api/v1/api-keys", { name: "vera", user: "vera" })).key,
      );
    }, 60_000);
    afterAll(async () => {
      await test?.close();
      await stopServer(internal?.server);
      for (const drop of drops) await drop();
    });

    it.sequential("refuses the internal address a variable editor set: the step fails naming the guard, the service is never called", async () => {
      const variables = JSON.parse((await asEditor("GET", "/api/v1/projects/shop/variables")).text) as {
        items: { id: string; name: string }[];
      };
      const healthUrl = variables.items.find((variable) => variable.name === "HealthUrl");
      const set = await asEditor("PATCH", `/api/v1/projects/shop/variables/${healthUrl?.id}`, {
        value: `${internal.url}/v2/_catalog`,
      });
      expect(set.status, set.text).toBe(200);

      const { task, log } = await release("shop", "1.0.0");
      expect(task.state).toBe("failed");
      const refusal = `url ${internal.url}/v2/_catalog points at a loopback address (127.0.0.1); ${HINT}`;
      expect(task.error).toContain(refusal);
      expect(task.error).toContain("a variable chose its address");
      expect(log).toContain(refusal);
      expect(log).not.toContain("INTERNAL-CATALOG-CANARY");
      expect(internal.hits).toEqual([]);
    });

    it.sequential("refuses a health check the same way, at once rather than at its deadline, and a name that resolves to loopback", async () => {
      await admin("PUT", "/api/v1/projects/shop/process", {
        steps: [{ name: "health", kind: "health-check", config: { url: "#{HealthUrl}", deadlineSeconds: 60 } }],
      });
      const variables = JSON.parse((await asEditor("GET", "/api/v1/projects/shop/variables")).text) as {
        items: { id: string; name: string }[];
      };
      const healthUrl = variables.items.find((variable) => variable.name === "HealthUrl");
      await asEditor("PATCH", `/api/v1/projects/shop/variables/${healthUrl?.id}`, {
        value: `http://localhost:${internal.port}/v2/_catalog`,
      });
      const started = Date.now();
      const { task, log } = await release("shop", "1.0.1");
      expect(task.state).toBe("failed");
      expect(Date.now() - started).toBeLessThan(20_000);
      expect(task.error).toMatch(/points at a loopback address \(localhost resolves to (127\.0\.0\.1|::1)\)/);
      expect(log).not.toContain("INTERNAL-CATALOG-CANARY");
      expect(internal.hits).toEqual([]);
    });

    it.sequential("still calls a loopback URL written in the process itself (a single-host install checking its own app)", async () => {
      await admin("PUT", "/api/v1/projects/single-host/process", {
        steps: [
          { name: "health", kind: "health-check", config: { url: `${internal.url}/health`, deadlineSeconds: 5 } },
          {
            name: "smoke",
            kind: "http-test",
            config: { url: `${internal.url}/`, assertions: { bodyContains: ["ok"] } },
          },
        ],
      });
      const { task, log } = await release("single-host", "1.0.0");
      expect(task.state, log).toBe("succeeded");
      expect(log).toContain("healthy: HTTP 200");
      expect(log).toContain('✔ body contains "ok"');
      expect(internal.hits).toEqual(["/health", "/"]);
      internal.hits.length = 0;
    });
  },
);

describe.each(dialects)(
  "FERRY_OUTBOUND_ALLOW also lets an http step's variable URL through (real server, %s)",
  { concurrent: true },
  (dialect) => {
    let internal: Awaited<ReturnType<typeof startServer>>;
    let test: TestServer;
    const drops: (() => Promise<void>)[] = [];

    beforeAll(async () => {
      internal = await startServer((_, response) => response.writeHead(200).end("ok"));
      test = await startTestServer({
        outbound: parseOutboundAllow(`127.0.0.1:${internal.port}`),
        ...(await databaseFor(dialect, drops)),
      });
      await test.call("POST", "/api/v1/environments", { name: "dev" });
      await test.call("POST", "/api/v1/lifecycles", {
        name: "one",
        phases: [{ environments: ["dev"], autoDeploy: true }],
      });
      await test.call("POST", "/api/v1/projects", { name: "shop", lifecycle: "one" });
      await test.call("PUT", "/api/v1/projects/shop/process", {
        steps: [{ name: "smoke", kind: "http-test", config: { url: "#{BaseUrl}/ready" } }],
      });
    }, 60_000);
    afterAll(async () => {
      await test?.close();
      await stopServer(internal?.server);
      for (const drop of drops) await drop();
    });

    it.sequential("calls the allowed address and port, and still refuses another loopback port", async () => {
      await test.call("POST", "/api/v1/projects/shop/variables", { name: "BaseUrl", value: internal.url });
      const allowed = await test.call<Created>("POST", "/api/v1/projects/shop/releases", { version: "1.0.0" });
      const first = await test.waitForTask(allowed.body.deployments[0]?.taskId ?? "");
      expect(first.state, JSON.stringify(first)).toBe("succeeded");
      expect(internal.hits).toEqual(["/ready"]);

      const variables = await test.call<{ items: { id: string }[] }>("GET", "/api/v1/projects/shop/variables");
      await test.call("PATCH", `/api/v1/projects/shop/variables/${variables.body.items[0]?.id}`, {
        value: `http://127.0.0.1:${internal.port + 1}`,
      });
      const refused = await test.call<Created>("POST", "/api/v1/projects/shop/releases", { version: "1.0.1" });
      const second = await test.waitForTask(refused.body.deployments[0]?.taskId ?? "");
      expect(second.state).toBe("failed");
      expect(String(second.error)).toContain(`a loopback address (127.0.0.1 port ${internal.port + 1})`);
    });
  },
);
