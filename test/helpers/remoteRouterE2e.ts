import { execFileSync } from "node:child_process";
import { randomBytes } from "node:crypto";
import { existsSync, readdirSync, readFileSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { ProcessRuntime } from "../../src/runtimes/process.js";
import { buildProcessApp, type ProcessApp } from "./processApp.js";
import {
  crashServerWithSshHost,
  PROXY_PORT,
  ROOT_INSTANCES,
  remoteProcessStep,
  served,
  sshTargetBody,
  underLoad,
  waitUntil,
} from "./remoteHosts.js";

/**
 * One e2e scenario for every router a remote host runs itself through `ferry <driver>-router`
 * (nginx: ADR 0039; HAProxy: ADR 0048), on real parts: a namespace host with its own sshd,
 * where Ferry writes the router's files and starts and switches it only through the SSH
 * transport. 16 keep-alive clients send requests to the host's router the whole time; every
 * failed request fails the test. What differs per driver (its files, how it is stopped, what
 * "no reload" means for it) comes from the `RemoteRouterCase`.
 */

/** The host's router as one test sees it, set up in a directory of its own. */
interface HostRouterUnderTest {
  /** The target's `router` settings besides driver, listen and command. */
  readonly settings: Record<string, unknown>;
  /** The running master of the host's pid file, if any. */
  masterPid(): number | undefined;
  /** Stops it; `crash`: the way the scenario takes it down while the server is down. */
  stop(crash: boolean): Promise<void>;
  /** After the first deployment: the files Ferry wrote for `routeHost` say so. */
  checkFirst(routeHost: string): void;
  /** After a switch under load (a deployment or the rollback): what the driver promises about it. */
  checkSwitched(log: string, kind: "deployment" | "rollback"): void;
}

export interface RemoteRouterCase {
  readonly driver: "nginx" | "haproxy";
  /** "nginx", "HAProxy": for messages. */
  readonly label: string;
  readonly title: string;
  /** A short prefix of the target's and project's names. */
  readonly short: string;
  readonly resourcePrefix: string;
  prepare(dir: string): HostRouterUnderTest;
}

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

export function describeRemoteRouter(spec: RemoteRouterCase): void {
  describe(spec.title, { timeout: 400_000 }, () => {
    const crash = crashServerWithSshHost(spec.resourcePrefix);
    const { call, waitForTerminal, logText, address } = crash;
    const suffix = randomBytes(3).toString("hex");
    const targetName = `${spec.short}-${suffix}`;
    let app: ProcessApp;
    let routerDir = "";
    let router: HostRouterUnderTest;
    let slug = "";
    let routeHost = "";

    const instances = () => new ProcessRuntime({ directory: join(ROOT_INSTANCES, targetName) });
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
    const loaded = <T>(action: () => Promise<T>) => underLoad(address(), routeHost, action);
    beforeAll(async () => {
      app = await buildProcessApp();
      routerDir = await crash.makeTemporaryDirectory();
      router = spec.prepare(routerDir);
      await crash.open();
    }, 120_000);

    afterAll(async () => {
      await crash.killServer();
      await instances()
        .removeByLabel("ferry.project", slug)
        .catch(() => []);
      await router?.stop(false).catch(() => undefined);
      await app?.remove();
      await crash.close();
    });

    it("switches under load with 0 failed requests, rolls back, serves with the SSH link down, and is read back at start", async () => {
      const host = crash.hosts.hosts[0];
      if (!host) throw new Error("no host");
      await crash.createProdLifecycle();
      const target = await call(
        "POST",
        "/api/v1/targets",
        sshTargetBody(targetName, crash.hosts, spec.driver, router.settings),
      );
      expect(target.status, JSON.stringify(target.body)).toBe(201);
      const project = await call<{ slug: string }>("POST", "/api/v1/projects", {
        name: `${spec.short}-${suffix}`,
        lifecycle: "one",
      });
      expect(project.status).toBe(201);
      slug = project.body.slug;
      routeHost = `${slug}.test`;
      expect(
        (await call("POST", `/api/v1/projects/${slug}/variables`, { name: "AppDirectory", value: app.directory }))
          .status,
      ).toBe(201);
      const steps = [remoteProcessStep(routeHost)];
      expect((await call("PUT", `/api/v1/projects/${slug}/process`, { steps })).status).toBe(200);

      // The first switch writes the router's files and starts it on the host, inside the host's namespace.
      expect(router.masterPid()).toBeUndefined();
      const first = await release("1.0.1");
      expect(first.state, first.log).toBe("succeeded");
      expect(await served(address(), routeHost)).toBe("version 1.0.1");
      const master = router.masterPid();
      expect(master).toBeDefined();
      expect(execFileSync("ip", ["netns", "identify", String(master)], { encoding: "utf8" }).trim()).toBe(
        host.namespace,
      );
      router.checkFirst(routeHost);

      const { result: second, seen } = await loaded(() => release("1.0.2"));
      expect(second.state, second.log).toBe("succeeded");
      expect(seen.failures).toEqual([]);
      expect(seen.bodies.get("version 1.0.1")).toBeGreaterThan(0);
      expect(seen.bodies.get("version 1.0.2")).toBeGreaterThan(0);
      expect(await served(address(), routeHost)).toBe("version 1.0.2");
      // The same master (not restarted), and the traffic counted from the host's access log.
      expect(router.masterPid()).toBe(master);
      router.checkSwitched(second.log, "deployment");
      expect(second.log).toMatch(/traffic during this deployment: [1-9]\d* request\(s\) served, 0 failed/);

      const { result: back, seen: duringRollback } = await loaded(async () => {
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
      router.checkSwitched(back.log, "rollback");

      // The SSH link down: the host's router and colour serve on, for clients on the host's side.
      const script = join(routerDir, "load.cjs");
      const ready = join(routerDir, "load.ready");
      const result = join(routerDir, "load.json");
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

      // The server's start-up reconciliation reads the host's routes back from its files: after
      // the router was taken down while the server is down, it serves the live colour again.
      await crash.killServer(true);
      // A health check the server started over SSH before it died (its `inUse` brings a stopped
      // router back) runs to its end on the host: stop the router only after it has finished.
      await waitUntil(
        () => !routerOperationRunning(spec.driver),
        `no ferry ${spec.driver}-router operation runs on the host`,
        30_000,
      );
      await router.stop(true);
      await expect(served(address(), routeHost)).rejects.toThrow();
      await crash.start();
      await waitUntil(
        async () => (await served(address(), routeHost).catch(() => "")) === "version 1.0.1",
        `the restarted server brought the host's ${spec.label} back with its routes`,
        60_000,
      );
      expect(router.masterPid()).toBeDefined();
    });
  });
}

/** Whether a `ferry <driver>-router` operation runs (the namespace hosts share this machine's /proc). */
function routerOperationRunning(driver: RemoteRouterCase["driver"]): boolean {
  return readdirSync("/proc")
    .filter((entry) => /^\d+$/.test(entry))
    .some((pid) => {
      try {
        return readFileSync(`/proc/${pid}/cmdline`, "utf8").split("\0").includes(`${driver}-router`);
      } catch {
        return false;
      }
    });
}
