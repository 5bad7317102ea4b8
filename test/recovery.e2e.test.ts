import { type ChildProcess, spawn } from "node:child_process";
import { randomBytes } from "node:crypto";
import { mkdtempSync, readdirSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { dirname, join } from "node:path";
import { setTimeout as sleep } from "node:timers/promises";
import { fileURLToPath } from "node:url";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { freePort } from "./helpers/registry.js";
import { startTestServer, type TestServer } from "./helpers/server.js";

const FERRY = join(dirname(fileURLToPath(import.meta.url)), "..", "bin", "ferry");

/** Processes whose environment carries FERRY_TASK_ID=<taskId>: what a task's script started. */
function processesOfTask(taskId: string): number[] {
  const found: number[] = [];
  for (const entry of readdirSync("/proc")) {
    if (!/^\d+$/.test(entry)) continue;
    try {
      const environment = readFileSync(`/proc/${entry}/environ`, "latin1");
      if (environment.split("\0").includes(`FERRY_TASK_ID=${taskId}`)) found.push(Number(entry));
    } catch {
      // exited meanwhile
    }
  }
  return found;
}

describe("a server killed with SIGKILL during a deployment (real process, SQLite)", () => {
  const dataDir = mkdtempSync(join(tmpdir(), "ferry-recovery-"));
  const apiKey = `ferry_${randomBytes(24).toString("base64url")}`;
  let port = 0;
  let server: ChildProcess | undefined;

  const start = async () => {
    server = spawn(FERRY, ["server", "--port", String(port), "--data-dir", dataDir], {
      env: { PATH: process.env.PATH, HOME: dataDir, FERRY_ADMIN_API_KEY: apiKey, FERRY_TASK_LEASE_SECONDS: "2" },
      stdio: "ignore",
    });
    for (let attempt = 0; attempt < 200; attempt++) {
      const ready = await fetch(`http://127.0.0.1:${port}/readyz`).catch(() => undefined);
      if (ready?.ok) return;
      await sleep(25);
    }
    throw new Error("server did not become ready");
  };
  const call = async <T = Record<string, unknown>>(method: string, path: string, body?: unknown) => {
    const response = await fetch(`http://127.0.0.1:${port}${path}`, {
      method,
      headers: { authorization: `Bearer ${apiKey}`, ...(body !== undefined && { "content-type": "application/json" }) },
      ...(body !== undefined && { body: JSON.stringify(body) }),
    });
    return { status: response.status, body: (await response.json()) as T };
  };
  const waitFor = async (taskId: string, states: string[], timeoutMs = 20_000) => {
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      const { body } = await call<{ state: string; error: string | null }>("GET", `/api/v1/tasks/${taskId}`);
      if (states.includes(body.state)) return body;
      if (Date.now() > deadline) throw new Error(`task ${taskId} is ${body.state}, wanted ${states.join("/")}`);
      await sleep(50);
    }
  };

  beforeAll(async () => {
    port = await freePort();
    await start();
    await call("POST", "/api/v1/environments", { name: "dev" });
    await call("POST", "/api/v1/lifecycles", { name: "one", phases: [{ environments: ["dev"] }] });
    await call("POST", "/api/v1/projects", { name: "app", lifecycle: "one" });
  });
  afterAll(async () => {
    server?.kill("SIGKILL");
    rmSync(dataDir, { recursive: true, force: true });
  });

  it("marks the task interrupted within a lease, kills what it started, frees the lock", async () => {
    await call("PUT", "/api/v1/projects/app/process", {
      steps: [{ name: "slow", kind: "script", config: { script: "echo started; sleep 120" } }],
    });
    await call("POST", "/api/v1/projects/app/releases", { version: "1.0.0" });
    const queued = await call<{ taskId: string }>("POST", "/api/v1/projects/app/deployments", {
      release: "1.0.0",
      environment: "dev",
    });
    const taskId = queued.body.taskId;
    for (let attempt = 0; processesOfTask(taskId).length === 0; attempt++) {
      if (attempt > 200) throw new Error("the script never started");
      await sleep(25);
    }

    server?.kill("SIGKILL");
    await new Promise((resolve) => server?.once("exit", resolve));
    expect(processesOfTask(taskId).length).toBeGreaterThan(0); // orphaned by the crash

    const restarted = Date.now();
    await start();
    const task = await waitFor(taskId, ["interrupted"], 10_000);
    console.log(`interrupted ${Date.now() - restarted} ms after the restart (lease 2 s)`);
    expect(task.error).toMatch(/server running this task stopped/);
    const log = await call<{ lines: { text: string }[] }>("GET", `/api/v1/tasks/${taskId}/log`);
    expect(log.body.lines.map((line) => line.text).join("\n")).toMatch(
      /task interrupted: the server running it stopped/,
    );
    expect(processesOfTask(taskId)).toEqual([]);

    await call("PUT", "/api/v1/projects/app/process", {
      steps: [{ name: "quick", kind: "script", config: { script: "echo fine" } }],
    });
    await call("POST", "/api/v1/projects/app/releases", { version: "1.0.1" });
    const next = await call<{ taskId: string }>("POST", "/api/v1/projects/app/deployments", {
      release: "1.0.1",
      environment: "dev",
    });
    const finished = await waitFor(next.body.taskId, ["succeeded", "failed"]).catch(async (error) => {
      const lines = await call<{ lines: { text: string }[] }>("GET", `/api/v1/tasks/${next.body.taskId}/log`);
      throw new Error(`${error}: ${lines.body.lines.map((line) => line.text).join(" | ")}`);
    });
    expect(finished.state).toBe("succeeded");
  });
});

describe("concurrent deploy requests to one environment", () => {
  let test: TestServer;

  beforeAll(async () => {
    test = await startTestServer();
    await test.call("POST", "/api/v1/environments", { name: "prod" });
    await test.call("POST", "/api/v1/lifecycles", { name: "one", phases: [{ environments: ["prod"] }] });
    await test.call("POST", "/api/v1/projects", { name: "shop", lifecycle: "one" });
    await test.call("PUT", "/api/v1/projects/shop/process", {
      steps: [{ name: "work", kind: "script", config: { script: "sleep 0.05" } }],
    });
    for (let index = 0; index < 20; index++) {
      await test.call("POST", "/api/v1/projects/shop/releases", { version: `1.0.${index}` });
    }
  });
  afterAll(async () => {
    await test?.close();
  });

  it("runs 20 at once one at a time, in the order they were queued", async () => {
    const responses = await Promise.all(
      Array.from({ length: 20 }, (_, index) =>
        test.call<{ taskId: string }>("POST", "/api/v1/projects/shop/deployments", {
          release: `1.0.${index}`,
          environment: "prod",
        }),
      ),
    );
    expect(responses.every((response) => response.status === 201)).toBe(true);
    for (const response of responses) expect((await test.waitForTask(response.body.taskId)).state).toBe("succeeded");
    // The task list is newest-queued first; reversed, it is queue order.
    const { body } = await test.call<{ items: { startedAt: string; finishedAt: string }[] }>(
      "GET",
      "/api/v1/tasks?limit=20",
    );
    const inQueueOrder = [...body.items].reverse();
    for (const [index, task] of inQueueOrder.entries()) {
      const previous = inQueueOrder[index - 1];
      if (previous) expect(task.startedAt >= previous.finishedAt, `task ${index} overlapped the one before`).toBe(true);
    }
  });
});
