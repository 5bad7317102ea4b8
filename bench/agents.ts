import { type ChildProcess, spawn } from "node:child_process";
import { setMaxListeners } from "node:events";
import { mkdirSync, mkdtempSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { setTimeout as sleep } from "node:timers/promises";
import { generateApiKey } from "../src/security/apiKeys.js";
import { AgentHost, ServerClient } from "../src/transports/agentHost.js";
import { LocalTransport } from "../src/transports/local.js";
import type { BenchmarkResult } from "./run.js";

/*
 * agents: 1,000 agents long-polling one real server. The server is a real `ferry server`
 * process (bin/ferry, SQLite); the agents are 1,000 instances of ferry agent's own code
 * (AgentHost: the same poll loop, full-jitter backoff and event sender) in this process,
 * each enrolled with its own one-time token and polling over its own HTTP connection. Printed:
 * the server's RSS and CPU while all of them poll with nothing to do, and the time from a
 * restarted server being ready until every agent has polled it again. `--agents N` for fewer.
 */

const DEFAULT_AGENTS = 1000;
const RSS_GOAL_MB = 200;
const IDLE_SECONDS = 20;
const ROOT = join(import.meta.dirname ?? ".", "..", "..");

function argument(name: string, fallback: number): number {
  const index = process.argv.indexOf(`--${name}`);
  const value = index === -1 ? undefined : Number(process.argv[index + 1]);
  return value !== undefined && Number.isFinite(value) && value > 0 ? value : fallback;
}

function rssMb(pid: number): number {
  const status = readFileSync(`/proc/${pid}/status`, "utf8");
  return Number(/VmRSS:\s+(\d+)/.exec(status)?.[1] ?? 0) / 1024;
}

/** utime + stime of a process, in seconds. */
function cpuSeconds(pid: number): number {
  const fields = readFileSync(`/proc/${pid}/stat`, "utf8").split(") ")[1]?.split(" ") ?? [];
  return (Number(fields[11]) + Number(fields[12])) / 100;
}

interface Server {
  child: ChildProcess;
  url: string;
}

async function startServer(dataDir: string, port: number, apiKey: string): Promise<Server> {
  const child = spawn(
    process.execPath,
    [join(ROOT, "bin", "ferry"), "server", "--port", String(port), "--data-dir", dataDir],
    {
      env: {
        PATH: process.env.PATH,
        FERRY_ADMIN_API_KEY: apiKey,
        FERRY_LOG_LEVEL: "warn",
        FERRY_RUN_AS: "server",
        // The benchmark's own proxy port, so it never meets a running one.
        FERRY_PROXY_LISTEN: "127.0.0.1:0",
      },
      stdio: ["ignore", "ignore", "inherit"],
    },
  );
  const url = `http://127.0.0.1:${port}`;
  for (let tries = 0; ; tries++) {
    try {
      if ((await fetch(`${url}/readyz`)).ok) return { child, url };
    } catch {
      // Not listening yet.
    }
    if (tries > 600) throw new Error("the server did not start");
    await sleep(50);
  }
}

async function stopServer(server: Server): Promise<void> {
  const exited = new Promise((resolve) => server.child.once("exit", resolve));
  server.child.kill("SIGTERM");
  await exited;
}

async function call(url: string, apiKey: string, method: string, path: string, body?: unknown): Promise<unknown> {
  const response = await fetch(`${url}${path}`, {
    method,
    headers: { authorization: `Bearer ${apiKey}`, ...(body !== undefined && { "content-type": "application/json" }) },
    ...(body !== undefined && { body: JSON.stringify(body) }),
  });
  const text = await response.text();
  if (!response.ok) throw new Error(`${method} ${path}: ${response.status} ${text}`);
  return text ? JSON.parse(text) : undefined;
}

/**
 * A ServerClient that notes when it sent its latest poll the server took, for the
 * reconnection figure: when it was sent, not answered (an answer with no work comes only
 * after the poll was held).
 */
class TimedClient extends ServerClient {
  lastPoll = 0;
  /** When the first poll sent at or after `since` was sent, once the server took it. */
  backAt: number | undefined;
  since = Number.POSITIVE_INFINITY;

  override async json(method: string, path: string, body: unknown, timeoutMs: number, signal?: AbortSignal) {
    const sentAt = Date.now();
    const answer = await super.json(method, path, body, timeoutMs, signal);
    if (path === "/api/v1/agent/poll") {
      this.lastPoll = Math.max(this.lastPoll, sentAt);
      if (sentAt >= this.since && (this.backAt === undefined || sentAt < this.backAt)) this.backAt = sentAt;
    }
    return answer;
  }
}

export async function agents(): Promise<BenchmarkResult> {
  const count = argument("agents", DEFAULT_AGENTS);
  const directory = mkdtempSync(join(tmpdir(), "ferry-bench-agents-"));
  const apiKey = generateApiKey();
  const port = 20_000 + Math.floor(Math.random() * 20_000);
  let server = await startServer(join(directory, "data"), port, apiKey);
  const stop = new AbortController();
  // One signal for a thousand agents' waits.
  setMaxListeners(0, stop.signal);
  const clients: TimedClient[] = [];
  const running: Promise<number>[] = [];
  try {
    await call(server.url, apiKey, "POST", "/api/v1/environments", { name: "fleet" });
    console.log(`enrolling ${count} agents…`);
    for (let index = 0; index < count; index++) {
      const { token } = (await call(server.url, apiKey, "POST", "/api/v1/agent-tokens", {})) as { token: string };
      const answer = (await call(server.url, apiKey, "POST", "/api/v1/agent/enrol", {
        token,
        name: `agent-${index}`,
        environments: ["fleet"],
      })) as { credential: string };
      const stateDir = join(directory, "agents", String(index));
      mkdirSync(stateDir, { recursive: true });
      const client = new TimedClient(new URL(server.url), answer.credential);
      clients.push(client);
      const workRoot = join(stateDir, "work");
      const host = new AgentHost({
        client,
        stateDir,
        local: new LocalTransport(workRoot, { kind: "server" }),
        workRoot,
        dockerSocket: "/var/run/docker.sock",
        stopGraceMs: 1_000,
        log: () => {},
        saveCredential: async () => {},
      });
      running.push(host.run(stop.signal));
    }
    const connectedBy = Date.now() + 120_000;
    while (clients.some((client) => client.lastPoll === 0) && Date.now() < connectedBy) await sleep(100);
    const connected = clients.filter((client) => client.lastPoll > 0).length;
    console.log(`${connected} agents polling; measuring the idle server for ${IDLE_SECONDS} s…`);
    const pid = server.child.pid ?? 0;
    await sleep(5_000);
    const cpuBefore = cpuSeconds(pid);
    let peakRss = 0;
    for (let second = 0; second < IDLE_SECONDS; second++) {
      peakRss = Math.max(peakRss, rssMb(pid));
      await sleep(1_000);
    }
    const idleCpuPercent = ((cpuSeconds(pid) - cpuBefore) / IDLE_SECONDS) * 100;

    console.log("restarting the server…");
    await stopServer(server);
    // A poll sent from now on that the server took reached the new one (possibly just before
    // it answered /readyz: it listens first). A held answer comes up to a hold later.
    const stoppedAt = Date.now();
    for (const client of clients) client.since = stoppedAt;
    await sleep(2_000);
    server = await startServer(join(directory, "data"), port, apiKey);
    const readyAt = Date.now();
    const deadline = readyAt + 180_000;
    while (clients.some((client) => client.backAt === undefined) && Date.now() < deadline) await sleep(50);
    const back = clients.filter((client) => client.backAt !== undefined);
    const returns = back.map((client) => Math.max(0, (client.backAt ?? 0) - readyAt)).sort((a, b) => a - b);
    const reconnectSeconds = (returns.at(-1) ?? 0) / 1000;
    const percentile = (share: number) => (returns[Math.floor((returns.length - 1) * share)] ?? 0) / 1000;
    const restartedRss = rssMb(server.child.pid ?? 0);
    return {
      name: "agents",
      rows: [
        {
          figure: `server RSS, ${connected} agents long-polling (peak over ${IDLE_SECONDS} s)`,
          goal: `≤ ${RSS_GOAL_MB} MB`,
          measured: `${peakRss.toFixed(0)} MB`,
          met: peakRss <= RSS_GOAL_MB,
        },
        {
          figure: "server CPU while they poll with nothing to do",
          goal: "(printed)",
          measured: `${idleCpuPercent.toFixed(1)} % of a core`,
          met: undefined,
        },
        {
          figure: `all ${count} agents back after a server restart (from ready)`,
          goal: "(printed)",
          measured: `${reconnectSeconds.toFixed(1)} s (${back.length}/${count}; half by ${percentile(0.5).toFixed(1)} s, 95 % by ${percentile(0.95).toFixed(1)} s)`,
          met: undefined,
        },
        {
          figure: "server RSS just after they reconnected",
          goal: `≤ ${RSS_GOAL_MB} MB`,
          measured: `${restartedRss.toFixed(0)} MB`,
          met: restartedRss <= RSS_GOAL_MB,
        },
      ],
      values: {
        agents: count,
        connected,
        rss_mb: Math.round(peakRss),
        idle_cpu_percent: Number(idleCpuPercent.toFixed(1)),
        reconnect_s: Number(reconnectSeconds.toFixed(1)),
        reconnect_p50_s: Number(percentile(0.5).toFixed(1)),
        reconnect_p95_s: Number(percentile(0.95).toFixed(1)),
        reconnected: back.length,
        rss_after_restart_mb: Math.round(restartedRss),
      },
    };
  } finally {
    stop.abort();
    await Promise.race([Promise.allSettled(running), sleep(5_000)]);
    await stopServer(server).catch(() => undefined);
    rmSync(directory, { recursive: true, force: true });
  }
}
