import { copyFileSync, mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { setTimeout as sleep } from "node:timers/promises";
import type { TargetHealthSettings } from "../../src/engine/targetHealth.js";
import { generateApiKey } from "../../src/security/apiKeys.js";
import { type OutboundPolicy, parseOutboundAllow } from "../../src/security/outboundGuard.js";
import { type RunningServer, startServer } from "../../src/server/start.js";
import type { TrafficSettings } from "../../src/traffic/routers.js";
import type { SshKeepalive } from "../../src/transports/ssh.js";
import { createPostgresDatabase } from "./databases.js";

export interface TestServer {
  server: RunningServer;
  apiKey: string;
  dataDir: string;
  /** JSON request with the admin key; returns status and parsed body. */
  call<T = Record<string, unknown>>(method: string, path: string, body?: unknown): Promise<{ status: number; body: T }>;
  /** Polls a task until it ends; returns its final row as the API shows it. */
  waitForTask(taskId: string, timeoutMs?: number): Promise<Record<string, unknown>>;
  close(): Promise<void>;
}

/** A task's log as text, a line of the log a line, read through `call` (a TestServer's, or a crash test's client). */
export async function taskLogText(call: TestServer["call"], taskId: string): Promise<string> {
  const { body } = await call<{ lines: { text: string }[] }>("GET", `/api/v1/tasks/${taskId}/log`);
  return body.lines.map((line) => line.text).join("\n");
}

/**
 * A real Ferry server (HTTP on a free port, task engine running) on a fresh SQLite data dir.
 * Feeds and webhooks may point at 127.0.0.1 (the tests' registries) unless `outbound` says otherwise.
 */
export async function startTestServer(
  options: {
    databaseUrl?: string;
    leaseMs?: number;
    traffic?: TrafficSettings;
    outbound?: OutboundPolicy;
    targetHealth?: Partial<TargetHealthSettings>;
    /** Where it listens (127.0.0.1 unless given: agents in network namespaces need a namespace link's address). */
    host?: string;
    agentTimeoutMs?: number;
    /** FERRY_SSH_KEEPALIVE_*: tests that cut an ssh target's link shorten it (default 10 s × 3). */
    sshKeepalive?: SshKeepalive;
    requestsPerAddress?: number;
    /** FERRY_PACKAGE_MAX_BYTES and FERRY_PACKAGE_KEEP_VERSIONS (ADR 0044). */
    packageMaxBytes?: number;
    packageKeepVersions?: number;
    /**
     * Another node's data directory, whose master.key this one starts with: nodes sharing a
     * database need the same key (a node with its own refuses to start, ADR 0046).
     */
    masterKeyOf?: string;
    /** FERRY_WORK_DIR: another server's work root, to find the processes it started (default: one of its own). */
    workDir?: string;
  } = {},
): Promise<TestServer> {
  const dataDir = mkdtempSync(join(tmpdir(), "ferry-server-"));
  if (options.masterKeyOf) copyFileSync(join(options.masterKeyOf, "master.key"), join(dataDir, "master.key"));
  const apiKey = generateApiKey();
  const server = await startServer({
    port: 0,
    host: options.host ?? "127.0.0.1",
    agentTimeoutMs: options.agentTimeoutMs,
    sshKeepalive: options.sshKeepalive,
    requestsPerAddress: options.requestsPerAddress,
    dataDir,
    workDir: options.workDir,
    databaseUrl: options.databaseUrl,
    adminApiKey: apiKey,
    logLevel: process.env.TEST_LOG_LEVEL ?? "silent",
    leaseMs: options.leaseMs,
    // Tests that deploy blue/green pass their own proxy; the default would start one on :8000.
    traffic: options.traffic ?? {
      driver: "builtin",
      proxy: { stateDir: join(dataDir, "proxy"), listen: "127.0.0.1:0" },
    },
    announce: () => {},
    outbound: options.outbound ?? parseOutboundAllow("127.0.0.1"),
    targetHealth: options.targetHealth,
    packageMaxBytes: options.packageMaxBytes,
    packageKeepVersions: options.packageKeepVersions,
  });
  const call = async <T>(method: string, path: string, body?: unknown) => {
    const response = await fetch(new URL(path, server.url), {
      method,
      headers: {
        authorization: `Bearer ${apiKey}`,
        ...(body !== undefined && { "content-type": "application/json" }),
      },
      ...(body !== undefined && { body: JSON.stringify(body) }),
    });
    const text = await response.text();
    return { status: response.status, body: (text ? JSON.parse(text) : undefined) as T };
  };
  return {
    server,
    apiKey,
    dataDir,
    call,
    async waitForTask(taskId, timeoutMs = 30_000) {
      const deadline = Date.now() + timeoutMs;
      for (;;) {
        const { body } = await call<Record<string, unknown>>("GET", `/api/v1/tasks/${taskId}`);
        if (["succeeded", "failed", "cancelled", "interrupted"].includes(String(body.state))) return body;
        if (Date.now() > deadline) throw new Error(`task ${taskId} still ${String(body.state)} after ${timeoutMs} ms`);
        await sleep(50);
      }
    },
    async close() {
      await server.close();
      rmSync(dataDir, { recursive: true, force: true });
    },
  };
}

/**
 * startTestServer on SQLite, or on a PostgreSQL database of its own, which close() drops
 * after the server stops.
 */
export async function startTestServerOn(
  dialect: "sqlite" | "postgres",
  options: Omit<NonNullable<Parameters<typeof startTestServer>[0]>, "databaseUrl"> = {},
): Promise<TestServer> {
  if (dialect === "sqlite") return startTestServer(options);
  const database = await createPostgresDatabase();
  try {
    const test = await startTestServer({ ...options, databaseUrl: database.url });
    return {
      ...test,
      async close() {
        await test.close();
        await database.drop();
      },
    };
  } catch (error) {
    await database.drop();
    throw error;
  }
}

/**
 * A project whose every release goes on its own to "prod" (one phase that auto-deploys), with
 * one variable the test changes between releases (an image reference, an app's directory).
 * Returns the project's slug and the variable's id.
 */
export async function createAutoDeployedProject(
  test: TestServer,
  names: { lifecycle: string; project: string },
  variable: { name: string; value: string },
): Promise<{ projectSlug: string; variableId: string }> {
  await test.call("POST", "/api/v1/environments", { name: "prod" });
  await test.call("POST", "/api/v1/lifecycles", {
    name: names.lifecycle,
    phases: [{ environments: ["prod"], autoDeploy: true }],
  });
  const project = await test.call<{ slug: string }>("POST", "/api/v1/projects", {
    name: names.project,
    lifecycle: names.lifecycle,
  });
  const created = await test.call<{ id: string }>("POST", `/api/v1/projects/${project.body.slug}/variables`, variable);
  return { projectSlug: project.body.slug, variableId: created.body.id };
}
