import { createHmac, timingSafeEqual } from "node:crypto";
import { createSocket, type Socket } from "node:dgram";
import { createServer, type IncomingHttpHeaders, type Server, type ServerResponse } from "node:http";
import type { AddressInfo } from "node:net";
import { setTimeout as sleep } from "node:timers/promises";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { type ObservedApp, startObservedApp } from "./helpers/observedApp.js";

interface Delivery {
  path: string;
  headers: IncomingHttpHeaders;
  body: string;
}

interface EventBody {
  id: string;
  event: string;
  occurredAt: string;
  deployment: {
    id: string;
    taskId: string;
    project: string;
    environment: string;
    release: string;
    kind: string;
    state: string;
    durationSeconds: number | null;
  };
}

const secrets = {
  ok: "whsec-ok-0123456789abcdef",
  flaky: "whsec-flaky-0123456789abcdef",
  broken: "whsec-broken-0123456789abcdef",
  hang: "whsec-hang-0123456789abcdef",
};
const responseCanary = "RESPONSE-BODY-CANARY-do-not-log";

/** What a receiver does, as docs/webhooks.md says: HMAC of "<timestamp>.<body>", compared in constant time. */
function verifySignature(secret: string, delivery: Delivery): boolean {
  const timestamp = String(delivery.headers["x-ferry-timestamp"]);
  const expected = `sha256=${createHmac("sha256", secret).update(`${timestamp}.${delivery.body}`).digest("hex")}`;
  const given = String(delivery.headers["x-ferry-signature"]);
  return given.length === expected.length && timingSafeEqual(Buffer.from(given), Buffer.from(expected));
}

async function until<T>(what: string, probe: () => T | undefined | false, timeoutMs = 15_000): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const value = probe();
    if (value !== undefined && value !== false) return value;
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await sleep(25);
  }
}

describe("deployment webhooks and StatsD (real HTTP receiver and UDP socket, SQLite)", () => {
  let test: ObservedApp;
  let receiver: Server;
  let receiverUrl = "";
  let statsd: Socket;
  const deliveries: Delivery[] = [];
  const held: ServerResponse[] = [];
  const statsdLines: string[] = [];
  const responses: string[] = [];
  let flakyCalls = 0;

  /** Every API answer is kept, to check no secret is ever in one. */
  const call = async <T = Record<string, unknown>>(method: string, path: string, body?: unknown) => {
    const response = await test.call<T>(method, path, body);
    responses.push(JSON.stringify(response.body ?? null));
    return response;
  };
  const eventsAt = (path: string, taskId?: string) =>
    deliveries
      .filter((delivery) => delivery.path === path)
      .map((delivery) => ({ delivery, body: JSON.parse(delivery.body) as EventBody }))
      .filter(({ body }) => taskId === undefined || body.deployment.taskId === taskId);
  const logText = async (taskId: string) =>
    (await call<{ lines: { text: string }[] }>("GET", `/api/v1/tasks/${taskId}/log`)).body.lines
      .map((line) => line.text)
      .join("\n");

  beforeAll(async () => {
    receiver = createServer((request, response) => {
      const chunks: Buffer[] = [];
      request.on("data", (chunk: Buffer) => chunks.push(chunk));
      request.on("end", () => {
        const path = request.url ?? "";
        deliveries.push({ path, headers: request.headers, body: Buffer.concat(chunks).toString("utf8") });
        if (path === "/hang") {
          held.push(response);
          return;
        }
        if (path === "/broken") {
          response.writeHead(500, { "content-type": "text/plain" }).end(responseCanary);
          return;
        }
        if (path === "/flaky" && flakyCalls++ === 0) {
          response.writeHead(503).end(responseCanary);
          return;
        }
        response.writeHead(204).end();
      });
    });
    await new Promise<void>((resolve) => receiver.listen(0, "127.0.0.1", resolve));
    receiverUrl = `http://127.0.0.1:${(receiver.address() as AddressInfo).port}`;

    statsd = createSocket("udp4");
    statsd.on("message", (message) => statsdLines.push(...message.toString("utf8").split("\n")));
    await new Promise<void>((resolve) => statsd.bind(0, "127.0.0.1", resolve));

    test = await startObservedApp("sqlite", {
      statsd: { host: "127.0.0.1", port: statsd.address().port },
      // Long enough that the held request is still open when the deployment ends; short pauses.
      webhookDelivery: { timeoutMs: 20_000, retryDelaysMs: [20, 20] },
    });
    await call("POST", "/api/v1/environments", { name: "prod" });
    await call("POST", "/api/v1/lifecycles", { name: "straight", phases: [{ environments: ["prod"] }] });
    await call("POST", "/api/v1/projects", { name: "shop", lifecycle: "straight" });
    await call("PUT", "/api/v1/projects/shop/process", {
      steps: [{ name: "ship", kind: "script", config: { script: "echo shipped" } }],
    });
    expect((await call("POST", "/api/v1/projects/shop/releases", { version: "1.0.0" })).status).toBe(201);
    await call("PUT", "/api/v1/projects/shop/process", {
      steps: [{ name: "ship", kind: "script", config: { script: "echo broken; exit 3" } }],
    });
    expect((await call("POST", "/api/v1/projects/shop/releases", { version: "1.0.1" })).status).toBe(201);
  });
  afterAll(async () => {
    for (const response of held) response.writeHead(204).end();
    await test?.close();
    receiver?.closeAllConnections();
    await new Promise((resolve) => receiver?.close(resolve));
    statsd?.close();
  });

  it("manages a project's webhooks without ever showing the secret", async () => {
    const hooks = [
      { url: `${receiverUrl}/ok`, secret: secrets.ok },
      { url: `${receiverUrl}/flaky`, secret: secrets.flaky, events: ["deployment.succeeded"] },
      { url: `${receiverUrl}/broken`, secret: secrets.broken, events: ["deployment.failed"] },
      { url: `${receiverUrl}/hang`, secret: secrets.hang, events: ["deployment.started", "deployment.started"] },
    ];
    for (const hook of hooks) {
      const created = await call<{ id: string; secret: string; events: string[]; project: string }>(
        "POST",
        "/api/v1/projects/shop/webhooks",
        hook,
      );
      expect(created.status).toBe(201);
      expect(created.body.secret).toBe("set");
      expect(created.body.project).toBe("shop");
    }
    const list = await call<{ items: { id: string; url: string; events: string[] }[]; total: number }>(
      "GET",
      "/api/v1/projects/shop/webhooks",
    );
    expect(list.body.total).toBe(4);
    expect(list.body.items[0]?.events).toEqual(["deployment.started", "deployment.succeeded", "deployment.failed"]);
    expect(list.body.items[3]?.events).toEqual(["deployment.started"]);

    const spare = await call<{ id: string }>("POST", "/api/v1/projects/shop/webhooks", {
      url: `${receiverUrl}/spare`,
      secret: "whsec-spare-0123456789abcdef",
    });
    const updated = await call<{ events: string[]; secret: string }>(
      "PATCH",
      `/api/v1/projects/shop/webhooks/${spare.body.id}`,
      { events: ["deployment.failed"], secret: "whsec-spare-rotated-0123456789" },
    );
    expect(updated.status).toBe(200);
    expect(updated.body).toMatchObject({ events: ["deployment.failed"], secret: "set" });
    expect((await call("GET", `/api/v1/projects/shop/webhooks/${spare.body.id}`)).status).toBe(200);
    expect((await call("DELETE", `/api/v1/projects/shop/webhooks/${spare.body.id}`)).status).toBe(204);
    expect((await call("GET", `/api/v1/projects/shop/webhooks/${spare.body.id}`)).status).toBe(404);

    for (const bad of [
      { url: "ftp://127.0.0.1/hook", secret: secrets.ok },
      { url: "http://user:pass@127.0.0.1/hook", secret: secrets.ok },
      { url: `${receiverUrl}/ok`, secret: "short" },
      { url: `${receiverUrl}/ok`, secret: secrets.ok, events: ["deployment.exploded"] },
      { url: `${receiverUrl}/ok`, secret: secrets.ok, extra: true },
    ]) {
      expect((await call("POST", "/api/v1/projects/shop/webhooks", bad)).status).toBe(400);
    }
    await call("GET", "/api/v1/openapi.json");
  });

  it("sends signed events for a deployment that succeeds, without the deployment waiting for them", async () => {
    const queued = await call<{ taskId: string }>("POST", "/api/v1/projects/shop/deployments", {
      release: "1.0.0",
      environment: "prod",
    });
    expect(queued.status).toBe(201);
    const taskId = queued.body.taskId;
    // The /hang receiver holds its request open; the deployment ends all the same.
    await until("the held delivery", () => held.length > 0);
    expect((await test.waitForTask(taskId)).state).toBe("succeeded");
    expect(held.length).toBe(1);
    expect(held[0]?.writableEnded).toBe(false);
    held.shift()?.writeHead(204).end();

    const ok = await until("both events at /ok", () => {
      const events = eventsAt("/ok", taskId);
      return events.length === 2 && events;
    });
    expect(ok.map(({ body }) => body.event)).toEqual(["deployment.started", "deployment.succeeded"]);
    for (const { delivery, body } of ok) {
      expect(verifySignature(secrets.ok, delivery)).toBe(true);
      expect(verifySignature(secrets.flaky, delivery)).toBe(false);
      expect(Math.abs(Date.now() / 1000 - Number(delivery.headers["x-ferry-timestamp"]))).toBeLessThan(60);
      expect(delivery.headers["content-type"]).toBe("application/json");
      expect(delivery.headers["user-agent"]).toBe("Ferry/test");
      expect(delivery.headers["x-ferry-event"]).toBe(body.event);
      expect(delivery.headers["x-ferry-delivery"]).toBe(body.id);
      expect(body.deployment).toMatchObject({ project: "shop", environment: "prod", release: "1.0.0", kind: "deploy" });
    }
    expect(ok[0]?.body.deployment).toMatchObject({ state: "running", durationSeconds: null });
    expect(ok[1]?.body.deployment.state).toBe("succeeded");
    expect(ok[1]?.body.deployment.durationSeconds).toBeGreaterThan(0);

    // /flaky answered 503 first: the same delivery (same id) came again and was accepted.
    const flaky = await until("the retried delivery at /flaky", () => {
      const events = eventsAt("/flaky", taskId);
      return events.length === 2 && events;
    });
    expect(flaky.map(({ body }) => body.event)).toEqual(["deployment.succeeded", "deployment.succeeded"]);
    expect(flaky[0]?.body.id).toBe(flaky[1]?.body.id);
    expect(flaky.every(({ delivery }) => verifySignature(secrets.flaky, delivery))).toBe(true);
    expect(eventsAt("/broken", taskId)).toEqual([]);

    await until("the StatsD count", () => statsdLines.includes("ferry.deployments.shop.prod.succeeded:1|c"));
    expect(statsdLines.some((line) => /^ferry\.deployments\.shop\.prod\.duration:\d+\|ms$/.test(line))).toBe(true);
    expect(await logText(taskId)).not.toMatch(/webhook/);
  });

  it("sends signed events for a deployment that fails, and logs a failed delivery with its status only", async () => {
    const queued = await call<{ taskId: string }>("POST", "/api/v1/projects/shop/deployments", {
      release: "1.0.1",
      environment: "prod",
    });
    const taskId = queued.body.taskId;
    await until("the held delivery", () => held.length > 0);
    held.shift()?.writeHead(204).end();
    expect((await test.waitForTask(taskId)).state).toBe("failed");

    const ok = await until("both events at /ok", () => {
      const events = eventsAt("/ok", taskId);
      return events.length === 2 && events;
    });
    expect(ok.map(({ body }) => body.event)).toEqual(["deployment.started", "deployment.failed"]);
    expect(ok.every(({ delivery }) => verifySignature(secrets.ok, delivery))).toBe(true);
    expect(ok[1]?.body.deployment).toMatchObject({ release: "1.0.1", state: "failed" });

    // /broken answers 500 each time: three attempts, then one line in the task log.
    let text = "";
    for (let attempt = 0; !text.includes("did not accept"); attempt++) {
      if (attempt > 300) throw new Error(`no delivery failure was logged:\n${text}`);
      await sleep(25);
      text = await logText(taskId);
    }
    expect(eventsAt("/broken", taskId)).toHaveLength(3);
    expect(eventsAt("/broken", taskId).every(({ delivery }) => verifySignature(secrets.broken, delivery))).toBe(true);
    expect(text).toMatch(
      new RegExp(
        `webhook wh_\\w+ \\(${receiverUrl}\\) did not accept deployment\\.failed after 3 attempt\\(s\\): HTTP 500`,
      ),
    );
    expect(text).not.toContain(responseCanary);
    expect(text).not.toContain("/broken");
    await until("the StatsD count", () => statsdLines.includes("ferry.deployments.shop.prod.failed:1|c"));
  });

  it("marks a rollback's events as a rollback, and counts deliveries in /metrics", async () => {
    const rolledBack = await call<{ taskId: string; release: string }>("POST", "/api/v1/projects/shop/rollbacks", {
      environment: "prod",
    });
    expect(rolledBack.body.release).toBe("1.0.0");
    await until("the held delivery", () => held.length > 0);
    held.shift()?.writeHead(204).end();
    expect((await test.waitForTask(rolledBack.body.taskId)).state).toBe("succeeded");
    const ok = await until("both events at /ok", () => {
      const events = eventsAt("/ok", rolledBack.body.taskId);
      return events.length === 2 && events;
    });
    expect(ok.map(({ body }) => [body.event, body.deployment.kind])).toEqual([
      ["deployment.started", "rollback"],
      ["deployment.succeeded", "rollback"],
    ]);
    const metrics = await test.app.inject({ method: "GET", url: "/metrics", headers: test.auth });
    expect(metrics.body).toMatch(/^ferry_webhook_deliveries_total\{outcome="failed"\} 1$/m);
    expect(metrics.body).toMatch(/^ferry_webhook_deliveries_total\{outcome="delivered"\} \d+$/m);
  });

  it("never returned a secret in any answer", async () => {
    const tasks = await call<{ items: { id: string }[] }>("GET", "/api/v1/tasks?limit=50");
    for (const task of tasks.body.items) await logText(task.id);
    const everything = responses.join("\n");
    for (const secret of [...Object.values(secrets), "whsec-spare"]) expect(everything).not.toContain(secret);
  });
});
