import { randomBytes } from "node:crypto";
import { once } from "node:events";
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import http from "node:http";
import type { AddressInfo } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { setTimeout as sleep } from "node:timers/promises";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { connectEmbeddedProxy } from "../src/traffic/builtin.js";
import { HaproxyRouter } from "../src/traffic/haproxy.js";
import { NginxRouter } from "../src/traffic/nginx.js";
import type { Router } from "../src/traffic/router.js";
import type { TrafficSettings } from "../src/traffic/routers.js";
import { LocalTransport } from "../src/transports/local.js";
import { type CliResult, isolatedEnv, runFerry } from "./helpers/cli.js";
import {
  haproxyStateDir,
  idleRemoteNginxRouter,
  remoteHaproxyRouter,
  stopMaster,
  type TestHaproxy,
} from "./helpers/haproxy.js";
import { startLoad } from "./helpers/load.js";
import { startNginx, type TestNginx } from "./helpers/nginx.js";
import { type ProxyProcess, startProxyProcess } from "./helpers/proxy.js";
import { get } from "./helpers/routerDriver.js";
import { startTestServer, type TestServer } from "./helpers/server.js";

/**
 * Route modes through the server (issue 17 part 5, ADR 0071): `PUT|DELETE
 * /api/v1/targets/{t}/routes/{r}/mode` and `ferry route maintenance|pause|resume`, on a real
 * server whose local target's router is a real `ferry proxy` process, a real HAProxy or a real
 * nginx, with real upstreams and clients. The route is made by the router's own driver
 * beforehand, as a blue/green step would.
 */
describe("route modes through the API and `ferry route` (real server, CLI and routers)", () => {
  const servers: http.Server[] = [];
  const scratch = mkdtempSync(join(tmpdir(), "ferry-route-modes-"));
  let upstream: string;

  beforeAll(async () => {
    const server = http.createServer((request, response) => {
      request.resume();
      response.end("upstream ok");
    });
    server.listen(0, "127.0.0.1");
    await once(server, "listening");
    servers.push(server);
    upstream = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
  });

  afterAll(async () => {
    for (const server of servers) server.close();
    rmSync(scratch, { recursive: true, force: true });
  });

  /** The first answer of `request`, tried every 100 ms for up to 20 s while nothing listens. */
  const untilAnswered = async <T>(request: () => Promise<T>): Promise<T> => {
    const deadline = Date.now() + 20_000;
    for (;;) {
      try {
        return await request();
      } catch (error) {
        if (Date.now() > deadline) throw error;
        await sleep(100);
      }
    }
  };

  /** A server whose local target "edge" uses `traffic`, with `route` switched to the upstream by `router`. */
  const serverWithRoute = async (traffic: TrafficSettings, router: Router, route: string, host: string) => {
    await router.switch({ name: route, host, pathPrefix: "/" }, { upstream, colour: "blue" });
    const test = await startTestServer({ traffic });
    const environment = await test.call("POST", "/api/v1/environments", { name: "prod" });
    expect(environment.status, JSON.stringify(environment.body)).toBe(201);
    const target = await test.call("POST", "/api/v1/targets", {
      name: "edge",
      environments: ["prod"],
      transport: "local",
    });
    expect(target.status, JSON.stringify(target.body)).toBe(201);
    const env = isolatedEnv(scratch, { FERRY_URL: test.server.url, FERRY_API_KEY: test.apiKey });
    const ferry = (args: string[]): Promise<CliResult> => runFerry(["route", ...args], env);
    return { test, ferry };
  };

  describe("builtin router (ferry proxy): maintenance and pause", () => {
    const route = `rmb-${randomBytes(3).toString("hex")}`;
    const host = `${route}.test`;
    let proxy: ProxyProcess;
    let router: Router;
    let test: TestServer;
    let ferry: (args: string[]) => Promise<CliResult>;

    beforeAll(async () => {
      proxy = await startProxyProcess();
      router = await connectEmbeddedProxy({ stateDir: proxy.stateDir, listen: `127.0.0.1:${proxy.port}` });
      ({ test, ferry } = await serverWithRoute(proxy.traffic, router, route, host));
    }, 60_000);

    afterAll(async () => {
      await test?.close();
      await router?.close();
      await proxy?.stop();
    });

    it("`ferry route maintenance --page` serves the page with 503 to every request until `ferry route resume`", async () => {
      const page = join(scratch, "maintenance.html");
      writeFileSync(page, "<h1>Back soon</h1>\n");
      const before = await get(proxy.port, host);
      const put = await ferry(["maintenance", route, "--target", "edge", "--page", page]);
      const during = await get(proxy.port, host);
      const resumed = await ferry(["resume", route, "--target", "edge", "--json"]);
      const after = await get(proxy.port, host);

      expect(before).toMatchObject({ status: 200, body: "upstream ok" });
      expect(put.code, put.stderr).toBe(0);
      expect(put.stdout).toBe(`route ${route} on target edge (builtin): in maintenance (503) with ${page}\n`);
      expect(during.status).toBe(503);
      expect(during.body).toBe("<h1>Back soon</h1>\n");
      expect(during.headers["content-type"]).toBe("text/html; charset=utf-8");
      expect(resumed.code, resumed.stderr).toBe(0);
      expect(JSON.parse(resumed.stdout)).toEqual({ target: "edge", route, router: "builtin", mode: null });
      expect(after).toMatchObject({ status: 200, body: "upstream ok" });
    });

    it("a pause through the API holds requests under load; DELETE sends every held one on: 0 failed", async () => {
      const load = startLoad({ port: proxy.port, host, connections: 8 });
      while (load.completed() < 200) await sleep(20);
      const paused = await test.call("PUT", `/api/v1/targets/edge/routes/${route}/mode`, {
        mode: "paused",
        timeoutSeconds: 30,
      });
      const held = get(proxy.port, host);
      const completedWhenPaused = load.completed();
      await sleep(1_500);
      const completedAfterWait = load.completed();
      const resumed = await test.call("DELETE", `/api/v1/targets/edge/routes/${route}/mode`);
      const released = await held;
      while (load.completed() < completedAfterWait + 200) await sleep(20);
      const result = await load.stop();

      expect(paused.status, JSON.stringify(paused.body)).toBe(200);
      expect(paused.body).toEqual({ target: "edge", route, router: "builtin", mode: "paused" });
      // Held, not answered: at most the requests already in flight completed during the pause.
      expect(completedAfterWait - completedWhenPaused).toBeLessThanOrEqual(8);
      expect(resumed.status, JSON.stringify(resumed.body)).toBe(200);
      expect(released).toMatchObject({ status: 200, body: "upstream ok" });
      expect(result.failures).toEqual([]);
    }, 60_000);

    it("refuses a bad body by field, and names a target or route that does not exist", async () => {
      const noTimeout = await test.call<{ errors: { pointer: string }[] }>(
        "PUT",
        `/api/v1/targets/edge/routes/${route}/mode`,
        { mode: "paused" },
      );
      const badMode = await test.call("PUT", `/api/v1/targets/edge/routes/${route}/mode`, { mode: "off" });
      const noRoute = await test.call<{ detail: string }>("PUT", "/api/v1/targets/edge/routes/no-such-route/mode", {
        mode: "maintenance",
      });
      const noTarget = await test.call<{ detail: string }>("DELETE", `/api/v1/targets/nowhere/routes/${route}/mode`);
      const badTimeout = await ferry(["pause", route, "--target", "edge", "--timeout", "0"]);
      const still = await get(proxy.port, host);

      expect(noTimeout.status).toBe(400);
      expect(noTimeout.body.errors.map((error) => error.pointer)).toContain("/timeoutSeconds");
      expect(badMode.status).toBe(400);
      expect(noRoute.status).toBe(404);
      expect(noRoute.body.detail).toContain("has no route 'no-such-route'");
      expect(noTarget.status).toBe(404);
      expect(noTarget.body.detail).toContain("nowhere");
      expect(badTimeout.code).not.toBe(0);
      expect(badTimeout.stderr).toContain("--timeout");
      expect(still).toMatchObject({ status: 200, body: "upstream ok" });
    });
  });

  describe("HAProxy router: maintenance through the runtime API, pause refused", () => {
    const route = `rmh-${randomBytes(3).toString("hex")}`;
    const host = `${route}.test`;
    let haproxy: TestHaproxy;
    let router: HaproxyRouter;
    let test: TestServer;
    let ferry: (args: string[]) => Promise<CliResult>;

    beforeAll(async () => {
      haproxy = await haproxyStateDir();
      router = new HaproxyRouter(haproxy.options);
      ({ test, ferry } = await serverWithRoute({ driver: "haproxy", haproxy: haproxy.options }, router, route, host));
    }, 60_000);

    afterAll(async () => {
      await test?.close();
      await router?.close();
      await haproxy?.stop();
    });

    it("maintenance with a page and without: 503 at once, no reload (same worker), 0 failed requests before and after, kept across a HAProxy restart", async () => {
      const workers = haproxy.workerPids();
      const load = startLoad({ port: haproxy.port, host, connections: 8 });
      while (load.completed() < 200) await sleep(20);
      const withPage = await test.call("PUT", `/api/v1/targets/edge/routes/${route}/mode`, {
        mode: "maintenance",
        page: "<h1>Back soon</h1>\n<p>100% 'quoted' \"page\"</p>\n",
      });
      const maintenanceStarted = load.completed();
      const page = await get(haproxy.port, host);
      const resumed = await test.call("DELETE", `/api/v1/targets/edge/routes/${route}/mode`);
      while (load.completed() < maintenanceStarted + 200) await sleep(20);
      const seen = await load.stop();
      const problem = await ferry(["maintenance", route, "--target", "edge"]);
      const problemReply = await get(haproxy.port, host);
      const workersAfter = haproxy.workerPids();
      // HAProxy stopped; the server's driver starts it again from Ferry's files within seconds: the route is still in maintenance.
      await stopMaster(haproxy.masterPid());
      const afterRestart = await untilAnswered(() => get(haproxy.port, host));
      const served = await ferry(["resume", route, "--target", "edge"]);
      const afterResume = await get(haproxy.port, host);

      expect(withPage.status, JSON.stringify(withPage.body)).toBe(200);
      expect(withPage.body).toEqual({ target: "edge", route, router: "haproxy", mode: "maintenance" });
      expect(page.status).toBe(503);
      expect(page.body).toBe("<h1>Back soon</h1>\n<p>100% 'quoted' \"page\"</p>\n");
      expect(page.headers["content-type"]).toBe("text/html; charset=utf-8");
      expect(resumed.status, JSON.stringify(resumed.body)).toBe(200);
      // The load saw the upstream, then 503s while in maintenance, and nothing else.
      for (const failure of seen.failures) expect(failure).toMatch(/^HTTP 503: <h1>Back soon/);
      expect(seen.bodies.get("upstream ok") ?? 0).toBeGreaterThanOrEqual(200);
      expect(problem.code, problem.stderr).toBe(0);
      expect(problem.stdout).toBe(`route ${route} on target edge (haproxy): in maintenance (503)\n`);
      expect(problemReply.status).toBe(503);
      expect(problemReply.headers["content-type"]).toBe("application/problem+json");
      expect(JSON.parse(problemReply.body)).toMatchObject({
        type: "urn:ferry:problem:maintenance",
        detail: `route '${route}' is in maintenance; try again later`,
      });
      expect(workersAfter).toEqual(workers);
      expect(afterRestart.status).toBe(503);
      expect(served.code, served.stderr).toBe(0);
      expect(afterResume).toMatchObject({ status: 200, body: "upstream ok" });
      expect(readFileSync(join(haproxy.dir, "maintenance.map"), "utf8")).toBe("");
    }, 90_000);

    it("refuses a pause with 409 and the reason, and a page over 8 KiB by its field; the route keeps serving", async () => {
      const pause = await test.call<{ detail: string }>("PUT", `/api/v1/targets/edge/routes/${route}/mode`, {
        mode: "paused",
        timeoutSeconds: 10,
      });
      const cliPause = await ferry(["pause", route, "--target", "edge"]);
      const tooLong = await test.call<{ errors: { pointer: string; detail: string }[] }>(
        "PUT",
        `/api/v1/targets/edge/routes/${route}/mode`,
        { mode: "maintenance", page: "x".repeat(9 * 1024) },
      );
      const still = await get(haproxy.port, host);

      expect(pause.status).toBe(409);
      expect(pause.body.detail).toContain("the haproxy router cannot pause route");
      expect(pause.body.detail).toContain("put it in maintenance instead");
      expect(cliPause.code).not.toBe(0);
      expect(cliPause.stderr).toContain("cannot pause");
      expect(tooLong.status).toBe(400);
      expect(tooLong.body.errors).toEqual([expect.objectContaining({ pointer: "/page" })]);
      expect(tooLong.body.errors[0]?.detail).toContain("at most 8 KiB");
      expect(still).toMatchObject({ status: 200, body: "upstream ok" });
    });
  });

  it("a remote host's HAProxy takes maintenance through `ferry haproxy-router` run by its transport; a remote nginx has no modes", async () => {
    const haproxy = await haproxyStateDir();
    const workRoot = mkdtempSync(join(tmpdir(), "fhx-work-"));
    try {
      const transport = new LocalTransport(workRoot);
      const router = await remoteHaproxyRouter(transport, haproxy);
      const route = `rmr-${randomBytes(3).toString("hex")}`;
      const host = `${route}.test`;
      await router.switch({ name: route, host, pathPrefix: "/" }, { upstream, colour: "blue" });
      if (!router.setMode) throw new Error("the remote HAProxy router has no modes");
      await router.setMode(route, { mode: "maintenance", page: "<p>remote\nmaintenance</p>" });
      const during = await get(haproxy.port, host);
      const pause = await router.setMode(route, { mode: "paused", timeoutSeconds: 5 }).catch((error: Error) => error);
      await router.setMode(route, null);
      const after = await get(haproxy.port, host);
      const nginx = await idleRemoteNginxRouter(transport);

      expect(during).toMatchObject({ status: 503, body: "<p>remote\nmaintenance</p>" });
      expect(pause).toBeInstanceOf(Error);
      expect((pause as Error).message).toContain("cannot pause route");
      expect(after).toMatchObject({ status: 200, body: "upstream ok" });
      expect(nginx.setMode).toBeUndefined();
    } finally {
      await haproxy.stop();
      rmSync(workRoot, { recursive: true, force: true });
    }
  }, 60_000);

  describe("nginx router: no modes", () => {
    const route = `rmn-${randomBytes(3).toString("hex")}`;
    const host = `${route}.test`;
    let nginx: TestNginx;
    let router: NginxRouter;
    let test: TestServer;
    let ferry: (args: string[]) => Promise<CliResult>;

    beforeAll(async () => {
      nginx = await startNginx();
      router = new NginxRouter(nginx.options);
      ({ test, ferry } = await serverWithRoute({ driver: "nginx", nginx: nginx.options }, router, route, host));
    }, 60_000);

    afterAll(async () => {
      await test?.close();
      await router?.close();
      await nginx?.stop();
    });

    it("answers 409 with the reason through the API and the CLI; the route keeps serving", async () => {
      const maintenance = await test.call<{ detail: string }>("PUT", `/api/v1/targets/edge/routes/${route}/mode`, {
        mode: "maintenance",
      });
      const resume = await ferry(["resume", route, "--target", "edge"]);
      const still = await get(nginx.port, host);

      expect(maintenance.status).toBe(409);
      expect(maintenance.body.detail).toBe(
        "the nginx router of target 'edge' cannot put a route in maintenance or pause it (nginx would need a reload per change, which cuts idle keep-alive connections); use the builtin router (ferry proxy) or HAProxy on that target",
      );
      expect(resume.code).not.toBe(0);
      expect(resume.stderr).toContain("cannot put a route in maintenance or pause it");
      expect(still).toMatchObject({ status: 200, body: "upstream ok" });
    });
  });
});
