import { once } from "node:events";
import { mkdtempSync, rmSync } from "node:fs";
import http from "node:http";
import type { AddressInfo } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterEach, describe, expect, it } from "vitest";
import { bucketCookieName, FerryProxy } from "../src/traffic/proxy.js";
import { startProxyAdmin } from "../src/traffic/proxyAdmin.js";
import { ProxyAdminClient, type ProxyAdminError } from "../src/traffic/proxyClient.js";
import { readOrCreateAdminToken } from "../src/traffic/proxyState.js";
import { cookieVisitor, get as getThrough, measuredShare, stickyAt20 } from "./helpers/routerDriver.js";

/**
 * The builtin proxy's canary (ADR 0049), on real sockets: two real upstreams behind a real
 * FerryProxy and its admin API; clients are plain node:http clients, with and without the
 * bucket cookie the proxy sets.
 */

const cleanups: (() => Promise<unknown> | unknown)[] = [];
afterEach(async () => {
  for (const cleanup of cleanups.splice(0).reverse()) await cleanup();
});

/** An upstream that answers its name; `/error` answers 500. */
async function startUpstream(name: string): Promise<string> {
  const server = http.createServer((request, response) => {
    request.resume();
    if (request.url === "/error") response.writeHead(500);
    response.end(name);
  });
  server.keepAliveTimeout = 60_000;
  server.listen(0, "127.0.0.1");
  await once(server, "listening");
  cleanups.push(
    () =>
      new Promise<void>((resolve) => {
        server.close(() => resolve());
        server.closeAllConnections();
      }),
  );
  return `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
}

async function startProxyWithAdmin() {
  const stateDir = mkdtempSync(join(tmpdir(), "ferry-canary-proxy-"));
  cleanups.push(() => rmSync(stateDir, { recursive: true, force: true }));
  const proxy = await FerryProxy.open(stateDir);
  const { port } = await proxy.listen("127.0.0.1", 0);
  cleanups.push(() => proxy.close(1_000));
  const { token } = await readOrCreateAdminToken(stateDir);
  const admin = await startProxyAdmin(proxy, { port: 0 }, token);
  cleanups.push(() => admin.close());
  const client = new ProxyAdminClient({ url: admin.address }, token);
  cleanups.push(() => client.close());
  return { proxy, port, stateDir, client, admin, token };
}

/** A GET of app.test through the proxy, on Node's shared keep-alive agent unless another is given. */
const get = (port: number, headers: Record<string, string>, path = "/", agent: http.Agent = http.globalAgent) =>
  getThrough(port, "app.test", path, { headers, agent });

/** A visitor: keeps the cookie the proxy gives it, as a browser would. */
const visitor = (port: number, agent: http.Agent) => cookieVisitor(port, "app.test", bucketCookieName("app"), agent);

describe("ferry proxy: canary split", () => {
  it("sends the weight's share of cookie-less requests to the canary under load, within ±3 points, at 10 % and 50 %; a switch promotes it", async () => {
    const blue = await startUpstream("blue");
    const green = await startUpstream("green");
    const { port, client } = await startProxyWithAdmin();
    await client.putRoute("app", { host: "app.test", upstream: blue, colour: "blue" });

    for (const weight of [10, 50]) {
      await client.setCanary("app", { upstream: green, colour: "green", weight });
      // 4,000 requests: at 50 % one standard deviation of the share is 0.8 points, so ±3 is ~4 of them.
      const { share, requests } = await measuredShare(port, "green", 4_000);
      expect(requests).toBeGreaterThanOrEqual(4_000);
      expect(Math.abs(share - weight), `share ${share.toFixed(2)} % at weight ${weight}`).toBeLessThanOrEqual(3);
    }
    const switched = await client.switchRoute("app", { upstream: green, colour: "green" });
    expect(switched.route.canary).toBeUndefined();
    const { share } = await measuredShare(port, "green", 500);
    expect(share).toBe(100);
  }, 180_000);

  it("keeps cookie holders on their side within a stage; a higher weight moves visitors only to the canary; 0 % brings everyone back", async () => {
    const blue = await startUpstream("blue");
    const green = await startUpstream("green");
    const { port, client } = await startProxyWithAdmin();
    await client.putRoute("app", { host: "app.test", upstream: blue, colour: "blue" });
    const agent = new http.Agent({ keepAlive: true, maxSockets: 16 });
    cleanups.push(() => agent.destroy());
    // Without a canary the proxy sets no cookie at all.
    expect((await get(port, {})).setCookie).toEqual([]);

    await client.setCanary("app", { upstream: green, colour: "green", weight: 20 });
    // Every later request of each visitor lands where its first did.
    const { visitors, first, sideAt20, onGreenAt20 } = await stickyAt20(() => visitor(port, agent));
    const cookie = first[0]?.setCookie[0] ?? "";
    expect(cookie).toMatch(/^ferry-canary-app=\d{1,2}; Path=\/; Max-Age=86400; HttpOnly; SameSite=Lax$/);

    await client.setCanary("app", { upstream: green, colour: "green", weight: 60 });
    const sideAt60 = (await Promise.all(visitors.map((visit) => visit()))).map((reply) => reply.body);
    // Nobody who was on the canary goes back to the stable colour; more visitors are on it now.
    for (const [index, side] of sideAt20.entries()) if (side === "green") expect(sideAt60[index]).toBe("green");
    expect(sideAt60.filter((side) => side === "green").length).toBeGreaterThan(onGreenAt20 + 60);
    expect((await Promise.all(visitors.map((visit) => visit()))).map((reply) => reply.body)).toEqual(sideAt60);

    await client.setCanary("app", null);
    const after = await Promise.all(visitors.map((visit) => visit()));
    expect(new Set(after.map((reply) => reply.body))).toEqual(new Set(["blue"]));
    expect(after.flatMap((reply) => reply.setCookie)).toEqual([]);
  });

  it("X-Ferry-Colour: new reaches the canary at weight 0 (testers only), stable the live colour; pinned requests get no cookie", async () => {
    const blue = await startUpstream("blue");
    const green = await startUpstream("green");
    const { port, client } = await startProxyWithAdmin();
    await client.putRoute("app", { host: "app.test", upstream: blue, colour: "blue" });
    await client.setCanary("app", { upstream: green, colour: "green", weight: 0 });
    const plain = await Promise.all(Array.from({ length: 50 }, () => get(port, {})));
    expect(new Set(plain.map((reply) => reply.body))).toEqual(new Set(["blue"]));
    const pinned = await get(port, { "x-ferry-colour": "new" });
    expect(pinned).toEqual({ status: 200, body: "green", setCookie: [], headers: expect.any(Object) });
    // A bucket cookie of the canary side does not beat an explicit pin to the stable side.
    await client.setCanary("app", { upstream: green, colour: "green", weight: 100 - 1 });
    expect((await get(port, { "x-ferry-colour": "stable", cookie: "ferry-canary-app=0" })).body).toBe("blue");
    expect((await get(port, { cookie: "ferry-canary-app=0" })).body).toBe("green");
    expect((await get(port, { cookie: "ferry-canary-app=99" })).body).toBe("blue");
  });

  it("counts the canary's 5xx answers apart, refuses to drain it while it gets traffic, and comes back with it after a restart", async () => {
    const blue = await startUpstream("blue");
    const green = await startUpstream("green");
    const { proxy, client, stateDir } = await startProxyWithAdmin();
    await client.putRoute("app", { host: "app.test", upstream: blue, colour: "blue" });
    await client.setCanary("app", { upstream: green, colour: "green", weight: 50 });
    const port = (await proxy.listen("127.0.0.1", 0)).port;
    for (let index = 0; index < 20; index += 1) await get(port, { "x-ferry-colour": "new" }, "/error");
    for (let index = 0; index < 10; index += 1) await get(port, { "x-ferry-colour": "new" });
    const stats = await client.stats();
    expect(stats.find((entry) => entry.upstream === green)).toMatchObject({ served: 30, serverErrors: 20, failed: 0 });

    expect(await client.drain(green, 100)).toMatchObject({ drained: false, routedBy: ["app"] });

    const reopened = await FerryProxy.open(stateDir);
    expect(reopened.listRoutes()[0]?.canary).toEqual({ upstream: green, colour: "green", weight: 50 });
  });

  it("validates the canary body, naming the field, and refuses the live upstream or an unknown route", async () => {
    const blue = await startUpstream("blue");
    const green = await startUpstream("green");
    const { client, admin, token } = await startProxyWithAdmin();
    await client.putRoute("app", { host: "app.test", upstream: blue, colour: "blue" });
    const tooHeavy = await fetch(`${admin.address}/routes/app/canary`, {
      method: "PUT",
      headers: { authorization: `Bearer ${token}`, "content-type": "application/json" },
      body: JSON.stringify({ upstream: green, weight: 101 }),
    });
    expect(tooHeavy.status).toBe(400);
    expect(await tooHeavy.json()).toMatchObject({
      errors: [{ pointer: "/weight", detail: "weight is a whole number of per cent, 0 to 100" }],
    });
    const live = await client.setCanary("app", { upstream: blue, weight: 10 }).catch((error: unknown) => error);
    expect((live as ProxyAdminError).status).toBe(409);
    expect((live as ProxyAdminError).message).toContain("already the live upstream");
    const missing = await client.setCanary("nothing", { upstream: green, weight: 10 }).catch((error: unknown) => error);
    expect((missing as ProxyAdminError).status).toBe(404);
  });
});
