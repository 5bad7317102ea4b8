import { mkdtemp, readFile, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { setTimeout as sleep } from "node:timers/promises";
import { ApiClient } from "../cli/client.js";
import { isTerminal, type Task, type TaskLogLine, type TaskState } from "../domain/tasks.js";
import type { DeploymentCreated } from "../engine/deploymentRequests.js";
import { generateApiKey } from "../security/apiKeys.js";
import type { OutboundPolicy } from "../security/outboundGuard.js";
import { type RunningServer, startServer } from "./start.js";

/*
 * `ferry run` (issue 15 part 5, ADR 0046): the server's own parts — store, task engine,
 * steps, transports, runtimes, router and API routes — started in this process on a
 * throw-away data directory with SQLite, with no HTTP listener and no background work.
 * Requests (the ferry.yml's apply, the release, the deployment, the log) are the API's own
 * routes answered through Fastify's inject(), with an admin key that exists only here.
 */

export interface LocalRunOptions {
  /** Outbound calls the run may make (feeds, http steps): FERRY_OUTBOUND_ALLOW and loopback. */
  outbound: OutboundPolicy;
  /** Where the builtin proxy serves routed steps ("127.0.0.1:8000"). */
  proxyListen: string;
  runAs?: string | undefined;
  runAsUids?: string | undefined;
  workDir?: string | undefined;
  logLevel: string;
}

/** A running embedded server and the client that talks to it. */
export interface LocalRun {
  client: ApiClient;
  dataDir: string;
  server: RunningServer;
  /**
   * Ends the run. Unless `keep`, first removes what the task started on this host
   * (containers and processes labelled ferry.task=<task>) and stops the proxy the run
   * started; then the engine stops and, unless `keep`, the data directory is removed.
   */
  close(options: { keep: boolean; taskIds: readonly string[] }): Promise<string[]>;
}

/** An API client answered by the embedded server's routes, in this process. */
class InjectClient extends ApiClient {
  constructor(
    private readonly server: RunningServer,
    private readonly runKey: string,
  ) {
    super("http://ferry-run.invalid", undefined);
  }

  protected override async send(method: string, path: string, body: unknown, _timeoutMs: number) {
    const response = await this.server.app.inject({
      method: method as "GET",
      url: path,
      remoteAddress: "127.0.0.1",
      headers: {
        accept: "application/json, application/problem+json",
        authorization: `Bearer ${this.runKey}`,
        ...(body !== undefined && { "content-type": "application/json" }),
      },
      ...(body !== undefined && { payload: JSON.stringify(body) }),
    });
    return { status: response.statusCode, text: response.body };
  }
}

export async function startLocalRun(options: LocalRunOptions): Promise<LocalRun> {
  // 0700: the master key of the run and its SQLite file are in it.
  const dataDir = await mkdtemp(join(tmpdir(), "ferry-run-"));
  const apiKey = generateApiKey();
  let server: RunningServer;
  try {
    server = await startServer({
      embedded: true,
      port: 0,
      host: "127.0.0.1",
      dataDir,
      adminApiKey: apiKey,
      announce: () => {},
      logLevel: options.logLevel,
      outbound: options.outbound,
      runAs: options.runAs,
      runAsUids: options.runAsUids,
      workDir: options.workDir,
      traffic: { driver: "builtin", proxy: { stateDir: join(dataDir, "proxy"), listen: options.proxyListen } },
    });
  } catch (error) {
    await rm(dataDir, { recursive: true, force: true });
    throw error;
  }
  const client = new InjectClient(server, apiKey);
  return {
    client,
    dataDir,
    server,
    close: async ({ keep, taskIds }) => {
      const notes: string[] = [];
      if (!keep) notes.push(...(await removeWhatTasksStarted(server, taskIds)));
      await server.close();
      if (!keep) {
        notes.push(...(await stopProxy(join(dataDir, "proxy"))));
        await rm(dataDir, { recursive: true, force: true });
        // Run as root, steps work in a directory of their own outside the (0700) data
        // directory; it is the run's own unless FERRY_WORK_DIR named one.
        if (options.workDir === undefined) await rm(server.deployments.workRoot, { recursive: true, force: true });
      }
      return notes;
    },
  };
}

/** Containers and processes a task started on this host, removed whether live or not: the run is over. */
async function removeWhatTasksStarted(server: RunningServer, taskIds: readonly string[]): Promise<string[]> {
  // No target info: the host this process runs on.
  const host = server.deployments.target?.(undefined);
  if (!host) return [];
  const notes: string[] = [];
  for (const taskId of taskIds) {
    await host.transport.killTaskProcesses(taskId).catch(() => 0);
    for (const runtime of host.runtimes()) {
      const removed = await runtime.removeByLabel("ferry.task", taskId).catch((error: unknown) => {
        notes.push(`could not remove the run's ${runtime.kind} instances: ${(error as Error).message}`);
        return [] as string[];
      });
      if (removed.length > 0) notes.push(`removed ${removed.join(", ")}`);
    }
  }
  return notes;
}

/** The builtin proxy the run started (its pid in proxy.pid), stopped: SIGTERM, then waited for. */
async function stopProxy(stateDir: string): Promise<string[]> {
  let pid: number;
  try {
    pid = Number((await readFile(join(stateDir, "proxy.pid"), "utf8")).trim());
  } catch {
    return [];
  }
  if (!Number.isInteger(pid) || pid <= 1) return [];
  try {
    process.kill(pid, "SIGTERM");
  } catch {
    return [];
  }
  // It finishes in-flight requests first (a few seconds at most), then exits.
  for (let waited = 0; waited < 15_000; waited += 100) {
    try {
      process.kill(pid, 0);
    } catch {
      return [`stopped ferry proxy (pid ${pid})`];
    }
    await sleep(100);
  }
  process.kill(pid, "SIGKILL");
  return [`killed ferry proxy (pid ${pid}): it did not stop within 15 s`];
}

/** How a followed task ended: its state and error, and its last lines (for the failure report). */
export interface FollowedTask {
  state: TaskState;
  error: string | null;
  lastLines: TaskLogLine[];
}

const LAST_LINES = 20;

/**
 * Follows a task's log through the plain log endpoint (no stream: there is no connection to
 * hold) until the task ends, calling `onLine` once per line in order. `onWaiting` is called
 * when the task waits for a person (an approval, guided failure), which nobody can give here.
 */
export async function followTask(
  client: ApiClient,
  created: DeploymentCreated,
  onLine: (line: TaskLogLine) => void,
  onWaiting: (task: Task) => Promise<void>,
): Promise<FollowedTask> {
  const lastLines: TaskLogLine[] = [];
  let after = 0;
  let waitingSeen = false;
  for (;;) {
    const page = await client.get<{ state: TaskState; lines: TaskLogLine[]; next: number | null }>(
      `/api/v1/tasks/${encodeURIComponent(created.taskId)}/log?after=${after}`,
    );
    for (const line of page.lines) {
      after = line.line;
      lastLines.push(line);
      if (lastLines.length > LAST_LINES) lastLines.shift();
      onLine(line);
    }
    if (page.next !== null) continue;
    if (isTerminal(page.state)) break;
    if (page.state === "waiting" && !waitingSeen) {
      waitingSeen = true;
      await onWaiting(await client.get<Task>(`/api/v1/tasks/${encodeURIComponent(created.taskId)}`));
    }
    await sleep(100);
  }
  const task = await client.get<Task>(`/api/v1/tasks/${encodeURIComponent(created.taskId)}`);
  return { state: task.state, error: task.error, lastLines };
}
