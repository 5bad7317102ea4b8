import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { setTimeout as sleep } from "node:timers/promises";
import { generateApiKey } from "../src/security/apiKeys.js";
import { startServer } from "../src/server/start.js";
import type { BenchmarkResult } from "./run.js";

const DEPLOYMENTS = 300;
const ROUNDS = 5;

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
    // A warm-up round (JIT, SQLite's page cache), then several rounds on the same server,
    // median reported: one round on these shared machines swings by ±20 % with the
    // neighbours' load.
    const rates: number[] = [];
    for (let round = 0; round <= ROUNDS; round++) {
      const started = performance.now();
      for (let index = 0; index < DEPLOYMENTS; index++) {
        await call("POST", "/api/v1/projects/noop/deployments", {
          release: "1.0.0",
          environment: environments[index % environments.length],
        });
      }
      for (;;) {
        const page = await call("GET", "/api/v1/tasks?state=succeeded&limit=1");
        if (Number(page.total) >= DEPLOYMENTS * (round + 1)) break;
        await sleep(20);
      }
      if (round > 0) rates.push(DEPLOYMENTS / ((performance.now() - started) / 1000));
    }
    const sorted = [...rates].sort((a, b) => a - b);
    const perSecond = sorted[Math.floor(sorted.length / 2)] ?? 0;
    return {
      name: "throughput",
      rows: [
        {
          figure: `no-op deployments/s (median of ${ROUNDS} × ${DEPLOYMENTS} after a warm-up round, one node, SQLite)`,
          goal: "≥ 100/s",
          measured: `${perSecond.toFixed(0)}/s (rounds: ${rates.map((rate) => rate.toFixed(0)).join(", ")})`,
          met: perSecond >= 100,
        },
      ],
      values: { deployments_per_s: Math.round(perSecond), deployments: DEPLOYMENTS, rounds: ROUNDS },
    };
  } finally {
    await server.close();
    rmSync(dataDir, { recursive: true, force: true });
  }
}
