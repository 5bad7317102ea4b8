import { execFileSync, spawn } from "node:child_process";
import { createHash, randomBytes } from "node:crypto";
import { chmodSync, createReadStream, mkdtempSync, readFileSync, rmSync } from "node:fs";
import { createServer } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { setTimeout as sleep } from "node:timers/promises";
import pg from "pg";
import { numberFlag } from "./blueGreenBench.js";
import type { BenchmarkResult } from "./run.js";

const FERRY = join(import.meta.dirname ?? ".", "..", "..", "bin", "ferry");
/** How often the server's VmRSS is read while the artifact streams. */
const RSS_INTERVAL_MS = 50;
const RSS_GOAL_MB = 200;

function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const server = createServer();
    server.listen(0, "127.0.0.1", () => {
      const address = server.address();
      const port = typeof address === "object" && address ? address.port : 0;
      server.close(() => resolve(port));
    });
    server.once("error", reject);
  });
}

function rssMb(pid: number, field: "VmRSS" | "VmHWM"): number {
  const status = readFileSync(`/proc/${pid}/status`, "utf8");
  return Number(new RegExp(`${field}:\\s+(\\d+)`).exec(status)?.[1] ?? Number.NaN) / 1024;
}

/** Reads the server's VmRSS every 50 ms until stopped; the highest seen. */
function watchRss(pid: number): { stop(): number } {
  let peak = 0;
  const timer = setInterval(() => {
    try {
      peak = Math.max(peak, rssMb(pid, "VmRSS"));
    } catch {
      // Exited.
    }
  }, RSS_INTERVAL_MS);
  return {
    stop() {
      clearInterval(timer);
      return peak;
    },
  };
}

/**
 * `artifacts [--size-mb 2048] [--store sqlite|postgres]`: a runbook's script on the server's
 * own host attaches a file of that size (`##ferry[artifact …]`), which streams through the
 * server's hash and size limit into its storage (the data directory, or PostgreSQL large
 * objects); then a client downloads it (GET /api/v1/artifacts/:id/content) and checks its
 * SHA-256. The server is a real `ferry server` process: its VmRSS is read every 50 ms during
 * both, and its VmHWM (peak over its whole life) at the end. Baseline: the same file through
 * a pipe, `cat FILE | cat > /dev/null`.
 */
export async function artifacts(): Promise<BenchmarkResult> {
  const sizeMb = numberFlag("--size-mb", 2048);
  const storeIndex = process.argv.indexOf("--store");
  const store = storeIndex === -1 ? "sqlite" : process.argv[storeIndex + 1];
  if (store !== "sqlite" && store !== "postgres") throw new Error("--store is sqlite or postgres");
  const size = sizeMb * 1024 * 1024;
  // World-readable: local work runs as an account of its own, which must read it (as it would its own file).
  const fileDir = mkdtempSync(join(tmpdir(), "ferry-bench-artifact-"));
  chmodSync(fileDir, 0o755);
  const file = join(fileDir, "blob.bin");
  // Random content (not a sparse file of zeros): nothing on the way can shortcut it.
  execFileSync("sh", ["-c", 'head -c "$1" /dev/urandom > "$2"', "sh", String(size), file]);
  chmodSync(file, 0o644);
  const fileHash = createHash("sha256");
  for await (const chunk of createReadStream(file)) fileHash.update(chunk as Buffer);
  const expected = fileHash.digest("hex");

  const baselineStarted = performance.now();
  execFileSync("sh", ["-c", 'cat "$1" | cat > /dev/null', "sh", file]);
  const baselineMbS = sizeMb / ((performance.now() - baselineStarted) / 1000);

  let databaseUrl: string | undefined;
  let dropDatabase: (() => Promise<void>) | undefined;
  if (store === "postgres") {
    const adminUrl = process.env.FERRY_TEST_POSTGRES_URL ?? "postgres://ferry_test:ferry_test@127.0.0.1:5432/postgres";
    const name = `ferry_bench_${randomBytes(5).toString("hex")}`;
    const admin = new pg.Client({ connectionString: adminUrl });
    await admin.connect();
    await admin.query(`CREATE DATABASE ${name}`);
    await admin.end();
    const url = new URL(adminUrl);
    url.pathname = `/${name}`;
    databaseUrl = url.toString();
    dropDatabase = async () => {
      const client = new pg.Client({ connectionString: adminUrl });
      await client.connect();
      await client.query(`DROP DATABASE IF EXISTS ${name} WITH (FORCE)`);
      await client.end();
    };
  }

  const dataDir = mkdtempSync(join(tmpdir(), "ferry-bench-artifacts-"));
  const apiKey = `ferry_${randomBytes(24).toString("base64url")}`;
  const port = await freePort();
  const server = spawn(process.execPath, [FERRY, "server", "--port", String(port), "--data-dir", dataDir], {
    env: {
      PATH: process.env.PATH,
      HOME: dataDir,
      FERRY_ADMIN_API_KEY: apiKey,
      FERRY_ARTIFACT_MAX_BYTES: String(size * 2),
      ...(databaseUrl && { FERRY_DATABASE_URL: databaseUrl }),
    },
    stdio: "ignore",
  });
  const base = `http://127.0.0.1:${port}`;
  const headers = { authorization: `Bearer ${apiKey}` };
  const call = async (method: string, path: string, body?: unknown) => {
    const response = await fetch(new URL(path, base), {
      method,
      headers: { ...headers, ...(body !== undefined && { "content-type": "application/json" }) },
      ...(body !== undefined && { body: JSON.stringify(body) }),
    });
    const text = await response.text();
    if (!response.ok) throw new Error(`${method} ${path}: ${response.status} ${text}`);
    return (text ? JSON.parse(text) : {}) as Record<string, unknown>;
  };
  try {
    const started = performance.now();
    for (;;) {
      const response = await fetch(`${base}/readyz`).catch(() => undefined);
      if (response?.ok) break;
      if (performance.now() - started > 90_000) throw new Error("server not ready within 90 s");
      await sleep(20);
    }
    if (server.pid === undefined) throw new Error("the server has no pid");
    const idleMb = rssMb(server.pid, "VmRSS");
    await call("POST", "/api/v1/environments", { name: "dev" });
    await call("POST", "/api/v1/lifecycles", { name: "ops", phases: [{ environments: ["dev"] }] });
    await call("POST", "/api/v1/projects", { name: "bench", lifecycle: "ops" });
    await call("POST", "/api/v1/projects/bench/runbooks", {
      name: "Attach",
      process: {
        steps: [
          {
            name: "attach",
            kind: "script",
            config: { script: `echo "##ferry[artifact path='${file}' name='blob.bin']"`, timeoutSeconds: 3600 },
          },
        ],
      },
    });
    await call("POST", "/api/v1/projects/bench/runbooks/attach/publish");

    // In: the run's own time, started → finished as the server recorded it.
    const inWatch = watchRss(server.pid);
    const run = await call("POST", "/api/v1/projects/bench/runbooks/attach/runs", { environment: "dev" });
    const taskId = String(run.taskId);
    let task: Record<string, unknown>;
    for (;;) {
      task = await call("GET", `/api/v1/tasks/${taskId}`);
      if (["succeeded", "failed", "cancelled", "interrupted"].includes(String(task.state))) break;
      await sleep(200);
    }
    const inPeakMb = inWatch.stop();
    if (task.state !== "succeeded") throw new Error(`the attaching run ${String(task.state)}: ${String(task.error)}`);
    const inSeconds = (Date.parse(String(task.finishedAt)) - Date.parse(String(task.startedAt))) / 1000;
    const listed = (await (await fetch(new URL(`/api/v1/tasks/${taskId}/artifacts`, base), { headers })).json()) as {
      id: string;
      sha256: string;
      size: number;
    }[];
    const artifact = listed[0];
    if (!artifact || artifact.sha256 !== expected || artifact.size !== size) {
      throw new Error(`the stored artifact does not match the file: ${JSON.stringify(artifact)}`);
    }

    // Out: a client reads it to the end, hashing as it goes.
    const outWatch = watchRss(server.pid);
    const outStarted = performance.now();
    const response = await fetch(new URL(`/api/v1/artifacts/${artifact.id}/content`, base), { headers });
    if (!response.ok || !response.body) throw new Error(`download: ${response.status}`);
    const hash = createHash("sha256");
    let received = 0;
    for await (const chunk of response.body) {
      hash.update(chunk);
      received += chunk.length;
    }
    const outSeconds = (performance.now() - outStarted) / 1000;
    const outPeakMb = outWatch.stop();
    const downloaded = hash.digest("hex");
    if (received !== size || downloaded !== expected) throw new Error("the download does not match the file");
    const lifetimePeakMb = rssMb(server.pid, "VmHWM");
    const inMbS = sizeMb / inSeconds;
    const outMbS = sizeMb / outSeconds;
    const peak = Math.max(inPeakMb, outPeakMb, lifetimePeakMb);
    return {
      name: "artifacts",
      rows: [
        {
          figure: `in: a ${sizeMb} MiB file attached by a script (${store}: ${store === "sqlite" ? "data directory" : "large object"}), hashed, stored`,
          goal: "-",
          measured: `${inMbS.toFixed(0)} MiB/s (${inSeconds.toFixed(1)} s)`,
          baseline: `pipe, cat → cat: ${baselineMbS.toFixed(0)} MiB/s`,
          met: undefined,
        },
        {
          figure: "out: downloaded through the API, SHA-256 checked by the client",
          goal: "-",
          measured: `${outMbS.toFixed(0)} MiB/s (${outSeconds.toFixed(1)} s)`,
          baseline: `pipe, cat → cat: ${baselineMbS.toFixed(0)} MiB/s`,
          met: undefined,
        },
        {
          figure: `server peak RSS (VmRSS every ${RSS_INTERVAL_MS} ms in / out; VmHWM over its life); idle ${idleMb.toFixed(0)} MB`,
          goal: `< ${RSS_GOAL_MB} MB`,
          measured: `${inPeakMb.toFixed(0)} / ${outPeakMb.toFixed(0)} MB; VmHWM ${lifetimePeakMb.toFixed(0)} MB`,
          met: peak < RSS_GOAL_MB,
        },
      ],
      values: {
        store,
        size_mb: sizeMb,
        in_mb_s: Math.round(inMbS),
        out_mb_s: Math.round(outMbS),
        baseline_pipe_mb_s: Math.round(baselineMbS),
        peak_rss_in_mb: Math.round(inPeakMb),
        peak_rss_out_mb: Math.round(outPeakMb),
        vmhwm_mb: Math.round(lifetimePeakMb),
        idle_rss_mb: Math.round(idleMb),
      },
    };
  } finally {
    server.kill("SIGTERM");
    await new Promise((resolve) => server.once("exit", resolve));
    rmSync(dataDir, { recursive: true, force: true });
    rmSync(fileDir, { recursive: true, force: true });
    await dropDatabase?.();
  }
}
