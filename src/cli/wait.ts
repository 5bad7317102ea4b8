import { setTimeout as sleep } from "node:timers/promises";
import { isTerminal, type Task, type TaskLogLine, type TaskState } from "../domain/tasks.js";
import { escapeControlCharacters } from "../domain/text.js";
import type { DeploymentCreated } from "../engine/deploymentRequests.js";
import { type ApiClient, segment } from "./client.js";
import { OperationError } from "./errors.js";
import { printJson, writeOutput } from "./output.js";
import { ServerSentEventParser } from "./serverSentEventParser.js";

/** What the API answers when it queues a deployment (deploy, promote, rollback, auto-deploy). */
export type { DeploymentCreated };

/** How a deployment ended: what `--wait --json` prints. */
interface DeploymentOutcome extends DeploymentCreated {
  state: TaskState;
  error: string | null;
}

interface WaitedDeployment {
  outcome: DeploymentOutcome;
  /** The last log lines, for the failure report. */
  lastLines: TaskLogLine[];
}

/** Options of every command that can queue a deployment. */
export interface WaitOptions {
  wait?: boolean;
  json?: boolean;
}

const FAILURE_LOG_LINES = 20;
/**
 * How long the log stream may stay silent (no response headers, no bytes) before the
 * plain log endpoint is asked instead. Silence alone proves nothing: the server sends
 * nothing while a step is quiet, and sends no headers before the first line.
 */
const QUIET_MS = 15_000;
/** Consecutive failed attempts before giving up (backoff 0.25 s doubling to 5 s: about a minute). */
const MAX_STREAM_FAILURES = 15;

/** The answer of GET /api/v1/tasks/:id/log. */
export interface LogPage {
  state: TaskState;
  lines: TaskLogLine[];
  /** More lines are stored: ask with after=next (a page is capped in lines and in bytes); null at the end. */
  next: number | null;
}

/**
 * `HH:MM:SS [step] text`, in local time. A script writes what it likes into a log line: its
 * control characters (a CR that rewrites the line, an ESC sequence, a newline that would
 * start a forged line) are shown as escapes, so one log line prints as one line.
 */
export function formatLogLine(line: TaskLogLine): string {
  const at = new Date(line.at);
  const time = [at.getHours(), at.getMinutes(), at.getSeconds()].map((part) => String(part).padStart(2, "0")).join(":");
  return `${time}${line.step ? ` [${escapeControlCharacters(line.step)}]` : ""} ${escapeControlCharacters(line.text)}`;
}

/**
 * Follows a task's log from the start until the task ends, calling `onLine` once per line,
 * and returns the state it ended in. The log is a Server-Sent Events stream; when the
 * connection drops before the `end` event, it is reopened after the last line received
 * (`?after=<id>`), so no line is lost or repeated.
 */
export async function followTaskLog(
  client: ApiClient,
  taskId: string,
  onLine: (line: TaskLogLine) => void,
): Promise<TaskState> {
  let after = 0;
  let failures = 0;
  let lastProblem = "";
  // Lines are numbered in order; the stream and the plain endpoint may both deliver one.
  const take = (line: TaskLogLine, id = line.line) => {
    if (id <= after) return;
    after = id;
    failures = 0;
    onLine(line);
  };
  for (;;) {
    let result: StreamResult | undefined;
    try {
      result = await readLogStream(client, taskId, after, take);
    } catch (error) {
      lastProblem = (error as Error).message;
    }
    if (result?.kind === "ended") return result.state;
    // 4xx (no such task, a bad key) will not get better by asking again.
    if (result?.kind === "refused") throw result.problem;
    if (result?.kind === "closed") lastProblem = "the server closed the log stream before the task ended";
    if (result?.kind === "quiet") {
      // A quiet step or a dead connection: the plain endpoint tells which, and catches up.
      try {
        const page = await client.get<LogPage>(`/api/v1/tasks/${segment(taskId)}/log?after=${after}`);
        for (const line of page.lines) take(line);
        if (isTerminal(page.state) && page.next === null) return page.state;
        failures = 0;
        continue;
      } catch (error) {
        lastProblem = (error as Error).message;
      }
    }
    failures += 1;
    if (failures >= MAX_STREAM_FAILURES) {
      throw new OperationError(
        `lost the log of task ${taskId} at ${client.baseUrl} (${lastProblem}); the task may still be running: see 'ferry task show ${taskId}'`,
      );
    }
    await sleep(Math.min(250 * 2 ** (failures - 1), 5_000));
  }
}

type StreamResult =
  | { kind: "ended"; state: TaskState }
  | { kind: "refused"; problem: OperationError }
  | { kind: "quiet" }
  | { kind: "closed" };

/** One connection to the log stream, read until `end`, a close, an error or QUIET_MS of silence. */
async function readLogStream(
  client: ApiClient,
  taskId: string,
  after: number,
  onLine: (line: TaskLogLine, id: number) => void,
): Promise<StreamResult> {
  const controller = new AbortController();
  let quiet = false;
  let timer: NodeJS.Timeout | undefined;
  const restartQuietTimer = () => {
    clearTimeout(timer);
    timer = setTimeout(() => {
      quiet = true;
      controller.abort();
    }, QUIET_MS);
  };
  restartQuietTimer();
  try {
    const response = await fetch(
      new URL(`/api/v1/tasks/${segment(taskId)}/log?follow=1&after=${after}`, client.baseUrl),
      {
        headers: { accept: "text/event-stream, application/problem+json", ...client.authorization() },
        signal: controller.signal,
      },
    );
    if (response.status >= 400 && response.status < 500) return { kind: "refused", problem: await problemOf(response) };
    if (!response.ok || !response.body) throw new Error(`HTTP ${response.status} from the log stream`);
    const parser = new ServerSentEventParser();
    const decoder = new TextDecoder();
    for await (const chunk of response.body) {
      restartQuietTimer();
      for (const event of parser.push(decoder.decode(chunk, { stream: true }))) {
        if (event.event === "line") {
          const line = JSON.parse(event.data) as TaskLogLine;
          onLine(line, event.id === undefined ? line.line : Number(event.id));
        } else if (event.event === "end") {
          return { kind: "ended", state: (JSON.parse(event.data) as { state: TaskState }).state };
        }
      }
    }
    return { kind: "closed" };
  } catch (error) {
    if (quiet) return { kind: "quiet" };
    throw error;
  } finally {
    clearTimeout(timer);
    controller.abort();
  }
}

async function problemOf(response: Response): Promise<OperationError> {
  const problem = (await response.json().catch(() => ({}))) as { title?: string; detail?: string };
  return new OperationError(
    `${problem.title ?? `HTTP ${response.status}`}: ${problem.detail ?? "the server refused the log stream"}`,
  );
}

/**
 * Follows a deployment's task to its end. Unless `json`, its log is printed as it comes;
 * either way the last lines are kept for a failure report.
 */
async function waitForDeployment(
  client: ApiClient,
  deployment: DeploymentCreated,
  json: boolean,
): Promise<WaitedDeployment> {
  const lastLines: TaskLogLine[] = [];
  await followTaskLog(client, deployment.taskId, (line) => {
    lastLines.push(line);
    if (lastLines.length > FAILURE_LOG_LINES) lastLines.shift();
    if (!json) writeOutput(`${formatLogLine(line)}\n`);
  });
  const task = await client.get<Task>(`/api/v1/tasks/${segment(deployment.taskId)}`);
  return { outcome: { ...deployment, state: task.state, error: task.error }, lastLines };
}

/** Follows each deployment in turn (each from its first log line) and returns how they ended. */
export async function waitForDeployments(
  client: ApiClient,
  deployments: readonly DeploymentCreated[],
  json: boolean,
): Promise<WaitedDeployment[]> {
  const waited: WaitedDeployment[] = [];
  for (const deployment of deployments) {
    if (!json) writeOutput(`${describeDeployment(deployment)}: following task ${deployment.taskId}\n`);
    waited.push(await waitForDeployment(client, deployment, json));
  }
  return waited;
}

/** Exit 1 when any deployment did not succeed, with its error and last log lines on stderr. */
export function failUnlessSucceeded(waited: readonly WaitedDeployment[]): void {
  const failed = waited.filter(({ outcome }) => outcome.state !== "succeeded");
  if (failed.length === 0) return;
  const details = failed.flatMap(({ outcome, lastLines }) => [
    `${describeDeployment(outcome)} ${describeEnd(outcome.state)}${outcome.error ? `: ${outcome.error}` : ""}`,
    `last ${lastLines.length} log lines of task ${outcome.taskId}:`,
    ...lastLines.map((line) => `  ${formatLogLine(line)}`),
  ]);
  const message =
    failed.length === 1 ? "the deployment did not succeed" : `${failed.length} deployments did not succeed`;
  throw new OperationError(message, details);
}

function describeEnd(state: TaskState): string {
  switch (state) {
    case "succeeded":
      return "succeeded";
    case "failed":
      return "failed";
    case "cancelled":
      return "was cancelled";
    case "interrupted":
      return "was interrupted";
    case "queued":
    case "running":
    case "waiting":
      // The stream ends only for ended tasks; this guards a server that says otherwise.
      return `stopped being followed while ${state}`;
    default: {
      const unknown: never = state;
      return `ended in state ${String(unknown)}`;
    }
  }
}

function describeDeployment(deployment: DeploymentCreated): string {
  return `${deployment.project} ${deployment.release} → ${deployment.environment}`;
}

/**
 * What deploy, promote and rollback do with the deployment the server queued: print it,
 * or with --wait follow it to its end (exit 1 unless it succeeded).
 */
export async function reportDeployment(
  client: ApiClient,
  deployment: DeploymentCreated,
  options: WaitOptions,
): Promise<void> {
  const json = options.json === true;
  if (!options.wait) {
    if (json) printJson(deployment);
    else writeOutput(`${queuedLine(deployment)}\n`);
    return;
  }
  const waited = await waitForDeployments(client, [deployment], json);
  const outcome = waited[0]?.outcome;
  if (json) printJson(outcome);
  else if (outcome?.state === "succeeded") writeOutput(`${describeDeployment(deployment)}: succeeded\n`);
  failUnlessSucceeded(waited);
}

export function queuedLine(deployment: DeploymentCreated): string {
  return `queued ${describeDeployment(deployment)} as task ${deployment.taskId} (follow it: ferry task logs ${deployment.taskId} --follow)`;
}
