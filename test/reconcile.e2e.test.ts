import { randomBytes } from "node:crypto";
import { mkdtempSync, rmSync } from "node:fs";
import http from "node:http";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { setTimeout as sleep } from "node:timers/promises";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { coloursOf } from "../src/runtimes/colours.js";
import { ProcessRuntime, processOrigin } from "../src/runtimes/process.js";
import { healthCheckLabels } from "../src/steps/blueGreen/config.js";
import { reconcileLiveColours } from "../src/traffic/reconcile.js";
import { lazyRouter } from "../src/traffic/routers.js";
import { LocalTransport } from "../src/transports/local.js";
import { startLoad } from "./helpers/load.js";
import { buildProcessApp, type ProcessApp } from "./helpers/processApp.js";
import { processAppStep } from "./helpers/processService.js";
import { type ProxyProcess, startProxyProcess } from "./helpers/proxy.js";
import { createAutoDeployedProject, startTestServer, type TestServer } from "./helpers/server.js";

interface Created {
  deployments: { taskId: string }[];
}

/**
 * Start-up reconciliation (ADR 0072) on real parts: supervised processes (`ferry supervise`,
 * run as nobody when the tests run as root) behind a real `ferry proxy`. The app takes 2 s
 * after its start to listen, as a real one booting would: a live colour started again after
 * a host reboot must pass its health check before reconciliation says it is done, or the
 * router, which points at it all along, answers 502 to the first requests.
 */
describe("start-up reconciliation waits until a live colour it starts again passes its health check", {
  timeout: 240_000,
}, () => {
  const suffix = randomBytes(3).toString("hex");
  let slowToBoot: ProcessApp;
  let neverHealthy: ProcessApp;
  const proxies: ProxyProcess[] = [];
  const servers: TestServer[] = [];
  const workRoots: string[] = [];
  const cleanUps: (() => Promise<unknown>)[] = [];

  beforeAll(async () => {
    slowToBoot = await buildProcessApp({ listenAfterMs: 2000 });
    neverHealthy = await buildProcessApp({ neverHealthy: true });
  });

  afterAll(async () => {
    for (const cleanUp of cleanUps) await cleanUp().catch(() => undefined);
    for (const server of servers) await server.close().catch(() => undefined);
    for (const proxy of proxies) await proxy.stop().catch(() => undefined);
    for (const root of workRoots) rmSync(root, { recursive: true, force: true });
    await slowToBoot?.remove();
    await neverHealthy?.remove();
  });

  it("a restarted server answers the first request after reconciliation, and every one after it", async () => {
    const proxy = await startProxyProcess();
    proxies.push(proxy);
    const first = await startTestServer({ traffic: proxy.traffic });
    servers.push(first);
    const workRoot = first.server.deployments.workRoot;
    workRoots.push(workRoot);
    const processes = new ProcessRuntime({ directory: join(workRoot, "processes") });
    const host = `rec-${suffix}.test`;
    const { projectSlug } = await createAutoDeployedProject(
      first,
      { lifecycle: `rec-${suffix}`, project: `rec-${suffix}` },
      { name: "AppDirectory", value: slowToBoot.directory },
    );
    cleanUps.push(() => processes.removeByLabel("ferry.project", projectSlug));
    const healthCheck = { path: "/health", intervalMs: 100, timeoutMs: 1000, deadlineSeconds: 30 };
    const saved = await first.call("PUT", `/api/v1/projects/${projectSlug}/process`, {
      steps: [processAppStep(host, { blueGreen: { healthCheck }, settleSeconds: 0.3, stopTimeoutSeconds: 5 })],
    });
    expect(saved.status, JSON.stringify(saved.body)).toBe(200);
    const created = await first.call<Created>("POST", `/api/v1/projects/${projectSlug}/releases`, {
      version: "1.0.0",
    });
    expect(created.status, JSON.stringify(created.body)).toBe(201);
    const deployed = await first.waitForTask(created.body.deployments[0]?.taskId ?? "", 90_000);
    expect(deployed.state).toBe("succeeded");
    const [live] = await processes.listByLabel("ferry.project", projectSlug);
    if (!live) throw new Error("the deployment left no colour");
    const servedBefore = await get(proxy.port, host);

    // A host reboot while no server runs: the live colour's process is gone, the proxy is not.
    await first.close();
    servers.splice(servers.indexOf(first), 1);
    await processes.stop(live.name, { stopTimeoutSeconds: 5 });
    const servedWhileDown = await get(proxy.port, host);

    const second = await startTestServer({ traffic: proxy.traffic, workDir: workRoot });
    servers.push(second);
    await second.server.reconciled;
    // No retry: the very first request after reconciliation is answered.
    const firstAnswer = await get(proxy.port, host);
    const load = startLoad({ port: proxy.port, host, connections: 4 });
    await sleep(1500);
    const seen = await load.stop();

    expect(servedBefore).toEqual({ status: 200, body: "version 1.0.0" });
    // The deployment's health check is stored with the colour: reconciliation probes with it.
    expect(live.labels).toMatchObject(healthCheckLabels({ ...healthCheck, expectedStatus: 200 }));
    expect(servedWhileDown.status).toBe(502);
    expect(firstAnswer).toEqual({ status: 200, body: "version 1.0.0" });
    expect(seen.failures).toEqual([]);
    expect(seen.requests).toBeGreaterThan(0);
    expect([...seen.bodies.keys()]).toEqual(["version 1.0.0"]);
    expect((await processes.inspect(live.name))?.running).toBe(true);
  });

  it("reconciles routes side by side: one that never gets healthy is reported and holds up no other", async () => {
    const proxy = await startProxyProcess();
    proxies.push(proxy);
    const workRoot = mkdtempSync(join(tmpdir(), "ferry-reconcile-work-"));
    workRoots.push(workRoot);
    const transport = new LocalTransport(workRoot);
    const processes = transport.runtime("process");
    const router = await lazyRouter(proxy.traffic, () => {}).get();
    cleanUps.push(() => router.close());
    cleanUps.push(() => processes.removeByLabel("ferry.project", `rec-${suffix}`));
    const check = { path: "/health", expectedStatus: 200, intervalMs: 100, timeoutMs: 1000 };
    // One colour per route, as a deployment leaves it: labelled with its route and its check.
    const colour = async (route: string, app: ProcessApp, deadlineSeconds: number) => {
      const name = `${route}-blue`;
      const started = await processes.createAndStart({
        name,
        command: "node",
        args: ["server.js"],
        copyFrom: app.directory,
        env: { APP_VERSION: route },
        labels: {
          "ferry.project": `rec-${suffix}`,
          "ferry.route": route,
          ...healthCheckLabels({ ...check, deadlineSeconds }),
        },
        port: "auto",
      });
      await router.switch(
        { name: route, host: `${route}.test`, pathPrefix: "/" },
        { upstream: processOrigin(started.port ?? 0), colour: name },
      );
      return name;
    };
    const good = `good-${suffix}`;
    const broken = `broken-${suffix}`;
    const gone = `gone-${suffix}`;
    const goodColour = await colour(good, slowToBoot, 30);
    const brokenColour = await colour(broken, neverHealthy, 15);
    await router.switch(
      { name: gone, host: `${gone}.test`, pathPrefix: "/" },
      {
        upstream: "http://127.0.0.1:9",
        colour: `${gone}-blue`,
      },
    );
    await processes.stop(goodColour, { stopTimeoutSeconds: 5 });
    await processes.stop(brokenColour, { stopTimeoutSeconds: 5 });

    let done = false;
    const reconciling = reconcileLiveColours(router, [coloursOf(processes)], { transport }).finally(() => {
      done = true;
    });
    // The good route answers while the broken one is still being waited for.
    let answer = { status: 0, body: "" };
    while (!done && answer.status !== 200) {
      await sleep(100);
      answer = await get(proxy.port, `${good}.test`);
    }
    const answeredBeforeDone = !done;
    const report = await reconciling;

    expect(answer).toEqual({ status: 200, body: `version ${good}` });
    expect(answeredBeforeDone).toBe(true);
    expect(report.filter((line) => line.startsWith(`route ${good}:`))).toEqual([
      `route ${good}: starting its live colour ${goodColour}, which was not running`,
      expect.stringMatching(
        new RegExp(`^route ${good}: its live colour ${goodColour} answers HTTP 200 on /health \\(after \\d+ probe`),
      ),
    ]);
    expect(report.filter((line) => line.startsWith(`route ${broken}:`))).toEqual([
      `route ${broken}: starting its live colour ${brokenColour}, which was not running`,
      `route ${broken}: its live colour ${brokenColour} was started but did not answer HTTP 200 on /health within 15 s (last: HTTP 404); the route sends its traffic there all the same: see the process's log, and deploy or roll back to fix it`,
    ]);
    expect(report.filter((line) => line.startsWith(`route ${gone}:`))).toEqual([
      `route ${gone}: its live colour ${gone}-blue has no container or process; deploy or roll back to put one behind ${gone}.test/`,
    ]);
    // The broken colour runs (its process does): only its answers are wrong.
    expect((await processes.inspect(brokenColour))?.running).toBe(true);
  });
});

/** What the proxy answers for a host name; a refused connection is status 0. */
function get(port: number, host: string): Promise<{ status: number; body: string }> {
  return new Promise((resolve) => {
    const request = http.get({ host: "127.0.0.1", port, path: "/", headers: { host }, agent: false }, (response) => {
      let body = "";
      response.setEncoding("utf8").on("data", (chunk: string) => {
        body += chunk;
      });
      response.on("end", () => resolve({ status: response.statusCode ?? 0, body: body.trim() }));
    });
    request.on("error", (error) => resolve({ status: 0, body: error.message }));
  });
}
