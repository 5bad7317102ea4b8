import { join } from "node:path";
import { setTimeout as sleep } from "node:timers/promises";
import type { FastifyInstance } from "fastify";
import { pino } from "pino";
import { buildApp } from "../../src/api/app.js";
import { type DeploymentServices, deploymentTaskKind } from "../../src/engine/deployments.js";
import { TaskEngine } from "../../src/engine/engine.js";
import type { TaskKind } from "../../src/engine/types.js";
import type { StatsdTarget } from "../../src/events/statsd.js";
import type { WebhookDeliveryOptions } from "../../src/events/webhookDelivery.js";
import { generateApiKey } from "../../src/security/apiKeys.js";
import { type OutboundPolicy, parseOutboundAllow } from "../../src/security/outboundGuard.js";
import { createObservability, type Observability } from "../../src/server/observability.js";
import { insertApiKey } from "../../src/store/apiKeys.js";
import { openTestDatabase, type TestDatabase } from "./databases.js";

export interface ObservedApp {
  app: FastifyInstance;
  database: TestDatabase;
  engine: TaskEngine;
  observability: Observability;
  /** Headers with the admin key, for inject(). */
  auth: { authorization: string };
  /** JSON request with the admin key (inject); returns status and parsed body. */
  call<T = Record<string, unknown>>(method: string, path: string, body?: unknown): Promise<{ status: number; body: T }>;
  /** Polls a task until it ends; returns it as the API shows it. */
  waitForTask(taskId: string, timeoutMs?: number): Promise<Record<string, unknown>>;
  close(): Promise<void>;
}

/**
 * The HTTP application with a running task engine and the server's observability
 * (metrics, webhooks, StatsD) wired as src/server/start.ts wires them, over a fresh
 * store of either dialect. Webhooks may call 127.0.0.1 (the tests' receivers) unless
 * `outbound` says otherwise.
 */
export async function startObservedApp(
  dialect: "sqlite" | "postgres",
  options: { statsd?: StatsdTarget; webhookDelivery?: Partial<WebhookDeliveryOptions>; outbound?: OutboundPolicy } = {},
): Promise<ObservedApp> {
  const outbound = options.outbound ?? parseOutboundAllow("127.0.0.1");
  const database = await openTestDatabase(dialect);
  const apiKey = generateApiKey();
  await insertApiKey(database.context, apiKey, { name: "test admin", role: "admin" });
  const logger = pino({ level: process.env.TEST_LOG_LEVEL ?? "silent" });
  const observability = createObservability({
    store: database.store,
    context: database.context,
    logger,
    version: "test",
    taskKinds: ["deployment"],
    statsd: options.statsd,
    webhookDelivery: options.webhookDelivery,
    outbound,
  });
  let engine: TaskEngine | undefined;
  const deployments: DeploymentServices = {
    context: database.context,
    workRoot: join(database.dataDir, "work"),
    enqueue: (input) => {
      if (!engine) throw new Error("the task engine is not running");
      return engine.enqueue(input);
    },
  };
  engine = new TaskEngine({
    db: database.store.db,
    dialect,
    kinds: [deploymentTaskKind(deployments) as TaskKind],
    logger,
    pollMs: 50,
    leaseMs: 3000,
    taskLog: { flushIntervalMs: 20 },
    observers: observability.observers,
  });
  const app = await buildApp({
    store: database.store,
    context: database.context,
    logger,
    version: "test",
    engine,
    deployments,
    metrics: observability.metrics,
    outbound,
  });
  await app.ready();
  await engine.start();
  const runningEngine = engine;
  const call = async <T>(method: string, path: string, body?: unknown) => {
    const response = await app.inject({
      method: method as "GET",
      url: path,
      headers: { authorization: `Bearer ${apiKey}` },
      ...(body !== undefined && { payload: body as Record<string, unknown> }),
    });
    return { status: response.statusCode, body: (response.body ? response.json() : undefined) as T };
  };
  return {
    app,
    database,
    engine: runningEngine,
    observability,
    auth: { authorization: `Bearer ${apiKey}` },
    call,
    async waitForTask(taskId, timeoutMs = 30_000) {
      const deadline = Date.now() + timeoutMs;
      for (;;) {
        const { body } = await call<Record<string, unknown>>("GET", `/api/v1/tasks/${taskId}`);
        if (["succeeded", "failed", "cancelled", "interrupted"].includes(String(body.state))) return body;
        if (Date.now() > deadline) throw new Error(`task ${taskId} still ${String(body.state)} after ${timeoutMs} ms`);
        await sleep(25);
      }
    },
    async close() {
      await runningEngine.stop(2000);
      await observability.close();
      await app.close();
      await database.dispose();
    },
  };
}
