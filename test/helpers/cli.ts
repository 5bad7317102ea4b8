import { type ChildProcess, spawn } from "node:child_process";
import { randomBytes } from "node:crypto";
import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { dirname, join } from "node:path";
import { setTimeout as sleep } from "node:timers/promises";
import { fileURLToPath } from "node:url";
import { expect } from "vitest";
import { freePort } from "./registry.js";

/**
 * Helpers for the end-to-end tests that run the real `bin/ferry` (built by globalSetup) as
 * separate processes: the CLI, and `ferry server` on a free port with its own data directory.
 * Every process gets exactly the environment a test gives it, so nothing of the developer's
 * own Ferry settings (or ~/.config) leaks into a test, and a test leaves nothing behind.
 */

/** The repository's root directory (examples/, bin/ …). */
export const ROOT = join(dirname(fileURLToPath(import.meta.url)), "..", "..");
export const FERRY = join(ROOT, "bin", "ferry");

/**
 * How much of a server's stdout and stderr is kept (the end of each): enough for every log
 * line a test looks for, while a long run (the example's deployments) cannot grow it without bound.
 */
const SERVER_OUTPUT_CHARS = 1_000_000;

/** A key the server accepts as FERRY_ADMIN_API_KEY: "ferry_test" + 30 random characters. */
export function testAdminKey(): string {
  return `ferry_test${randomBytes(30).toString("base64url").slice(0, 30)}`;
}

/**
 * An explicit environment: nothing Ferry reads is inherited from the parent (no FERRY_API_KEY,
 * FERRY_URL, FERRY_ADMIN_API_KEY), and HOME/FERRY_CONFIG point into a temp directory so the
 * real ~/.config is never read or written. FERRY_OUTBOUND_ALLOW lets a server reach the
 * tests' registries on 127.0.0.1. `extra` is added last, so it may override either.
 */
export function isolatedEnv(home: string, extra: Record<string, string> = {}): NodeJS.ProcessEnv {
  return {
    PATH: process.env.PATH ?? "/usr/bin:/bin",
    HOME: home,
    FERRY_CONFIG: join(home, "no-such-config.json"),
    FERRY_OUTBOUND_ALLOW: "127.0.0.1",
    ...extra,
  };
}

/** How a process ended and everything it printed. */
export interface CliResult {
  code: number | null;
  stdout: string;
  stderr: string;
}

/** A process still running: its output so far can be read while `done` is pending. */
interface RunningCli {
  stdout(): string;
  stderr(): string;
  done: Promise<CliResult>;
}

interface RunOptions {
  /** Piped to standard input, which is then closed; without it, standard input is /dev/null. */
  input?: string;
  /** The process gets SIGTERM after this long, so a hung command fails its test with its output. Default 30 s. */
  timeoutMs?: number;
}

/** Starts a command (argv, no shell) with exactly the environment given. */
function startCommand(
  command: string,
  args: readonly string[],
  env: NodeJS.ProcessEnv,
  options: RunOptions,
): RunningCli {
  const { input, timeoutMs = 30_000 } = options;
  const child = spawn(command, args, {
    env,
    stdio: [input === undefined ? "ignore" : "pipe", "pipe", "pipe"],
    timeout: timeoutMs,
  });
  let stdout = "";
  let stderr = "";
  child.stdout?.setEncoding("utf8").on("data", (chunk: string) => {
    stdout += chunk;
  });
  child.stderr?.setEncoding("utf8").on("data", (chunk: string) => {
    stderr += chunk;
  });
  const done = new Promise<CliResult>((resolve, reject) => {
    child.on("error", reject);
    child.on("close", (code) => resolve({ code, stdout, stderr }));
  });
  if (input !== undefined) child.stdin?.end(input);
  return { stdout: () => stdout, stderr: () => stderr, done };
}

/** Runs a command (argv, no shell: docker, a build script) to its end with exactly the environment given. */
export function runCommand(
  command: string,
  args: readonly string[],
  env: NodeJS.ProcessEnv,
  options: RunOptions = {},
): Promise<CliResult> {
  return startCommand(command, args, env, options).done;
}

/** Starts `bin/ferry ARGS` without waiting, for commands a test talks to while they run (`--wait`, `--follow`). */
export function startFerry(args: readonly string[], env: NodeJS.ProcessEnv, options: RunOptions = {}): RunningCli {
  return startCommand(FERRY, args, env, options);
}

/** Runs `bin/ferry ARGS` to completion. */
export function runFerry(
  args: readonly string[],
  env: NodeJS.ProcessEnv,
  options: RunOptions = {},
): Promise<CliResult> {
  return startFerry(args, env, options).done;
}

/** Exit code 0, or a failure that shows what the command printed. */
export function expectSuccess(result: CliResult): void {
  expect(result.code, `stdout: ${result.stdout}\nstderr: ${result.stderr}`).toBe(0);
}

/** A command's `--json` output; a failure shows the output when it is not one JSON value. */
export function parseJson<T>(result: CliResult): T {
  try {
    return JSON.parse(result.stdout) as T;
  } catch {
    throw new Error(`stdout is not one JSON value:\n${result.stdout}\nstderr: ${result.stderr}`);
  }
}

/** Polls `condition` (e.g. a line in a running process's output) every 20 ms; throws after `timeoutMs`. */
export async function waitFor(condition: () => boolean, what: string, timeoutMs = 15_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!condition()) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await sleep(20);
  }
}

/**
 * One request to a Ferry server's HTTP API with `apiKey` as bearer token; `body`, when given,
 * is sent as JSON. It gives up after 30 s, so a stuck server fails with this call, not the test's
 * timeout (5 s was too short on a CI machine whose two cores run two test files and their servers).
 */
export function apiRequest(url: string, apiKey: string, method = "GET", body?: unknown): Promise<Response> {
  return fetch(url, {
    method,
    headers: { authorization: `Bearer ${apiKey}`, ...(body !== undefined && { "content-type": "application/json" }) },
    ...(body !== undefined && { body: JSON.stringify(body) }),
    signal: AbortSignal.timeout(30_000),
  });
}

/** A running `ferry server` process, ready (GET /readyz answered 200). */
export interface FerryServer {
  /** "http://127.0.0.1:PORT" */
  url: string;
  port: number;
  process: ChildProcess;
  /** Milliseconds from spawn until GET /readyz first answered 200. */
  readyAfterMs: number;
  /** What the server printed so far (its JSON log lines). */
  stdout(): string;
  /** What the server printed so far on stderr (e.g. a generated admin key). */
  stderr(): string;
  /** SIGTERM, then the exit code (SIGKILL after 10 s if it hangs); at once if the process has ended. */
  stop(): Promise<number | null>;
}

interface FerryServerOptions {
  dataDir: string;
  env: NodeJS.ProcessEnv;
  /** More `ferry server` arguments, e.g. ["--db", url]. */
  extraArgs?: string[];
  /** The port to listen on (a restart takes the one of the server it replaces); default a free one. */
  port?: number;
}

/** What one test file creates: temp directories and servers, tracked so that `cleanUp` removes them all. */
export interface TrackedResources {
  /** A new empty directory under the OS's temp directory. */
  makeTemporaryDirectory(): Promise<string>;
  /** Starts `ferry server` on 127.0.0.1 and waits (20 s at most) until it is ready. */
  startFerryServer(options: FerryServerOptions): Promise<FerryServer>;
  /**
   * How most tests begin: a new temp directory as HOME and a server with its data in HOME/data
   * that creates `adminKey` as its admin key on first start, so the CLI can use that key at once.
   * `env`: more of the server's environment.
   */
  startServerInNewHome(
    adminKey: string,
    extraArgs?: string[],
    env?: Record<string, string>,
  ): Promise<{ home: string; server: FerryServer }>;
  /** Stops every server still running, then removes every temp directory. */
  cleanUp(): Promise<void>;
}

/**
 * Temp directories and servers for one test file, which calls `cleanUp` in its afterAll: a
 * failing test or hook then leaves no process running and nothing in the temp directory.
 * `prefix` names the directories after the file, e.g. "ferry-cli-e2e-".
 */
export function trackedResources(prefix: string): TrackedResources {
  const temporaryDirectories: string[] = [];
  const runningServers = new Set<FerryServer>();

  async function makeTemporaryDirectory(): Promise<string> {
    const directory = await mkdtemp(join(tmpdir(), prefix));
    temporaryDirectories.push(directory);
    return directory;
  }

  async function startFerryServer(options: FerryServerOptions): Promise<FerryServer> {
    const port = options.port ?? (await freePort());
    const started = Date.now();
    const child = spawn(
      FERRY,
      [
        "server",
        "--host",
        "127.0.0.1",
        "--port",
        String(port),
        "--data-dir",
        options.dataDir,
        ...(options.extraArgs ?? []),
      ],
      { env: options.env, stdio: ["ignore", "pipe", "pipe"] },
    );
    let stdout = "";
    let stderr = "";
    child.stdout.setEncoding("utf8").on("data", (chunk: string) => {
      stdout = (stdout + chunk).slice(-SERVER_OUTPUT_CHARS);
    });
    child.stderr.setEncoding("utf8").on("data", (chunk: string) => {
      stderr = (stderr + chunk).slice(-SERVER_OUTPUT_CHARS);
    });
    const exited = new Promise<number | null>((resolve) => child.once("exit", (code) => resolve(code)));
    const url = `http://127.0.0.1:${port}`;
    const server: FerryServer = {
      url,
      port,
      process: child,
      readyAfterMs: 0,
      stdout: () => stdout,
      stderr: () => stderr,
      stop: async () => {
        if (child.exitCode === null && child.signalCode === null) {
          child.kill("SIGTERM");
          const killer = setTimeout(() => child.kill("SIGKILL"), 10_000);
          await exited;
          clearTimeout(killer);
        }
        runningServers.delete(server);
        return child.exitCode;
      },
    };
    runningServers.add(server);

    // Generous: a loaded CI machine has taken over 20 s to start one (a stuck start still fails here).
    const deadline = started + 60_000;
    for (;;) {
      if (child.exitCode !== null || child.signalCode !== null) {
        runningServers.delete(server);
        throw new Error(
          `ferry server exited with ${child.exitCode ?? child.signalCode} before it was ready:\n${stderr}`,
        );
      }
      try {
        const response = await fetch(`${url}/readyz`, { signal: AbortSignal.timeout(1_000) });
        await response.body?.cancel();
        if (response.status === 200) break;
      } catch {
        // Not listening yet.
      }
      if (Date.now() > deadline) {
        await server.stop();
        throw new Error(`ferry server at ${url} was not ready within 60 s:\n${stderr}`);
      }
      await sleep(20);
    }
    server.readyAfterMs = Date.now() - started;
    return server;
  }

  async function startServerInNewHome(
    adminKey: string,
    extraArgs: string[] = [],
    env: Record<string, string> = {},
  ): Promise<{ home: string; server: FerryServer }> {
    const home = await makeTemporaryDirectory();
    const server = await startFerryServer({
      dataDir: join(home, "data"),
      env: isolatedEnv(home, { FERRY_ADMIN_API_KEY: adminKey, ...env }),
      extraArgs,
    });
    return { home, server };
  }

  async function cleanUp(): Promise<void> {
    await Promise.all([...runningServers].map((server) => server.stop()));
    await Promise.all(
      temporaryDirectories.splice(0).map((directory) => rm(directory, { recursive: true, force: true })),
    );
  }

  return { makeTemporaryDirectory, startFerryServer, startServerInNewHome, cleanUp };
}
