import { randomBytes } from "node:crypto";
import { chmod } from "node:fs/promises";
import http from "node:http";
import { join } from "node:path";
import { setTimeout as sleep } from "node:timers/promises";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { ProcessRuntime } from "../src/runtimes/process.js";
import { ProxyAdminClient } from "../src/traffic/proxyClient.js";
import { readAdminToken } from "../src/traffic/proxyState.js";
import { type FerryServer, isolatedEnv, testAdminKey, trackedResources } from "./helpers/cli.js";
import { crashTestClient, TERMINAL } from "./helpers/crashClient.js";
import { type RunningLoad, startLoad } from "./helpers/load.js";
import { buildProcessApp, type ProcessApp } from "./helpers/processApp.js";
import { processAppStep } from "./helpers/processService.js";
import { type ProxyProcess, startProxyProcess } from "./helpers/proxy.js";
import { freePort } from "./helpers/registry.js";

const { makeTemporaryDirectory, startFerryServer, cleanUp } = trackedResources("ferry-process-crash-");

/**
 * As test/blueGreen.crash.e2e.test.ts does with containers: the Ferry server is killed with
 * SIGKILL at random moments of blue/green deployments of supervised processes while 16
 * keep-alive clients send requests through a real `ferry proxy`. Traffic must not notice,
 * and after each restart every task is terminal, the live colour's process runs and
 * answers, and what an interrupted deployment started but never switched to is gone.
 */
describe("kill -9 of the server during blue/green process deployments under load (real server, supervisors, ferry proxy)", () => {
  const apiKey = testAdminKey();
  const project = `pcrash-${randomBytes(3).toString("hex")}`;
  const host = `${project}.test`;
  let proxy: ProxyProcess | undefined;
  let app: ProcessApp | undefined;
  let dataDir = "";
  let workDir = "";
  let port = 0;
  let server: FerryServer | undefined;
  let load: RunningLoad | undefined;
  let processes: ProcessRuntime;

  const start = async () => {
    server = await startFerryServer({
      dataDir,
      env: isolatedEnv(dataDir, {
        FERRY_ADMIN_API_KEY: apiKey,
        FERRY_TASK_LEASE_SECONDS: "2",
        FERRY_PROXY_STATE_DIR: proxy?.stateDir ?? "",
        FERRY_WORK_DIR: workDir,
      }),
      port,
    });
  };
  const { call, waitForTerminal } = crashTestClient(() => port, apiKey);
  const deploy = async (version: string) => {
    expect((await call("POST", `/api/v1/projects/${project}/releases`, { version })).status).toBe(201);
    const created = await call<{ taskId: string }>("POST", `/api/v1/projects/${project}/deployments`, {
      release: version,
      environment: "prod",
    });
    expect(created.status).toBe(201);
    return created.body.taskId;
  };

  beforeAll(async () => {
    app = await buildProcessApp();
    proxy = await startProxyProcess();
    dataDir = await makeTemporaryDirectory();
    // Outside the data directory (0700): the account the app runs as passes through to its own directory.
    workDir = await makeTemporaryDirectory();
    await chmod(workDir, 0o711);
    processes = new ProcessRuntime({ directory: join(workDir, "processes") });
    port = await freePort();
    await start();
    await call("POST", "/api/v1/environments", { name: "prod" });
    await call("POST", "/api/v1/lifecycles", { name: "one", phases: [{ environments: ["prod"] }] });
    await call("POST", "/api/v1/projects", { name: project, lifecycle: "one" });
    await call("POST", `/api/v1/projects/${project}/variables`, { name: "AppDirectory", value: app.directory });
    await call("PUT", `/api/v1/projects/${project}/process`, {
      steps: [
        processAppStep(host, {
          blueGreen: { healthCheck: { path: "/health", intervalMs: 100 }, drainSeconds: 5 },
          settleSeconds: 0.3,
          stopTimeoutSeconds: 3,
        }),
      ],
    });
    const first = await deploy("0.0.1");
    expect(await waitForTerminal(first)).toBe("succeeded");
  }, 120_000);

  afterAll(async () => {
    await load?.stop();
    server?.process.kill("SIGKILL");
    await processes?.removeByLabel("ferry.project", project).catch(() => []);
    await proxy?.stop();
    await app?.remove();
    await cleanUp();
  });

  it("8 kills at random moments: 0 failed requests; after each restart all tasks are terminal and the live colour's process runs and answers", async () => {
    load = startLoad({ port: proxy?.port ?? 0, host, connections: 16 });
    const admin = new ProxyAdminClient(
      { socketPath: join(proxy?.stateDir ?? "", "admin.sock") },
      await readAdminToken(proxy?.stateDir ?? ""),
    );
    const moments: number[] = [];
    const states: string[] = [];
    for (let round = 1; round <= 8; round++) {
      const taskId = await deploy(`1.0.${round}`);
      // A deployment here takes 1–2 s (copy, supervisor, settle, probe, switch, drain, stop):
      // one random moment in each 250 ms slice of 0–2 s covers every phase of it.
      const moment = Math.round((round - 1) * 250 + Math.random() * 250);
      moments.push(moment);
      await sleep(moment);
      server?.process.kill("SIGKILL");
      const servedBefore = load.completed();
      // The server is down: traffic goes on without it.
      await sleep(300);
      expect(load.completed()).toBeGreaterThan(servedBefore);
      await start();
      states.push(await waitForTerminal(taskId));

      const tasks = await call<{ items: { state: string }[] }>("GET", "/api/v1/tasks?limit=100");
      expect(tasks.body.items.filter((task) => !TERMINAL.includes(task.state))).toEqual([]);
      const routes = await admin.listRoutes();
      expect(routes).toHaveLength(1);
      const live = routes[0];
      const liveProcess = await processes.inspect(live?.colour ?? "");
      expect(liveProcess?.running, `live colour ${live?.colour} after round ${round}`).toBe(true);
      // What an interrupted deployment started and never switched to is gone.
      for (const instance of await processes.listByLabel("ferry.task", taskId))
        expect(instance.name).toBe(live?.colour);
      expect((await get(proxy?.port ?? 0, host)).status).toBe(200);
    }
    const seen = await load.stop();
    load = undefined;
    await admin.close();
    console.log(
      `kill moments (ms): ${moments.join(", ")}; task states: ${states.join(", ")}; ${seen.requests} requests`,
    );
    expect(seen.failures).toEqual([]);
    expect(seen.requests).toBeGreaterThan(1000);

    // After all that, a deployment runs to the end.
    const final = await deploy("9.9.9");
    expect(await waitForTerminal(final)).toBe("succeeded");
    expect((await get(proxy?.port ?? 0, host)).body).toBe("version 9.9.9");
  }, 240_000);
});

function get(port: number, host: string): Promise<{ status: number; body: string }> {
  return new Promise((resolve, reject) => {
    const request = http.get({ host: "127.0.0.1", port, path: "/", headers: { host } }, (response) => {
      let body = "";
      response.setEncoding("utf8").on("data", (chunk: string) => {
        body += chunk;
      });
      response.on("end", () => resolve({ status: response.statusCode ?? 0, body: body.trim() }));
    });
    request.on("error", reject);
  });
}
