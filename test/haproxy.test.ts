import { readFileSync } from "node:fs";
import { join } from "node:path";
import { setTimeout as sleep } from "node:timers/promises";
import { describe, expect, it } from "vitest";
import { readEnvironment } from "../src/config/env.js";
import { connectHaproxyRouter, HaproxyRouter } from "../src/traffic/haproxy.js";
import { trafficSettingsFromEnvironment } from "../src/traffic/routers.js";
import { haproxyStateDir, isRunning } from "./helpers/haproxy.js";
import { get, routerDriverTests, servesTwoRoutes, switchTenTimesUnderLoad } from "./helpers/routerDriver.js";

/*
 * The haproxy Router driver against Debian's real HAProxy: Ferry writes haproxy.cfg, starts
 * and owns the master-worker process, and switches through the runtime API on its unix socket.
 */

const {
  cleanUp,
  startUpstream,
  startServer: startTestHaproxy,
  openRouter,
} = routerDriverTests(haproxyStateDir, (haproxy) => new HaproxyRouter(haproxy.options));

describe("haproxy router", () => {
  it("writes haproxy.cfg, starts HAProxy, serves routes by host and prefix, and reads them back from the file", async () => {
    const haproxy = await startTestHaproxy();
    const web = await startUpstream("web");
    const api = await startUpstream("api");
    const router = openRouter(haproxy);

    const { headers, expected } = await servesTwoRoutes(router, haproxy.port, web, api, () => {
      expect(haproxy.masterPid()).toBeDefined();
    });
    expect(headers).toMatchObject({
      host: "app.example.com",
      "x-forwarded-for": "127.0.0.1",
      "x-forwarded-proto": "http",
      "x-forwarded-host": "app.example.com",
    });

    // The runtime API's socket is the owner's only.
    expect(readFileSync(join(haproxy.dir, "haproxy.cfg"), "utf8")).toContain("mode 600 level admin");

    // State is on disk: another router over the same directory sees the same routes.
    const second = openRouter(haproxy);
    expect(await second.routes()).toEqual(expected);

    // Counted and timed from the access log HAProxy writes (the same buckets as the other drivers).
    await expect
      .poll(() => router.traffic(), { timeout: 2_000, interval: 50 })
      .toEqual(
        expect.arrayContaining([
          expect.objectContaining({ route: "web", upstream: web.url, served: 3, failed: 0 }),
          expect.objectContaining({ route: "api", upstream: api.url, served: 2, failed: 0 }),
        ]),
      );
    const web3 = ((await router.traffic()) ?? []).find((entry) => entry.route === "web");
    expect(web3?.duration?.count).toBe(3);
    expect(web3?.duration?.buckets.at(-1)?.count).toBe(3);
  });

  it("switches 10 times under keep-alive load through the runtime API (no reload: the same worker throughout), draining and restarting the old colour, 0 failed requests", async () => {
    const haproxy = await startTestHaproxy();
    const blue = await startUpstream("blue");
    const green = await startUpstream("green");
    const router = openRouter(haproxy);
    const route = { name: "app", host: "app.test", pathPrefix: "/" };
    await router.switch(route, { upstream: blue.url, colour: "blue" });
    const workers = haproxy.workerPids();
    expect(workers).toHaveLength(1);
    const before = (await router.traffic()) ?? [];

    const { result } = await switchTenTimesUnderLoad(router, haproxy.port, route, blue, green, async (colour) => {
      // New connections and requests go to the new colour as soon as the switch resolves.
      expect((await get(haproxy.port, "app.test")).body).toBe(colour);
    });

    expect(result.failures).toEqual([]);
    expect(result.requests).toBeGreaterThan(100);
    expect(result.bodies.get("blue")).toBeGreaterThan(0);
    expect(result.bodies.get("green")).toBeGreaterThan(0);
    expect(await router.live("app")).toEqual({ upstream: blue.url, colour: "blue" });
    // Never a reload for a switch: the one worker HAProxy started with served all of it.
    expect(haproxy.workerPids()).toEqual(workers);

    const servedSince = async () =>
      ((await router.traffic()) ?? []).reduce((sum, entry) => sum + entry.served, 0) -
      before.reduce((sum, entry) => sum + entry.served, 0);
    // The load's requests plus the 10 single checks after each switch.
    await expect.poll(servedSince, { timeout: 2_000, interval: 50 }).toBe(result.requests + 10);
    expect(((await router.traffic()) ?? []).every((entry) => entry.failed === 0)).toBe(true);
  });

  it("lets a 2 s request in flight at the switch finish on the old colour; drain waits for its session", async () => {
    const haproxy = await startTestHaproxy();
    const blue = await startUpstream("blue");
    const green = await startUpstream("green");
    const router = openRouter(haproxy);
    const route = { name: "app", host: "app.test", pathPrefix: "/" };
    await router.switch(route, { upstream: blue.url, colour: "blue" });

    const slowStarted = performance.now();
    const slow = get(haproxy.port, "app.test", "/slow");
    await sleep(300);
    expect(await router.drain(blue.url, 5_000)).toEqual({ drained: false, waitedMs: 0 });

    const { previous } = await router.switch(route, { upstream: green.url, colour: "green" });
    expect(previous).toEqual({ upstream: blue.url, colour: "blue" });
    expect((await get(haproxy.port, "app.test", "/")).body).toBe("green");

    const drainStarted = performance.now();
    const drain = router.drain(blue.url, 10_000);
    const reply = await slow;
    expect(reply).toMatchObject({ status: 200, body: "blue" });
    const drained = await drain;
    expect(drained.drained).toBe(true);
    const remaining = 2_000 - (drainStarted - slowStarted);
    expect(drained.waitedMs).toBeGreaterThanOrEqual(remaining - 100);

    // A slow request on green is not drained by a short deadline, and says how many are left.
    const another = get(haproxy.port, "app.test", "/slow");
    await sleep(200);
    await router.switch(route, { upstream: blue.url, colour: "blue" });
    const short = await router.drain(green.url, 300);
    expect(short).toMatchObject({ drained: false, inFlight: 1 });
    expect(short.waitedMs).toBeGreaterThanOrEqual(300);
    expect((await another).body).toBe("green");
  });

  it("after kill -9 of HAProxy, the connected driver starts it again on the live colour; so does a server restart", async () => {
    const haproxy = await startTestHaproxy();
    const blue = await startUpstream("blue");
    const green = await startUpstream("green");
    const logs: string[] = [];
    const router = await connectHaproxyRouter(haproxy.options, (line) => logs.push(line));
    cleanUp(() => router.close());
    const route = { name: "app", host: "app.test", pathPrefix: "/" };
    await router.switch(route, { upstream: blue.url, colour: "blue" });
    // Switched at runtime twice: the live colour sits in the other slot than the one it started in.
    await router.switch(route, { upstream: green.url, colour: "green" });
    expect((await get(haproxy.port, "app.test")).body).toBe("green");

    const killAll = () => {
      const master = haproxy.masterPid();
      if (master === undefined) throw new Error("haproxy is not running");
      const all = [master, ...haproxy.workerPids()];
      for (const pid of all) process.kill(pid, "SIGKILL");
      return all;
    };
    const killed = killAll();
    await expect.poll(() => killed.some(isRunning), { timeout: 5_000 }).toBe(false);
    await expect
      .poll(
        () =>
          get(haproxy.port, "app.test").then(
            (reply) => reply.body,
            () => "no answer",
          ),
        {
          timeout: 10_000,
          interval: 100,
        },
      )
      .toBe("green");
    expect(logs).toContain("haproxy is not running: starting it again with Ferry's routes");
    expect(await router.live("app")).toEqual({ upstream: green.url, colour: "green" });

    // And with no driver watching (the server was down too): the next server's connect brings it back.
    await router.close();
    killAll();
    await expect.poll(() => haproxy.masterPid(), { timeout: 5_000 }).toBeUndefined();
    const restarted = await connectHaproxyRouter(haproxy.options, () => undefined);
    cleanUp(() => restarted.close());
    expect((await get(haproxy.port, "app.test")).body).toBe("green");
    // A switch back still goes through the runtime API of the restarted HAProxy.
    const workers = haproxy.workerPids();
    await restarted.switch(route, { upstream: blue.url, colour: "blue" });
    expect((await get(haproxy.port, "app.test")).body).toBe("blue");
    expect(haproxy.workerPids()).toEqual(workers);
  });

  it("refuses hosts, prefixes, names and upstreams that could inject HAProxy config, before writing anything", async () => {
    const haproxy = await startTestHaproxy();
    const router = openRouter(haproxy);
    const target = { upstream: "http://127.0.0.1:9", colour: null };
    await expect(router.switch({ name: "a", host: "x.test if TRUE", pathPrefix: "/" }, target)).rejects.toThrow(
      /host "x.test if TRUE" is not a host name/,
    );
    await expect(router.switch({ name: "a", host: "x.test", pathPrefix: "/a }" }, target)).rejects.toThrow(
      /path prefix "\/a }" must start with '\/'/,
    );
    await expect(router.switch({ name: "a b", host: "x.test", pathPrefix: "/" }, target)).rejects.toThrow(
      /route name "a b"/,
    );
    await expect(
      router.switch({ name: "a", host: "x.test", pathPrefix: "/" }, { upstream: "http://1.2.3.4:80/x", colour: null }),
    ).rejects.toThrow(/is not an HTTP origin/);
    expect(await router.routes()).toEqual([]);
    expect(haproxy.masterPid()).toBeUndefined();
    expect(() => new HaproxyRouter({ stateDir: haproxy.dir, listen: "127.0.0.1:80 ssl" })).toThrow(
      /listen "127.0.0.1:80 ssl" is not an address HAProxy can bind/,
    );
    expect(() => new HaproxyRouter({ stateDir: `/tmp/${"x".repeat(120)}`, listen: "127.0.0.1:80" })).toThrow(
      /too long for its runtime API socket/,
    );
  });

  it("is chosen with FERRY_ROUTER=haproxy and its FERRY_HAPROXY_* settings", () => {
    const settings = trafficSettingsFromEnvironment(
      readEnvironment({ FERRY_ROUTER: "haproxy", FERRY_HAPROXY_LISTEN: "127.0.0.1:18080" }),
      "/var/lib/ferry",
    );
    expect(settings).toMatchObject({
      driver: "haproxy",
      haproxy: { stateDir: "/var/lib/ferry/haproxy", listen: "127.0.0.1:18080", haproxy: "haproxy" },
    });
    expect(() =>
      trafficSettingsFromEnvironment(readEnvironment({ FERRY_ROUTER: "haproxi" }), "/var/lib/ferry"),
    ).toThrow(/FERRY_ROUTER=haproxi: choose one of builtin, nginx, haproxy/);
  });
});
