import { randomBytes } from "node:crypto";
import http from "node:http";
import { join } from "node:path";
import { setTimeout as sleep } from "node:timers/promises";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { localDocker } from "../src/runtimes/docker.js";
import { ProxyAdminClient } from "../src/traffic/proxyClient.js";
import { readAdminToken } from "../src/traffic/proxyState.js";
import { type FerryServer, isolatedEnv, testAdminKey, trackedResources } from "./helpers/cli.js";
import { crashTestClient, TERMINAL } from "./helpers/crashClient.js";
import { buildDemoImage, type DemoImage, removeImages } from "./helpers/images.js";
import { type RunningLoad, startLoad } from "./helpers/load.js";
import { type ProxyProcess, startProxyProcess } from "./helpers/proxy.js";
import { freePort, startRegistry, type TestRegistry } from "./helpers/registry.js";

const { makeTemporaryDirectory, startFerryServer, cleanUp } = trackedResources("ferry-bg-crash-");

/**
 * The Ferry server is killed with SIGKILL at random moments of blue/green deployments
 * while 16 keep-alive clients send requests through a real `ferry proxy`: traffic must
 * not notice, and after each restart every task is terminal and exactly one colour,
 * running and answering, is live.
 */
describe("kill -9 of the server during blue/green deployments under load (real processes, Docker, ferry proxy)", () => {
  const apiKey = testAdminKey();
  const project = `crash-${randomBytes(3).toString("hex")}`;
  const host = `${project}.test`;
  let registry: TestRegistry | undefined;
  let proxy: ProxyProcess | undefined;
  let images: DemoImage[] = [];
  let dataDir = "";
  let port = 0;
  let server: FerryServer | undefined;
  let load: RunningLoad | undefined;
  let imageVariable = "";

  const start = async () => {
    server = await startFerryServer({
      dataDir,
      env: isolatedEnv(dataDir, {
        FERRY_ADMIN_API_KEY: apiKey,
        FERRY_TASK_LEASE_SECONDS: "2",
        FERRY_PROXY_STATE_DIR: proxy?.stateDir ?? "",
      }),
      port,
    });
  };
  const { call, waitForTerminal } = crashTestClient(() => port, apiKey);
  const deploy = async (version: string, image: DemoImage) => {
    await call("PATCH", `/api/v1/projects/${project}/variables/${imageVariable}`, { value: image.reference });
    expect((await call("POST", `/api/v1/projects/${project}/releases`, { version })).status).toBe(201);
    const created = await call<{ taskId: string }>("POST", `/api/v1/projects/${project}/deployments`, {
      release: version,
      environment: "prod",
    });
    expect(created.status).toBe(201);
    return created.body.taskId;
  };
  const proxyAdmin = async () => {
    const stateDir = proxy?.stateDir ?? "";
    return new ProxyAdminClient({ socketPath: join(stateDir, "admin.sock") }, await readAdminToken(stateDir));
  };

  beforeAll(async () => {
    registry = await startRegistry();
    images = await Promise.all(
      ["1.0.0", "2.0.0"].map((version) =>
        buildDemoImage({ registryUrl: registry?.url ?? "", repository: "crash/app", version }),
      ),
    );
    proxy = await startProxyProcess();
    dataDir = await makeTemporaryDirectory();
    port = await freePort();
    await start();
    await call("POST", "/api/v1/environments", { name: "prod" });
    await call("POST", "/api/v1/lifecycles", { name: "one", phases: [{ environments: ["prod"] }] });
    await call("POST", "/api/v1/projects", { name: project, lifecycle: "one" });
    imageVariable = (
      await call<{ id: string }>("POST", `/api/v1/projects/${project}/variables`, { name: "Image", value: "-" })
    ).body.id;
    await call("PUT", `/api/v1/projects/${project}/process`, {
      steps: [
        {
          name: "web",
          kind: "container",
          config: {
            strategy: "blueGreen",
            image: "#{Image}",
            route: { host, port: 8080 },
            blueGreen: { healthCheck: { path: "/health", intervalMs: 100 }, drainSeconds: 5 },
            settleSeconds: 0.3,
            stopTimeoutSeconds: 3,
          },
        },
      ],
    });
    const first = await deploy("0.0.1", images[0] as DemoImage);
    expect(await waitForTerminal(first)).toBe("succeeded");
  }, 120_000);

  afterAll(async () => {
    await load?.stop();
    server?.process.kill("SIGKILL");
    await localDocker()
      .removeByLabel("ferry.project", project)
      .catch(() => {});
    await proxy?.stop();
    await registry?.stop();
    await removeImages(images.map((image) => image.reference));
    await cleanUp();
  });

  it("10 kills at random moments: 0 failed requests; after each restart all tasks are terminal and one healthy colour is live", async () => {
    load = startLoad({ port: proxy?.port ?? 0, host, connections: 16 });
    const admin = await proxyAdmin();
    const moments: number[] = [];
    const states: string[] = [];
    let wentLive = 0;
    for (let round = 1; round <= 10; round++) {
      const taskId = await deploy(`1.0.${round}`, images[round % 2] as DemoImage);
      // A deployment here takes 2–3 s (start, settle, probe, switch, drain, stop): one random
      // moment in each 400 ms slice of 0–4 s covers every phase of it, the switch included.
      const moment = Math.round((round - 1) * 400 + Math.random() * 400);
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
      const liveContainer = await localDocker().inspectContainer(live?.colour ?? "");
      expect(liveContainer?.running, `live colour ${live?.colour} after round ${round}`).toBe(true);
      // What an interrupted deployment started and never switched to is gone.
      const containers = await localDocker().listByLabel("ferry.task", taskId);
      for (const container of containers) expect(container.name).toBe(live?.colour);
      if (states.at(-1) === "interrupted" && containers.length > 0) wentLive += 1;
      expect((await get(proxy?.port ?? 0, host)).status).toBe(200);
    }
    const seen = await load.stop();
    load = undefined;
    await admin.close();
    console.log(
      `kill moments (ms): ${moments.join(", ")}; task states: ${states.join(", ")}; ${wentLive} interrupted after their switch (their colour stayed live); ${seen.requests} requests`,
    );
    expect(seen.failures).toEqual([]);
    expect(seen.requests).toBeGreaterThan(1000);

    // After all that, a deployment runs to the end.
    const final = await deploy("9.9.9", images[0] as DemoImage);
    expect(await waitForTerminal(final)).toBe("succeeded");
    expect((await get(proxy?.port ?? 0, host)).body).toBe("version 1.0.0");
  }, 240_000);

  it("a restarted ferry proxy comes back with its routes", async () => {
    const admin = await proxyAdmin();
    const before = await admin.listRoutes();
    await admin.close();
    await proxy?.kill();
    await proxy?.restart();
    const after = await proxyAdmin();
    expect(await after.listRoutes()).toEqual(before);
    await after.close();
    expect(await get(proxy?.port ?? 0, host)).toEqual({ status: 200, body: "version 1.0.0" });
  });

  it("a server start brings back a live colour whose container stopped (a host reboot, say)", async () => {
    const admin = await proxyAdmin();
    const [route] = await admin.listRoutes();
    await admin.close();
    const colour = route?.colour ?? "";
    server?.process.kill("SIGKILL");
    await localDocker().stopContainer(colour, { stopTimeoutSeconds: 1 });
    expect((await get(proxy?.port ?? 0, host)).status).toBe(502);
    await start();
    const deadline = Date.now() + 60_000;
    while (!server?.stdout().includes("reconciled the live colours of this host") && Date.now() < deadline) {
      await sleep(100);
    }
    // No retry: busybox httpd needs a moment after the start before it accepts, and
    // reconciliation waited for the colour's health check (ADR 0072) before it said so.
    expect(await get(proxy?.port ?? 0, host)).toEqual({ status: 200, body: "version 1.0.0" });
    expect((await localDocker().inspectContainer(colour))?.running).toBe(true);
    expect(server?.stdout()).toContain(`starting its live colour ${colour}`);
    // The engine gave the restarted container another host port: the route followed it.
    expect(server?.stdout()).toContain(`its live colour ${colour} moved to http://127.0.0.1:`);
  });
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
