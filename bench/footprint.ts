import { spawn } from "node:child_process";
import { randomBytes } from "node:crypto";
import { mkdtempSync, readFileSync, rmSync } from "node:fs";
import { createServer } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { setTimeout as sleep } from "node:timers/promises";
import type { BenchmarkResult } from "./run.js";

const FERRY = join(import.meta.dirname ?? ".", "..", "..", "bin", "ferry");
const RUNS = 5;

function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const probe = createServer();
    probe.once("error", reject);
    probe.listen(0, "127.0.0.1", () => {
      const address = probe.address();
      probe.close(() => resolve(typeof address === "object" && address ? address.port : 0));
    });
  });
}

function median(values: number[]): number {
  const sorted = [...values].sort((a, b) => a - b);
  return sorted[Math.floor(sorted.length / 2)] ?? Number.NaN;
}

/** Time from spawning `ferry server` (fresh data dir) to /readyz 200, and RSS after 2 s idle. */
export async function footprint(): Promise<BenchmarkResult> {
  const readyTimes: number[] = [];
  const rssValues: number[] = [];
  for (let run = 0; run < RUNS; run++) {
    const dataDir = mkdtempSync(join(tmpdir(), "ferry-bench-"));
    const port = await freePort();
    const started = performance.now();
    const server = spawn(process.execPath, [FERRY, "server", "--port", String(port), "--data-dir", dataDir], {
      env: {
        PATH: process.env.PATH,
        HOME: dataDir,
        FERRY_ADMIN_API_KEY: `ferry_${randomBytes(24).toString("base64url")}`,
      },
      stdio: "ignore",
    });
    try {
      for (;;) {
        const response = await fetch(`http://127.0.0.1:${port}/readyz`).catch(() => undefined);
        if (response?.ok) break;
        if (performance.now() - started > 10_000) throw new Error("server not ready within 10 s");
        await sleep(5);
      }
      readyTimes.push((performance.now() - started) / 1000);
      await sleep(2000);
      const status = readFileSync(`/proc/${server.pid}/status`, "utf8");
      const rssKb = Number(/VmRSS:\s+(\d+)/.exec(status)?.[1] ?? Number.NaN);
      rssValues.push(rssKb / 1024);
    } finally {
      server.kill("SIGTERM");
      await new Promise((resolve) => server.once("exit", resolve));
      rmSync(dataDir, { recursive: true, force: true });
    }
  }
  const ready = median(readyTimes);
  const rss = median(rssValues);
  return {
    name: "footprint",
    rows: [
      { figure: `ready (median of ${RUNS})`, goal: "≤ 1 s", measured: `${ready.toFixed(2)} s`, met: ready <= 1 },
      { figure: "idle RSS (median)", goal: "≤ 150 MB", measured: `${rss.toFixed(0)} MB`, met: rss <= 150 },
    ],
    values: { idle_rss_mb: Math.round(rss), ready_s: Number(ready.toFixed(2)) },
  };
}
