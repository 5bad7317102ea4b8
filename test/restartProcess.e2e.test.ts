import { randomBytes } from "node:crypto";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import type { ProcessRuntime } from "../src/runtimes/process.js";
import { startLoad } from "./helpers/load.js";
import { type ProcessAppService, processAppStep, startProcessAppService } from "./helpers/processService.js";
import type { ProxyProcess } from "./helpers/proxy.js";
import { get } from "./helpers/routerDriver.js";
import { runRunbook } from "./helpers/runbooks.js";
import type { TestServer } from "./helpers/server.js";

/**
 * Issue 14 part 6: the `restart` runbook step on the process runtime (ADR 0052), as the
 * demo and any host without Docker deploy. A real Ferry server deploys a Node.js app
 * blue/green as supervised processes (real `ferry supervise`, run as nobody when the tests
 * run as root) behind a real `ferry proxy`; a runbook restarts it while 16 keep-alive
 * clients ask the proxy which process answers. Every failed request fails the test.
 */
describe("the restart step on the process runtime (real supervisors, proxy and server; under load)", () => {
  const projectName = `rsp-${randomBytes(3).toString("hex")}`;
  const host = `${projectName}.test`;
  let service: ProcessAppService;
  let proxy: ProxyProcess;
  let test: TestServer;
  let processes: ProcessRuntime;
  let projectSlug: string;

  const restart = (name: string, config: Record<string, unknown> = {}) =>
    runRunbook(test, projectSlug, { name, steps: [{ name: "restart", kind: "restart", config }] });

  const running = async () =>
    (await processes.listByLabel("ferry.project", projectSlug)).filter((instance) => instance.state === "running");

  beforeAll(async () => {
    service = await startProcessAppService({ lifecycle: "rsp", project: projectName });
    ({ proxy, test, processes, projectSlug } = service);
    const saved = await test.call("PUT", `/api/v1/projects/${projectSlug}/process`, {
      steps: [
        processAppStep(host, {
          blueGreen: { healthCheck: { path: "/health", intervalMs: 100, deadlineSeconds: 10 }, drainSeconds: 5 },
          settleSeconds: 0.3,
          stopTimeoutSeconds: 5,
        }),
      ],
    });
    expect(saved.status, JSON.stringify(saved.body)).toBe(200);
    const created = await test.call<{ deployments: { taskId: string }[] }>(
      "POST",
      `/api/v1/projects/${projectSlug}/releases`,
      { version: "3.0.0" },
    );
    expect(created.status, JSON.stringify(created.body)).toBe(201);
    const deployed = await test.waitForTask(created.body.deployments[0]?.taskId ?? "", 90_000);
    expect(deployed.state).toBe("succeeded");
  }, 180_000);

  afterAll(async () => {
    await service?.close();
  });

  it("restarts the routed process service under 16-connection keep-alive load: 0 failed requests, a new process serving", async () => {
    const [before] = await running();
    const pidBefore = (await processes.inspect(before?.name ?? ""))?.pid;
    expect(pidBefore).toBeGreaterThan(0);
    const load = startLoad({ port: proxy.port, host, path: "/pid", connections: 16 });
    const restarted = await (async () => {
      // Load flows before the restart starts, so the switch happens under it.
      while (load.completed() < 200) await new Promise((resolve) => setTimeout(resolve, 20));
      return restart("Restart");
    })().catch(async (error: unknown) => {
      await load.stop();
      throw error;
    });
    const seen = await load.stop();
    expect(restarted.state, restarted.log).toBe("succeeded");
    expect(seen.failures).toEqual([]);
    expect(seen.requests).toBeGreaterThan(200);

    // A fresh colour of the same release serves, in a new process; the replaced one is gone.
    const after = await running();
    expect(after).toHaveLength(1);
    expect(after[0]?.name).not.toBe(before?.name);
    expect(after[0]?.labels["ferry.release"]).toBe("3.0.0");
    const pidAfter = (await processes.inspect(after[0]?.name ?? ""))?.pid;
    expect(pidAfter).toBeGreaterThan(0);
    expect(pidAfter).not.toBe(pidBefore);
    expect(await processes.inspect(before?.name ?? "")).toBeUndefined();
    // The clients saw the old process answer, then the new one, and nothing else.
    expect([...seen.bodies.keys()].sort()).toEqual([`pid ${pidAfter}`, `pid ${pidBefore}`].sort());
    expect(await body(proxy.port, host, "/pid")).toBe(`pid ${pidAfter}`);
    // Its env came along: the release number the deployment gave it.
    expect(await body(proxy.port, host, "/")).toBe("version 3.0.0");

    expect(restarted.log).toContain(`as a copy of process ${before?.name} (the same release)`);
    expect(restarted.log).toMatch(/switched route \S+ to colour \S+-prod-3\.0\.0-\S+/);
    expect(restarted.log).toContain(`removed the replaced colour ${before?.name}`);
    // The router counted the load on both colours across the switch, and no failure.
    expect(restarted.log).toMatch(/traffic during this deployment: [1-9]\d* request\(s\) served, 0 failed/);
  }, 180_000);

  it("restarts a process that is not routed in place: stopped, started again, a new process", async () => {
    const name = `${projectSlug}-worker`;
    const first = await runRunbook(test, projectSlug, {
      name: "Worker",
      steps: [
        {
          name: "worker",
          kind: "process",
          config: {
            strategy: "recreate",
            name,
            command: "node",
            args: ["server.js"],
            copyFrom: "#{AppDirectory}",
            env: { APP_VERSION: "worker" },
            settleSeconds: 0.3,
          },
        },
      ],
    });
    expect(first.state, first.log).toBe("succeeded");
    const before = await processes.inspect(name);
    expect(before?.running).toBe(true);

    const restarted = await restart("Restart worker", { container: name, stopTimeoutSeconds: 2, settleSeconds: 0.5 });
    expect(restarted.state, restarted.log).toBe("succeeded");
    expect(restarted.log).toContain(`process ${name} is not behind a route: stopping and starting it`);
    expect(restarted.log).toContain(`process ${name} restarted and running`);
    const after = await processes.inspect(name);
    expect(after?.running).toBe(true);
    expect(after?.pid).not.toBe(before?.pid);
    expect(await body(after?.port ?? 0, "127.0.0.1", "/pid")).toBe(`pid ${after?.pid}`);
    // It stopped gracefully (SIGTERM), as the app logs.
    expect(await processes.logTail(name, 50)).toContain("process app worker stopping");
  }, 120_000);

  it("fails with a clear error when there is no such service, and refuses a process Ferry did not start for the project", async () => {
    const missing = await restart("Restart nothing", { route: "no-such-route" });
    expect(missing.state).toBe("failed");
    expect(missing.log).toContain(
      `no live colour of route no-such-route on this host and no container or process ferry-${projectSlug}-prod: deploy the service first`,
    );

    const named = await restart("Restart a ghost", { container: `${projectSlug}-ghost` });
    expect(named.state).toBe("failed");
    expect(named.log).toContain(`there is no container or process ${projectSlug}-ghost`);

    const stranger = `${projectSlug}-stranger`;
    await processes.createAndStart({
      name: stranger,
      command: "node",
      args: ["-e", "setInterval(() => {}, 1000)"],
      labels: { "ferry.project": `${projectSlug}-other`, "ferry.env": "prod" },
    });
    try {
      const refused = await restart("Restart stranger", { container: stranger });
      expect(refused.state).toBe("failed");
      expect(refused.log).toContain(
        `process ${stranger} was not started by Ferry for ${projectName} in prod: refusing to act on it`,
      );
      expect((await processes.inspect(stranger))?.restartCount).toBe(0);
    } finally {
      await processes.stopAndRemove(stranger, { stopTimeoutSeconds: 0 });
    }
  }, 120_000);
});

/** What the router on 127.0.0.1:`port` answers for `hostHeader` at `path` (the body, trimmed), on a fresh connection. */
async function body(port: number, hostHeader: string, path: string): Promise<string> {
  return (await get(port, hostHeader, path)).body.trim();
}
