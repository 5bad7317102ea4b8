import { type ChildProcess, spawn } from "node:child_process";
import { mkdtempSync, rmSync } from "node:fs";
import { createServer } from "node:net";
import { cpus, loadavg, tmpdir } from "node:os";
import { join } from "node:path";
import { setTimeout as sleep } from "node:timers/promises";
import { fileURLToPath } from "node:url";
import type { Page } from "playwright-core";
import { generateApiKey } from "../src/security/apiKeys.js";
import { openStore } from "../src/store/db.js";
import { launchBrowser } from "../test/helpers/browser.js";
import { numberFlag } from "./blueGreenBench.js";
import {
  createBenchDatabase,
  DEFAULT_POSTGRES_URL,
  type Dialect,
  ENVIRONMENTS,
  PROJECTS,
  seedPostgres,
  seedSqlite,
  seedStatements,
} from "./controlPlane.js";
import type { BenchmarkResult } from "./run.js";

/*
 * ui: the web dashboard with a big history, in Debian's headless Chromium against a real
 * `ferry server` (its own process, as users run it, serving the built dist/web).
 *
 * The store is seeded like control-plane's (1,000 projects × 10 environments × 1,000,000
 * deployments, set-based SQL through the schema Ferry's migrations create); then:
 *  - the dashboard is loaded 10 times, signed in: "interactive" is the time from the
 *    navigation's start to the first frame after the matrix shows its cells and the main
 *    thread is free again (a task queued behind that frame has run), measured in the page;
 *  - on an open dashboard, a deployment finishes (a real one, run by the engine): the time
 *    from its finishedAt (the server's clock, the same machine's) to the cell showing it;
 *  - a task log of 200,000 lines is opened once the task ended: the time until every line
 *    is loaded, then the log is scrolled from top to bottom a view at a time, and every
 *    line's number and text is checked to have been on screen (none lost, none twice);
 *  - the JavaScript of the first load, as the browser received it (gzip from the server).
 *
 * `--store sqlite|postgres|both` (default both when PostgreSQL answers), `--deployments N`
 * and `--lines N` shrink it for a quick run. Figures only; nothing is asserted.
 */

const LOADS = numberFlag("--loads", 10);
const FINISHES = 5;
const INTERACTIVE_GOAL_MS = 1000;
const FINISH_GOAL_MS = 1000;
const JS_GOAL_KB = 300;
const USERNAME = "bench";
const PASSWORD = "a long enough bench password";

const root = fileURLToPath(new URL("../..", import.meta.url));

interface StoreRun {
  seedSeconds: number;
  loads: number[];
  firstLoad: number;
  filterMs: number;
  finishes: number[];
  log: LogFigures;
  javascriptBytes: number;
  load: [number, number];
}

interface LogFigures {
  lines: number;
  /** Navigation → every line loaded ("complete"). */
  shownMs: number;
  /** Lines of the task (its logLines) never seen on screen while scrolling the whole log. */
  missing: number;
  /** Lines seen twice (duplicated rows). */
  duplicated: number;
  /** Seq numbers of the script's output checked against their text. */
  textMismatches: number;
  scrollSteps: number;
  /** p95 of one step: scrollTop set → the rows of the new view rendered (next frame). */
  scrollStepP95Ms: number;
  scrollSeconds: number;
}

export async function ui(): Promise<BenchmarkResult> {
  const deployments = deploymentsWanted();
  const lines = numberFlag("--lines", 200_000);
  const stores = storesWanted();
  const shape = `${PROJECTS.toLocaleString("en")} × ${ENVIRONMENTS} × ${deployments.toLocaleString("en")}`;
  const result: BenchmarkResult = {
    name: "ui",
    rows: [],
    values: { projects: PROJECTS, environments: ENVIRONMENTS, deployments, log_lines: lines },
  };
  for (const dialect of stores) {
    const label = dialect === "sqlite" ? "SQLite" : "PostgreSQL";
    if (dialect === "sqlite") {
      addRows(result, dialect, await runOn(dialect, deployments, lines), shape);
      continue;
    }
    const adminUrl =
      process.env.FERRY_BENCH_POSTGRES_URL ?? process.env.FERRY_TEST_POSTGRES_URL ?? DEFAULT_POSTGRES_URL;
    const database = await createBenchDatabase(adminUrl);
    if (!database) {
      result.rows.push({
        figure: `dashboard (${label})`,
        goal: "-",
        measured: "skipped (no PostgreSQL: set FERRY_BENCH_POSTGRES_URL)",
        met: undefined,
      });
      result.values.postgres = "skipped";
      continue;
    }
    try {
      addRows(result, dialect, await runOn(dialect, deployments, lines, database.url), shape);
    } finally {
      await database.drop();
    }
  }
  return result;
}

function addRows(result: BenchmarkResult, dialect: Dialect, run: StoreRun, shape: string): void {
  const label = dialect === "sqlite" ? "SQLite" : "PostgreSQL";
  const p95 = percentile(run.loads, 0.95);
  const finishWorst = Math.max(...run.finishes);
  const log = run.log;
  const kb = run.javascriptBytes / 1024;
  result.rows.push(
    { figure: `seed ${shape} (${label})`, goal: "-", measured: `${run.seedSeconds.toFixed(1)} s`, met: undefined },
    {
      figure: `1-min load average while measuring, ${cpus().length} cores (${label})`,
      goal: "-",
      measured: `${run.load[0].toFixed(1)} → ${run.load[1].toFixed(1)}`,
      met: undefined,
    },
    {
      figure: `dashboard interactive, ${run.loads.length} loads (${label})`,
      goal: `p95 ≤ ${INTERACTIVE_GOAL_MS} ms`,
      measured: `p50 ${percentile(run.loads, 0.5).toFixed(0)} / p95 ${p95.toFixed(0)} ms (first, cold cache: ${run.firstLoad.toFixed(0)} ms)`,
      met: p95 <= INTERACTIVE_GOAL_MS,
    },
    {
      figure: `dashboard filter "project-0500" typed → one row (${label})`,
      goal: "-",
      measured: `${run.filterMs.toFixed(0)} ms`,
      met: undefined,
    },
    {
      figure: `finished deployment shown on an open dashboard, ${run.finishes.length} deployments (${label})`,
      goal: `≤ ${FINISH_GOAL_MS} ms each`,
      measured: `p50 ${percentile(run.finishes, 0.5).toFixed(0)} / worst ${finishWorst.toFixed(0)} ms after finishedAt`,
      met: finishWorst <= FINISH_GOAL_MS,
    },
    {
      figure: `task log of ${log.lines.toLocaleString("en")} lines: opened → all loaded (${label})`,
      goal: "-",
      measured: `${log.shownMs.toFixed(0)} ms`,
      met: undefined,
    },
    {
      figure: `task log scrolled top → bottom: lines lost / twice / wrong text (${label})`,
      goal: "0 / 0 / 0",
      measured: `${log.missing} / ${log.duplicated} / ${log.textMismatches} (${log.scrollSteps} views in ${log.scrollSeconds.toFixed(1)} s, a view rendered in p95 ${log.scrollStepP95Ms.toFixed(0)} ms)`,
      met: log.missing === 0 && log.duplicated === 0 && log.textMismatches === 0,
    },
    {
      figure: `first-load JavaScript, gzipped as served (${label})`,
      goal: `≤ ${JS_GOAL_KB} KB`,
      measured: `${kb.toFixed(1)} KB`,
      met: kb <= JS_GOAL_KB,
    },
  );
  const values = result.values;
  values[`seed_s_${dialect}`] = Number(run.seedSeconds.toFixed(1));
  values[`load_${dialect}`] = Number(Math.max(...run.load).toFixed(1));
  values[`interactive_p50_ms_${dialect}`] = Math.round(percentile(run.loads, 0.5));
  values[`interactive_p95_ms_${dialect}`] = Math.round(p95);
  values[`interactive_first_ms_${dialect}`] = Math.round(run.firstLoad);
  values[`filter_ms_${dialect}`] = Math.round(run.filterMs);
  values[`finish_shown_worst_ms_${dialect}`] = Math.round(finishWorst);
  values[`log_shown_ms_${dialect}`] = Math.round(log.shownMs);
  values[`log_missing_${dialect}`] = log.missing;
  values[`log_duplicated_${dialect}`] = log.duplicated;
  values[`log_scroll_step_p95_ms_${dialect}`] = Math.round(log.scrollStepP95Ms);
  values[`js_gzip_kb_${dialect}`] = Number(kb.toFixed(1));
}

async function runOn(dialect: Dialect, deployments: number, lines: number, databaseUrl?: string): Promise<StoreRun> {
  const dataDir = mkdtempSync(join(tmpdir(), "ferry-bench-ui-"));
  let server: FerryProcess | undefined;
  const browser = await launchBrowser();
  try {
    // The schema comes from Ferry's own migrations; only the rows are written here.
    const store = await openStore({ dataDir, databaseUrl });
    await store.close();
    const started = performance.now();
    const statements = seedStatements(dialect, deployments);
    if (dialect === "sqlite") seedSqlite(join(dataDir, "ferry.db"), statements);
    else await seedPostgres(databaseUrl ?? "", statements);
    const seedSeconds = (performance.now() - started) / 1000;
    console.log(`ui: seeded ${dialect} in ${seedSeconds.toFixed(1)} s`);

    server = await startFerry(dataDir, databaseUrl);
    const call = server.call;
    await call("POST", "/api/v1/users", { username: USERNAME, password: PASSWORD, isAdmin: true });
    // The log's project: its own process prints the lines (deployed to the first environment).
    await call("PUT", "/api/v1/projects/project-0001/process", {
      steps: [{ name: "print", kind: "script", config: { script: `seq -f 'line %06g of the log' 1 ${lines}` } }],
    });
    await call("PUT", "/api/v1/projects/project-0000/process", {
      steps: [{ name: "deploy", kind: "script", config: { script: "true" } }],
    });
    // Started now, so it runs while the dashboard is measured; opened when it has ended.
    const logRelease = await call("POST", "/api/v1/projects/project-0001/releases", { version: "9.0.0" });
    const logTaskId = String((logRelease.deployments as { taskId: string }[])[0]?.taskId);

    const page = await browser.newPage({ width: 1280, height: 900 });
    await page.goto(`${server.url}/sign-in`);
    await page.getByLabel("Username").fill(USERNAME);
    await page.getByLabel("Password").fill(PASSWORD);
    await page.getByRole("button", { name: "Sign in" }).click();
    await page.getByRole("heading", { name: "Dashboard" }).waitFor();

    const loadBefore = loadavg()[0] ?? 0;
    // The first load with an empty browser cache: every asset comes over the wire.
    const cold = await browser.newPage({ width: 1280, height: 900 });
    const devtools = await cold.context().newCDPSession(cold);
    await devtools.send("Network.enable");
    await devtools.send("Network.clearBrowserCache");
    await devtools.send("Network.setCacheDisabled", { cacheDisabled: true });
    const firstLoad = await loadDashboard(cold, server.url);
    const javascriptBytes = await firstLoadJavaScript(cold);
    await cold.close();
    const loads: number[] = [];
    for (let index = 0; index < LOADS; index++) {
      loads.push(await loadDashboard(page, server.url));
      console.log(`ui: dashboard load ${index + 1}: ${loads.at(-1)?.toFixed(0)} ms`);
    }
    const filterMs = await filterDashboard(page);

    const finishes: number[] = [];
    await page.goto(server.url);
    await page.locator("a.cell").first().waitFor();
    for (let index = 1; index <= FINISHES; index++) {
      finishes.push(await finishShown(page, call, index));
      console.log(`ui: deployment ${index} shown ${finishes.at(-1)?.toFixed(0)} ms after it finished`);
    }

    const log = await scrollLog(page, server, logTaskId, lines);
    return {
      seedSeconds,
      loads,
      firstLoad,
      filterMs,
      finishes,
      log,
      javascriptBytes,
      load: [loadBefore, loadavg()[0] ?? 0],
    };
  } finally {
    await browser.close();
    await server?.stop();
    rmSync(dataDir, { recursive: true, force: true });
  }
}

/**
 * Navigation start → the first frame after the matrix shows cells, once the main thread is
 * free (a task queued behind that frame has run): the moment a click would be answered.
 */
async function loadDashboard(page: Page, url: string): Promise<number> {
  await page.goto(`${url}/`, { waitUntil: "commit" });
  const interactive = (await page.evaluate(`new Promise((resolve) => {
    const check = () => {
      if (document.querySelector(".matrix a.cell")) {
        requestAnimationFrame(() => setTimeout(() => resolve(performance.now())));
      } else requestAnimationFrame(check);
    };
    check();
  })`)) as number;
  // The rest of the projects loads after the first rows show: the next load starts once the
  // server has answered it all, as a person's next visit would.
  await page.getByText(/running · \d+ waiting for a decision/).waitFor({ timeout: 60_000 });
  if (process.env.FERRY_BENCH_TRACE) {
    // Where the time went: each request's start, first byte and end (ms from navigation).
    console.log(
      await page.evaluate(`performance.getEntriesByType("resource").concat(performance.getEntriesByType("navigation"))
        .map((entry) => [entry.name.replace(location.origin, ""), Math.round(entry.startTime),
          Math.round(entry.responseStart), Math.round(entry.responseEnd)].join(" ")).join("\\n")`),
    );
  }
  return interactive;
}

/** Every JavaScript file the page loaded, in bytes as received (compressed). */
async function firstLoadJavaScript(page: Page): Promise<number> {
  return (await page.evaluate(
    `performance.getEntriesByType("resource").filter((entry) => entry.name.endsWith(".js"))
       .reduce((sum, entry) => sum + entry.encodedBodySize, 0)`,
  )) as number;
}

/** Typing a project's name into the filter → the matrix shows that one row. */
async function filterDashboard(page: Page): Promise<number> {
  const input = page.getByLabel("Project");
  await input.fill("");
  const started = Date.now();
  await input.fill("project-0500");
  await page.evaluate(`new Promise((resolve) => {
    const check = () => {
      const rows = document.querySelectorAll(".matrix tbody th[scope=row]");
      if (rows.length === 1 && rows[0].textContent.startsWith("project-0500")) resolve();
      else requestAnimationFrame(check);
    };
    check();
  })`);
  const elapsed = Date.now() - started;
  await input.fill("");
  return elapsed;
}

type Call = (method: string, path: string, body?: unknown) => Promise<Record<string, unknown>>;

/**
 * A new release of project-0000 (the first row), deployed to Env 00 by the lifecycle's
 * automatic phase; returns how long after the task's finishedAt the open page showed it live.
 */
async function finishShown(page: Page, call: Call, index: number): Promise<number> {
  const version = `2.0.${index}`;
  const shown = page.evaluate(`new Promise((resolve) => {
    const check = () => {
      if (document.querySelector('.matrix a.cell[title^="project-0000 in Env 00: runs ${version}"]')) resolve(Date.now());
      else requestAnimationFrame(check);
    };
    check();
  })`) as Promise<number>;
  const release = await call("POST", "/api/v1/projects/project-0000/releases", { version });
  const taskId = (release.deployments as { taskId: string }[])[0]?.taskId;
  if (!taskId) throw new Error(`release ${version} started no deployment: ${JSON.stringify(release)}`);
  const task = await waitForTask(call, taskId, 60_000);
  if (task.state !== "succeeded") throw new Error(`deployment of ${version} ended ${String(task.state)}`);
  const shownAt = await Promise.race([shown, sleep(30_000).then(() => Number.NaN)]);
  if (Number.isNaN(shownAt)) throw new Error(`the dashboard never showed ${version} live`);
  return shownAt - Date.parse(String(task.finishedAt));
}

async function waitForTask(call: Call, taskId: string, timeoutMs: number): Promise<Record<string, unknown>> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const task = await call("GET", `/api/v1/tasks/${taskId}`);
    if (["succeeded", "failed", "cancelled", "interrupted"].includes(String(task.state))) return task;
    if (Date.now() > deadline) throw new Error(`task ${taskId} still ${String(task.state)} after ${timeoutMs} ms`);
    await sleep(100);
  }
}

/**
 * Opens the log's task page once the task ended, waits for every line, then scrolls the
 * log a view at a time from the top to the end, recording each row shown: its number and
 * text. The script printed "line NNNNNN of the log" for 1 … lines, in order.
 */
async function scrollLog(page: Page, server: FerryProcess, taskId: string, lines: number): Promise<LogFigures> {
  const task = await waitForTask(server.call, taskId, 600_000);
  if (task.state !== "succeeded") throw new Error(`the log's deployment ended ${String(task.state)}`);
  const logLines = Number(task.logLines);
  await page.goto(`${server.url}/tasks/${taskId}`, { waitUntil: "commit" });
  const shownMs = (await page.evaluate(`new Promise((resolve) => {
    const check = () => {
      const count = document.querySelector(".log-count");
      if (count && count.textContent.includes("complete") && count.textContent.startsWith("${logLines} line")) {
        resolve(performance.now());
      } else requestAnimationFrame(check);
    };
    check();
  })`)) as number;
  console.log(`ui: ${logLines}-line log loaded in ${shownMs.toFixed(0)} ms; scrolling it`);
  const started = performance.now();
  const scrolled = (await page.evaluate(`(async () => {
    const log = document.querySelector(".log");
    const frame = () => new Promise((resolve) => requestAnimationFrame(() => resolve()));
    const seen = new Map();
    const steps = [];
    let duplicated = 0;
    const record = () => {
      const onScreen = new Set();
      for (const row of log.querySelectorAll(".log-row")) {
        const line = Number(row.dataset.line);
        if (onScreen.has(line)) duplicated++;
        onScreen.add(line);
        const text = row.querySelector(".log-text, .log-step-toggle")?.textContent ?? "";
        seen.set(line, text);
      }
    };
    // Rows are 20 px and the log's lines are numbered from 1: the view from scrollTop shows
    // lines top / 20 + 1 … (top + height) / 20. A view is done when its first and last are in.
    const rendered = (line) => log.querySelector('.log-row[data-line="' + line + '"]') !== null;
    const shown = async () => {
      const last = Math.min(${logLines}, Math.floor((log.scrollTop + log.clientHeight - 1) / 20) + 1);
      // At most 5 s: a view that never fills is then counted by the lines it lost.
      for (let frames = 0; frames < 300; frames++) {
        await frame();
        if (rendered(Math.floor(log.scrollTop / 20) + 1) && rendered(last)) return;
      }
    };
    log.scrollTop = 0;
    await shown();
    record();
    const view = log.clientHeight - 20;
    for (let top = view; top < log.scrollHeight; top += view) {
      const begun = performance.now();
      log.scrollTop = top;
      await shown();
      steps.push(performance.now() - begun);
      record();
    }
    return { seen: [...seen.entries()], steps, duplicated };
  })()`)) as { seen: [number, string][]; steps: number[]; duplicated: number };
  const scrollSeconds = (performance.now() - started) / 1000;
  const seen = new Map(scrolled.seen);
  let missing = 0;
  for (let line = 1; line <= logLines; line++) if (!seen.has(line)) missing++;
  // The script's lines are consecutive in the log: the first one fixes the offset.
  const first = [...seen.entries()].find(([, text]) => text.endsWith("line 000001 of the log"));
  let textMismatches = first ? 0 : lines;
  if (first) {
    for (let number = 1; number <= lines; number++) {
      const text = seen.get(first[0] + number - 1);
      if (text !== `line ${String(number).padStart(6, "0")} of the log`) textMismatches++;
    }
  }
  return {
    lines: logLines,
    shownMs,
    missing,
    duplicated: scrolled.duplicated,
    textMismatches,
    scrollSteps: scrolled.steps.length,
    scrollStepP95Ms: percentile(scrolled.steps, 0.95),
    scrollSeconds,
  };
}

// --- The server, as its own process -------------------------------------------------------

interface FerryProcess {
  url: string;
  call: Call;
  stop(): Promise<void>;
}

/** `ferry server` from the build (dist/, dist/web), on a free port, with an admin API key. */
async function startFerry(dataDir: string, databaseUrl: string | undefined): Promise<FerryProcess> {
  const port = await freePort();
  const apiKey = generateApiKey();
  const child: ChildProcess = spawn(
    process.execPath,
    [
      join(root, "bin", "ferry"),
      "server",
      "--port",
      String(port),
      "--host",
      "127.0.0.1",
      "--data-dir",
      dataDir,
      ...(databaseUrl ? ["--db", databaseUrl] : []),
    ],
    {
      env: {
        ...process.env,
        FERRY_ADMIN_API_KEY: apiKey,
        FERRY_LOG_LEVEL: "warn",
        FERRY_PROXY_STATE_DIR: join(dataDir, "proxy"),
        FERRY_PROXY_LISTEN: `127.0.0.1:${await freePort()}`,
      },
      stdio: ["ignore", "ignore", "inherit"],
    },
  );
  const url = `http://127.0.0.1:${port}`;
  const call: Call = async (method, path, body) => {
    const response = await fetch(new URL(path, url), {
      method,
      headers: {
        authorization: `Bearer ${apiKey}`,
        ...(body !== undefined && { "content-type": "application/json" }),
      },
      ...(body !== undefined && { body: JSON.stringify(body) }),
    });
    const text = await response.text();
    if (!response.ok) throw new Error(`${method} ${path} answered ${response.status}: ${text}`);
    return (text ? JSON.parse(text) : {}) as Record<string, unknown>;
  };
  const deadline = Date.now() + 60_000;
  for (;;) {
    if (child.exitCode !== null) throw new Error(`ferry server exited with ${child.exitCode}`);
    try {
      if ((await fetch(`${url}/readyz`)).ok) break;
    } catch {
      // not listening yet
    }
    if (Date.now() > deadline) throw new Error("ferry server was not ready within 60 s");
    await sleep(200);
  }
  return {
    url,
    call,
    stop: async () => {
      if (child.exitCode !== null) return;
      const exited = new Promise((resolve) => child.once("exit", resolve));
      child.kill("SIGTERM");
      await Promise.race([exited, sleep(15_000)]);
      if (child.exitCode === null) child.kill("SIGKILL");
    },
  };
}

function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const listener = createServer();
    listener.once("error", reject);
    listener.listen(0, "127.0.0.1", () => {
      const address = listener.address();
      listener.close(() => resolve(typeof address === "object" && address ? address.port : 0));
    });
  });
}

// --- Flags and figures ---------------------------------------------------------------------

function deploymentsWanted(): number {
  const value = numberFlag("--deployments", 1_000_000);
  if (value < PROJECTS * ENVIRONMENTS) {
    throw new Error(`--deployments must be a whole number of at least ${PROJECTS * ENVIRONMENTS}`);
  }
  return value;
}

function storesWanted(): Dialect[] {
  const index = process.argv.indexOf("--store");
  const value = index === -1 ? "both" : process.argv[index + 1];
  switch (value) {
    case "sqlite":
      return ["sqlite"];
    case "postgres":
      return ["postgres"];
    case "both":
      return ["sqlite", "postgres"];
    default:
      throw new Error("--store must be sqlite, postgres or both");
  }
}

function percentile(values: readonly number[], quantile: number): number {
  const sorted = [...values].sort((a, b) => a - b);
  return sorted[Math.max(0, Math.ceil(quantile * sorted.length) - 1)] ?? Number.NaN;
}
