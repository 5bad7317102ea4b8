import { execFile, spawn } from "node:child_process";
import { once } from "node:events";
import { promisify } from "node:util";
import { afterEach, describe, expect, it } from "vitest";
import { InputError } from "../src/domain/errors.js";
import {
  EtcdClient,
  type EtcdPublication,
  EtcdPublishError,
  type EtcdPublishingRouter,
  withEtcdPublisher,
} from "../src/traffic/etcd.js";
import type { LiveUpstream, Router, RouteSpec } from "../src/traffic/router.js";
import { startEtcd, type TestEtcd } from "./helpers/etcd.js";
import { freePort } from "./helpers/registry.js";

const run = promisify(execFile);
const ETCDCTL_BINARY = "/usr/bin/etcdctl";
const cleanups: (() => Promise<unknown> | unknown)[] = [];

afterEach(async () => {
  for (const cleanup of cleanups.splice(0).reverse()) await cleanup();
});

/**
 * Stands in for a real driver (builtin proxy, nginx): this test is about what reaches etcd,
 * and the real drivers have their own tests. It switches by assignment, like they promise.
 */
function memoryRouter(): Router {
  const table = new Map<string, RouteSpec & LiveUpstream>();
  const liveOf = (route: RouteSpec & LiveUpstream): LiveUpstream => ({
    upstream: route.upstream,
    colour: route.colour,
  });
  return {
    driver: "memory",
    async live(name) {
      const route = table.get(name);
      return route && liveOf(route);
    },
    async routes() {
      return [...table.values()];
    },
    async switch(route, target) {
      const previous = table.get(route.name);
      table.set(route.name, { ...route, ...target });
      return { previous: previous && liveOf(previous), switchMs: 0 };
    },
    async drain() {
      return { drained: true, waitedMs: 0 };
    },
    async traffic() {
      return undefined;
    },
    async close() {},
  };
}

interface Harness {
  etcd: TestEtcd;
  router: Router;
  publisher: EtcdPublishingRouter;
  published: EtcdPublication[];
  errors: EtcdPublishError[];
}

async function harness(): Promise<Harness> {
  const etcd = await startEtcd();
  cleanups.push(() => etcd.stop());
  const client = new EtcdClient(etcd.endpoint, { timeoutMs: 3_000 });
  cleanups.push(() => client.close());
  const router = memoryRouter();
  const published: EtcdPublication[] = [];
  const errors: EtcdPublishError[] = [];
  const publisher = withEtcdPublisher(router, client, {
    onPublished: (publication) => published.push(publication),
    onError: (error) => errors.push(error),
  });
  cleanups.push(() => publisher.close());
  return { etcd, router, publisher, published, errors };
}

/** The real etcdctl, as a consumer or an operator would run it. */
async function etcdctl(endpoint: string, ...args: string[]): Promise<string> {
  const { stdout } = await run(ETCDCTL_BINARY, ["--endpoints", endpoint, ...args], {
    env: { ...process.env, ETCDCTL_API: "3" },
    timeout: 10_000,
  });
  return stdout;
}

/** `etcdctl get --prefix`: key and value on alternate lines. */
async function keysUnder(endpoint: string, prefix: string): Promise<Record<string, string>> {
  const lines = (await etcdctl(endpoint, "get", "--prefix", prefix)).split("\n");
  const keys: Record<string, string> = {};
  for (let index = 0; index + 1 < lines.length; index += 2) keys[lines[index] ?? ""] = lines[index + 1] ?? "";
  return keys;
}

/** Each key's mod_revision, from `etcdctl get -w json` (keys come base64). */
async function modRevisionsUnder(endpoint: string, prefix: string): Promise<Record<string, number>> {
  const answer = JSON.parse(await etcdctl(endpoint, "get", "--prefix", prefix, "-w", "json")) as {
    kvs?: { key: string; mod_revision: number }[];
  };
  return Object.fromEntries(
    (answer.kvs ?? []).map((entry) => [Buffer.from(entry.key, "base64").toString("utf8"), entry.mod_revision]),
  );
}

const ISO_TIME = /^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$/;

describe("etcd publisher (real etcd 3.4)", () => {
  it("writes a switched route's keys under /ferry/routes/<host>/<route>/ in one txn per switch", async () => {
    const { etcd, router, publisher, published, errors } = await harness();
    expect(publisher.driver).toBe("memory+etcd");
    const web: RouteSpec = { name: "shop", host: "app.test", pathPrefix: "/" };

    await publisher.switch(web, { upstream: "http://127.0.0.1:32768", colour: "blue" });

    const keys = await keysUnder(etcd.endpoint, "/ferry/routes/");
    expect(keys).toEqual({
      "/ferry/routes/app.test/shop/colour": "blue",
      "/ferry/routes/app.test/shop/host-port": "127.0.0.1:32768",
      "/ferry/routes/app.test/shop/path": "/",
      "/ferry/routes/app.test/shop/updated": expect.stringMatching(ISO_TIME),
      "/ferry/routes/app.test/shop/upstream": "http://127.0.0.1:32768",
    });
    const first = published[0]?.revision ?? 0;
    expect(published).toEqual([
      {
        route: "shop",
        host: "app.test",
        upstream: "http://127.0.0.1:32768",
        colour: "blue",
        revision: first,
        reason: "switch",
      },
    ]);
    expect(new Set(Object.values(await modRevisionsUnder(etcd.endpoint, "/ferry/routes/")))).toEqual(new Set([first]));

    const result = await publisher.switch(web, { upstream: "http://127.0.0.1:32769", colour: "green" });
    expect(result.previous).toEqual({ upstream: "http://127.0.0.1:32768", colour: "blue" });
    expect(await router.live("shop")).toEqual({ upstream: "http://127.0.0.1:32769", colour: "green" });

    const second = published[1]?.revision ?? 0;
    expect(second).toBeGreaterThan(first);
    // One txn: all five keys changed at the same revision, so no reader sees a mix.
    const revisions = await modRevisionsUnder(etcd.endpoint, "/ferry/routes/");
    expect(Object.keys(revisions)).toHaveLength(5);
    expect(new Set(Object.values(revisions))).toEqual(new Set([second]));
    expect(await keysUnder(etcd.endpoint, "/ferry/routes/app.test/shop/")).toMatchObject({
      "/ferry/routes/app.test/shop/upstream": "http://127.0.0.1:32769",
      "/ferry/routes/app.test/shop/host-port": "127.0.0.1:32769",
      "/ferry/routes/app.test/shop/colour": "green",
    });
    expect(errors).toEqual([]);
  });

  it("a consumer watching the host's prefix sees the new upstream arrive", async () => {
    const { etcd, publisher, published } = await harness();
    const web: RouteSpec = { name: "web", host: "app.test", pathPrefix: "/" };
    await publisher.switch(web, { upstream: "http://127.0.0.1:40001", colour: "blue" });
    const readAt = published[0]?.revision ?? 0;

    // As a consumer should: having read the keys at revision R, watch from R+1, so nothing
    // written between the read and the start of the watch is missed.
    const watcher = spawn(
      ETCDCTL_BINARY,
      ["--endpoints", etcd.endpoint, "watch", "--prefix", "/ferry/routes/app.test/", "--rev", String(readAt + 1)],
      { env: { ...process.env, ETCDCTL_API: "3" }, stdio: ["ignore", "pipe", "pipe"] },
    );
    const exited = once(watcher, "exit");
    cleanups.push(async () => {
      if (watcher.exitCode === null && watcher.signalCode === null) {
        watcher.kill("SIGTERM");
        await exited;
      }
    });
    let output = "";
    watcher.stdout.on("data", (chunk: Buffer) => {
      output += chunk.toString("utf8");
    });
    watcher.stderr.on("data", (chunk: Buffer) => {
      output += chunk.toString("utf8");
    });

    await publisher.switch(web, { upstream: "http://127.0.0.1:40002", colour: "green" });

    const deadline = Date.now() + 10_000;
    while (!output.includes("/ferry/routes/app.test/web/updated") && Date.now() < deadline) {
      await new Promise((resolve) => setTimeout(resolve, 50));
    }
    expect(output).toContain("PUT\n/ferry/routes/app.test/web/upstream\nhttp://127.0.0.1:40002\n");
    expect(output).toContain("PUT\n/ferry/routes/app.test/web/colour\ngreen\n");
    expect(output).toContain("PUT\n/ferry/routes/app.test/web/host-port\n127.0.0.1:40002\n");
    // The watch starts after the first switch: it never shows the old upstream.
    expect(output).not.toContain("40001");
  });

  it("a switch succeeds while etcd is down; onError names the endpoint, republish() repairs etcd", async () => {
    const { etcd, router, publisher, published, errors } = await harness();
    const web: RouteSpec = { name: "web", host: "app.test", pathPrefix: "/" };
    await publisher.switch(web, { upstream: "http://127.0.0.1:41001", colour: "blue" });

    await etcd.kill();
    const result = await publisher.switch(web, { upstream: "http://127.0.0.1:41002", colour: "green" });

    expect(result.previous).toEqual({ upstream: "http://127.0.0.1:41001", colour: "blue" });
    expect(await router.live("web")).toEqual({ upstream: "http://127.0.0.1:41002", colour: "green" });
    expect(errors).toHaveLength(1);
    expect(errors[0]).toBeInstanceOf(EtcdPublishError);
    expect(errors[0]?.message).toContain(`could not reach etcd at ${etcd.endpoint}; is it running?`);
    expect(errors[0]?.message).toContain("route 'web' now sends traffic to http://127.0.0.1:41002");
    expect(published).toHaveLength(1);

    await etcd.restart();
    // Back up with the keys it had: stale until repaired.
    expect((await keysUnder(etcd.endpoint, "/ferry/routes/"))["/ferry/routes/app.test/web/upstream"]).toBe(
      "http://127.0.0.1:41001",
    );

    expect(await publisher.republish()).toEqual({ written: ["web"], unchanged: [], removed: [] });
    expect(await keysUnder(etcd.endpoint, "/ferry/routes/")).toMatchObject({
      "/ferry/routes/app.test/web/upstream": "http://127.0.0.1:41002",
      "/ferry/routes/app.test/web/host-port": "127.0.0.1:41002",
      "/ferry/routes/app.test/web/colour": "green",
    });
    expect(published[1]).toMatchObject({ route: "web", reason: "republish", upstream: "http://127.0.0.1:41002" });

    // Nothing left to repair: nothing is written, so consumers see no new revision.
    const before = await modRevisionsUnder(etcd.endpoint, "/ferry/routes/");
    expect(await publisher.republish()).toEqual({ written: [], unchanged: ["web"], removed: [] });
    expect(await modRevisionsUnder(etcd.endpoint, "/ferry/routes/")).toEqual(before);
  });

  it("keeps two routes of one host apart", async () => {
    const { etcd, publisher } = await harness();
    await publisher.switch(
      { name: "web", host: "app.test", pathPrefix: "/" },
      { upstream: "http://127.0.0.1:42001", colour: "blue" },
    );
    await publisher.switch(
      { name: "api", host: "app.test", pathPrefix: "/api" },
      { upstream: "http://127.0.0.1:42101", colour: null },
    );

    expect(await keysUnder(etcd.endpoint, "/ferry/routes/app.test/")).toEqual({
      "/ferry/routes/app.test/api/colour": "",
      "/ferry/routes/app.test/api/host-port": "127.0.0.1:42101",
      "/ferry/routes/app.test/api/path": "/api",
      "/ferry/routes/app.test/api/updated": expect.stringMatching(ISO_TIME),
      "/ferry/routes/app.test/api/upstream": "http://127.0.0.1:42101",
      "/ferry/routes/app.test/web/colour": "blue",
      "/ferry/routes/app.test/web/host-port": "127.0.0.1:42001",
      "/ferry/routes/app.test/web/path": "/",
      "/ferry/routes/app.test/web/updated": expect.stringMatching(ISO_TIME),
      "/ferry/routes/app.test/web/upstream": "http://127.0.0.1:42001",
    });

    const before = await modRevisionsUnder(etcd.endpoint, "/ferry/routes/app.test/web/");
    await publisher.switch(
      { name: "api", host: "app.test", pathPrefix: "/api" },
      { upstream: "http://127.0.0.1:42102", colour: null },
    );
    // Switching one route leaves the other's keys untouched (consumers keyed on it see nothing).
    expect(await modRevisionsUnder(etcd.endpoint, "/ferry/routes/app.test/web/")).toEqual(before);
    const keys = await keysUnder(etcd.endpoint, "/ferry/routes/app.test/");
    expect(keys["/ferry/routes/app.test/api/upstream"]).toBe("http://127.0.0.1:42102");
    expect(keys["/ferry/routes/app.test/web/upstream"]).toBe("http://127.0.0.1:42001");
  });

  it("a route that moves host leaves no keys under the old host; republish() removes routes the router lacks", async () => {
    const { etcd, publisher } = await harness();
    await publisher.switch(
      { name: "web", host: "old.test", pathPrefix: "/" },
      { upstream: "http://127.0.0.1:43001", colour: "blue" },
    );
    await publisher.switch(
      { name: "web", host: "new.test", pathPrefix: "/" },
      { upstream: "http://127.0.0.1:43001", colour: "blue" },
    );
    expect(Object.keys(await keysUnder(etcd.endpoint, "/ferry/routes/old.test/"))).toEqual([]);
    expect(Object.keys(await keysUnder(etcd.endpoint, "/ferry/routes/new.test/web/"))).toHaveLength(5);

    // Keys of a route this router does not have (left by hand, or by a removed route).
    await etcdctl(etcd.endpoint, "put", "/ferry/routes/gone.test/shop/upstream", "http://127.0.0.1:1");
    expect(await publisher.republish()).toEqual({ written: [], unchanged: ["web"], removed: ["gone.test/shop"] });
    expect(Object.keys(await keysUnder(etcd.endpoint, "/ferry/routes/gone.test/"))).toEqual([]);
  });

  it("refuses a host or route name with '/' before switching", async () => {
    const { etcd, router, publisher } = await harness();
    await expect(
      publisher.switch(
        { name: "web", host: "app.test/x", pathPrefix: "/" },
        { upstream: "http://127.0.0.1:44001", colour: null },
      ),
    ).rejects.toBeInstanceOf(InputError);
    await expect(
      publisher.switch(
        { name: "a/b", host: "app.test", pathPrefix: "/" },
        { upstream: "http://127.0.0.1:44001", colour: null },
      ),
    ).rejects.toThrow(/route name 'a\/b' cannot be published to etcd/);
    expect(await router.routes()).toEqual([]);
    expect(await keysUnder(etcd.endpoint, "/ferry/routes/")).toEqual({});
  });

  it("EtcdClient: an unreachable endpoint gives an error naming it", async () => {
    // A port nothing listens on.
    const endpoint = `http://127.0.0.1:${await freePort()}`;
    const client = new EtcdClient(endpoint);
    cleanups.push(() => client.close());
    await expect(client.getPrefix("/ferry/")).rejects.toThrow(`could not reach etcd at ${endpoint}; is it running?`);
    await expect(client.putAll({ "/ferry/x": "y" })).rejects.toThrow(`could not reach etcd at ${endpoint}`);
  });
});
