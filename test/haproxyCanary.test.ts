import { mkdtempSync, rmSync } from "node:fs";
import http from "node:http";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { describe, expect, it } from "vitest";
import { connectHaproxyRouter, HaproxyRouter } from "../src/traffic/haproxy.js";
import { LocalTransport } from "../src/transports/local.js";
import { haproxyStateDir, idleRemoteNginxRouter, remoteHaproxyRouter } from "./helpers/haproxy.js";
import {
  cookieVisitor,
  get,
  measuredShare,
  type Reply,
  routerDriverTests,
  stickyAt20,
} from "./helpers/routerDriver.js";

/**
 * Canary splits on the HAProxy router (ADR 0053), against Debian's real HAProxy: weights by
 * `set weight` on the route's two server slots, stickiness by the dynamic cookie HAProxy
 * sets itself, `X-Ferry-Colour` pins, and the per-colour figures — all through the runtime
 * API, never a reload (the same worker throughout).
 */

const { cleanUp, startUpstream, startServer, openRouter } = routerDriverTests(
  haproxyStateDir,
  (haproxy) => new HaproxyRouter(haproxy.options),
);
const COOKIE = "ferry-canary-app";
const route = { name: "app", host: "app.test", pathPrefix: "/" };

async function setUp() {
  const haproxy = await startServer();
  const router = openRouter(haproxy);
  const blue = await startUpstream("blue");
  const green = await startUpstream("green");
  await router.switch(route, { upstream: blue.url, colour: "blue" });
  return { haproxy, router, blue, green };
}

/** A visitor that keeps HAProxy's cookie, as a browser would. */
const visitor = (port: number, agent: http.Agent) => cookieVisitor(port, "app.test", COOKIE, agent);

describe("haproxy router: canary split", () => {
  it("sends the weight's share of cookie-less requests under load within ±3 points at 10 % and 50 %, by set weight (no reload); a switch promotes it", async () => {
    const { haproxy, router, blue, green } = await setUp();
    const workers = haproxy.workerPids();
    for (const weight of [10, 50]) {
      const { switchMs } = await router.split("app", { upstream: green.url, colour: "green", weight });
      expect(switchMs).toBeGreaterThanOrEqual(0);
      const { share, requests } = await measuredShare(haproxy.port, "green", 4_000);
      expect(requests).toBeGreaterThanOrEqual(4_000);
      const figures = JSON.stringify(
        ((await router.traffic()) ?? []).map(({ upstream, served, failed, retried }) => ({
          upstream,
          served,
          failed,
          retried,
        })),
      );
      expect(
        Math.abs(share - weight),
        `share ${share.toFixed(2)} % at weight ${weight} (HAProxy's figures: ${figures})`,
      ).toBeLessThanOrEqual(3);
    }
    expect(await router.routes()).toEqual([
      { ...route, upstream: blue.url, colour: "blue", canary: { upstream: green.url, colour: "green", weight: 50 } },
    ]);
    await router.switch(route, { upstream: green.url, colour: "green" });
    expect((await router.routes())[0]?.canary).toBeUndefined();
    expect((await measuredShare(haproxy.port, "green", 500)).share).toBe(100);
    // Never a reload: the worker HAProxy started with did all of it.
    expect(haproxy.workerPids()).toEqual(workers);
    // No canary, no cookie.
    expect((await get(haproxy.port, "app.test")).setCookie).toEqual([]);
  }, 180_000);

  it("keeps cookie holders on the colour they reached through a higher weight; 0 % brings everyone back and sets no cookie", async () => {
    const { haproxy, router, green } = await setUp();
    const agent = new http.Agent({ keepAlive: true, maxSockets: 16 });
    cleanUp(() => agent.destroy());
    expect((await get(haproxy.port, "app.test")).setCookie).toEqual([]);

    await router.split("app", { upstream: green.url, colour: "green", weight: 20 });
    const { visitors, first, sideAt20 } = await stickyAt20(() => visitor(haproxy.port, agent));
    expect((first[0] as Reply).setCookie[0]).toMatch(
      new RegExp(`^${COOKIE}=[0-9a-f]+\\|[^;]*; path=/; HttpOnly; SameSite=Lax`, "i"),
    );

    // A higher weight: every cookie holder stays on its colour; new visitors get the new share.
    await router.split("app", { upstream: green.url, colour: "green", weight: 60 });
    expect((await Promise.all(visitors.map((visit) => visit()))).map((reply) => reply.body)).toEqual(sideAt20);
    const newcomers = await Promise.all(Array.from({ length: 100 }, () => get(haproxy.port, "app.test")));
    expect(newcomers.filter((reply) => reply.body === "green").length).toBeGreaterThan(45);

    await router.split("app", null);
    const after = await Promise.all(visitors.map((visit) => visit()));
    expect(new Set(after.map((reply) => reply.body))).toEqual(new Set(["blue"]));
    expect(after.flatMap((reply) => reply.setCookie)).toEqual([]);
    expect((await router.routes())[0]?.canary).toBeUndefined();
  });

  it("X-Ferry-Colour: new reaches the canary at weight 0 (testers only), stable the live colour; pinned requests get no cookie", async () => {
    const { haproxy, router, green } = await setUp();
    await router.split("app", { upstream: green.url, colour: "green", weight: 0 });
    const plain = await Promise.all(Array.from({ length: 50 }, () => get(haproxy.port, "app.test")));
    expect(new Set(plain.map((reply) => reply.body))).toEqual(new Set(["blue"]));
    const pinned = await get(haproxy.port, "app.test", "/", { headers: { "x-ferry-colour": "new" } });
    expect(pinned.body).toBe("green");
    // Pinned answers set no cookie.
    expect(pinned.setCookie).toEqual([]);
    await router.split("app", { upstream: green.url, colour: "green", weight: 99 });
    const stable = await Promise.all(
      Array.from({ length: 20 }, () => get(haproxy.port, "app.test", "/", { headers: { "x-ferry-colour": "stable" } })),
    );
    expect(new Set(stable.map((reply) => reply.body))).toEqual(new Set(["blue"]));
  });

  it("counts the canary's 5xx answers and connection errors apart from the live colour's, with 0 failed requests for clients", async () => {
    const { haproxy, router, blue, green } = await setUp();
    await router.split("app", { upstream: green.url, colour: "green", weight: 50 });
    for (let index = 0; index < 20; index += 1) {
      expect((await get(haproxy.port, "app.test", "/error", { headers: { "x-ferry-colour": "new" } })).status).toBe(
        500,
      );
    }
    for (let index = 0; index < 10; index += 1)
      await get(haproxy.port, "app.test", "/", { headers: { "x-ferry-colour": "new" } });
    await expect
      .poll(async () => ((await router.traffic()) ?? []).find((entry) => entry.upstream === green.url), {
        timeout: 2_000,
      })
      .toMatchObject({ served: 30, serverErrors: 20, failed: 0, retried: 0 });

    // The canary stops answering: HAProxy retries those requests on the live colour, and counts the canary's connection errors.
    await green.stop();
    const replies = await Promise.all(Array.from({ length: 40 }, () => get(haproxy.port, "app.test")));
    expect(new Set(replies.map((reply) => `${reply.status} ${reply.body}`))).toEqual(new Set(["200 blue"]));
    const figures = (await router.traffic()) ?? [];
    expect(figures.find((entry) => entry.upstream === green.url)?.retried).toBeGreaterThan(0);
    expect(figures.find((entry) => entry.upstream === blue.url)).toMatchObject({ failed: 0, serverErrors: 0 });
  });

  it("splits a remote host's HAProxy through ferry haproxy-router (run through the target's transport); nginx hosts offer no split", async () => {
    const haproxy = await startServer();
    const workRoot = mkdtempSync(join(tmpdir(), "fhx-work-"));
    cleanUp(() => rmSync(workRoot, { recursive: true, force: true }));
    const transport = new LocalTransport(workRoot);
    const router = await remoteHaproxyRouter(transport, haproxy);
    const blue = await startUpstream("blue");
    const green = await startUpstream("green");
    await router.switch(route, { upstream: blue.url, colour: "blue" });
    if (!router.split) throw new Error("the remote HAProxy router has no split");
    await router.split("app", { upstream: green.url, colour: "green", weight: 50 });
    expect((await router.routes())[0]?.canary).toEqual({ upstream: green.url, colour: "green", weight: 50 });
    const replies = await Promise.all(Array.from({ length: 100 }, () => get(haproxy.port, "app.test")));
    expect(Math.abs(replies.filter((reply) => reply.body === "green").length - 50)).toBeLessThanOrEqual(3);
    await router.split("app", null);
    expect((await get(haproxy.port, "app.test", "/", { headers: { "x-ferry-colour": "new" } })).body).toBe("blue");

    const nginx = await idleRemoteNginxRouter(transport);
    expect(nginx.split).toBeUndefined();
  });

  it("comes back with the canary after kill -9 of HAProxy, from its file", async () => {
    const { haproxy, router, green } = await setUp();
    await router.split("app", { upstream: green.url, colour: "green", weight: 0 });
    const master = haproxy.masterPid();
    if (master === undefined) throw new Error("haproxy is not running");
    for (const pid of [master, ...haproxy.workerPids()]) process.kill(pid, "SIGKILL");
    await expect.poll(() => haproxy.masterPid(), { timeout: 5_000 }).toBeUndefined();
    const restarted = await connectHaproxyRouter(haproxy.options, () => undefined);
    cleanUp(() => restarted.close());
    expect((await get(haproxy.port, "app.test", "/", { headers: { "x-ferry-colour": "new" } })).body).toBe("green");
    const plain = await Promise.all(Array.from({ length: 20 }, () => get(haproxy.port, "app.test")));
    expect(new Set(plain.map((reply) => reply.body))).toEqual(new Set(["blue"]));
    expect(plain.flatMap((reply) => reply.setCookie).every((cookie) => cookie.startsWith(`${COOKIE}=`))).toBe(true);
  });
});
