import { randomBytes } from "node:crypto";
import { mkdtempSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { setTimeout as sleep } from "node:timers/promises";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { ProcessRuntime } from "../src/runtimes/process.js";
import { TERMINAL } from "./helpers/crashClient.js";
import { startLoad } from "./helpers/load.js";
import { buildProcessApp, type ProcessApp } from "./helpers/processApp.js";
import {
  commandLinesContaining,
  crashServerWithSshHost,
  createAutoProd,
  PROXY_PORT,
  ROOT_INSTANCES,
  remoteProcessStep,
  served,
  sshTargetBody,
  stopDetachedProxy,
  underLoad,
  waitUntil,
} from "./helpers/remoteHosts.js";
import { runRunbook } from "./helpers/runbooks.js";
import { startTestServer, type TestServer, taskLogText } from "./helpers/server.js";
import { type SshHosts, startSshHosts } from "./helpers/sshHosts.js";

/**
 * The process runtime on an SSH target (ADR 0035), on real parts: a namespace host with its
 * own sshd, where Ferry runs `ferry processes` (the instances' real `ferry supervise`
 * supervisors) and `ferry proxy` through the SSH transport. 16 keep-alive clients send
 * requests to the host's proxy the whole time; every failed request fails the test.
 */

interface Created {
  deployments: { taskId: string }[];
}

/** The process step of these tests: the app of `AppDirectory` with the project's API token, blue/green. */
const processStep = (routeHost: string, healthDeadlineSeconds = 10) =>
  remoteProcessStep(routeHost, { env: { API_TOKEN: "#{ApiToken}" }, healthDeadlineSeconds });

describe("process blue/green on an SSH host (real sshd, supervisors and ferry proxy there; under load)", {
  timeout: 300_000,
}, () => {
  let hosts: SshHosts;
  let test: TestServer;
  let app: ProcessApp;
  const suffix = randomBytes(3).toString("hex");
  const targetName = `proc-${suffix}`;
  const stateRoot = mkdtempSync(join(tmpdir(), "ferry-remoteprocess-"));
  const secret = `s3cret-${randomBytes(12).toString("hex")}`;
  let slug = "";
  let routeHost = "";

  const address = () => hosts.hosts[0]?.address ?? "";
  const instances = () => new ProcessRuntime({ directory: join(ROOT_INSTANCES, targetName) });
  const logText = (taskId: string) => taskLogText(test.call, taskId);
  const finished = async (taskId: string) => {
    const task = await test.waitForTask(taskId, 120_000);
    return { taskId, state: task.state, log: await logText(taskId) };
  };
  const release = async (version: string) => {
    const created = await test.call<Created>("POST", `/api/v1/projects/${slug}/releases`, { version });
    expect(created.status, JSON.stringify(created.body)).toBe(201);
    return finished(created.body.deployments[0]?.taskId ?? "");
  };
  const loaded = <T>(action: () => Promise<T>) => underLoad(address(), routeHost, action);

  beforeAll(async () => {
    app = await buildProcessApp();
    [hosts, test] = await Promise.all([startSshHosts(1), startTestServer()]);
    await createAutoProd(test);
    const target = await test.call(
      "POST",
      "/api/v1/targets",
      sshTargetBody(targetName, hosts, "builtin", { stateDir: join(stateRoot, "proxy") }),
    );
    expect(target.status, JSON.stringify(target.body)).toBe(201);
    const project = await test.call<{ slug: string }>("POST", "/api/v1/projects", {
      name: `rp-${suffix}`,
      lifecycle: "auto",
    });
    expect(project.status).toBe(201);
    slug = project.body.slug;
    routeHost = `${slug}.test`;
    const variable = await test.call("POST", `/api/v1/projects/${slug}/variables`, {
      name: "AppDirectory",
      value: app.directory,
    });
    expect(variable.status, JSON.stringify(variable.body)).toBe(201);
    const token = await test.call("POST", `/api/v1/projects/${slug}/variables`, {
      name: "ApiToken",
      value: secret,
      sensitive: true,
    });
    expect(token.status, JSON.stringify(token.body)).toBe(201);
    const saved = await test.call("PUT", `/api/v1/projects/${slug}/process`, {
      steps: [processStep(routeHost)],
    });
    expect(saved.status, JSON.stringify(saved.body)).toBe(200);
  }, 120_000);

  afterAll(async () => {
    await test?.close().catch(() => undefined);
    await instances()
      .removeByLabel("ferry.project", slug)
      .catch(() => []);
    rmSync(join(ROOT_INSTANCES, targetName), { recursive: true, force: true });
    // The host's proxy: stopped through its pid file, as `ferry proxy --detach` left it.
    stopDetachedProxy(join(stateRoot, "proxy"));
    await hosts?.close();
    await app?.remove();
    rmSync(stateRoot, { recursive: true, force: true });
  });

  it("switches under load with 0 failed requests, rolls back to the retained colour, and keeps serving without the server", async () => {
    const first = await release("1.0.1");
    expect(first.state, first.log).toBe("succeeded");
    expect(first.log).toMatch(new RegExp(`web on ${targetName}`));
    expect(await served(address(), routeHost)).toBe("version 1.0.1");
    // The colour is an instance of the host's process runtime, run by a supervisor there.
    const [live] = await instances().listByLabel("ferry.project", slug);
    expect(live?.state).toBe("running");
    expect(live?.labels["ferry.target"]).toBeDefined();
    // The sensitive value reached the app, and no command line on the host.
    expect(commandLinesContaining(secret)).toEqual([]);
    expect(first.log).not.toContain(secret);

    const { result: second, seen } = await loaded(() => release("1.0.2"));
    expect(second.state, second.log).toBe("succeeded");
    expect(seen.failures).toEqual([]);
    expect(seen.bodies.get("version 1.0.1")).toBeGreaterThan(0);
    expect(seen.bodies.get("version 1.0.2")).toBeGreaterThan(0);
    expect(await served(address(), routeHost)).toBe("version 1.0.2");
    expect(commandLinesContaining(secret)).toEqual([]);

    const { result: back, seen: duringRollback } = await loaded(async () => {
      const rolled = await test.call<{ taskId: string }>("POST", `/api/v1/projects/${slug}/rollbacks`, {
        environment: "prod",
      });
      expect(rolled.status, JSON.stringify(rolled.body)).toBe(201);
      return finished(rolled.body.taskId);
    });
    expect(back.state, back.log).toBe("succeeded");
    expect(duringRollback.failures).toEqual([]);
    expect(await served(address(), routeHost)).toBe("version 1.0.1");
    // The retained colour of 1.0.1 took the traffic back: nothing new was started.
    expect(back.log).toMatch(/of release 1\.0\.1 is retained/);

    // A runbook's `restart` on the SSH host: a fresh colour cloned there (env included, never
    // over the connection or on a command line), switched in under load, the old one removed.
    const [before] = (await instances().listByLabel("ferry.project", slug)).filter(
      (instance) => instance.labels["ferry.release"] === "1.0.1" && instance.state === "running",
    );
    const { result: restarted, seen: duringRestart } = await loaded(() =>
      runRunbook(test, slug, {
        name: "Restart",
        steps: [
          { name: "restart", kind: "restart", roles: ["web"], config: { drainSeconds: 3, stopTimeoutSeconds: 3 } },
        ],
      }),
    );
    expect(restarted.state, restarted.log).toBe("succeeded");
    expect(duringRestart.failures).toEqual([]);
    expect(restarted.log).toContain(`as a copy of process ${before?.name} (the same release)`);
    expect(restarted.log).toContain(`removed the replaced colour ${before?.name}`);
    expect(await served(address(), routeHost)).toBe("version 1.0.1");
    const after = (await instances().listByLabel("ferry.project", slug)).filter(
      (instance) => instance.labels["ferry.release"] === "1.0.1",
    );
    expect(after.map((instance) => instance.name)).not.toContain(before?.name);
    expect(after.filter((instance) => instance.state === "running")).toHaveLength(1);
    expect(commandLinesContaining(secret)).toEqual([]);
    expect(restarted.log).not.toContain(secret);

    // Traffic on the host depends neither on the server nor on its SSH connection.
    const load = startLoad({ address: address(), port: PROXY_PORT, host: routeHost, connections: 16 });
    while (load.completed() < 50) await sleep(20);
    await test.close();
    const afterStop = load.completed();
    await sleep(2_000);
    expect(load.completed()).toBeGreaterThan(afterStop + 100);
    const whileStopped = await load.stop();
    expect(whileStopped.failures).toEqual([]);
  });
});

describe("kill -9 of the server during a process blue/green on an SSH host (real server process, sshd, supervisors)", {
  timeout: 300_000,
}, () => {
  const crash = crashServerWithSshHost("ferry-remoteprocess-crash-", { FERRY_TASK_LEASE_SECONDS: "2" });
  const { call, waitForTerminal } = crash;
  const suffix = randomBytes(3).toString("hex");
  const targetName = `crash-${suffix}`;
  let app: ProcessApp;
  let neverHealthy: ProcessApp;
  let stateRoot = "";
  let slug = "";
  let routeHost = "";

  const instances = () => new ProcessRuntime({ directory: join(ROOT_INSTANCES, targetName) });

  beforeAll(async () => {
    [app, neverHealthy] = await Promise.all([buildProcessApp(), buildProcessApp({ neverHealthy: true })]);
    stateRoot = await crash.makeTemporaryDirectory();
    await crash.open();
  }, 120_000);

  afterAll(async () => {
    await crash.killServer();
    await instances()
      .removeByLabel("ferry.project", slug)
      .catch(() => []);
    rmSync(join(ROOT_INSTANCES, targetName), { recursive: true, force: true });
    stopDetachedProxy(join(stateRoot, "proxy"));
    await app?.remove();
    await neverHealthy?.remove();
    await crash.close();
  });

  it("the previous version keeps serving; after the restart the interrupted deployment's colour is removed from the host, and a live colour that went down comes back", async () => {
    const host = crash.hosts.hosts[0];
    if (!host) throw new Error("no host");
    await crash.createProdLifecycle();
    const target = await call(
      "POST",
      "/api/v1/targets",
      sshTargetBody(targetName, crash.hosts, "builtin", { stateDir: join(stateRoot, "proxy") }),
    );
    expect(target.status, JSON.stringify(target.body)).toBe(201);
    const project = await call<{ slug: string }>("POST", "/api/v1/projects", {
      name: `rpc-${suffix}`,
      lifecycle: "one",
    });
    expect(project.status).toBe(201);
    slug = project.body.slug;
    routeHost = `${slug}.test`;
    const variable = await call<{ id: string }>("POST", `/api/v1/projects/${slug}/variables`, {
      name: "AppDirectory",
      value: app.directory,
    });
    await call("POST", `/api/v1/projects/${slug}/variables`, { name: "ApiToken", value: "t", sensitive: true });
    // A long health-check deadline: the kill lands while the new colour runs, unhealthy, beside the old.
    expect(
      (await call("PUT", `/api/v1/projects/${slug}/process`, { steps: [processStep(routeHost, 60)] })).status,
    ).toBe(200);
    const deploy = async (version: string) => {
      expect((await call("POST", `/api/v1/projects/${slug}/releases`, { version })).status).toBe(201);
      const created = await call<{ taskId: string }>("POST", `/api/v1/projects/${slug}/deployments`, {
        release: version,
        environment: "prod",
      });
      expect(created.status).toBe(201);
      return created.body.taskId;
    };
    expect(await waitForTerminal(await deploy("1.0.1"), 120_000)).toBe("succeeded");
    expect(await served(host.address, routeHost)).toBe("version 1.0.1");

    await call("PATCH", `/api/v1/projects/${slug}/variables/${variable.body.id}`, { value: neverHealthy.directory });
    const load = startLoad({ address: host.address, port: PROXY_PORT, host: routeHost, connections: 16 });
    try {
      while (load.completed() < 50) await sleep(20);
      const taskId = await deploy("1.0.2");
      // The new colour runs on the host (started over SSH), not yet switched to.
      await waitUntil(
        async () =>
          (await instances().listByLabel("ferry.task", taskId)).some((instance) => instance.state === "running"),
        "the new colour runs on the host",
        60_000,
      );
      await crash.killServer();
      const servedBefore = load.completed();
      await sleep(1_000);
      // The server is gone: the host's proxy and the old colour serve on.
      expect(load.completed()).toBeGreaterThan(servedBefore);
      await crash.start();
      expect(await waitForTerminal(taskId, 120_000)).toBe("interrupted");
      const tasks = await call<{ items: { state: string }[] }>("GET", "/api/v1/tasks?limit=100");
      expect(tasks.body.items.filter((task) => !TERMINAL.includes(task.state))).toEqual([]);
      // What the interrupted deployment started on the host is gone; the live colour runs on.
      expect(await instances().listByLabel("ferry.task", taskId)).toEqual([]);
      const remaining = await instances().listByLabel("ferry.project", slug);
      expect(remaining.map((instance) => [instance.labels["ferry.release"], instance.state])).toEqual([
        ["1.0.1", "running"],
      ]);
      const seen = await load.stop();
      expect(seen.failures).toEqual([]);
      expect([...seen.bodies.keys()]).toEqual(["version 1.0.1"]);
    } finally {
      await load.stop().catch(() => undefined);
    }

    // As after a host reboot while the server is down: the live colour's supervisor and app
    // are gone. The server's next start reconciles the host: the colour runs and serves again.
    await crash.killServer();
    const [live] = await instances().listByLabel("ferry.project", slug);
    if (!live) throw new Error("no live colour");
    const state = JSON.parse(readFileSync(join(ROOT_INSTANCES, targetName, live.name, "state.json"), "utf8")) as {
      supervisor: { pid: number } | null;
      child: { pid: number } | null;
    };
    for (const pid of [state.supervisor?.pid, state.child && -state.child.pid]) {
      if (pid) process.kill(pid, "SIGKILL");
    }
    await waitUntil(
      async () => (await instances().inspect(live.name))?.running === false,
      "the colour is down",
      10_000,
    );
    expect(await served(host.address, routeHost)).not.toBe("version 1.0.1");
    await crash.start();
    await waitUntil(
      () => crash.stdout().includes("reconciled the live colours of remote hosts"),
      "the restarted server reconciled the host's live colour",
      60_000,
    );
    // No retry: reconciliation waited for the colour's health check (ADR 0072) before it said so.
    expect(await served(host.address, routeHost)).toBe("version 1.0.1");
    expect((await instances().inspect(live.name))?.running).toBe(true);
  });

  it("removes the colour an interrupted task left on a host that was unreachable then, once the host is back", async () => {
    const host = crash.hosts.hosts[0];
    if (!host) throw new Error("no host");
    const log = crash.logText;
    // The app never turns healthy (the variable points at it since the test above): the new
    // colour runs beside the live one, waiting for its health check, when the host goes away.
    expect((await call("POST", `/api/v1/projects/${slug}/releases`, { version: "1.0.3" })).status).toBe(201);
    const created = await call<{ taskId: string }>("POST", `/api/v1/projects/${slug}/deployments`, {
      release: "1.0.3",
      environment: "prod",
    });
    expect(created.status).toBe(201);
    const taskId = created.body.taskId;
    await waitUntil(
      async () =>
        (await instances().listByLabel("ferry.task", taskId)).some((instance) => instance.state === "running"),
      "the new colour runs on the host",
      60_000,
    );

    // The host's link goes down, then the server dies: its restart cannot reach the host.
    host.setLink(false);
    try {
      await crash.killServer(true);
      await crash.start();
      await waitUntil(
        async () => (await log(taskId)).includes("Ferry tries again until the host answers"),
        "the clean-up gave up on the host for now",
        120_000,
      );
      expect((await call<{ state: string }>("GET", `/api/v1/tasks/${taskId}`)).body.state).toBe("interrupted");
      // The colour is still on the host, running under its supervisor: nobody could reach it.
      const left = await instances().listByLabel("ferry.task", taskId);
      expect(left.map((instance) => instance.state)).toEqual(["running"]);
    } finally {
      host.setLink(true);
    }

    // Back: the retry removes the interrupted task's colour; the live one serves on.
    await waitUntil(
      async () => (await log(taskId)).includes("answers again: removed what the task left there"),
      "the clean-up was retried",
      180_000,
    );
    expect(await log(taskId)).toMatch(/clean-up: removed process\(es\) \S+ on /);
    expect(await instances().listByLabel("ferry.task", taskId)).toEqual([]);
    const remaining = await instances().listByLabel("ferry.project", slug);
    expect(remaining.map((instance) => [instance.labels["ferry.release"], instance.state])).toEqual([
      ["1.0.1", "running"],
    ]);
    expect(await served(host.address, routeHost)).toBe("version 1.0.1");
  });
});
