import { randomBytes } from "node:crypto";
import { readdirSync, readFileSync } from "node:fs";
import { setTimeout as sleep } from "node:timers/promises";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { localDocker } from "../src/runtimes/docker.js";
import { apiRequest, type FerryServer, isolatedEnv, testAdminKey, trackedResources } from "./helpers/cli.js";
import { buildDemoImage, type DemoImage } from "./helpers/images.js";
import { freePort, startRegistry, type TestRegistry } from "./helpers/registry.js";
import { startTestServer, type TestServer } from "./helpers/server.js";

const { makeTemporaryDirectory, startFerryServer, cleanUp } = trackedResources("ferry-recovery-");

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

/** Names of the containers Docker has labelled with the task. */
async function containersOfTask(taskId: string): Promise<string[]> {
  const containers = await localDocker().listByLabel("ferry.task", taskId);
  return containers.map((container) => container.name);
}

async function removeTaskContainersByName(name: string): Promise<void> {
  await localDocker()
    .stopAndRemove(name)
    .catch(() => {});
}

describe("a server killed with SIGKILL during a deployment (real processes, Docker, SQLite)", () => {
  const apiKey = testAdminKey();
  const suffix = randomBytes(4).toString("hex");
  const containerName = `ferry-recovery-${suffix}`;
  let registry: TestRegistry | undefined;
  let image: DemoImage;
  let dataDir = "";
  let port = 0;
  let server: FerryServer | undefined;

  /** The server on the same port and data directory each time: a restart finds what the killed one left. */
  const start = async () => {
    server = await startFerryServer({
      dataDir,
      env: isolatedEnv(dataDir, { FERRY_ADMIN_API_KEY: apiKey, FERRY_TASK_LEASE_SECONDS: "2" }),
      port,
    });
  };
  const call = async <T = Record<string, unknown>>(method: string, path: string, body?: unknown) => {
    const response = await apiRequest(`http://127.0.0.1:${port}${path}`, apiKey, method, body);
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
    registry = await startRegistry();
    image = await buildDemoImage({ registryUrl: registry.url, repository: `recovery/app-${suffix}`, version: "1.0.0" });
    dataDir = await makeTemporaryDirectory();
    port = await freePort();
    await start();
    await call("POST", "/api/v1/environments", { name: "dev" });
    await call("POST", "/api/v1/lifecycles", { name: "one", phases: [{ environments: ["dev"] }] });
    await call("POST", "/api/v1/projects", { name: "app", lifecycle: "one" });
  });
  afterAll(async () => {
    server?.process.kill("SIGKILL");
    await removeTaskContainersByName(containerName);
    await registry?.stop();
    await cleanUp();
  });

  it("marks the task interrupted within a lease, kills what it started, frees the lock", async () => {
    // A container (the new version) and then a slow script: the crash comes after the
    // container started, so the restart must find and remove it as well.
    await call("PUT", "/api/v1/projects/app/process", {
      steps: [
        {
          name: "web",
          kind: "container",
          config: { image: image.reference, name: containerName, ports: [{ container: 8080 }], settleSeconds: 0.5 },
        },
        { name: "slow", kind: "script", config: { script: "echo started; sleep 120" } },
      ],
    });
    await call("POST", "/api/v1/projects/app/releases", { version: "1.0.0" });
    const queued = await call<{ taskId: string }>("POST", "/api/v1/projects/app/deployments", {
      release: "1.0.0",
      environment: "dev",
    });
    const taskId = queued.body.taskId;
    for (let attempt = 0; processesOfTask(taskId).length === 0; attempt++) {
      // The container step comes first (pull, start, settle): on a busy machine that takes a while.
      if (attempt > 1200) throw new Error("the script never started");
      await sleep(25);
    }

    server?.process.kill("SIGKILL");
    await new Promise((resolve) => server?.process.once("exit", resolve));
    expect(processesOfTask(taskId).length).toBeGreaterThan(0); // orphaned by the crash
    expect(await containersOfTask(taskId)).toEqual([containerName]);

    const restarted = Date.now();
    await start();
    const task = await waitFor(taskId, ["interrupted"], 10_000);
    console.log(`interrupted ${Date.now() - restarted} ms after the restart (lease 2 s)`);
    expect(task.error).toMatch(/server running this task stopped/);
    // Clean-up runs right after the task is marked interrupted; its last line says when it is done.
    let log = await call<{ lines: { text: string }[] }>("GET", `/api/v1/tasks/${taskId}/log`);
    for (
      let attempt = 0;
      !log.body.lines.some((line) => line.text.includes("clean-up after the interruption finished"));
      attempt++
    ) {
      if (attempt > 200) throw new Error("clean-up never finished");
      await sleep(50);
      log = await call<{ lines: { text: string }[] }>("GET", `/api/v1/tasks/${taskId}/log`);
    }
    expect(log.body.lines.map((line) => line.text).join("\n")).toMatch(
      /task interrupted: the server running it stopped/,
    );
    // SIGKILL is delivered asynchronously: give the killed group a moment to disappear.
    for (let attempt = 0; processesOfTask(taskId).length > 0 && attempt < 40; attempt++) await sleep(50);
    expect(processesOfTask(taskId)).toEqual([]);
    expect(await containersOfTask(taskId)).toEqual([]);

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
