import { setTimeout as sleep } from "node:timers/promises";
import { pushTestImage, startRegistry } from "../test/helpers/registry.js";
import { startTestServer, type TestServer } from "../test/helpers/server.js";
import { numberFlag } from "./blueGreenBench.js";
import type { BenchmarkResult } from "./run.js";

/**
 * `trigger-latency [--rounds N]` (issue 15): the time from pushing a new tag to the dev
 * deployment's start — its task starting — by the registry's notification and by polling
 * (a trigger polling every 10 s), on a real server (SQLite) and a real docker-registry that
 * sends its own notifications. The push itself (manifest and blobs, timed by the client) is
 * printed beside it as the baseline: it is what a CI job waits for anyway.
 */

const POLL_SECONDS = 10;
const AUTH = { username: "bench", password: "trigger-latency-bench" };
const SECRET = "trigger-latency-secret-0123456789";

interface Round {
  pushMs: number;
  /** Push done → the deployment's task started. */
  toStartMs: number;
}

function median(values: number[]): number {
  const sorted = [...values].sort((a, b) => a - b);
  return sorted[Math.floor((sorted.length - 1) / 2)] ?? Number.NaN;
}

async function taskStartedFor(test: TestServer, version: string, timeoutMs: number): Promise<number> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const tasks = await test.call<{ items: { title: string; createdBy: string; startedAt: string | null }[] }>(
      "GET",
      "/api/v1/tasks?limit=20",
    );
    const task = tasks.body.items.find(
      (candidate) => candidate.createdBy.startsWith("trigger:") && candidate.title.includes(` ${version} `),
    );
    if (task?.startedAt) return Date.parse(task.startedAt);
    if (Date.now() > deadline) throw new Error(`release ${version}'s deployment did not start within ${timeoutMs} ms`);
    await sleep(20);
  }
}

/** The rounds, and (polling) how long after its creation a trigger's first poll ended. */
interface Measured {
  rounds: Round[];
  firstPollMs?: number;
}

async function measure(mode: "notification" | "poll", rounds: number): Promise<Measured> {
  const test = await startTestServer();
  let registry: Awaited<ReturnType<typeof startRegistry>> | undefined;
  let firstPollMs: number | undefined;
  try {
    await test.call("POST", "/api/v1/environments", { name: "dev" });
    await test.call("POST", "/api/v1/lifecycles", { name: "one", phases: [{ environments: ["dev"] }] });
    await test.call("POST", "/api/v1/projects", { name: "app", lifecycle: "one" });
    await test.call("POST", "/api/v1/feeds", { name: "local", url: "http://127.0.0.1:1", ...AUTH });
    await test.call("PUT", "/api/v1/projects/app/process", {
      images: [{ name: "web", feed: "local", repository: "bench/app" }],
      steps: [{ name: "noop", kind: "script", config: { script: "true" } }],
    });
    const createTrigger = async () => {
      const trigger = await test.call<{ id: string; hookPath: string }>("POST", "/api/v1/projects/app/triggers", {
        name: mode,
        image: "web",
        secret: SECRET,
        pollSeconds: mode === "poll" ? POLL_SECONDS : null,
      });
      if (trigger.status !== 201) throw new Error(`trigger: ${JSON.stringify(trigger.body)}`);
      return trigger.body;
    };
    if (mode === "notification") {
      // The registry's configuration names the hook, with the trigger's id: the trigger comes first.
      const trigger = await createTrigger();
      registry = await startRegistry({
        auth: AUTH,
        notify: { url: new URL(trigger.hookPath, test.server.url).href, authorization: `Bearer ${SECRET}` },
      });
      await test.call("PATCH", "/api/v1/feeds/local", { url: registry.url, ...AUTH });
    } else {
      // Polling: the trigger is created on a registry that answers, and polled at once (its
      // first poll notes what is there, the baseline): the poller plans again on a new trigger.
      registry = await startRegistry({ auth: AUTH });
      await test.call("PATCH", "/api/v1/feeds/local", { url: registry.url, ...AUTH });
      await pushTestImage(registry.url, "bench/app", "0.0.1", { content: "baseline", auth: AUTH });
      const created = Date.now();
      await createTrigger();
      for (;;) {
        const shown = await test.call<{ lastPolledAt: string | null; lastError: string | null }>(
          "GET",
          "/api/v1/projects/app/triggers/poll",
        );
        if (shown.body.lastError) throw new Error(`the first poll failed: ${shown.body.lastError}`);
        if (shown.body.lastPolledAt) break;
        await sleep(20);
      }
      firstPollMs = Date.now() - created;
      console.log(`   the new trigger's first poll (its baseline) ended ${firstPollMs} ms after it was created`);
    }
    const results: Round[] = [];
    for (let round = 1; round <= rounds; round++) {
      const version = `1.0.${round}`;
      const started = Date.now();
      await pushTestImage(registry.url, "bench/app", version, { content: `${mode} ${version}`, auth: AUTH });
      const pushed = Date.now();
      const taskStarted = await taskStartedFor(test, version, (POLL_SECONDS + 30) * 1000);
      results.push({ pushMs: pushed - started, toStartMs: Math.max(0, taskStarted - pushed) });
      console.log(
        `   ${mode} round ${round}: push ${pushed - started} ms, then ${taskStarted - pushed} ms to the deployment's start`,
      );
      // Let the deployment finish before the next push (one environment: the next would queue).
      await sleep(1_000);
    }
    return { rounds: results, ...(firstPollMs !== undefined && { firstPollMs }) };
  } finally {
    await registry?.stop();
    await test.close();
  }
}

export async function triggerLatency(): Promise<BenchmarkResult> {
  const rounds = numberFlag("--rounds", 5);
  console.log("-- by notification");
  const notified = (await measure("notification", rounds)).rounds;
  console.log(`-- by polling every ${POLL_SECONDS} s`);
  const polling = await measure("poll", rounds);
  const polled = polling.rounds;
  const pushMedian = median([...notified, ...polled].map((round) => round.pushMs));
  const row = (label: string, data: Round[]) => ({
    figure: `push → the dev deployment's start, ${label} (median of ${data.length}; max)`,
    goal: "(printed)",
    measured: `${median(data.map((round) => round.toStartMs))} ms; max ${Math.max(...data.map((round) => round.toStartMs))} ms`,
    baseline: `the push itself ${pushMedian} ms`,
    met: undefined,
  });
  return {
    name: "trigger-latency",
    rows: [
      row("by the registry's notification", notified),
      row(`by polling every ${POLL_SECONDS} s`, polled),
      {
        figure: "a new trigger created → its first poll ended (the poller plans again; no tick)",
        goal: "(printed)",
        measured: `${polling.firstPollMs ?? Number.NaN} ms`,
        baseline: "up to a 5 s tick before ADR 0069",
        met: undefined,
      },
    ],
    values: {
      rounds,
      push_ms: pushMedian,
      notification_ms: median(notified.map((round) => round.toStartMs)),
      notification_max_ms: Math.max(...notified.map((round) => round.toStartMs)),
      poll_interval_s: POLL_SECONDS,
      poll_ms: median(polled.map((round) => round.toStartMs)),
      poll_max_ms: Math.max(...polled.map((round) => round.toStartMs)),
      first_poll_ms: polling.firstPollMs ?? Number.NaN,
    },
  };
}
