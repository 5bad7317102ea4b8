import { appendFileSync, readdirSync, readFileSync } from "node:fs";
import { join } from "node:path";
import { setTimeout as sleep } from "node:timers/promises";
import { describe, expect, it } from "vitest";
import { NginxRouter } from "../src/traffic/nginx.js";
import { startNginx, type TestNginx } from "./helpers/nginx.js";
import { get, routerDriverTests, servesTwoRoutes, switchTenTimesUnderLoad } from "./helpers/routerDriver.js";

const {
  startUpstream,
  startServer: startTestNginx,
  openRouter,
} = routerDriverTests(startNginx, (nginx) => new NginxRouter(nginx.options));

const sitesFiles = (nginx: TestNginx) =>
  Object.fromEntries(
    readdirSync(nginx.options.sitesDir).map((name) => [name, readFileSync(join(nginx.options.sitesDir, name), "utf8")]),
  );

describe("nginx router", () => {
  it("creates routes in nginx's config, serves them by host and prefix, and reads them back from the files", async () => {
    const nginx = await startTestNginx();
    const web = await startUpstream("web");
    const api = await startUpstream("api");
    const router = openRouter(nginx);

    const { headers, expected } = await servesTwoRoutes(router, nginx.port, web, api);
    expect(headers).toMatchObject({ host: "app.example.com", "x-forwarded-for": "127.0.0.1" });
    expect(headers.connection).toBeUndefined();

    expect(Object.keys(sitesFiles(nginx)).sort()).toEqual(["ferry-00-common.conf", "ferry-host-app.example.com.conf"]);

    // State is on disk: another router over the same files sees the same routes.
    const second = openRouter(nginx);
    expect(await second.routes()).toEqual(expected);
    expect(await second.live("api")).toEqual({ upstream: api.url, colour: null });

    // nginx writes a request's access-log line just after the response has gone out, so
    // the last line may land a moment after the client has its answer.
    const counted = expect.arrayContaining([
      expect.objectContaining({ route: "web", upstream: web.url, served: 3, failed: 0 }),
      expect.objectContaining({ route: "api", upstream: api.url, served: 2, failed: 0 }),
    ]);
    await expect.poll(() => router.traffic(), { timeout: 2_000, interval: 50 }).toEqual(counted);
  });

  it("switches 10 times under keep-alive load, draining and restarting the old colour each time, with 0 failed requests", async () => {
    const nginx = await startTestNginx();
    const blue = await startUpstream("blue");
    const green = await startUpstream("green");
    const router = openRouter(nginx);
    const route = { name: "app", host: "app.test", pathPrefix: "/" };
    await router.switch(route, { upstream: blue.url, colour: "blue" });
    const before = (await router.traffic()) ?? [];

    const { result, switchTimes } = await switchTenTimesUnderLoad(router, nginx.port, route, blue, green);

    expect(result.failures).toEqual([]);
    expect(result.requests).toBeGreaterThan(100);
    expect(result.bodies.get("blue")).toBeGreaterThan(0);
    expect(result.bodies.get("green")).toBeGreaterThan(0);
    expect(await router.live("app")).toEqual({ upstream: blue.url, colour: "blue" });
    expect(Math.max(...switchTimes)).toBeLessThan(5_000);

    // Access-log lines land just after their responses: poll until the last ones are in.
    const servedSince = async () =>
      ((await router.traffic()) ?? []).reduce((sum, entry) => sum + entry.served, 0) -
      before.reduce((sum, entry) => sum + entry.served, 0);
    await expect.poll(servedSince, { timeout: 2_000, interval: 50 }).toBe(result.requests);
    expect(((await router.traffic()) ?? []).every((entry) => entry.failed === 0)).toBe(true);
  });

  it("lets a 2 s request in flight at the switch finish on the old colour; drain waits for it", async () => {
    const nginx = await startTestNginx();
    const blue = await startUpstream("blue");
    const green = await startUpstream("green");
    const router = openRouter(nginx);
    const route = { name: "app", host: "app.test", pathPrefix: "/" };
    await router.switch(route, { upstream: blue.url, colour: "blue" });

    const slowStarted = performance.now();
    const slow = get(nginx.port, "app.test", "/slow");
    await sleep(300);
    // Still live: it cannot drain, and says so at once.
    expect(await router.drain(blue.url, 5_000)).toEqual({ drained: false, waitedMs: 0 });

    const { previous, switchMs } = await router.switch(route, { upstream: green.url, colour: "green" });
    expect(previous).toEqual({ upstream: blue.url, colour: "blue" });
    expect((await get(nginx.port, "app.test", "/")).body).toBe("green");

    const drainStarted = performance.now();
    const drain = router.drain(blue.url, 10_000);
    let slowDoneAt = 0;
    const reply = await slow.then((result) => {
      slowDoneAt = performance.now();
      return result;
    });
    expect(reply).toMatchObject({ status: 200, body: "blue" });
    const drained = await drain;
    expect(drained.drained).toBe(true);
    expect(slowDoneAt).toBeGreaterThan(0);
    const remaining = 2_000 - (drainStarted - slowStarted);
    expect(drained.waitedMs).toBeGreaterThanOrEqual(remaining - 100);
    expect(switchMs).toBeLessThan(2_000);

    // A slow request on green is not drained by a short deadline.
    const another = get(nginx.port, "app.test", "/slow");
    await sleep(200);
    await router.switch(route, { upstream: blue.url, colour: "blue" });
    const short = await router.drain(green.url, 300);
    expect(short.drained).toBe(false);
    expect(short.waitedMs).toBeGreaterThanOrEqual(300);
    expect((await another).body).toBe("green");
  });

  it("times requests from nginx's $request_time in the builtin proxy's buckets, and still counts lines of the untimed format", async () => {
    const nginx = await startTestNginx();
    const app = await startUpstream("app");
    const router = openRouter(nginx);
    await router.switch({ name: "app", host: "app.test", pathPrefix: "/" }, { upstream: app.url, colour: "blue" });

    for (let index = 0; index < 20; index += 1) expect((await get(nginx.port, "app.test", "/")).body).toBe("app");
    const slow = await Promise.all([1, 2, 3].map(() => get(nginx.port, "app.test", "/slow")));
    expect(slow.map((reply) => reply.body)).toEqual(["app", "app", "app"]);
    // With the upstream gone nginx answers 502 at once: failed, and timed too.
    await app.stop();
    for (let index = 0; index < 2; index += 1) expect((await get(nginx.port, "app.test", "/")).status).toBe(502);

    // Access-log lines land just after their responses: poll until the last ones are in.
    const entryOf = async (route: string) => ((await router.traffic()) ?? []).find((entry) => entry.route === route);
    await expect
      .poll(async () => {
        const entry = await entryOf("app");
        return { served: entry?.served, failed: entry?.failed };
      })
      .toEqual({ served: 23, failed: 2 });
    const entry = await entryOf("app");
    if (!entry?.duration) throw new Error("nginx's requests should be timed");
    expect(entry.duration.count).toBe(entry.served + entry.failed);
    const bucket = (le: number) => entry.duration?.buckets.find((candidate) => candidate.le === le)?.count;
    // The builtin proxy's bounds, 5 ms … 10 s; the 2 s requests are above 1 s, the others below.
    expect(entry.duration.buckets.map((candidate) => candidate.le)).toEqual([
      0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10,
    ]);
    expect(bucket(1)).toBe(22);
    expect(bucket(5)).toBe(25);
    expect(entry.duration.sum).toBeGreaterThanOrEqual(6);
    expect(entry.duration.sum).toBeLessThan(15);

    // Lines in the format nginx keeps writing until a switch reloads it with the new one.
    const legacy = "http://127.0.0.1:9";
    appendFileSync(
      join(nginx.dir, "ferry-access.log"),
      [
        `old ${legacy} 200 127.0.0.1:9`,
        `old ${legacy} 200 127.0.0.1:9, 127.0.0.1:10`,
        `old ${legacy} 502 127.0.0.1:9`,
        `old ${legacy} 200 -`,
        "",
      ].join("\n"),
    );
    expect(await entryOf("old")).toEqual({ route: "old", upstream: legacy, served: 2, failed: 2 });
    expect((await entryOf("app"))?.duration?.count).toBe(25);
  });

  it("keeps the previous config live when the new one fails `nginx -t`, and says why", async () => {
    const nginx = await startTestNginx();
    const blue = await startUpstream("blue");
    const router = openRouter(nginx);
    const route = { name: "app", host: "app.test", pathPrefix: "/" };
    await router.switch(route, { upstream: blue.url, colour: "blue" });
    const files = sitesFiles(nginx);
    const pid = nginx.masterPid();

    await expect(router.switch(route, { upstream: "http://no-such-host.invalid:80", colour: "green" })).rejects.toThrow(
      /previous config stays live[\s\S]*host not found in upstream "no-such-host\.invalid:80"/,
    );
    // A new route on a new host fails the same way: its new file is removed again.
    await expect(
      router.switch(
        { name: "other", host: "other.test", pathPrefix: "/" },
        { upstream: "http://no-such-host.invalid", colour: null },
      ),
    ).rejects.toThrow(/host not found in upstream/);

    expect(sitesFiles(nginx)).toEqual(files);
    expect(await router.live("app")).toEqual({ upstream: blue.url, colour: "blue" });
    expect((await get(nginx.port, "app.test", "/")).body).toBe("blue");
    expect(nginx.masterPid()).toBe(pid);
  });

  it("starts nginx when it is not running, from the files on disk plus the switch", async () => {
    const nginx = await startTestNginx();
    const blue = await startUpstream("blue");
    const router = openRouter(nginx);
    await router.switch({ name: "app", host: "app.test", pathPrefix: "/" }, { upstream: blue.url, colour: "blue" });
    const pid = nginx.masterPid();
    if (pid === undefined) throw new Error("nginx should run");
    process.kill(pid, "SIGTERM");
    while (nginx.masterPid() !== undefined) await sleep(20);

    await router.switch({ name: "docs", host: "docs.test", pathPrefix: "/" }, { upstream: blue.url, colour: null });
    expect(nginx.masterPid()).not.toBe(pid);
    expect((await get(nginx.port, "app.test", "/")).body).toBe("blue");
    expect((await get(nginx.port, "docs.test", "/")).body).toBe("blue");
  });

  it("refuses hosts, prefixes, names and upstreams that could inject nginx config, before writing anything", async () => {
    const nginx = await startTestNginx();
    const blue = await startUpstream("blue");
    const router = openRouter(nginx);
    const target = { upstream: blue.url, colour: "blue" };
    const attempts: [Parameters<NginxRouter["switch"]>[0], Parameters<NginxRouter["switch"]>[1], RegExp][] = [
      [{ name: "app", host: "x; } server { listen 80", pathPrefix: "/" }, target, /host/],
      [{ name: "app", host: "app.test\n", pathPrefix: "/" }, target, /host/],
      [{ name: "app", host: "app.test", pathPrefix: "/a;b" }, target, /path prefix/],
      [{ name: "app", host: "app.test", pathPrefix: "/a\n}" }, target, /path prefix/],
      [{ name: "app", host: "app.test", pathPrefix: "/a { return 200" }, target, /path prefix/],
      [{ name: "app", host: "app.test", pathPrefix: "/$host" }, target, /path prefix/],
      [{ name: "a;b", host: "app.test", pathPrefix: "/" }, target, /route name/],
      [{ name: "app", host: "app.test", pathPrefix: "/" }, { upstream: "http://x;y:80", colour: null }, /upstream/],
      [
        { name: "app", host: "app.test", pathPrefix: "/" },
        { upstream: "http://1.2.3.4:80/x", colour: null },
        /upstream/,
      ],
      [{ name: "app", host: "app.test", pathPrefix: "/" }, { upstream: "https://1.2.3.4", colour: null }, /upstream/],
      [{ name: "app", host: "app.test", pathPrefix: "/" }, { upstream: blue.url, colour: "blue\n}" }, /colour/],
    ];
    for (const [route, upstream, message] of attempts) {
      await expect(router.switch(route, upstream)).rejects.toThrow(message);
    }
    expect(readdirSync(nginx.options.sitesDir)).toEqual([]);

    await router.switch({ name: "app", host: "app.test", pathPrefix: "/" }, target);
    const files = sitesFiles(nginx);
    for (const [route, upstream, message] of attempts) {
      await expect(router.switch(route, upstream)).rejects.toThrow(message);
    }
    expect(sitesFiles(nginx)).toEqual(files);
    expect(() => new NginxRouter({ ...nginx.options, listen: "80; include /etc/passwd" })).toThrow(/listen/);
  });
});
