import { randomBytes } from "node:crypto";
import { rmSync } from "node:fs";
import http from "node:http";
import { join } from "node:path";
import { setTimeout as sleep } from "node:timers/promises";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { ProcessRuntime } from "../src/runtimes/process.js";
import { type RunningLoad, startLoad } from "./helpers/load.js";
import { buildProcessApp, type ProcessApp } from "./helpers/processApp.js";
import { processAppStep } from "./helpers/processService.js";
import { type ProxyProcess, startProxyProcess } from "./helpers/proxy.js";
import { createAutoDeployedProject, startTestServer, type TestServer, taskLogText } from "./helpers/server.js";

interface Created {
  deployments: { taskId: string }[];
}

/**
 * Blue/green with the process runtime, as test/blueGreen.test.ts does it with containers:
 * a real Ferry server deploys a Node.js app as supervised processes (real `ferry supervise`
 * supervisors, run as nobody when the tests run as root), a real `ferry proxy` process
 * switches the traffic, and 16 keep-alive clients send requests through the proxy the
 * whole time. Every failed request the clients see fails the test.
 */
describe("blue/green process deployments through ferry proxy (real supervisors, proxy and server; under load)", {
  timeout: 180_000,
}, () => {
  const projectName = `pbg-${randomBytes(3).toString("hex")}`;
  const host = `${projectName}.test`;
  let proxy: ProxyProcess;
  let test: TestServer;
  let processes: ProcessRuntime;
  let app: ProcessApp;
  let neverHealthy: ProcessApp;
  let failsInBake: ProcessApp;
  let projectSlug: string;
  let appVariableId: string;
  let serverStopped = false;

  const webStep = (blueGreen: Record<string, unknown> = {}) =>
    processAppStep(host, {
      limits: { openFiles: 4096 },
      blueGreen: {
        healthCheck: { path: "/health", intervalMs: 100, timeoutMs: 1000, deadlineSeconds: 4 },
        drainSeconds: 10,
        keepPreviousRunning: true,
        retain: 2,
        ...blueGreen,
      },
      settleSeconds: 0.3,
      stopTimeoutSeconds: 5,
    });

  const logText = (taskId: string) => taskLogText(test.call, taskId);

  const finished = async (taskId: string) => {
    const task = await test.waitForTask(taskId, 90_000);
    return { taskId, state: task.state, log: await logText(taskId) };
  };

  /** Creates a release running the app in `directory`; its auto-deployment's task and log. */
  const release = async (version: string, directory: ProcessApp, blueGreen: Record<string, unknown> = {}) => {
    const saved = await test.call("PUT", `/api/v1/projects/${projectSlug}/process`, { steps: [webStep(blueGreen)] });
    expect(saved.status, JSON.stringify(saved.body)).toBe(200);
    await test.call("PATCH", `/api/v1/projects/${projectSlug}/variables/${appVariableId}`, {
      value: directory.directory,
    });
    const created = await test.call<Created>("POST", `/api/v1/projects/${projectSlug}/releases`, { version });
    expect(created.status, JSON.stringify(created.body)).toBe(201);
    return finished(created.body.deployments[0]?.taskId ?? "");
  };

  const rollback = async (to?: string) => {
    const rolled = await test.call<{ taskId: string }>("POST", `/api/v1/projects/${projectSlug}/rollbacks`, {
      environment: "prod",
      ...(to !== undefined && { to }),
    });
    expect(rolled.status, JSON.stringify(rolled.body)).toBe(201);
    return finished(rolled.body.taskId);
  };

  const served = async (path = "/") => (await request(proxy.port, host, path)).body.trim();

  const colours = async () =>
    (await processes.listByLabel("ferry.project", projectSlug)).map((instance) => ({
      name: instance.name,
      release: instance.labels["ferry.release"],
      state: instance.state,
    }));

  let load: RunningLoad | undefined;
  const underLoad = async <T>(action: () => Promise<T>) => {
    load = startLoad({ port: proxy.port, host, connections: 16 });
    try {
      const result = await action();
      return { result, load: await load.stop() };
    } finally {
      load = undefined;
    }
  };

  beforeAll(async () => {
    [app, neverHealthy, failsInBake] = await Promise.all([
      buildProcessApp(),
      buildProcessApp({ neverHealthy: true }),
      buildProcessApp({ unhealthyAfterSeconds: 2 }),
    ]);
    proxy = await startProxyProcess();
    test = await startTestServer({ traffic: proxy.traffic });
    processes = new ProcessRuntime({ directory: join(test.server.deployments.workRoot, "processes") });
    ({ projectSlug, variableId: appVariableId } = await createAutoDeployedProject(
      test,
      { lifecycle: "pbg", project: projectName },
      { name: "AppDirectory", value: app.directory },
    ));
  }, 120_000);

  afterAll(async () => {
    await load?.stop();
    if (projectSlug) await processes.removeByLabel("ferry.project", projectSlug);
    const workRoot = test?.server.deployments.workRoot;
    if (serverStopped) rmSync(test.dataDir, { recursive: true, force: true });
    else await test?.close();
    if (workRoot) rmSync(workRoot, { recursive: true, force: true });
    await proxy?.stop();
    await Promise.all([app, neverHealthy, failsInBake].map((directory) => directory?.remove()));
  });

  it("deploys the first colour as a supervised process on a port of its own and routes the host to it", async () => {
    const first = await release("1.0.0", app);
    expect(first.state, first.log).toBe("succeeded");
    expect(first.log).toContain("new: nothing is live yet");
    expect(first.log).toMatch(/starting colour ferry-\S+-prod-1\.0\.0-\w+: node server\.js \(in a copy of \//);
    expect(first.log).toMatch(
      /switched route \S+ to colour ferry-\S+-prod-1\.0\.0-\w+ \(http:\/\/127\.0\.0\.1:\d+\) in [\d.]+ ms/,
    );
    expect(await served()).toBe("version 1.0.0");
    expect(await colours()).toEqual([expect.objectContaining({ release: "1.0.0", state: "running" })]);
  });

  it("10 deployments under 16-connection keep-alive load: 0 failed requests; 2 s requests in flight at each switch complete with 200", async () => {
    const slow: { body: string; status: number }[] = [];
    let slowRunning = true;
    const slowClient = async () => {
      while (slowRunning) {
        const reply = await request(proxy.port, host, "/slow");
        slow.push({ body: reply.body.trim(), status: reply.status });
      }
    };
    const versions = Array.from({ length: 10 }, (_, index) => `1.1.${index}`);
    const { result: deployed, load: seen } = await underLoad(async () => {
      const slowClients = Array.from({ length: 4 }, slowClient);
      const results = [];
      for (const version of versions) results.push(await release(version, app));
      slowRunning = false;
      await Promise.all(slowClients);
      return results;
    });
    for (const result of deployed) expect(result.state, result.log).toBe("succeeded");
    expect(seen.failures).toEqual([]);
    expect(seen.requests).toBeGreaterThan(1000);
    // Every release served for a while, the first one too.
    for (const version of ["1.0.0", ...versions]) expect(seen.bodies.get(`version ${version}`)).toBeGreaterThan(0);
    expect(await served()).toBe("version 1.1.9");
    expect(slow.filter((reply) => reply.status !== 200)).toEqual([]);
    expect(new Set(slow.map((reply) => reply.body)).size).toBeGreaterThan(2);
    const last = deployed.at(-1);
    expect(last?.log).toMatch(/traffic during this deployment: [1-9]\d* request\(s\) served, 0 failed/);
    expect(last?.log).toMatch(/colour \S+1\.1\.8\S* drained in \d+ ms/);
    // The previous colour kept running, the one before it stopped and retained, older ones removed.
    const now = await colours();
    expect(
      now
        .filter((colour) => colour.state === "running")
        .map((colour) => colour.release)
        .sort(),
    ).toEqual(["1.1.8", "1.1.9"]);
    expect(now.map((colour) => colour.release).sort()).toEqual(["1.1.7", "1.1.8", "1.1.9"]);
  });

  it("rolls back under load by re-switching to the retained running colour: no copy, no start, 0 failed requests", async () => {
    const before = await colours();
    const { result: back, load: seen } = await underLoad(() => rollback());
    expect(back.state, back.log).toBe("succeeded");
    expect(seen.failures).toEqual([]);
    expect(await served()).toBe("version 1.1.8");
    expect(back.log).toContain("of release 1.1.8 is retained and running: no copy, no start");
    expect(back.log).not.toContain("starting colour");
    expect((await colours()).map((colour) => colour.name).sort()).toEqual(before.map((colour) => colour.name).sort());
  });

  it("a release whose health check never passes fails, 0 failed requests, the live colour keeps serving", async () => {
    const { result: failed, load: seen } = await underLoad(() => release("1.2.0", neverHealthy));
    expect(failed.state).toBe("failed");
    expect(failed.log).toMatch(/did not answer HTTP 200 on \/health within 4 s/);
    expect(failed.log).toContain("keeps serving");
    expect(failed.log).toMatch(/last \d+ log lines of process ferry-\S+-1\.2\.0-\w+:/);
    expect(failed.log).toContain("process app 1.2.0 starting on port");
    expect(seen.failures).toEqual([]);
    expect(seen.bodies.get("version 1.2.0")).toBeUndefined();
    expect(await served()).toBe("version 1.1.8");
    expect((await colours()).some((colour) => colour.release === "1.2.0")).toBe(false);
  });

  it("a release that fails during bake is switched back by itself, with 0 failed requests", async () => {
    const { result: baked, load: seen } = await underLoad(() =>
      release("1.3.0", failsInBake, { bakeSeconds: 8, drainSeconds: 5 }),
    );
    expect(baked.state).toBe("failed");
    expect(baked.log).toMatch(/bake failed .*switched route \S+ back to colour \S+1\.1\.8/);
    expect(seen.failures).toEqual([]);
    expect(seen.bodies.get("version 1.3.0")).toBeGreaterThan(0);
    expect(await served()).toBe("version 1.1.8");
    expect((await colours()).some((colour) => colour.release === "1.3.0")).toBe(false);
  });

  it("rolls back to a stopped retained colour under load: started again, probed, switched, 0 failed requests", async () => {
    const byRelease = new Map((await colours()).map((colour) => [colour.release, colour.state]));
    expect(byRelease.get("1.1.7")).toBe("exited");
    const { result: back, load: seen } = await underLoad(() => rollback("1.1.7"));
    expect(back.state, back.log).toBe("succeeded");
    expect(back.log).toContain("of release 1.1.7 is retained: starting it (no copy)");
    expect(seen.failures).toEqual([]);
    expect(await served()).toBe("version 1.1.7");
  });

  it("keeps serving while the server is stopped", async () => {
    const { load: seen } = await underLoad(async () => {
      await sleep(500);
      serverStopped = true;
      await test.server.close();
      await sleep(1500);
    });
    expect(seen.failures).toEqual([]);
    expect(seen.bodies.get("version 1.1.7")).toBeGreaterThan(0);
  });
});

function request(port: number, host: string, path: string): Promise<{ status: number; body: string }> {
  return new Promise((resolve, reject) => {
    const sent = http.request({ host: "127.0.0.1", port, path, headers: { host } }, (response) => {
      const chunks: Buffer[] = [];
      response.on("data", (chunk: Buffer) => chunks.push(chunk));
      response.on("end", () => resolve({ status: response.statusCode ?? 0, body: Buffer.concat(chunks).toString() }));
      response.on("error", reject);
    });
    sent.on("error", reject);
    sent.setTimeout(15_000, () => sent.destroy(new Error("no answer within 15 s")));
    sent.end();
  });
}
