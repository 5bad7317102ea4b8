import { execFileSync, spawn } from "node:child_process";
import { existsSync, mkdtempSync, readFileSync, rmSync } from "node:fs";
import http from "node:http";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { setTimeout as sleep } from "node:timers/promises";
import { DockerRuntime } from "../src/runtimes/docker.js";
import { generateApiKey } from "../src/security/apiKeys.js";
import { buildDemoImage, type DemoImage, removeImages } from "../test/helpers/images.js";
import { startNginx } from "../test/helpers/nginx.js";
import { freePort, startRegistry } from "../test/helpers/registry.js";
import type { BenchmarkResult } from "./run.js";

const ROOT = join(import.meta.dirname ?? ".", "..", "..");
const FERRY = join(ROOT, "bin", "ferry");
const SEED_SCRIPT = join(ROOT, "..", "shared", "bench", "seed-bluegreen.sh");
const HOST = "bench.test";
const STEADY_SECONDS = 5;
/** The two images deployed in turn; release i runs image i % 2. */
const VERSIONS = ["1.0.0", "2.0.0"] as const;

/** What one driver's run measured. */
interface DriverRun {
  driver: string;
  deploys: number;
  requests: number;
  failed: number;
  steady: WrkResult;
  during: WrkResult;
  meanDeploySeconds: number;
  deploySeconds: number[];
  /** Switch time of a rollback to a retained, running colour (from the task's own log). */
  rollbackSwitchMs: number;
  /** From the rollback request to the first request served by the previous release. */
  rollbackFirstServedMs: number;
}

interface WrkResult {
  requests: number;
  failed: number;
  p50Ms: number;
  p99Ms: number;
}

/**
 * `npm run bench -- zero-downtime [--deploys N]`: closed-loop keep-alive load (wrk, 16
 * connections) through each Router driver while Ferry deploys N blue/green releases
 * through its API, then a rollback; then ../shared/bench/seed-bluegreen.sh, the source
 * recipe, in the same run. Failed = non-2xx + socket errors, counted the same way for all.
 */
export async function zeroDowntime(): Promise<BenchmarkResult> {
  const deploys = numberFlag("--deploys", 20);
  const missing = ["docker", "wrk", "nginx", "docker-registry"].filter((tool) => !onPath(tool));
  if (missing.length > 0) {
    return skipped(`needs ${missing.join(", ")} (scripts/test-services.sh installs them)`);
  }
  const registry = await startRegistry();
  let images: DemoImage[] = [];
  const runs: DriverRun[] = [];
  try {
    images = await Promise.all(
      VERSIONS.map((version) => buildDemoImage({ registryUrl: registry.url, repository: "bench/web", version })),
    );
    for (const driver of ["builtin", "nginx"] as const) {
      console.log(`  ${driver}: ${deploys} blue/green deploys under wrk -c16 …`);
      runs.push(await runDriver(driver, deploys, images));
    }
  } finally {
    await registry.stop();
    await removeImages(images.map((image) => image.reference));
  }
  const seed = existsSync(SEED_SCRIPT) ? runSeedScript(deploys) : undefined;
  return report(runs, seed, deploys);
}

async function runDriver(driver: "builtin" | "nginx", deploys: number, images: DemoImage[]): Promise<DriverRun> {
  const dataDir = mkdtempSync(join(tmpdir(), `ferry-bench-zd-${driver}-`));
  const apiKey = generateApiKey();
  const trafficPort = await freePort();
  const serverPort = await freePort();
  const nginx = driver === "nginx" ? await startNginx({ port: trafficPort }) : undefined;
  const env: NodeJS.ProcessEnv = {
    PATH: process.env.PATH,
    HOME: dataDir,
    FERRY_ADMIN_API_KEY: apiKey,
    FERRY_LOG_LEVEL: "warn",
    FERRY_ROUTER: driver,
    FERRY_PROXY_STATE_DIR: join(dataDir, "proxy"),
    FERRY_PROXY_LISTEN: `127.0.0.1:${trafficPort}`,
    ...(nginx && {
      FERRY_NGINX_CONFIG: nginx.options.config,
      FERRY_NGINX_SITES_DIR: nginx.options.sitesDir,
      FERRY_NGINX_PID_FILE: nginx.options.pidFile,
      FERRY_NGINX_LISTEN: nginx.options.listen,
    }),
  };
  const server = spawn(process.execPath, [FERRY, "server", "--port", String(serverPort), "--data-dir", dataDir], {
    env,
    stdio: ["ignore", "ignore", "inherit"],
  });
  const api = apiClient(`http://127.0.0.1:${serverPort}`, apiKey);
  const project = `zd-${driver}`;
  try {
    await api.ready();
    await api.call("POST", "/api/v1/environments", { name: "prod" });
    await api.call("POST", "/api/v1/lifecycles", { name: "zd", phases: [{ environments: ["prod"] }] });
    await api.call("POST", "/api/v1/projects", { name: project, lifecycle: "zd" });
    const variable = await api.call("POST", `/api/v1/projects/${project}/variables`, { name: "Image", value: "-" });
    await api.call("PUT", `/api/v1/projects/${project}/process`, {
      steps: [
        {
          name: "web",
          kind: "container",
          config: {
            strategy: "blueGreen",
            image: "#{Image}",
            route: { host: HOST, port: 8080 },
            blueGreen: {
              healthCheck: { path: "/health", intervalMs: 100, timeoutMs: 1000, deadlineSeconds: 30 },
              drainSeconds: 10,
              keepPreviousRunning: true,
              retain: 2,
            },
            settleSeconds: 0,
            stopTimeoutSeconds: 5,
          },
        },
      ],
    });
    const deploy = async (version: string, image: DemoImage) => {
      await api.call("PATCH", `/api/v1/projects/${project}/variables/${variable.id}`, { value: image.reference });
      await api.call("POST", `/api/v1/projects/${project}/releases`, { version });
      const created = await api.call("POST", `/api/v1/projects/${project}/deployments`, {
        release: version,
        environment: "prod",
      });
      const task = await api.waitForTask(String(created.taskId));
      if (task.state !== "succeeded") throw new Error(`${driver}: deployment of ${version} ${task.state}: ${task.log}`);
      return task;
    };
    // The first colour (and the pull of both images) is set-up, not measured.
    await deploy("0.0.1", images[1] as DemoImage);
    await deploy("0.0.2", images[0] as DemoImage);

    const steady = await runWrk(trafficPort, STEADY_SECONDS);
    const wrk = startWrk(trafficPort, 3600);
    const deploySeconds: number[] = [];
    for (let index = 1; index <= deploys; index++) {
      const started = performance.now();
      await deploy(`1.0.${index}`, images[index % 2] as DemoImage);
      deploySeconds.push((performance.now() - started) / 1000);
    }
    // The rollback: back to the previous release, whose colour is retained and running.
    const previous = `version ${VERSIONS[(deploys - 1) % 2]}`;
    const rollbackStarted = performance.now();
    const rolled = await api.call("POST", `/api/v1/projects/${project}/rollbacks`, { environment: "prod" });
    const firstServed = await firstServedBy(trafficPort, previous, rollbackStarted);
    const rollbackTask = await api.waitForTask(String(rolled.taskId));
    const during = await wrk.stop();
    const switchMs = Number(/switched route \S+ to colour \S+ \(\S+\) in ([\d.]+) ms/.exec(rollbackTask.log)?.[1]);
    return {
      driver,
      deploys,
      requests: during.requests,
      failed: during.failed,
      steady,
      during,
      deploySeconds,
      meanDeploySeconds: deploySeconds.reduce((sum, value) => sum + value, 0) / deploySeconds.length,
      rollbackSwitchMs: switchMs,
      rollbackFirstServedMs: firstServed,
    };
  } finally {
    server.kill("SIGTERM");
    await new Promise((resolve) => server.once("exit", resolve));
    stopEmbeddedProxy(join(dataDir, "proxy"));
    await new DockerRuntime().removeByLabel("ferry.project", project).catch(() => {});
    await nginx?.stop();
    rmSync(dataDir, { recursive: true, force: true });
  }
}

/** Polls through the proxy until the body is `expected`; ms since `since`. */
async function firstServedBy(port: number, expected: string, since: number): Promise<number> {
  const agent = new http.Agent({ keepAlive: true });
  try {
    for (;;) {
      const body = await new Promise<string>((resolve, reject) => {
        const request = http.get({ host: "127.0.0.1", port, path: "/", agent, headers: { host: HOST } }, (response) => {
          let text = "";
          response.setEncoding("utf8").on("data", (chunk: string) => {
            text += chunk;
          });
          response.on("end", () => resolve(text.trim()));
        });
        request.on("error", reject);
      });
      if (body === expected) return performance.now() - since;
      if (performance.now() - since > 60_000) throw new Error(`the rollback did not bring back '${expected}'`);
    }
  } finally {
    agent.destroy();
  }
}

function startWrk(port: number, seconds: number): { stop(): Promise<WrkResult> } {
  const child = spawn(
    "wrk",
    ["-t1", "-c16", `-d${seconds}s`, "--latency", "-H", `Host: ${HOST}`, `http://127.0.0.1:${port}/`],
    { stdio: ["ignore", "pipe", "inherit"] },
  );
  let output = "";
  child.stdout.setEncoding("utf8").on("data", (chunk: string) => {
    output += chunk;
  });
  const done = new Promise<void>((resolve) => child.once("exit", () => resolve()));
  return {
    async stop() {
      // wrk prints its summary when interrupted.
      child.kill("SIGINT");
      await done;
      return parseWrk(output);
    },
  };
}

async function runWrk(port: number, seconds: number): Promise<WrkResult> {
  const wrk = startWrk(port, 3600);
  await sleep(seconds * 1000);
  return wrk.stop();
}

/** Requests, failures (non-2xx + socket errors, as the seed script counts them) and latency percentiles. */
function parseWrk(output: string): WrkResult {
  const requests = Number(/(\d+) requests in/.exec(output)?.[1] ?? Number.NaN);
  const non2xx = Number(/Non-2xx or 3xx responses: (\d+)/.exec(output)?.[1] ?? 0);
  const socket = /Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)/.exec(output);
  const socketErrors = socket ? socket.slice(1).reduce((sum, value) => sum + Number(value), 0) : 0;
  return {
    requests,
    failed: non2xx + socketErrors,
    p50Ms: latencyMs(output, "50%"),
    p99Ms: latencyMs(output, "99%"),
  };
}

function latencyMs(output: string, percentile: string): number {
  const match = new RegExp(`^\\s*${percentile}\\s+([\\d.]+)(us|ms|s)\\s*$`, "m").exec(output);
  if (!match) return Number.NaN;
  const value = Number(match[1]);
  return match[2] === "us" ? value / 1000 : match[2] === "s" ? value * 1000 : value;
}

interface SeedResult {
  requests: number;
  failed: number;
  meanDeploySeconds: number;
}

/** The source recipe, as ../shared/bench/seed-bluegreen.sh runs it; its last line holds the figures. */
function runSeedScript(deploys: number): SeedResult | undefined {
  console.log(`  seed-recipe: ${SEED_SCRIPT} ${deploys} …`);
  try {
    const output = execFileSync("bash", [SEED_SCRIPT, String(deploys)], {
      encoding: "utf8",
      stdio: ["ignore", "pipe", "inherit"],
      timeout: (deploys * 3 + 120) * 1000,
    });
    const line = output.trim().split("\n").at(-1) ?? "";
    const value = (key: string) => Number(new RegExp(`${key}=([\\d.]+)`).exec(line)?.[1] ?? Number.NaN);
    return { requests: value("requests"), failed: value("failed"), meanDeploySeconds: value("mean_deploy_s") };
  } catch (error) {
    console.log(`  seed-recipe did not run: ${(error as Error).message.split("\n")[0]}`);
    return undefined;
  }
}

function report(runs: readonly DriverRun[], seed: SeedResult | undefined, deploys: number): BenchmarkResult {
  const rows: BenchmarkResult["rows"] = [];
  const baseline = seed ? `seed recipe: ${seed.failed} failed of ${seed.requests}` : "seed script not run";
  for (const run of runs) {
    rows.push(
      {
        figure: `${run.driver}: failed requests during ${run.deploys} deploys + rollback (of ${run.requests})`,
        goal: "0",
        measured: String(run.failed),
        baseline,
        met: run.failed === 0,
      },
      {
        figure: `${run.driver}: p50 / p99 latency, steady vs during deploys`,
        goal: "-",
        measured: `${fmt(run.steady.p50Ms)} / ${fmt(run.steady.p99Ms)} ms vs ${fmt(run.during.p50Ms)} / ${fmt(run.during.p99Ms)} ms`,
        met: undefined,
      },
      {
        figure: `${run.driver}: mean deploy time (API call → task succeeded)`,
        goal: "-",
        measured: `${run.meanDeploySeconds.toFixed(2)} s`,
        ...(seed && { baseline: `seed recipe: ${seed.meanDeploySeconds.toFixed(2)} s` }),
        met: undefined,
      },
      {
        figure: `${run.driver}: rollback switch time (retained colour, running)`,
        goal: "≤ 100 ms",
        measured: `${fmt(run.rollbackSwitchMs)} ms (first request on the old release ${fmt(run.rollbackFirstServedMs)} ms after the API call)`,
        met: run.rollbackSwitchMs <= 100,
      },
    );
  }
  const lines = runs.map(
    (run) =>
      `zero-downtime driver=${run.driver} deploys=${run.deploys} requests=${run.requests} failed=${run.failed} p99_ms=${fmt(run.during.p99Ms)} deploy_s=${run.meanDeploySeconds.toFixed(2)} rollback_ms=${fmt(run.rollbackSwitchMs)}`,
  );
  if (seed) {
    lines.push(
      `zero-downtime driver=seed-recipe deploys=${deploys} requests=${seed.requests} failed=${seed.failed} p99_ms=- deploy_s=${seed.meanDeploySeconds} rollback_ms=-`,
    );
  }
  const values: Record<string, string | number> = { deploys };
  for (const run of runs) {
    values[`${run.driver}_failed`] = run.failed;
    values[`${run.driver}_rollback_ms`] = fmt(run.rollbackSwitchMs);
  }
  if (seed) values.seed_failed = seed.failed;
  return { name: "zero-downtime", rows, values, extraLines: lines };
}

function skipped(reason: string): BenchmarkResult {
  return {
    name: "zero-downtime",
    rows: [{ figure: "zero-downtime", goal: "0 failed", measured: `skipped: ${reason}`, met: undefined }],
    values: { skipped: 1 },
  };
}

function apiClient(url: string, apiKey: string) {
  const call = async (method: string, path: string, body?: unknown) => {
    const response = await fetch(new URL(path, url), {
      method,
      headers: { authorization: `Bearer ${apiKey}`, ...(body !== undefined && { "content-type": "application/json" }) },
      ...(body !== undefined && { body: JSON.stringify(body) }),
    });
    const parsed = (await response.json().catch(() => ({}))) as Record<string, unknown>;
    if (!response.ok) throw new Error(`${method} ${path}: HTTP ${response.status} ${JSON.stringify(parsed)}`);
    return parsed;
  };
  return {
    call,
    async ready() {
      const deadline = Date.now() + 20_000;
      while (Date.now() < deadline) {
        const ok = await fetch(new URL("/readyz", url)).then(
          (response) => response.ok,
          () => false,
        );
        if (ok) return;
        await sleep(50);
      }
      throw new Error(`the Ferry server at ${url} did not become ready`);
    },
    async waitForTask(taskId: string): Promise<{ state: string; log: string }> {
      for (;;) {
        const task = await call("GET", `/api/v1/tasks/${taskId}`);
        if (["succeeded", "failed", "cancelled", "interrupted"].includes(String(task.state))) {
          const log = (await call("GET", `/api/v1/tasks/${taskId}/log`)) as { lines?: { text: string }[] };
          return { state: String(task.state), log: (log.lines ?? []).map((line) => line.text).join("\n") };
        }
        await sleep(25);
      }
    },
  };
}

/** The server started a detached `ferry proxy`; it outlives the server on purpose, so the benchmark stops it. */
function stopEmbeddedProxy(stateDir: string): void {
  try {
    process.kill(Number(readFileSync(join(stateDir, "proxy.pid"), "utf8")), "SIGTERM");
  } catch {
    // Not started (the nginx driver) or already gone.
  }
}

function numberFlag(name: string, fallback: number): number {
  const index = process.argv.indexOf(name);
  const value = index === -1 ? undefined : Number(process.argv[index + 1]);
  return value !== undefined && Number.isInteger(value) && value > 0 ? value : fallback;
}

function onPath(tool: string): boolean {
  try {
    execFileSync("sh", ["-c", 'command -v "$1"', "sh", tool], { stdio: "ignore" });
    return true;
  } catch {
    return false;
  }
}

function fmt(value: number): string {
  return Number.isFinite(value) ? String(Math.round(value * 10) / 10) : "n/a";
}
