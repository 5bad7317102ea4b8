import { type ChildProcess, execFileSync, spawn } from "node:child_process";
import { chmodSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { setTimeout as sleep } from "node:timers/promises";
import { ProxyAdminClient } from "../src/traffic/proxyClient.js";
import { readAdminToken } from "../src/traffic/proxyState.js";
import { freePort } from "../test/helpers/registry.js";
import { numberFlag, onPath } from "./blueGreenBench.js";
import type { BenchmarkResult } from "./run.js";

/**
 * `npm run bench -- proxy [--seconds N]` (issue 17 part 1): what a proxy in front of an app
 * costs, side by side in one run on one machine. An nginx serving a small and a 1 MiB static
 * answer is the upstream; it is measured bare, then through nginx as a proxy, HAProxy and
 * `ferry proxy` — each proxy with one worker (nginx `worker_processes 1`, HAProxy `nbthread
 * 1`, one Node.js process), reusing upstream connections where it can. The client is wrk,
 * one thread, 16 connections, with keep-alive and without (`Connection: close`). Printed:
 * requests per second, p50/p99 latency, the ratio of ferry proxy's throughput to nginx's and
 * HAProxy's, the p50 ferry proxy adds over the bare upstream, the CPU time each proxy's
 * process spent per request (user + system, from /proc: the figure a loaded machine's
 * queueing does not move much), and ferry proxy's RSS.
 *
 * `--workers N` (ADR 0055): nginx with N `worker_processes`, HAProxy with N threads, `ferry
 * proxy --workers N` (its primary and N workers, the kernel spreading accepts) and, beside
 * it, the same with node:cluster's round-robin (the primary accepts and hands connections
 * out), wrk with N threads; CPU per request is summed over every process of a proxy.
 */

const ROOT = join(import.meta.dirname ?? ".", "..", "..");
const CONNECTIONS = 16;
const SMALL_BODY = "ok\n";
const BIG_BYTES = 1024 * 1024;

interface WrkResult {
  requests: number;
  requestsPerSecond: number;
  p50Ms: number;
  p99Ms: number;
  errors: number;
}

interface Service {
  name: string;
  url: string;
  pid?: number | undefined;
  /** The processes that do the proxying (nginx's workers, not its master): their CPU time is read per run. */
  workerPids?: () => number[];
  stop(): Promise<void>;
}

function spawnService(
  command: string,
  args: string[],
  env: Record<string, string> = {},
): { child: ChildProcess; output: () => string } {
  let output = "";
  const child = spawn(command, args, { stdio: ["ignore", "pipe", "pipe"], env: { ...process.env, ...env } });
  child.stdout?.on("data", (chunk: Buffer) => {
    output = (output + chunk.toString()).slice(-4000);
  });
  child.stderr?.on("data", (chunk: Buffer) => {
    output = (output + chunk.toString()).slice(-4000);
  });
  return { child, output: () => output };
}

async function stopChild(child: ChildProcess): Promise<void> {
  if (child.exitCode !== null || child.signalCode !== null) return;
  const exited = new Promise((resolve) => child.once("exit", resolve));
  child.kill("SIGTERM");
  const killed = setTimeout(() => child.kill("SIGKILL"), 5_000);
  await exited;
  clearTimeout(killed);
}

async function answers(url: string, what: string, output: () => string): Promise<void> {
  const deadline = Date.now() + 15_000;
  for (;;) {
    try {
      const response = await fetch(url, { signal: AbortSignal.timeout(1_000) });
      await response.arrayBuffer();
      if (response.ok) return;
    } catch {
      // not yet
    }
    if (Date.now() > deadline) throw new Error(`${what} did not answer at ${url}:\n${output()}`);
    await sleep(50);
  }
}

/** nginx with one worker: serving files (the upstream) or proxying to `upstream` with kept-alive connections. */
async function startNginx(name: string, directory: string, upstream?: string, workers = 1): Promise<Service> {
  const port = await freePort();
  const prefix = join(directory, name);
  execFileSync("mkdir", ["-p", join(prefix, "logs"), join(prefix, "html")]);
  const location = upstream
    ? `location / { proxy_pass ${upstream}; proxy_http_version 1.1; proxy_set_header Connection ""; }`
    : `location / { root ${join(directory, "html")}; }`;
  writeFileSync(
    join(prefix, "nginx.conf"),
    `worker_processes ${workers};
pid ${join(prefix, "nginx.pid")};
error_log ${join(prefix, "logs", "error.log")} warn;
events { worker_connections 4096; }
http {
  access_log off;
  keepalive_requests 1000000;
  ${upstream ? `upstream app { server ${new URL(upstream).host}; keepalive 64; }` : ""}
  server {
    listen 127.0.0.1:${port} reuseport;
    ${upstream ? location.replace(upstream, "http://app") : location}
  }
}
`,
  );
  const { child, output } = spawnService("nginx", [
    "-p",
    prefix,
    "-c",
    join(prefix, "nginx.conf"),
    "-g",
    "daemon off;",
  ]);
  const url = `http://127.0.0.1:${port}`;
  await answers(`${url}/small`, name, output);
  return { name, url, workerPids: () => childPids(child.pid), stop: () => stopChild(child) };
}

/** nginx's workers (its master's children), or ferry proxy's. */
function childPids(pid: number | undefined): number[] {
  if (pid === undefined) return [];
  try {
    return readFileSync(`/proc/${pid}/task/${pid}/children`, "utf8")
      .trim()
      .split(/\s+/)
      .filter((text) => text !== "")
      .map(Number);
  } catch {
    return [];
  }
}

/** User + system CPU time of a process so far, in microseconds (clock ticks of 10 ms: read over a whole run). */
function cpuMicrosOf(pid: number | undefined): number {
  if (pid === undefined) return Number.NaN;
  try {
    // The fields after the command name (which may hold spaces), from the state on: utime is the 12th, stime the 13th.
    const fields = readFileSync(`/proc/${pid}/stat`, "utf8").split(") ")[1]?.split(" ") ?? [];
    return ((Number(fields[11]) + Number(fields[12])) * 1_000_000) / 100;
  } catch {
    return Number.NaN;
  }
}

async function startHaproxy(directory: string, upstream: string, threads = 1): Promise<Service> {
  const port = await freePort();
  const config = join(directory, "haproxy.cfg");
  writeFileSync(
    config,
    `global
  nbthread ${threads}
  maxconn 4096
defaults
  mode http
  timeout connect 5s
  timeout client 30s
  timeout server 30s
  http-reuse always
frontend bench
  bind 127.0.0.1:${port}
  default_backend app
backend app
  server app ${new URL(upstream).host}
`,
  );
  const { child, output } = spawnService("haproxy", ["-db", "-f", config]);
  const url = `http://127.0.0.1:${port}`;
  await answers(`${url}/small`, "haproxy", output);
  return {
    name: "haproxy",
    url,
    workerPids: () => (child.pid === undefined ? [] : [child.pid]),
    stop: () => stopChild(child),
  };
}

/**
 * `bin/ferry proxy` (one Node.js process, as the server starts it, or a primary and its
 * workers), its one route to the upstream. `roundRobin`: node:cluster's other policy.
 */
async function startFerryProxy(directory: string, upstream: string, workers = 1, roundRobin = false): Promise<Service> {
  const port = await freePort();
  const stateDir = join(directory, roundRobin ? "ferry-proxy-rr" : "ferry-proxy");
  const { child, output } = spawnService(
    process.execPath,
    [
      join(ROOT, "bin", "ferry"),
      "proxy",
      "--state-dir",
      stateDir,
      "--listen",
      `127.0.0.1:${port}`,
      ...(workers > 1 ? ["--workers", String(workers)] : []),
    ],
    roundRobin ? { NODE_CLUSTER_SCHED_POLICY: "rr" } : {},
  );
  const deadline = Date.now() + 15_000;
  while (!output().includes("traffic on")) {
    if (child.exitCode !== null || Date.now() > deadline) throw new Error(`ferry proxy did not start:\n${output()}`);
    await sleep(20);
  }
  const client = new ProxyAdminClient({ socketPath: join(stateDir, "admin.sock") }, await readAdminToken(stateDir));
  await client.putRoute("bench", { host: "127.0.0.1", upstream });
  await client.close();
  const url = `http://127.0.0.1:${port}`;
  await answers(`${url}/small`, "ferry proxy", output);
  return {
    name: "ferry proxy",
    url,
    pid: child.pid,
    workerPids: () => (child.pid === undefined ? [] : [child.pid, ...childPids(child.pid)]),
    stop: () => stopChild(child),
  };
}

function parseLatency(text: string): number {
  const match = /^([\d.]+)(us|ms|s)$/.exec(text.trim());
  if (!match) return Number.NaN;
  const value = Number(match[1]);
  return match[2] === "us" ? value / 1000 : match[2] === "s" ? value * 1000 : value;
}

function wrk(url: string, seconds: number, keepAlive: boolean, threads = 1): WrkResult {
  const output = execFileSync(
    "wrk",
    [
      `-t${threads}`,
      `-c${CONNECTIONS}`,
      `-d${seconds}s`,
      "--latency",
      ...(keepAlive ? [] : ["-H", "Connection: close"]),
      url,
    ],
    { encoding: "utf8", maxBuffer: 10 * 1024 * 1024 },
  );
  const requestsPerSecond = Number(/Requests\/sec:\s+([\d.]+)/.exec(output)?.[1] ?? Number.NaN);
  const requests = Number(/(\d+) requests in/.exec(output)?.[1] ?? Number.NaN);
  const p50 = /50%\s+(\S+)/.exec(output)?.[1] ?? "";
  const p99 = /99%\s+(\S+)/.exec(output)?.[1] ?? "";
  const socketErrors = /Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)/.exec(output);
  const non2xx = Number(/Non-2xx or 3xx responses: (\d+)/.exec(output)?.[1] ?? 0);
  // Without keep-alive, wrk counts the server's closing of each connection as a read error.
  const errors =
    non2xx + (socketErrors ? Number(socketErrors[1]) + Number(socketErrors[3]) + Number(socketErrors[4]) : 0);
  return { requests, requestsPerSecond, p50Ms: parseLatency(p50), p99Ms: parseLatency(p99), errors };
}

function rssMb(pid: number | undefined): number {
  if (pid === undefined) return Number.NaN;
  try {
    const status = readFileSync(`/proc/${pid}/status`, "utf8");
    return Number(/VmHWM:\s+(\d+)/.exec(status)?.[1] ?? Number.NaN) / 1024;
  } catch {
    return Number.NaN;
  }
}

export async function proxy(): Promise<BenchmarkResult> {
  const missing = ["wrk", "nginx", "haproxy"].filter((tool) => !onPath(tool));
  if (missing.length > 0) {
    throw new Error(`the proxy benchmark needs ${missing.join(", ")}: apt-get install wrk nginx haproxy`);
  }
  const seconds = numberFlag("--seconds", 5);
  const workers = numberFlag("--workers", 1);
  if (!Number.isInteger(workers) || workers < 1 || workers > 16) {
    throw new Error("--workers is how many workers/threads each proxy runs: a whole number from 1 to 16");
  }
  const directory = mkdtempSync(join(tmpdir(), "ferry-bench-proxy-"));
  // nginx's worker (not root) reads the files: the directory is world-readable, as /var/www is.
  chmodSync(directory, 0o755);
  execFileSync("mkdir", ["-p", join(directory, "html")]);
  writeFileSync(join(directory, "html", "small"), SMALL_BODY);
  writeFileSync(join(directory, "html", "big"), Buffer.alloc(BIG_BYTES, "x"));
  const services: Service[] = [];
  try {
    const upstream = await startNginx("upstream", directory);
    services.push(upstream);
    services.push(await startNginx("nginx-proxy", directory, upstream.url, workers));
    services.push(await startHaproxy(directory, upstream.url, workers));
    const ferry = await startFerryProxy(directory, upstream.url, workers);
    services.push(ferry);
    const labels = ["bare upstream", "nginx", "haproxy", "ferry proxy"];
    if (workers > 1) {
      // The other node:cluster policy, for ADR 0055's choice: the primary accepts, workers get the sockets.
      services.push(await startFerryProxy(directory, upstream.url, workers, true));
      labels.push("ferry proxy, round-robin");
    }
    const cases = [
      { label: "small, keep-alive", path: "/small", keepAlive: true },
      { label: "small, no keep-alive", path: "/small", keepAlive: false },
      { label: "1 MiB, keep-alive", path: "/big", keepAlive: true },
      { label: "1 MiB, no keep-alive", path: "/big", keepAlive: false },
    ];
    const rows: BenchmarkResult["rows"] = [];
    const values: Record<string, string | number> = { seconds, connections: CONNECTIONS, workers };
    for (const testCase of cases) {
      const results = new Map<string, WrkResult>();
      /** CPU time (user + system) the proxying process spent per request of the measured run, in µs. */
      const cpuPerRequest = new Map<string, number>();
      for (const [index, service] of services.entries()) {
        // A short warm-up (JIT, connection pools), then the measured run.
        wrk(`${service.url}${testCase.path}`, 1, testCase.keepAlive, workers);
        const pids = service.workerPids?.() ?? [];
        const cpuBefore = pids.map((pid) => cpuMicrosOf(pid));
        const result = wrk(`${service.url}${testCase.path}`, seconds, testCase.keepAlive, workers);
        const cpuEach = pids.map((pid, at) => cpuMicrosOf(pid) - (cpuBefore[at] ?? 0));
        const cpu = cpuEach.reduce((sum, each) => sum + each, 0) / result.requests;
        // How the work spread over a proxy's processes (a share near 0 means one did it all).
        const spread =
          pids.length > 1
            ? `, CPU by process ${cpuEach.map((each) => `${(each / 1000).toFixed(0)} ms`).join(" / ")}`
            : "";
        const label = labels[index] ?? service.name;
        results.set(label, result);
        if (index > 0) cpuPerRequest.set(label, cpu);
        console.log(
          `   ${testCase.label}: ${labels[index]} ${result.requestsPerSecond.toFixed(0)} req/s, p50 ${result.p50Ms.toFixed(2)} ms, p99 ${result.p99Ms.toFixed(2)} ms, errors ${result.errors}${index > 0 ? `, CPU ${cpu.toFixed(0)} µs/request${spread}` : ""}`,
        );
      }
      const bare = results.get("bare upstream");
      const nginx = results.get("nginx");
      const haproxy = results.get("haproxy");
      const ours = results.get("ferry proxy");
      if (!bare || !nginx || !haproxy || !ours) continue;
      const roundRobin = results.get("ferry proxy, round-robin");
      if (roundRobin) {
        rows.push({
          figure: `${testCase.label}: ferry proxy --workers ${workers}, kernel-spread accepts vs round-robin through the primary`,
          goal: "(the faster one is the default)",
          measured: `${ours.requestsPerSecond.toFixed(0)} req/s vs ${roundRobin.requestsPerSecond.toFixed(0)} req/s (${((100 * ours.requestsPerSecond) / roundRobin.requestsPerSecond).toFixed(0)} %)`,
          baseline: `CPU ${(cpuPerRequest.get("ferry proxy") ?? Number.NaN).toFixed(0)} vs ${(cpuPerRequest.get("ferry proxy, round-robin") ?? Number.NaN).toFixed(0)} µs/request`,
          met: undefined,
        });
      }
      const describe = (result: WrkResult) =>
        `${result.requestsPerSecond.toFixed(0)} req/s, p50 ${result.p50Ms.toFixed(2)} ms, p99 ${result.p99Ms.toFixed(2)} ms${result.errors ? `, ${result.errors} errors` : ""}`;
      rows.push({
        figure: `${testCase.label}: ferry proxy throughput (ratio to nginx / HAProxy)${workers > 1 ? `, ${workers} workers / worker_processes / threads each` : ""}`,
        goal: "≥ 50 % of nginx",
        measured: `${describe(ours)} (${((100 * ours.requestsPerSecond) / nginx.requestsPerSecond).toFixed(0)} % / ${((100 * ours.requestsPerSecond) / haproxy.requestsPerSecond).toFixed(0)} %)`,
        baseline: `nginx ${describe(nginx)}; HAProxy ${describe(haproxy)}; bare ${describe(bare)}`,
        met: ours.requestsPerSecond >= 0.5 * nginx.requestsPerSecond,
      });
      rows.push({
        figure: `${testCase.label}: p50 ferry proxy adds over the bare upstream`,
        goal: "≤ 0.5 ms",
        measured: `${(ours.p50Ms - bare.p50Ms).toFixed(2)} ms`,
        baseline: `nginx adds ${(nginx.p50Ms - bare.p50Ms).toFixed(2)} ms, HAProxy ${(haproxy.p50Ms - bare.p50Ms).toFixed(2)} ms`,
        met: ours.p50Ms - bare.p50Ms <= 0.5,
      });
      // On a loaded machine throughput and latency are mostly other processes' queueing; the
      // CPU a proxy spends per request is its own (1 / it is what one core can serve).
      const cpuOurs = cpuPerRequest.get("ferry proxy") ?? Number.NaN;
      const cpuNginx = cpuPerRequest.get("nginx") ?? Number.NaN;
      const cpuHaproxy = cpuPerRequest.get("haproxy") ?? Number.NaN;
      rows.push({
        figure: `${testCase.label}: CPU per request, ferry proxy (nginx's / HAProxy's as a share of it)`,
        goal: "≤ 2 × nginx's (the 50 % goal, per core)",
        measured: `${cpuOurs.toFixed(0)} µs (${((100 * cpuNginx) / cpuOurs).toFixed(0)} % / ${((100 * cpuHaproxy) / cpuOurs).toFixed(0)} %)`,
        baseline: `nginx ${cpuNginx.toFixed(0)} µs, HAProxy ${cpuHaproxy.toFixed(0)} µs`,
        met: cpuOurs <= 2 * cpuNginx,
      });
      const key = testCase.label.replace(/[^a-z0-9]+/gi, "_").toLowerCase();
      for (const [label, result] of results) {
        values[`${key}_${label.replace(/[^a-z0-9]+/gi, "_")}_rps`] = Math.round(result.requestsPerSecond);
      }
      for (const [label, cpu] of cpuPerRequest) {
        values[`${key}_${label.replace(/[^a-z0-9]+/gi, "_")}_cpu_us`] = Math.round(cpu);
      }
    }
    const peak = [ferry.pid ?? -1, ...childPids(ferry.pid)].reduce((sum, pid) => sum + rssMb(pid), 0);
    rows.push({
      figure: `ferry proxy peak RSS (VmHWM) after every run${workers > 1 ? `, primary and ${workers} workers summed` : ""}`,
      goal: "(printed)",
      measured: `${peak.toFixed(0)} MB`,
      met: undefined,
    });
    values.ferry_proxy_peak_rss_mb = Math.round(peak);
    return { name: "proxy", rows, values };
  } finally {
    for (const service of services.reverse()) await service.stop().catch(() => undefined);
    rmSync(directory, { recursive: true, force: true });
  }
}
