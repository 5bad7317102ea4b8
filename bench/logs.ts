import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { generateApiKey } from "../src/security/apiKeys.js";
import { startServer } from "../src/server/start.js";
import { numberFlag } from "./blueGreenBench.js";
import type { BenchmarkResult } from "./run.js";

const VIEWERS = 10;

/**
 * `logs [--lines N] [--viewers V]`: one deployment whose script step prints N lines as fast
 * as it can, while V (10) viewers follow its log over SSE (GET /api/v1/tasks/:id/log?follow=1). Lines per second
 * = N over the task's own run time (started → finished, as the server recorded it); a
 * viewer's lag = when its last line arrived minus when the task finished. Every viewer
 * must receive every line.
 */
export async function logs(): Promise<BenchmarkResult> {
  const lines = numberFlag("--lines", 200_000);
  const viewers = numberFlag("--viewers", VIEWERS);
  const dataDir = mkdtempSync(join(tmpdir(), "ferry-bench-logs-"));
  const apiKey = generateApiKey();
  const server = await startServer({
    port: 0,
    host: "127.0.0.1",
    dataDir,
    adminApiKey: apiKey,
    logLevel: "silent",
    announce: () => {},
  });
  const headers = { authorization: `Bearer ${apiKey}`, "content-type": "application/json" };
  const call = async (method: string, path: string, body?: unknown) => {
    const response = await fetch(new URL(path, server.url), {
      method,
      headers,
      ...(body !== undefined && { body: JSON.stringify(body) }),
    });
    return (await response.json()) as Record<string, unknown>;
  };
  try {
    await call("POST", "/api/v1/environments", { name: "dev" });
    await call("POST", "/api/v1/lifecycles", { name: "logs", phases: [{ environments: ["dev"] }] });
    await call("POST", "/api/v1/projects", { name: "chatty", lifecycle: "logs" });
    await call("PUT", "/api/v1/projects/chatty/process", {
      steps: [
        {
          name: "print",
          kind: "script",
          // Lines like an application's log: a number and some text.
          config: { script: `seq -f 'log line %g of a chatty deployment' 1 ${lines}` },
        },
      ],
    });
    await call("POST", "/api/v1/projects/chatty/releases", { version: "1.0.0" });
    const created = await call("POST", "/api/v1/projects/chatty/deployments", { release: "1.0.0", environment: "dev" });
    const taskId = String(created.taskId);
    const followers = Array.from({ length: viewers }, () =>
      follow(new URL(`/api/v1/tasks/${taskId}/log?follow=1`, server.url), apiKey),
    );
    const results = await Promise.all(followers);
    const task = await call("GET", `/api/v1/tasks/${taskId}`);
    if (task.state !== "succeeded") throw new Error(`the logging task ${String(task.state)}`);
    const runSeconds = (Date.parse(String(task.finishedAt)) - Date.parse(String(task.startedAt))) / 1000;
    const perSecond = lines / runSeconds;
    const finishedAt = Date.parse(String(task.finishedAt));
    const lags = results.map((result) => result.lastLineAt - finishedAt);
    const worstLag = Math.max(...lags);
    const complete = results.every((result) => result.scriptLines === lines);
    return {
      name: "logs",
      rows: [
        {
          figure: `log lines/s ingested for one task (${lines} lines) with ${viewers} SSE viewers`,
          goal: "≥ 50k/s",
          measured: `${Math.round(perSecond / 1000)}k/s`,
          met: perSecond >= 50_000,
        },
        {
          figure: "viewers' lag: last line received after the task finished (worst viewer)",
          goal: "-",
          measured: `${Math.max(0, worstLag)} ms`,
          met: undefined,
        },
        {
          figure: "every viewer received every line",
          goal: "yes",
          measured: complete ? "yes" : results.map((result) => result.scriptLines).join(", "),
          met: complete,
        },
      ],
      values: { lines_per_s: Math.round(perSecond), viewer_lag_ms: Math.max(0, worstLag), viewers, lines },
    };
  } finally {
    await server.close();
    rmSync(dataDir, { recursive: true, force: true });
  }
}

/** Follows an SSE log stream to its end; how many of the script's lines came and when the last did. */
async function follow(url: URL, apiKey: string): Promise<{ scriptLines: number; lastLineAt: number }> {
  const response = await fetch(url, { headers: { authorization: `Bearer ${apiKey}` } });
  if (!response.body) throw new Error("the log stream has no body");
  const decoder = new TextDecoder();
  let buffered = "";
  let scriptLines = 0;
  let lastLineAt = 0;
  for await (const chunk of response.body) {
    buffered += decoder.decode(chunk, { stream: true });
    let end = buffered.indexOf("\n\n");
    while (end !== -1) {
      const event = buffered.slice(0, end);
      buffered = buffered.slice(end + 2);
      if (event.includes("event: line") && event.includes("of a chatty deployment")) {
        scriptLines += 1;
        lastLineAt = Date.now();
      }
      end = buffered.indexOf("\n\n");
    }
  }
  return { scriptLines, lastLineAt };
}
