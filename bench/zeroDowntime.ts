import { execFileSync, spawn } from "node:child_process";
import { existsSync } from "node:fs";
import { join } from "node:path";
import { setTimeout as sleep } from "node:timers/promises";
import { buildNodeAppImage, type DemoImage, removeImages } from "../test/helpers/images.js";
import { startLoad } from "../test/helpers/load.js";
import { startRegistry } from "../test/helpers/registry.js";
import { HOST, numberFlag, onPath, startBlueGreenBench } from "./blueGreenBench.js";
import type { BenchmarkResult } from "./run.js";

const ROOT = join(import.meta.dirname ?? ".", "..", "..");
const SEED_SCRIPT = join(ROOT, "..", "shared", "bench", "seed-bluegreen.sh");
const STEADY_SECONDS = 5;
/**
 * Connections of a Node.js client that times every request of its own beside wrk (whose
 * latency record is corrected for coordinated omission, so it cannot count real requests
 * over 1 s): issue 17's tail latency during deploys.
 */
const TIMED_CONNECTIONS = 4;
/** The two images deployed in turn; release i runs image i % 2. */
const VERSIONS = ["1.0.0", "2.0.0"] as const;

type Driver = "builtin" | "nginx" | "haproxy";
const DRIVERS: readonly Driver[] = ["builtin", "nginx", "haproxy"];
/**
 * The rollback switch each driver is held to: HAProxy switches through its runtime API
 * (issue 17: ≤ 20 ms); the builtin proxy through its admin API; nginx reloads.
 */
const SWITCH_GOAL_MS: Record<Driver, number> = { builtin: 100, nginx: 100, haproxy: 20 };

/** What one driver's run measured. */
interface DriverRun {
  driver: Driver;
  deploys: number;
  requests: number;
  failed: number;
  steady: WrkResult;
  during: WrkResult;
  /** The timed client's figures in the steady phase and during the deploys. */
  timedSteady: TimedSample;
  timedDuring: TimedSample;
  meanDeploySeconds: number;
  deploySeconds: number[];
  /** Switch time of a rollback to a retained, running colour (from the task's own log). */
  rollbackSwitchMs: number;
  /** From the rollback request to the first request served by the previous release. */
  rollbackFirstServedMs: number;
}

interface TimedSample {
  requests: number;
  failed: number;
  over1s: number;
  slowestMs: number;
}

interface WrkResult {
  requests: number;
  failed: number;
  p50Ms: number;
  p99Ms: number;
  /** What the failures were: "non-2xx 0, connect 0, read 0, write 0, timeout 5". */
  breakdown: string;
}

/**
 * `npm run bench -- zero-downtime [--deploys N]`: closed-loop keep-alive load (wrk, 16
 * connections) through each Router driver while Ferry deploys N blue/green releases
 * through its API, then a rollback; then ../shared/bench/seed-bluegreen.sh, the source
 * recipe, in the same run. Failed = non-2xx + socket errors, counted the same way for all.
 * The app is a small Node.js server (test/helpers/images.ts buildNodeAppImage): busybox
 * httpd, which the seed script runs, drops connections under this load by itself (its
 * listen backlog), which would count the app's failures as the switch's. A steady phase
 * without deploys is the control: its failures are the app's and the load's own.
 * `--driver builtin|nginx|haproxy` runs one driver only.
 */
export async function zeroDowntime(): Promise<BenchmarkResult> {
  const deploys = numberFlag("--deploys", 20);
  const only = process.argv[process.argv.indexOf("--driver") + 1];
  const drivers = process.argv.includes("--driver") ? DRIVERS.filter((driver) => driver === only) : DRIVERS;
  if (drivers.length === 0) return skipped(`--driver ${only}: choose one of ${DRIVERS.join(", ")}`);
  const missing = ["docker", "wrk", "docker-registry", ...drivers.filter((driver) => driver !== "builtin")].filter(
    (tool) => !onPath(tool),
  );
  if (missing.length > 0) {
    return skipped(`needs ${missing.join(", ")} (scripts/test-services.sh installs them)`);
  }
  const registry = await startRegistry();
  let images: DemoImage[] = [];
  const runs: DriverRun[] = [];
  try {
    images = await Promise.all(
      VERSIONS.map((version) => buildNodeAppImage({ registryUrl: registry.url, repository: "bench/web", version })),
    );
    for (const driver of drivers) {
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

async function runDriver(driver: Driver, deploys: number, images: DemoImage[]): Promise<DriverRun> {
  const bench = await startBlueGreenBench(driver, `zd-${driver}`, { keepPreviousRunning: true, retain: 2 });
  try {
    // The first colour (and the pull of both images) is set-up, not measured.
    await bench.deploy("0.0.1", images[1] as DemoImage);
    await bench.deploy("0.0.2", images[0] as DemoImage);

    const timed = () => startLoad({ port: bench.trafficPort, host: HOST, connections: TIMED_CONNECTIONS });
    const steadyTimed = timed();
    const steady = await runWrk(bench.trafficPort, STEADY_SECONDS);
    const timedSteady = sample(await steadyTimed.stop());
    const duringTimed = timed();
    const wrk = startWrk(bench.trafficPort, 3600);
    const deploySeconds: number[] = [];
    for (let index = 1; index <= deploys; index++) {
      const started = performance.now();
      await bench.deploy(`1.0.${index}`, images[index % 2] as DemoImage);
      deploySeconds.push((performance.now() - started) / 1000);
    }
    // The rollback: back to the previous release, whose colour is retained and running.
    const rollback = await bench.rollback(`version ${VERSIONS[(deploys - 1) % 2]}`);
    const during = await wrk.stop();
    const timedDuring = sample(await duringTimed.stop());
    return {
      driver,
      deploys,
      requests: during.requests + timedDuring.requests,
      failed: during.failed + timedDuring.failed,
      steady,
      during,
      timedSteady,
      timedDuring,
      deploySeconds,
      meanDeploySeconds: deploySeconds.reduce((sum, value) => sum + value, 0) / deploySeconds.length,
      rollbackSwitchMs: rollback.switchMs,
      rollbackFirstServedMs: rollback.firstServedMs,
    };
  } finally {
    await bench.stop();
  }
}

function sample(result: Awaited<ReturnType<ReturnType<typeof startLoad>["stop"]>>): TimedSample {
  return {
    requests: result.requests,
    failed: result.failures.length,
    over1s: result.over1s,
    slowestMs: result.slowestMs,
  };
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
    breakdown: `non-2xx ${non2xx}${socket ? `, ${socket[0].replace("Socket errors: ", "")}` : ""}`,
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
        measured: `${run.failed} (wrk: ${run.during.breakdown}; timed client: ${run.timedDuring.failed}); steady phase: ${run.steady.failed + run.timedSteady.failed}`,
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
        figure: `${run.driver}: requests over 1 s during deploys (${TIMED_CONNECTIONS} timed connections beside wrk's 16)`,
        goal: "0",
        measured: `${run.timedDuring.over1s} of ${run.timedDuring.requests}, slowest ${fmt(run.timedDuring.slowestMs)} ms; steady phase: ${run.timedSteady.over1s} of ${run.timedSteady.requests}, slowest ${fmt(run.timedSteady.slowestMs)} ms`,
        baseline: `p99 steady ${fmt(run.steady.p99Ms)} ms, during deploys ${fmt(run.during.p99Ms)} ms (wrk)`,
        met: run.timedDuring.over1s === 0,
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
        goal: `≤ ${SWITCH_GOAL_MS[run.driver]} ms`,
        measured: `${fmt(run.rollbackSwitchMs)} ms (first request on the old release ${fmt(run.rollbackFirstServedMs)} ms after the API call)`,
        met: run.rollbackSwitchMs <= SWITCH_GOAL_MS[run.driver],
      },
    );
  }
  const lines = runs.map(
    (run) =>
      `zero-downtime driver=${run.driver} deploys=${run.deploys} requests=${run.requests} failed=${run.failed} over_1s=${run.timedDuring.over1s} slowest_ms=${fmt(run.timedDuring.slowestMs)} p99_ms=${fmt(run.during.p99Ms)} steady_p99_ms=${fmt(run.steady.p99Ms)} deploy_s=${run.meanDeploySeconds.toFixed(2)} rollback_ms=${fmt(run.rollbackSwitchMs)}`,
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

function fmt(value: number): string {
  return Number.isFinite(value) ? String(Math.round(value * 10) / 10) : "n/a";
}
