import { type ChildProcess, spawn } from "node:child_process";
import { mkdtempSync, readFileSync, rmSync } from "node:fs";
import { createServer, type Server } from "node:http";
import { cpus, getPriority, loadavg, setPriority, tmpdir } from "node:os";
import { join } from "node:path";
import { setTimeout as sleep } from "node:timers/promises";
import { isMainThread, parentPort, Worker, workerData } from "node:worker_threads";
import { generateApiKey } from "../src/security/apiKeys.js";
import { freePort, pushTestImage, startRegistry } from "../test/helpers/registry.js";
import { numberFlag } from "./blueGreenBench.js";
import type { BenchmarkResult } from "./run.js";

/**
 * `attack-flood [--flood N]`: the attacks of issue #11's findings 3–7, each run as a bounded
 * flood (≤ 2,000 requests) against its own real `ferry server` (bin/ferry from dist/, a fresh
 * data directory, SQLite, FERRY_OUTBOUND_ALLOW unset unless the flood needs a local registry,
 * local addresses only). While a flood runs, a prober GETs /healthz every 20 ms and the
 * server's VmRSS is read every 50 ms; both run in a worker thread, so the flood's own client
 * work (reading 100 MB answers, say) does not delay the probes. The issue's acceptance: /healthz
 * answers within 100 ms throughout and RSS stays under 300 MB. Each flood also prints what the
 * attack achieved (status counts). A fresh server probed for 10 s with no flood comes first:
 * its figures (the baseline column) show what the machine's own load does to /healthz.
 * `--flood 6` runs finding 6 only.
 *
 * Every phase stops sending after FLOOD_DEADLINE_MS and gives up on answers FLOOD_GRACE_MS
 * later: before the fixes, one catastrophic regex blocks the server for minutes, and the
 * whole flood would take hours. The rows say how many of the requests were sent in time.
 */

const ROOT = join(import.meta.dirname ?? ".", "..", "..");
const FERRY = join(ROOT, "bin", "ferry");
const HEALTH_GOAL_MS = 100;
const RSS_GOAL_MB = 300;
const PROBE_INTERVAL_MS = 20;
const PROBE_STOP_GRACE_MS = 2_000;
const RSS_INTERVAL_MS = 50;
const FLOOD_DEADLINE_MS = 180_000;
const FLOOD_GRACE_MS = 30_000;
const IDLE_MS = 10_000;
const PROBE_ROLE = "attack-flood-probe";
const TERMINAL_STATES = ["succeeded", "failed", "cancelled", "interrupted"];

/** Finding 5's rules: nested quantifiers that backtrack exponentially on a tag or body that almost matches. */
const CATASTROPHIC_VERSION_RULE = "(((.+)+)+)+!";
/**
 * 13 characters: against the rule above, V8's backtracking took 5.5 s per tag while it
 * interpreted the pattern and 0.6 s once it had compiled it (on this machine, before the fix);
 * each further character multiplies that by about 4.
 */
const CATASTROPHIC_TAG = "a".repeat(13);
const CATASTROPHIC_BODY_PATTERN = "^(a+)+$";
const CATASTROPHIC_BODY = `${"a".repeat(30)}!`;

// --- the probe (a worker thread) -------------------------------------------------------

interface ProbeInput {
  role: typeof PROBE_ROLE;
  url: string;
  pid: number;
}

interface ProbeReport {
  probes: number;
  failed: number;
  worstMs: number;
  p99Ms: number;
  /**
   * Of the slowest probe, how long the server's event-loop thread ran on a CPU and how long
   * it waited, runnable, for one (/proc/PID/task/PID/schedstat): the second is the machine's
   * other work (here: the flood's own client, the neighbours) rather than the server's.
   */
  worstOnCpuMs: number;
  worstWaitingForCpuMs: number;
  peakRssMb: number;
}

/**
 * GETs /healthz every 20 ms, one at a time (a blocked server gives one long probe, not a pile
 * of them), and reads VmRSS every 50 ms, until the main thread says stop.
 */
async function runProbe(input: ProbeInput): Promise<void> {
  const port = parentPort;
  if (!port) return;
  let stopping = false;
  let current: AbortController | undefined;
  let abortLate: NodeJS.Timeout | undefined;
  const latencies: number[] = [];
  let worst = { ms: -1, onCpuMs: Number.NaN, waitingMs: Number.NaN };
  // The server's main thread (its task id is its pid): nanoseconds on a CPU and runnable but waiting.
  const schedstat = () => {
    try {
      const [onCpu = Number.NaN, waiting = Number.NaN] = readFileSync(
        `/proc/${input.pid}/task/${input.pid}/schedstat`,
        "utf8",
      )
        .split(" ")
        .map(Number);
      return { onCpu, waiting };
    } catch {
      return { onCpu: Number.NaN, waiting: Number.NaN };
    }
  };
  let failed = 0;
  let peakRssKb = 0;
  const sampleRss = () => {
    try {
      const status = readFileSync(`/proc/${input.pid}/status`, "utf8");
      peakRssKb = Math.max(peakRssKb, Number(/VmRSS:\s+(\d+)/.exec(status)?.[1] ?? 0));
    } catch {
      // The server has exited; its last samples stand.
    }
  };
  sampleRss();
  const sampler = setInterval(sampleRss, RSS_INTERVAL_MS);
  // At the stop, the probe under way has PROBE_STOP_GRACE_MS to answer; one still waiting
  // then counts as failed, with the time it waited (a server stuck in a regex never answers).
  port.once("message", () => {
    stopping = true;
    abortLate = setTimeout(() => current?.abort(), PROBE_STOP_GRACE_MS);
  });
  while (!stopping) {
    const started = performance.now();
    const schedBefore = schedstat();
    current = new AbortController();
    try {
      const response = await fetch(new URL("/healthz", input.url), { signal: current.signal });
      await response.arrayBuffer();
      if (!response.ok) failed += 1;
    } catch {
      failed += 1;
    }
    const ms = performance.now() - started;
    latencies.push(ms);
    if (ms > worst.ms) {
      const schedAfter = schedstat();
      worst = {
        ms,
        onCpuMs: (schedAfter.onCpu - schedBefore.onCpu) / 1e6,
        waitingMs: (schedAfter.waiting - schedBefore.waiting) / 1e6,
      };
    }
    current = undefined;
    const wait = PROBE_INTERVAL_MS - (performance.now() - started);
    if (wait > 0 && !stopping) await sleep(wait);
  }
  clearTimeout(abortLate);
  clearInterval(sampler);
  sampleRss();
  const sorted = [...latencies].sort((a, b) => a - b);
  const report: ProbeReport = {
    probes: sorted.length,
    failed,
    worstMs: sorted.at(-1) ?? Number.NaN,
    p99Ms: sorted[Math.floor(0.99 * (sorted.length - 1))] ?? Number.NaN,
    worstOnCpuMs: worst.onCpuMs,
    worstWaitingForCpuMs: worst.waitingMs,
    peakRssMb: peakRssKb / 1024,
  };
  port.postMessage(report);
}

function startProbe(url: string, pid: number): { stop(): Promise<ProbeReport> } {
  const input: ProbeInput = { role: PROBE_ROLE, url, pid };
  const worker = new Worker(new URL(import.meta.url), { workerData: input });
  const report = new Promise<ProbeReport>((resolve, reject) => {
    worker.once("message", (message: ProbeReport) => resolve(message));
    worker.once("error", reject);
  });
  // A worker that fails early is reported by stop(), after the flood: an unhandled rejection
  // meanwhile would end the benchmark with its server still running.
  report.catch(() => {});
  return {
    async stop() {
      worker.postMessage("stop");
      const result = await report;
      await worker.terminate();
      return result;
    },
  };
}

// --- a ferry server per flood ----------------------------------------------------------

interface Answer {
  /** The HTTP status, or "no answer" (the flood's time ran out) or "error" (the connection broke). */
  status: number | "no answer" | "error";
  text: string;
  ms: number;
  headers?: Headers;
}

interface FloodServer {
  url: string;
  pid: number;
  /** An admin's call with the API key; throws unless the answer is 2xx. */
  call(method: string, path: string, body?: unknown): Promise<Record<string, unknown>>;
  /** Any request; never throws. */
  send(method: string, path: string, options?: SendOptions): Promise<Answer>;
  /** Whether the server process is still running, and the tail of its stderr. */
  health(): { running: boolean; stderr: string };
  stop(): Promise<void>;
}

interface SendOptions {
  headers?: Record<string, string>;
  body?: string | Buffer;
  /** Send the admin API key. */
  admin?: boolean;
  /** Gives up at this time (performance.now()); default 60 s from now. */
  until?: number;
  /** Count the body's bytes without keeping it. */
  countOnly?: boolean;
}

async function startFerry(name: string, extraEnv: Record<string, string> = {}): Promise<FloodServer> {
  const dataDir = mkdtempSync(join(tmpdir(), `ferry-bench-flood-${name}-`));
  const apiKey = generateApiKey();
  const port = await freePort();
  const url = `http://127.0.0.1:${port}`;
  const child: ChildProcess = spawn(
    process.execPath,
    [FERRY, "server", "--port", String(port), "--data-dir", dataDir],
    {
      env: {
        PATH: process.env.PATH,
        HOME: dataDir,
        FERRY_ADMIN_API_KEY: apiKey,
        FERRY_LOG_LEVEL: "error",
        // Diagnosis: e.g. `--require ./stall-tracer.cjs` to see where the event loop's time goes.
        ...(process.env.ATTACK_FLOOD_SERVER_NODE_OPTIONS && {
          NODE_OPTIONS: process.env.ATTACK_FLOOD_SERVER_NODE_OPTIONS,
        }),
        ...extraEnv,
      },
      stdio: ["ignore", "ignore", "pipe"],
    },
  );
  let stderr = "";
  child.stderr?.on("data", (chunk: Buffer) => {
    stderr = (stderr + chunk.toString("utf8")).slice(-4000);
  });
  const exited = new Promise<void>((resolve) => child.once("exit", () => resolve()));

  const send = async (method: string, path: string, options: SendOptions = {}): Promise<Answer> => {
    const started = performance.now();
    const until = options.until ?? started + 60_000;
    try {
      const response = await fetch(new URL(path, url), {
        method,
        headers: {
          ...(options.admin && { authorization: `Bearer ${apiKey}` }),
          ...(options.body !== undefined && { "content-type": "application/json" }),
          ...options.headers,
        },
        ...(options.body !== undefined && { body: options.body }),
        signal: AbortSignal.timeout(Math.max(1, Math.round(until - started))),
      });
      let text = "";
      if (options.countOnly && response.body) {
        let bytes = 0;
        for await (const chunk of response.body) bytes += chunk.length;
        text = String(bytes);
      } else {
        text = await response.text();
      }
      return { status: response.status, text, ms: performance.now() - started, headers: response.headers };
    } catch (error) {
      const timedOut = error instanceof Error && (error.name === "TimeoutError" || error.name === "AbortError");
      return { status: timedOut ? "no answer" : "error", text: String(error), ms: performance.now() - started };
    }
  };
  const call = async (method: string, path: string, body?: unknown) => {
    const answer = await send(method, path, {
      admin: true,
      ...(body !== undefined && { body: JSON.stringify(body) }),
    });
    if (typeof answer.status !== "number" || answer.status >= 300) {
      throw new Error(`${name}: ${method} ${path}: ${answer.status} ${answer.text.slice(0, 500)}`);
    }
    return answer.text === "" ? {} : (JSON.parse(answer.text) as Record<string, unknown>);
  };
  const stop = async () => {
    if (child.exitCode === null && child.signalCode === null) {
      child.kill("SIGTERM");
      // A server stuck in a regex handles SIGTERM only when the match ends, minutes later.
      const killed = setTimeout(() => child.kill("SIGKILL"), 5_000);
      await exited;
      clearTimeout(killed);
    }
    rmSync(dataDir, { recursive: true, force: true });
  };
  // Generous: the neighbours' test suites load these two cores heavily.
  const deadline = performance.now() + 60_000;
  for (;;) {
    const ready = await send("GET", "/readyz", { until: performance.now() + 5_000 });
    if (ready.status === 200) break;
    if (child.exitCode !== null || performance.now() > deadline) {
      await stop();
      throw new Error(`${name}: the ferry server did not become ready (${ready.status} ${ready.text}):\n${stderr}`);
    }
    await sleep(50);
  }
  return {
    url,
    pid: child.pid ?? 0,
    call,
    send,
    health: () => ({ running: child.exitCode === null && child.signalCode === null, stderr }),
    stop,
  };
}

/** A project "app" deployable to environment "dev", with the given process. */
async function createProject(server: FloodServer, deploymentProcess: unknown): Promise<void> {
  await server.call("POST", "/api/v1/environments", { name: "dev" });
  await server.call("POST", "/api/v1/lifecycles", { name: "flood", phases: [{ environments: ["dev"] }] });
  await server.call("POST", "/api/v1/projects", { name: "app", lifecycle: "flood" });
  await server.call("PUT", "/api/v1/projects/app/process", deploymentProcess);
}

/** Waits for the task to end (or the time to run out); its state and log text. */
async function waitForTask(
  server: FloodServer,
  taskId: string,
  until: number,
): Promise<{ state: string; log: string }> {
  for (;;) {
    const answer = await server.send("GET", `/api/v1/tasks/${taskId}`, { admin: true, until });
    const state =
      answer.status === 200
        ? String((JSON.parse(answer.text) as { state: unknown }).state)
        : `not known (${answer.status})`;
    if (TERMINAL_STATES.includes(state)) {
      const log = await server.send("GET", `/api/v1/tasks/${taskId}/log`, { admin: true, until });
      const lines = log.status === 200 ? ((JSON.parse(log.text) as { lines?: { text: string }[] }).lines ?? []) : [];
      return { state, log: lines.map((line) => line.text).join("\n") };
    }
    if (performance.now() >= until) return { state: `${state} when the time ran out`, log: "" };
    await sleep(100);
  }
}

// --- floods ------------------------------------------------------------------------------

/** Counts of outcomes: "401" → 1995. */
type Tally = Map<string, number>;

function count(tally: Tally, outcome: string | number): void {
  tally.set(String(outcome), (tally.get(String(outcome)) ?? 0) + 1);
}

function describeTally(tally: Tally): string {
  if (tally.size === 0) return "none";
  return [...tally.entries()]
    .sort(([a], [b]) => a.localeCompare(b))
    .map(([outcome, times]) => `${outcome} ×${times}`)
    .join(", ");
}

interface FloodRun {
  tally: Tally;
  sent: number;
  seconds: number;
  slowestMs: number;
}

/**
 * The flood's client (this thread: undici sending 50 requests at a time, reading 100 MB
 * answers) stands for the attacker's machine, which in life is not the server's. Sharing
 * this host's two cores at the server's priority, it took a core from the server under
 * test, whose event loop then waited, runnable, for a CPU (the schedstat split shows it).
 * While a flood sends, this thread runs 10 nice steps lower (Linux keeps the value per
 * thread): the client takes what the server leaves. The probe's worker thread and the
 * server, started before, keep their priority. Raising it back afterwards needs root; as
 * another user the client keeps its priority and the row says so.
 */
const CLIENT_NICE_STEPS = process.getuid?.() === 0 ? 10 : 0;
const CLIENT_PRIORITY =
  CLIENT_NICE_STEPS > 0
    ? `the flood client ${CLIENT_NICE_STEPS} nice steps below the server while it sends`
    : "the flood client at the server's priority (not root: could not lower it and raise it again)";

async function withClientLowered<T>(work: () => Promise<T>): Promise<T> {
  if (CLIENT_NICE_STEPS === 0) return work();
  const before = getPriority();
  setPriority(Math.min(19, before + CLIENT_NICE_STEPS));
  try {
    return await work();
  } finally {
    setPriority(before);
  }
}

/**
 * Sends `total` requests, `parallel` at a time, until FLOOD_DEADLINE_MS has passed; answers
 * still missing FLOOD_GRACE_MS later count as "no answer".
 */
async function flood(
  total: number,
  parallel: number,
  request: (index: number, until: number) => Promise<{ outcome: string | number; ms: number }>,
): Promise<FloodRun> {
  const started = performance.now();
  const stopSending = started + FLOOD_DEADLINE_MS;
  const until = stopSending + FLOOD_GRACE_MS;
  const tally: Tally = new Map();
  let next = 0;
  let slowestMs = 0;
  const sender = async () => {
    while (next < total && performance.now() < stopSending) {
      const index = next++;
      const { outcome, ms } = await request(index, until);
      count(tally, outcome);
      slowestMs = Math.max(slowestMs, ms);
    }
  };
  await withClientLowered(() => Promise.all(Array.from({ length: parallel }, sender)));
  return { tally, sent: next, seconds: (performance.now() - started) / 1000, slowestMs };
}

/** What one flood measured, ready for the table. */
interface FloodResult {
  /** "3 sign-in" */
  label: string;
  /** Machine-readable prefix: "f3_signin". */
  key: string;
  probe: ProbeReport;
  running: boolean;
  outcomes: { figure: string; measured: string }[];
  values: Record<string, string | number>;
}

/** Starts a fresh server, probes it while `attack` runs, stops it. */
async function underProbe(
  label: string,
  key: string,
  extraEnv: Record<string, string>,
  prepare: (server: FloodServer) => Promise<void>,
  attack: (server: FloodServer) => Promise<Pick<FloodResult, "outcomes" | "values">>,
): Promise<FloodResult> {
  console.log(`-- finding ${label}`);
  const server = await startFerry(key, extraEnv);
  try {
    await prepare(server);
    const probe = startProbe(server.url, server.pid);
    const attacked = await attack(server).then(
      (value) => ({ value }),
      (error: unknown) => ({ error }),
    );
    const report = await probe.stop();
    if ("error" in attacked) throw attacked.error;
    const outcome = attacked.value;
    const { running, stderr } = server.health();
    if (!running) console.log(`   the server exited during the flood; its stderr ends:\n${stderr}`);
    const result = { label, key, probe: report, running, ...outcome };
    console.log(
      `   /healthz worst ${report.worstMs.toFixed(0)} ms (${describeWorst(report)}), p99 ${report.p99Ms.toFixed(0)} ms; peak RSS ${report.peakRssMb.toFixed(0)} MB; ${outcome.outcomes.map((row) => `${row.figure}: ${row.measured}`).join("; ")}`,
    );
    return result;
  } finally {
    await server.stop();
  }
}

// --- finding 3: sign-in limits under concurrency ------------------------------------------

const PASSWORD = "the right password of ops";

async function signInFlood(): Promise<FloodResult> {
  const total = 2000;
  return underProbe(
    "3 sign-in",
    "f3_signin",
    {},
    async (server) => {
      await server.call("POST", "/api/v1/users", { username: "ops", password: PASSWORD });
    },
    async (server) => {
      const run = await flood(total, 50, async (index, until) => {
        const answer = await server.send("POST", "/api/v1/session", {
          body: JSON.stringify({ username: "ops", password: `wrong guess ${index}` }),
          until,
        });
        return { outcome: answer.status, ms: answer.ms };
      });
      return checkedAndRefused(run, total, "sign-ins", 401);
    },
  );
}

/**
 * On a server of its own: after the sign-in flood, its checks would count against the same
 * username and address, and every change would be refused for them, saying nothing about
 * this route's own concurrency.
 */
async function passwordChangeFlood(): Promise<FloodResult> {
  const total = 1000;
  let session: Record<string, string> = {};
  return underProbe(
    "3 password change",
    "f3_password",
    {},
    async (server) => {
      await server.call("POST", "/api/v1/users", { username: "ops", password: PASSWORD });
      const signedIn = await server.send("POST", "/api/v1/session", {
        body: JSON.stringify({ username: "ops", password: PASSWORD }),
      });
      if (signedIn.status !== 200) throw new Error(`sign-in: ${signedIn.status} ${signedIn.text}`);
      const cookie = (signedIn.headers?.get("set-cookie") ?? "").split(";")[0] ?? "";
      const { csrfToken } = JSON.parse(signedIn.text) as { csrfToken: string };
      session = { cookie, "x-csrf-token": csrfToken, origin: server.url };
    },
    async (server) => {
      const run = await flood(total, 50, async (index, until) => {
        const answer = await server.send("POST", "/api/v1/users/me/password", {
          headers: session,
          body: JSON.stringify({ currentPassword: `wrong guess ${index}`, newPassword: "a new password for ops" }),
          until,
        });
        return { outcome: answer.status, ms: answer.ms };
      });
      return checkedAndRefused(run, total, "password changes", 403);
    },
  );
}

function checkedAndRefused(
  run: FloodRun,
  total: number,
  what: string,
  wrongStatus: number,
): Pick<FloodResult, "outcomes" | "values"> {
  const checked = run.tally.get(String(wrongStatus)) ?? 0;
  const refused = run.tally.get("429") ?? 0;
  return {
    outcomes: [
      {
        figure: `${what} checked (${wrongStatus}) / refused (429), of ${total} wrong passwords sent 50 at a time`,
        measured: `${checked} / ${refused}${run.sent < total ? ` (${run.sent} sent before the deadline)` : ""}`,
      },
      { figure: `${what}: every answer`, measured: `${describeTally(run.tally)} in ${run.seconds.toFixed(1)} s` },
    ],
    values: { sent: run.sent, checked, refused, other: run.sent - checked - refused, seconds: run.seconds.toFixed(1) },
  };
}

// --- finding 4: SSRF through a templated URL -----------------------------------------------

/** A local HTTP server answering every request with `body`; counts the requests. */
async function answeringServer(body: string): Promise<{ url: string; hits(): number; close(): Promise<void> }> {
  let hits = 0;
  const server: Server = createServer((_request, response) => {
    hits += 1;
    response.writeHead(200, { "content-type": "text/plain" }).end(body);
  });
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  const address = server.address();
  const port = typeof address === "object" && address ? address.port : 0;
  return {
    url: `http://127.0.0.1:${port}/`,
    hits: () => hits,
    close: () => new Promise<void>((resolve) => server.close(() => resolve())),
  };
}

async function ssrfFlood(): Promise<FloodResult> {
  const total = 100;
  const marker = `internal-only-${generateApiKey().slice(-12)}`;
  const internal = await answeringServer(`the internal service's answer: ${marker}`);
  try {
    return await underProbe(
      "4 SSRF",
      "f4_ssrf",
      {},
      async (server) => {
        await createProject(server, {
          steps: [
            {
              name: "check",
              kind: "http-test",
              // An assertion the internal answer fails: the log then shows the body it got.
              config: { url: "#{HealthUrl}", assertions: { bodyContains: ["a text no internal answer holds"] } },
            },
          ],
        });
        await server.call("POST", "/api/v1/projects/app/variables", {
          name: "HealthUrl",
          value: `${internal.url}admin`,
        });
        await server.call("POST", "/api/v1/projects/app/releases", { version: "1.0.0" });
      },
      async (server) => {
        const taskIds: string[] = [];
        const created = await flood(total, 10, async (_index, until) => {
          const answer = await server.send("POST", "/api/v1/projects/app/deployments", {
            admin: true,
            body: JSON.stringify({ release: "1.0.0", environment: "dev" }),
            until,
          });
          if (answer.status === 201 || answer.status === 200) {
            taskIds.push(String((JSON.parse(answer.text) as { taskId: unknown }).taskId));
          }
          return { outcome: answer.status, ms: answer.ms };
        });
        const until = performance.now() + FLOOD_DEADLINE_MS;
        const outcomes: Tally = new Map();
        for (const taskId of taskIds) {
          const task = await waitForTask(server, taskId, until);
          if (task.log.includes(marker)) count(outcomes, "fetched the internal URL");
          else if (/refus|outbound guard/i.test(task.log)) count(outcomes, "refused");
          else {
            // Neither: say what happened instead, once.
            if (![...outcomes.keys()].some((outcome) => outcome.startsWith("other"))) {
              console.log(
                `   a deployment neither fetched nor refused (${task.state}); its log ends:\n${task.log.slice(-1500)}`,
              );
            }
            count(outcomes, `other (${task.state})`);
          }
        }
        const fetched = outcomes.get("fetched the internal URL") ?? 0;
        const refused = outcomes.get("refused") ?? 0;
        return {
          outcomes: [
            {
              figure: `deployments (of ${total}) whose log shows the internal answer / refused`,
              measured: `${fetched} / ${refused}${taskIds.length < total ? ` (${taskIds.length} created: ${describeTally(created.tally)})` : ""}`,
            },
            {
              figure: "deployments: every outcome; requests the internal server received",
              measured: `${describeTally(outcomes)}; ${internal.hits()} requests`,
            },
          ],
          values: { deployments: taskIds.length, fetched, refused, internal_hits: internal.hits() },
        };
      },
    );
  } finally {
    await internal.close();
  }
}

// --- finding 5: catastrophic regular expressions -------------------------------------------

async function versionRuleFlood(): Promise<FloodResult> {
  const total = 200;
  const registry = await startRegistry();
  try {
    await pushTestImage(registry.url, "flood/app", CATASTROPHIC_TAG);
    const ruleProcess = {
      images: [
        {
          name: "app",
          feed: "local",
          repository: "flood/app",
          version: { kind: "regex", pattern: CATASTROPHIC_VERSION_RULE },
        },
      ],
      steps: [],
    };
    let saved: Answer | undefined;
    return await underProbe(
      "5 version rule",
      "f5_version_rule",
      // The registry is on a loopback address, which the outbound guard refuses by default.
      { FERRY_OUTBOUND_ALLOW: new URL(registry.url).host },
      async (server) => {
        await server.call("POST", "/api/v1/feeds", { name: "local", url: registry.url });
        await createProject(server, { steps: [] });
        saved = await server.send("PUT", "/api/v1/projects/app/process", {
          admin: true,
          body: JSON.stringify(ruleProcess),
        });
      },
      async (server) => {
        const ruleSaved = saved?.status === 200;
        const run = await flood(total, 10, async (index, until) => {
          const answer = ruleSaved
            ? await server.send("POST", "/api/v1/projects/app/releases", {
                admin: true,
                body: JSON.stringify({ version: `1.0.${index}` }),
                until,
              })
            : await server.send("PUT", "/api/v1/projects/app/process", {
                admin: true,
                body: JSON.stringify(ruleProcess),
                until,
              });
          return { outcome: answer.status, ms: answer.ms };
        });
        return catastrophicOutcome(
          run,
          total,
          ruleSaved
            ? `release creations against version rule ${CATASTROPHIC_VERSION_RULE} (tag ${CATASTROPHIC_TAG})`
            : `saves of version rule ${CATASTROPHIC_VERSION_RULE}, refused (HTTP ${saved?.status})`,
          ruleSaved ? "releases" : "refused_saves",
        );
      },
    );
  } finally {
    await registry.stop();
  }
}

/**
 * Runbook parameter patterns (ADR 0064): runs of a runbook whose parameter pattern is the
 * catastrophic one, each with a value of 8,191 a's and a '!' (the largest a run may give).
 * RE2 answers each at once; before, JavaScript's RegExp would backtrack for ever.
 */
async function runbookParameterFlood(): Promise<FloodResult> {
  const total = 200;
  let saved: Answer | undefined;
  return underProbe(
    "5 runbook parameter",
    "f5_runbook_parameter",
    {},
    async (server) => {
      await createProject(server, { steps: [] });
      saved = await server.send("POST", "/api/v1/projects/app/runbooks", {
        admin: true,
        body: JSON.stringify({
          name: "flood",
          environments: ["dev"],
          parameters: [{ name: "Word", pattern: CATASTROPHIC_BODY_PATTERN }],
        }),
      });
      await server.send("POST", "/api/v1/projects/app/runbooks/flood/publish", { admin: true });
    },
    async (server) => {
      const value = `${"a".repeat(8191)}!`;
      const run = await flood(total, 10, async (_index, until) => {
        const answer = await server.send("POST", "/api/v1/projects/app/runbooks/flood/runs", {
          admin: true,
          body: JSON.stringify({ environment: "dev", parameters: { Word: value } }),
          until,
        });
        return { outcome: answer.status, ms: answer.ms };
      });
      return catastrophicOutcome(
        run,
        total,
        `runs of a runbook with parameter pattern ${CATASTROPHIC_BODY_PATTERN} against "a"×8191 + "!" (runbook saved: HTTP ${saved?.status})`,
        "runbook_runs",
      );
    },
  );
}

async function bodyMatchesFlood(): Promise<FloodResult> {
  const total = 20;
  const target = await answeringServer(CATASTROPHIC_BODY);
  // Written in the process (not a variable): the outbound guard calls it as it is.
  const checkProcess = {
    steps: [
      {
        name: "check",
        kind: "http-test",
        config: { url: target.url, assertions: { bodyMatches: CATASTROPHIC_BODY_PATTERN } },
      },
    ],
  };
  let saved: Answer | undefined;
  try {
    return await underProbe(
      "5 bodyMatches",
      "f5_body_matches",
      {},
      async (server) => {
        await createProject(server, { steps: [] });
        saved = await server.send("PUT", "/api/v1/projects/app/process", {
          admin: true,
          body: JSON.stringify(checkProcess),
        });
        if (saved.status === 200) await server.call("POST", "/api/v1/projects/app/releases", { version: "1.0.0" });
      },
      async (server) => {
        if (saved?.status !== 200) {
          const run = await flood(total, 1, async (_index, until) => {
            const answer = await server.send("PUT", "/api/v1/projects/app/process", {
              admin: true,
              body: JSON.stringify(checkProcess),
              until,
            });
            return { outcome: answer.status, ms: answer.ms };
          });
          return catastrophicOutcome(
            run,
            total,
            `saves of bodyMatches ${CATASTROPHIC_BODY_PATTERN}, refused (HTTP ${saved?.status})`,
            "refused_saves",
          );
        }
        const started = performance.now();
        const taskIds: string[] = [];
        const created = await flood(total, 1, async (_index, until) => {
          const answer = await server.send("POST", "/api/v1/projects/app/deployments", {
            admin: true,
            body: JSON.stringify({ release: "1.0.0", environment: "dev" }),
            until,
          });
          if (answer.status === 201 || answer.status === 200) {
            taskIds.push(String((JSON.parse(answer.text) as { taskId: unknown }).taskId));
          }
          return { outcome: answer.status, ms: answer.ms };
        });
        const until = started + FLOOD_DEADLINE_MS + FLOOD_GRACE_MS;
        const states: Tally = new Map();
        for (const taskId of taskIds) {
          const task = await waitForTask(server, taskId, until);
          count(states, task.state);
        }
        const seconds = (performance.now() - started) / 1000;
        return {
          outcomes: [
            {
              figure: `deployments (of ${total}) of an http-test with bodyMatches ${CATASTROPHIC_BODY_PATTERN} against "a"×30 + "!"`,
              measured: `${describeTally(states)} in ${seconds.toFixed(1)} s${taskIds.length < total ? ` (${taskIds.length} created: ${describeTally(created.tally)})` : ""}`,
            },
          ],
          values: {
            deployments: taskIds.length,
            ended: [...states.entries()]
              .filter(([state]) => TERMINAL_STATES.includes(state))
              .reduce((a, [, n]) => a + n, 0),
            seconds: seconds.toFixed(1),
            target_hits: target.hits(),
          },
        };
      },
    );
  } finally {
    await target.close();
  }
}

function catastrophicOutcome(
  run: FloodRun,
  total: number,
  what: string,
  key: string,
): Pick<FloodResult, "outcomes" | "values"> {
  return {
    outcomes: [
      {
        figure: `${what}: answers (of ${total})`,
        measured: `${describeTally(run.tally)}${run.sent < total ? ` (${run.sent} sent before the deadline)` : ""}`,
      },
      {
        figure: `${what}: slowest answer`,
        measured: `${(run.slowestMs / 1000).toFixed(2)} s (whole flood ${run.seconds.toFixed(1)} s)`,
      },
    ],
    values: {
      mode: key,
      sent: run.sent,
      answered: [...run.tally.entries()].filter(([status]) => /^\d+$/.test(status)).reduce((a, [, n]) => a + n, 0),
      slowest_ms: Math.round(run.slowestMs),
      seconds: run.seconds.toFixed(1),
    },
  };
}

// --- finding 6: deeply nested JSON ------------------------------------------------------------

async function nestedJsonFlood(): Promise<FloodResult> {
  const total = 2000;
  const sizes = 20;
  // 4,000 to 100,000 levels of [ … ], balanced (a parser that gives up on the first level is not tested).
  const bodies = Array.from({ length: sizes }, (_, index) => {
    const levels = Math.round(4000 + ((100_000 - 4000) * index) / (sizes - 1));
    return Buffer.from(`${"[".repeat(levels)}${"]".repeat(levels)}`);
  });
  return underProbe(
    "6 nested JSON",
    "f6_nested_json",
    {},
    async () => {},
    async (server) => {
      const run = await flood(total, 20, async (index, until) => {
        const answer = await server.send("POST", "/api/v1/session", { body: bodies[index % sizes] ?? "[]", until });
        return { outcome: answer.status, ms: answer.ms };
      });
      const serverErrors = [...run.tally.entries()]
        .filter(([status]) => status.startsWith("5") || !/^\d+$/.test(status))
        .reduce((sum, [, times]) => sum + times, 0);
      return {
        outcomes: [
          {
            figure: `status codes of ${total} unauthenticated POST /api/v1/session of 4,000–100,000 levels of [, 20 at a time`,
            measured: `${describeTally(run.tally)}${run.sent < total ? ` (${run.sent} sent before the deadline)` : ""} in ${run.seconds.toFixed(1)} s`,
          },
        ],
        values: {
          sent: run.sent,
          statuses: [...run.tally.entries()]
            .map(([status, times]) => `${status.replace(/\s/g, "_")}:${times}`)
            .join(","),
          server_errors: serverErrors,
        },
      };
    },
  );
}

// --- finding 7: huge log lines ------------------------------------------------------------------

async function logLineFlood(): Promise<FloodResult> {
  const total = 300;
  return underProbe(
    "7 huge log lines",
    "f7_log_lines",
    {},
    async (server) => {
      await createProject(server, {
        steps: [
          {
            name: "print",
            kind: "script",
            config: {
              // One 15 MB line of ESC characters (\u001b in JSON: six times as long), then one
              // 48 MB line. In this order: a task's log once stopped at 16 MiB, and the 48 MB
              // line first would leave no room for the other.
              script: [
                "head -c 15000000 /dev/zero | tr '\\0' '\\033'",
                "echo",
                "head -c 48000000 /dev/zero | tr '\\0' x",
                "echo",
              ].join("\n"),
            },
          },
        ],
      });
      await server.call("POST", "/api/v1/projects/app/releases", { version: "1.0.0" });
    },
    async (server) => {
      const started = performance.now();
      const created = await server.call("POST", "/api/v1/projects/app/deployments", {
        release: "1.0.0",
        environment: "dev",
      });
      const taskId = String(created.taskId);
      const task = await waitForTask(server, taskId, started + FLOOD_DEADLINE_MS);
      const deploySeconds = (performance.now() - started) / 1000;
      let largest = 0;
      const run = await flood(total, 3, async (_index, until) => {
        const answer = await server.send("GET", `/api/v1/tasks/${taskId}/log`, { admin: true, until, countOnly: true });
        if (answer.status === 200) largest = Math.max(largest, Number(answer.text));
        return { outcome: answer.status, ms: answer.ms };
      });
      return {
        outcomes: [
          {
            figure: "the deployment printing a 15 MB line of ESC and a 48 MB line",
            measured: `${task.state} after ${deploySeconds.toFixed(1)} s`,
          },
          {
            figure: `GET /tasks/:id/log (of ${total}, 3 at a time): answers; largest answer`,
            measured: `${describeTally(run.tally)}${run.sent < total ? ` (${run.sent} sent before the deadline)` : ""} in ${run.seconds.toFixed(1)} s; largest ${(largest / 1e6).toFixed(2)} MB`,
          },
        ],
        values: {
          deployment: task.state.replace(/\s/g, "_"),
          deploy_s: deploySeconds.toFixed(1),
          reads: run.sent,
          largest_answer_bytes: largest,
          slowest_read_ms: Math.round(run.slowestMs),
        },
      };
    },
  );
}

// --- the benchmark ----------------------------------------------------------------------------

/**
 * A fresh server probed for IDLE_MS with no flood: what /healthz and RSS look like on this
 * machine at this moment (the neighbours' load included), printed beside each flood's figures.
 */
/** "the slowest: server's event loop 12 ms on a CPU, 80 ms waiting for one". */
function describeWorst(report: ProbeReport): string {
  return `the slowest: the server's event loop ${report.worstOnCpuMs.toFixed(0)} ms on a CPU, ${report.worstWaitingForCpuMs.toFixed(0)} ms waiting for one`;
}

async function idleBaseline(): Promise<ProbeReport> {
  console.log("-- an idle server (the baseline)");
  const server = await startFerry("idle");
  try {
    const probe = startProbe(server.url, server.pid);
    await sleep(IDLE_MS);
    const report = await probe.stop();
    console.log(
      `   /healthz worst ${report.worstMs.toFixed(0)} ms (${describeWorst(report)}), p99 ${report.p99Ms.toFixed(0)} ms; peak RSS ${report.peakRssMb.toFixed(0)} MB`,
    );
    return report;
  } finally {
    await server.stop();
  }
}

export async function attackFlood(): Promise<BenchmarkResult> {
  const only = numberFlag("--flood", 0);
  const floods: [number, () => Promise<FloodResult>][] = [
    [3, signInFlood],
    [3, passwordChangeFlood],
    [4, ssrfFlood],
    [5, versionRuleFlood],
    [5, bodyMatchesFlood],
    [5, runbookParameterFlood],
    [6, nestedJsonFlood],
    [7, logLineFlood],
  ];
  const loadBefore = loadavg()[0] ?? 0;
  const idle = await idleBaseline();
  const results: FloodResult[] = [];
  for (const [finding, run] of floods) {
    if (only === 0 || only === finding) results.push(await run());
  }
  const loadAfter = loadavg()[0] ?? 0;
  const idleHealth = `idle server ${idle.worstMs.toFixed(0)} ms (p99 ${idle.p99Ms.toFixed(0)} ms)`;
  const rows: BenchmarkResult["rows"] = [
    {
      figure: `1-min load average, before → after the floods, ${cpus().length} cores; ${CLIENT_PRIORITY}`,
      goal: "-",
      measured: `${loadBefore.toFixed(1)} → ${loadAfter.toFixed(1)}`,
      met: undefined,
    },
    ...results.flatMap((result) => [
      {
        figure: `${result.label}: /healthz worst while flooding (probed every ${PROBE_INTERVAL_MS} ms)`,
        goal: `≤ ${HEALTH_GOAL_MS} ms`,
        measured: `${result.probe.worstMs.toFixed(0)} ms (p99 ${result.probe.p99Ms.toFixed(0)} ms; ${result.probe.probes} probes, ${result.probe.failed} failed${result.running ? "" : "; the server died"}; ${describeWorst(result.probe)})`,
        baseline: idleHealth,
        met: result.probe.worstMs <= HEALTH_GOAL_MS && result.probe.failed === 0 && result.running,
      },
      {
        figure: `${result.label}: peak server RSS (VmRSS every ${RSS_INTERVAL_MS} ms)`,
        goal: `≤ ${RSS_GOAL_MB} MB`,
        measured: `${result.probe.peakRssMb.toFixed(0)} MB`,
        baseline: `idle server ${idle.peakRssMb.toFixed(0)} MB`,
        met: result.probe.peakRssMb <= RSS_GOAL_MB,
      },
      ...result.outcomes.map((outcome) => ({
        figure: `${result.label}: ${outcome.figure}`,
        goal: "-",
        measured: outcome.measured,
        met: undefined,
      })),
    ]),
  ];
  return {
    name: "attack-flood",
    rows,
    values: {
      floods: results.length,
      idle_health_worst_ms: Math.round(idle.worstMs),
      idle_health_p99_ms: Math.round(idle.p99Ms),
      idle_rss_mb: Math.round(idle.peakRssMb),
      load_before: loadBefore.toFixed(1),
      load_after: loadAfter.toFixed(1),
      health_worst_ms: Math.round(Math.max(...results.map((result) => result.probe.worstMs))),
      peak_rss_mb: Math.round(Math.max(...results.map((result) => result.probe.peakRssMb))),
    },
    extraLines: results.map((result) =>
      [
        "attack-flood",
        `flood=${result.key}`,
        `health_worst_ms=${Math.round(result.probe.worstMs)}`,
        `health_p99_ms=${Math.round(result.probe.p99Ms)}`,
        `worst_on_cpu_ms=${Math.round(result.probe.worstOnCpuMs)}`,
        `worst_waiting_for_cpu_ms=${Math.round(result.probe.worstWaitingForCpuMs)}`,
        `probes=${result.probe.probes}`,
        `probes_failed=${result.probe.failed}`,
        `peak_rss_mb=${Math.round(result.probe.peakRssMb)}`,
        ...Object.entries(result.values).map(([key, value]) => `${key}=${value}`),
      ].join(" "),
    ),
  };
}

// In the probe's worker thread (startProbe loads this module there), this module runs the
// probe and nothing else.
if (!isMainThread && (workerData as ProbeInput | undefined)?.role === PROBE_ROLE) {
  // A failure reaches the main thread as the worker's "error" event.
  void runProbe(workerData as ProbeInput);
}
