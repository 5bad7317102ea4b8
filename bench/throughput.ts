import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { setTimeout as sleep } from "node:timers/promises";
import { generateApiKey } from "../src/security/apiKeys.js";
import { startServer } from "../src/server/start.js";
import type { BenchmarkResult } from "./run.js";

const DEPLOYMENTS = 300;

/**
 * No-op deployments per second through the task queue on one node: a project whose
 * process is empty, deployed to many environments (different locks) as fast as the
 * engine claims, runs and finishes them. Measured through the real API and SQLite.
 */
export async function throughput(): Promise<BenchmarkResult> {
  const dataDir = mkdtempSync(join(tmpdir(), "ferry-bench-"));
  const apiKey = generateApiKey();
  const server = await startServer({
    port: 0,
    host: "127.0.0.1",
    dataDir,
    adminApiKey: apiKey,
    logLevel: "silent",
    announce: () => {},
  });
  const call = async (method: string, path: string, body?: unknown) => {
    const response = await fetch(new URL(path, server.url), {
      method,
      headers: { authorization: `Bearer ${apiKey}`, ...(body !== undefined && { "content-type": "application/json" }) },
      ...(body !== undefined && { body: JSON.stringify(body) }),
    });
    return (await response.json()) as Record<string, unknown>;
  };
  try {
    const environments = Array.from({ length: 10 }, (_, index) => `env-${index}`);
    for (const name of environments) await call("POST", "/api/v1/environments", { name });
    await call("POST", "/api/v1/lifecycles", { name: "flat", phases: [{ environments }] });
    await call("POST", "/api/v1/projects", { name: "noop", lifecycle: "flat" });
    await call("POST", "/api/v1/projects/noop/releases", { version: "1.0.0" });
    const started = performance.now();
    const taskIds: string[] = [];
    for (let index = 0; index < DEPLOYMENTS; index++) {
      const created = await call("POST", "/api/v1/projects/noop/deployments", {
        release: "1.0.0",
        environment: environments[index % environments.length],
      });
      taskIds.push(String(created.taskId));
    }
    for (;;) {
      const page = await call("GET", "/api/v1/tasks?state=succeeded&limit=1");
      if (Number(page.total) >= DEPLOYMENTS) break;
      await sleep(20);
    }
    const seconds = (performance.now() - started) / 1000;
    const perSecond = DEPLOYMENTS / seconds;
    return {
      name: "throughput",
      rows: [
        {
          figure: `no-op deployments/s (${DEPLOYMENTS}, one node, SQLite)`,
          goal: "≥ 100/s",
          measured: `${perSecond.toFixed(0)}/s`,
          met: perSecond >= 100,
        },
      ],
      values: { deployments_per_s: Math.round(perSecond), deployments: DEPLOYMENTS },
    };
  } finally {
    await server.close();
    rmSync(dataDir, { recursive: true, force: true });
  }
}
