import { execFileSync } from "node:child_process";
import { randomBytes } from "node:crypto";
import { existsSync, readFileSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { setTimeout as sleep } from "node:timers/promises";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { ProcessRuntime } from "../src/runtimes/process.js";
import { FERRY, isolatedEnv, testAdminKey, trackedResources } from "./helpers/cli.js";
import { crashTestClient } from "./helpers/crashClient.js";
import { childrenOf, isRunning } from "./helpers/haproxy.js";
import { type RunningLoad, startLoad } from "./helpers/load.js";
import { buildProcessApp, type ProcessApp } from "./helpers/processApp.js";
import { freePort } from "./helpers/registry.js";
import { PROXY_PORT, served } from "./helpers/remoteHosts.js";
import { type SshHosts, startSshHosts } from "./helpers/sshHosts.js";

/**
 * HAProxy as a remote host's router (issue 17 part 3, ADR 0048), on real parts: a namespace
 * host with its own sshd, where Ferry writes haproxy.cfg, starts Debian's HAProxy and
 * switches it through its runtime API only through the SSH transport (`ferry haproxy-router`
 * on the host). 16 keep-alive clients send requests to the host's HAProxy the whole time;
 * every failed request fails the test.
 */

/** Where the process runtime keeps a target's instances on a host reached as root (processHost.ts). */
const ROOT_INSTANCES = "/var/lib/ferry/processes";

/**
 * A keep-alive load run inside the host's namespace (it goes on when the host's link is down):
 * `node load.js PORT HOST MS READY RESULT` writes READY after 50 answers and the counts to
 * RESULT after MS milliseconds.
 */
const NAMESPACE_LOAD = `
const http = require("node:http");
const { writeFileSync } = require("node:fs");
const [port, host, ms, ready, result] = process.argv.slice(2);
const agent = new http.Agent({ keepAlive: true, maxSockets: 8 });
const counts = { requests: 0, failures: [], bodies: {} };
let running = true;
const one = () => new Promise((resolve) => {
  let settled = false;
  const settle = (failure, body) => {
    if (settled) return;
    settled = true;
    counts.requests += 1;
    if (failure) counts.failures.push(failure);
    else counts.bodies[body] = (counts.bodies[body] || 0) + 1;
    if (counts.requests === 50) writeFileSync(ready, "");
    resolve();
  };
  const request = http.get({ host: "127.0.0.1", port: Number(port), path: "/", headers: { host }, agent }, (response) => {
    let body = "";
    response.setEncoding("utf8");
    response.on("data", (chunk) => { body += chunk; });
    response.on("end", () => settle(response.statusCode >= 200 && response.statusCode < 300 ? undefined : "HTTP " + response.statusCode, body.trim()));
    response.on("error", (error) => settle(error.message));
  });
  request.setTimeout(5000, () => request.destroy(new Error("no answer within 5 s")));
  request.on("error", (error) => settle(error.message));
});
const client = async () => { while (running) await one(); };
const clients = Array.from({ length: 8 }, client);
setTimeout(async () => {
  running = false;
  await Promise.all(clients);
  writeFileSync(result, JSON.stringify(counts));
  process.exit(0);
}, Number(ms));
`;

async function waitUntil(condition: () => boolean | Promise<boolean>, what: string, timeoutMs: number): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!(await condition())) {
    if (Date.now() > deadline) throw new Error(`timed out after ${timeoutMs} ms waiting until ${what}`);
    await sleep(100);
  }
}

describe("blue/green over SSH on a host whose router is a HAProxy Ferry runs there (real sshd and HAProxy; under load)", {
  timeout: 400_000,
}, () => {
  const { makeTemporaryDirectory, startFerryServer, cleanUp } = trackedResources("fhx-remote-");
  const apiKey = testAdminKey();
  const suffix = randomBytes(3).toString("hex");
  const targetName = `hx-${suffix}`;
  let hosts: SshHosts;
  let app: ProcessApp;
  let dataDir = "";
  let stateDir = "";
  let port = 0;
  let server: Awaited<ReturnType<typeof startFerryServer>> | undefined;
  let slug = "";
  let routeHost = "";

  const address = () => hosts.hosts[0]?.address ?? "";
  const instances = () => new ProcessRuntime({ directory: join(ROOT_INSTANCES, targetName) });
  const start = async () => {
    server = await startFerryServer({ dataDir, env: isolatedEnv(dataDir, { FERRY_ADMIN_API_KEY: apiKey }), port });
  };
  const { call, waitForTerminal } = crashTestClient(() => port, apiKey);
  const logText = async (taskId: string) =>
    (await call<{ lines: { text: string }[] }>("GET", `/api/v1/tasks/${taskId}/log`)).body.lines
      .map((line) => line.text)
      .join("\n");
  const finished = async (taskId: string) => {
    const state = await waitForTerminal(taskId, 180_000);
    return { taskId, state, log: await logText(taskId) };
  };
  const release = async (version: string) => {
    expect((await call("POST", `/api/v1/projects/${slug}/releases`, { version })).status).toBe(201);
    const created = await call<{ taskId: string }>("POST", `/api/v1/projects/${slug}/deployments`, {
      release: version,
      environment: "prod",
    });
    expect(created.status, JSON.stringify(created.body)).toBe(201);
    return finished(created.body.taskId);
  };
  const underLoad = async <T>(action: () => Promise<T>) => {
    const load: RunningLoad = startLoad({ address: address(), port: PROXY_PORT, host: routeHost, connections: 16 });
    try {
      while (load.completed() < 50) await sleep(20);
      const result = await action();
      const after = load.completed();
      while (load.completed() < after + 50) await sleep(20);
      return { result, seen: await load.stop() };
    } finally {
      await load.stop().catch(() => undefined);
    }
  };
  /** The running HAProxy master of the host's pid file, if any. */
  const masterPid = (): number | undefined => {
    try {
      const pid = Number(readFileSync(join(stateDir, "haproxy.pid"), "utf8").trim());
      return isRunning(pid) && readFileSync(`/proc/${pid}/cmdline`, "utf8").includes("haproxy") ? pid : undefined;
    } catch {
      return undefined;
    }
  };
  const workerPids = () => {
    const pid = masterPid();
    return pid === undefined ? [] : childrenOf(pid).filter(isRunning);
  };
  const stopHaproxy = async (signal: NodeJS.Signals = "SIGTERM") => {
    const pid = masterPid();
    if (pid === undefined) return;
    for (const each of [pid, ...workerPids()]) process.kill(each, signal);
    await waitUntil(() => masterPid() === undefined, "haproxy stopped", 10_000);
  };

  beforeAll(async () => {
    app = await buildProcessApp();
    hosts = await startSshHosts(1);
    dataDir = await makeTemporaryDirectory();
    stateDir = await makeTemporaryDirectory();
    port = await freePort();
    await start();
  }, 120_000);

  afterAll(async () => {
    server?.process.kill("SIGKILL");
    await instances()
      .removeByLabel("ferry.project", slug)
      .catch(() => []);
    await stopHaproxy().catch(() => undefined);
    await hosts?.close();
    await app?.remove();
    await cleanUp();
  });

  it("switches under load with 0 failed requests, rolls back, serves with the SSH link down, and is read back at start", async () => {
    const host = hosts.hosts[0];
    if (!host) throw new Error("no host");
    expect((await call("POST", "/api/v1/environments", { name: "prod" })).status).toBe(201);
    expect(
      (await call("POST", "/api/v1/lifecycles", { name: "one", phases: [{ environments: ["prod"] }] })).status,
    ).toBe(201);
    const target = await call("POST", "/api/v1/targets", {
      name: targetName,
      environments: ["prod"],
      roles: ["web"],
      transport: "ssh",
      ssh: { host: host.address, user: "root", privateKey: hosts.privateKey, hostKey: host.fingerprint },
      router: { driver: "haproxy", listen: `0.0.0.0:${PROXY_PORT}`, stateDir, command: FERRY },
    });
    expect(target.status, JSON.stringify(target.body)).toBe(201);
    const project = await call<{ slug: string }>("POST", "/api/v1/projects", {
      name: `hx-${suffix}`,
      lifecycle: "one",
    });
    expect(project.status).toBe(201);
    slug = project.body.slug;
    routeHost = `${slug}.test`;
    expect(
      (await call("POST", `/api/v1/projects/${slug}/variables`, { name: "AppDirectory", value: app.directory })).status,
    ).toBe(201);
    const steps = [
      {
        name: "web",
        kind: "process",
        roles: ["web"],
        config: {
          strategy: "blueGreen",
          command: "node",
          args: ["server.js"],
          copyFrom: "#{AppDirectory}",
          env: { APP_VERSION: "#{Ferry.Release.Number}" },
          route: { host: routeHost },
          blueGreen: {
            healthCheck: { path: "/health", intervalMs: 100, timeoutMs: 1000, deadlineSeconds: 10 },
            drainSeconds: 3,
            keepPreviousRunning: true,
            retain: 2,
          },
          settleSeconds: 0.3,
          stopTimeoutSeconds: 3,
        },
      },
    ];
    expect((await call("PUT", `/api/v1/projects/${slug}/process`, { steps })).status).toBe(200);

    // The first switch writes haproxy.cfg and starts the host's HAProxy, inside the host's namespace.
    expect(masterPid()).toBeUndefined();
    const first = await release("1.0.1");
    expect(first.state, first.log).toBe("succeeded");
    expect(await served(address(), routeHost)).toBe("version 1.0.1");
    const master = masterPid();
    expect(master).toBeDefined();
    expect(execFileSync("ip", ["netns", "identify", String(master)], { encoding: "utf8" }).trim()).toBe(host.namespace);
    expect(readFileSync(join(stateDir, "haproxy.cfg"), "utf8")).toContain(`var(txn.ferry_host) -m str ${routeHost}`);
    const workers = workerPids();

    const { result: second, seen } = await underLoad(() => release("1.0.2"));
    expect(second.state, second.log).toBe("succeeded");
    expect(seen.failures).toEqual([]);
    expect(seen.bodies.get("version 1.0.1")).toBeGreaterThan(0);
    expect(seen.bodies.get("version 1.0.2")).toBeGreaterThan(0);
    expect(await served(address(), routeHost)).toBe("version 1.0.2");
    // Switched through the runtime API: the same master and worker, no reload; counted from its access log.
    expect(masterPid()).toBe(master);
    expect(workerPids()).toEqual(workers);
    expect(second.log).toMatch(/traffic during this deployment: [1-9]\d* request\(s\) served, 0 failed/);

    const { result: back, seen: duringRollback } = await underLoad(async () => {
      const rolled = await call<{ taskId: string }>("POST", `/api/v1/projects/${slug}/rollbacks`, {
        environment: "prod",
      });
      expect(rolled.status, JSON.stringify(rolled.body)).toBe(201);
      return finished(rolled.body.taskId);
    });
    expect(back.state, back.log).toBe("succeeded");
    expect(duringRollback.failures).toEqual([]);
    expect(await served(address(), routeHost)).toBe("version 1.0.1");
    expect(back.log).toMatch(/of release 1\.0\.1 is retained/);
    expect(workerPids()).toEqual(workers);

    // The SSH link down: the host's HAProxy and colour serve on, for clients on the host's side.
    const script = join(stateDir, "load.cjs");
    const ready = join(stateDir, "load.ready");
    const result = join(stateDir, "load.json");
    writeFileSync(script, NAMESPACE_LOAD);
    host.spawn(process.execPath, [script, String(PROXY_PORT), routeHost, "6000", ready, result]);
    await waitUntil(() => existsSync(ready), "the load inside the namespace runs", 30_000);
    host.setLink(false);
    try {
      await waitUntil(() => existsSync(result), "the load inside the namespace finished", 30_000);
    } finally {
      host.setLink(true);
    }
    const cutOff = JSON.parse(readFileSync(result, "utf8")) as {
      requests: number;
      failures: string[];
      bodies: Record<string, number>;
    };
    expect(cutOff.failures).toEqual([]);
    expect(cutOff.requests).toBeGreaterThan(100);
    expect(Object.keys(cutOff.bodies)).toEqual(["version 1.0.1"]);

    // The server's start-up reconciliation reads the host's routes back from haproxy.cfg: after
    // HAProxy was killed (-9) while the server is down, it serves the live colour again.
    server?.process.kill("SIGKILL");
    await new Promise((resolve) => server?.process.once("exit", resolve));
    await stopHaproxy("SIGKILL");
    await expect(served(address(), routeHost)).rejects.toThrow();
    await start();
    await waitUntil(
      async () => (await served(address(), routeHost).catch(() => "")) === "version 1.0.1",
      "the restarted server brought the host's HAProxy back with its routes",
      60_000,
    );
    expect(masterPid()).toBeDefined();
  });
});
