import { type ChildProcess, spawn } from "node:child_process";
import { once } from "node:events";
import { mkdtempSync, readFileSync, rmSync, statSync } from "node:fs";
import http from "node:http";
import { tmpdir } from "node:os";
import { dirname, join } from "node:path";
import type { Duplex } from "node:stream";
import { setTimeout as sleep } from "node:timers/promises";
import { fileURLToPath } from "node:url";
import { describe, expect, it } from "vitest";
import { FerryProxy } from "../src/traffic/proxy.js";
import { startProxyAdmin } from "../src/traffic/proxyAdmin.js";
import { ProxyAdminClient, ProxyAdminError } from "../src/traffic/proxyClient.js";
import { readOrCreateAdminToken } from "../src/traffic/proxyState.js";
import {
  cleanUpAfterEach,
  type GetOptions,
  get as getThrough,
  startUpstream as startUpstreamOn,
} from "./helpers/routerDriver.js";

const root = join(dirname(fileURLToPath(import.meta.url)), "..");
const cleanUp = cleanUpAfterEach();

/** A real upstream on a free port; answers its name unless `handler` takes the request. */
const startUpstream = (
  name: string,
  handler?: (request: http.IncomingMessage, response: http.ServerResponse) => boolean | undefined,
) => startUpstreamOn(name, cleanUp, handler);

function temporaryDir(): string {
  const dir = mkdtempSync(join(tmpdir(), "ferry-proxy-"));
  cleanUp(() => rmSync(dir, { recursive: true, force: true }));
  return dir;
}

async function startProxy(stateDir = temporaryDir()) {
  const proxy = await FerryProxy.open(stateDir);
  const { port } = await proxy.listen("127.0.0.1", 0);
  cleanUp(() => proxy.close(1_000));
  return { proxy, port, stateDir };
}

/** A request through the proxy, on Node's shared keep-alive agent unless another is given. */
const get = (port: number, host: string, path = "/", options: Omit<GetOptions, "headers" | "timeoutMs"> = {}) =>
  getThrough(port, host, path, { ...options, agent: options.agent ?? http.globalAgent });

describe("ferry proxy: routing", () => {
  it("routes by exact host (any case, port ignored) and the longest path prefix; unknown ones get a 404 problem", async () => {
    const web = await startUpstream("web");
    const api = await startUpstream("api");
    const other = await startUpstream("other");
    const { proxy, port } = await startProxy();
    await proxy.putRoute("web", { host: "app.example.com", pathPrefix: "/", upstream: web.url });
    await proxy.putRoute("api", { host: "App.Example.com", pathPrefix: "/api", upstream: `${api.url}/` });
    await proxy.putRoute("other", { host: "other.example.com", pathPrefix: "/only", upstream: other.url });

    expect((await get(port, "app.example.com", "/")).body).toBe("web");
    expect((await get(port, "APP.example.COM:8443", "/api/users?x=1")).body).toBe("api");
    expect((await get(port, "app.example.com", "/api")).body).toBe("api");
    expect((await get(port, "app.example.com", "/apix")).body).toBe("web");
    expect((await get(port, "other.example.com", "/only/here")).body).toBe("other");

    const noHost = await get(port, "nobody.example.com", "/");
    expect(noHost.status).toBe(404);
    expect(noHost.headers["content-type"]).toContain("application/problem+json");
    expect(JSON.parse(noHost.body)).toMatchObject({ status: 404, type: "urn:ferry:problem:no-route" });
    expect((await get(port, "other.example.com", "/elsewhere")).status).toBe(404);

    const echoed = JSON.parse((await get(port, "app.example.com:8000", "/headers?q=1")).body) as {
      url: string;
      headers: Record<string, string>;
    };
    expect(echoed.url).toBe("/headers?q=1");
    expect(echoed.headers).toMatchObject({
      host: "app.example.com:8000",
      "x-forwarded-for": "127.0.0.1",
      "x-forwarded-proto": "http",
      "x-forwarded-host": "app.example.com:8000",
    });
    expect(echoed.headers["proxy-connection"]).toBeUndefined();

    // Bodies go through both ways.
    const posted = await startUpstream("posted", (request, response) => {
      if (request.method !== "POST") return false;
      request.pipe(response);
      return true;
    });
    await proxy.setRoute("other", posted.url);
    const reply = await get(port, "other.example.com", "/only", { method: "POST", body: "x".repeat(200_000) });
    expect(reply.body).toBe("x".repeat(200_000));
  });
});

describe("ferry proxy: headers", () => {
  it("passes repeated headers through in order both ways, dropping hop-by-hop and Connection-listed ones", async () => {
    const upstream = await startUpstream("raw", (request, response) => {
      request.resume();
      response.writeHead(200, [
        "Set-Cookie",
        "a=1",
        "Set-Cookie",
        "b=2",
        "X-Secret",
        "only for the next hop",
        "Connection",
        "x-secret",
        "Content-Type",
        "application/json",
      ]);
      response.end(JSON.stringify(request.rawHeaders));
      return true;
    });
    const { proxy, port } = await startProxy();
    await proxy.putRoute("app", { host: "app.test", upstream: upstream.url });
    const reply = await new Promise<{ rawHeaders: string[]; body: string }>((resolve, reject) => {
      const request = http.request(
        {
          host: "127.0.0.1",
          port,
          path: "/",
          headers: [
            "Host",
            "app.test",
            "Connection",
            "keep-alive, x-drop",
            "X-Drop",
            "for the proxy only",
            "Keep-Alive",
            "timeout=5",
            "X-Keep",
            "a",
            "X-Keep",
            "b",
          ],
          agent: false,
        },
        (response) => {
          let body = "";
          response.setEncoding("utf8");
          response.on("data", (chunk: string) => {
            body += chunk;
          });
          response.on("end", () => resolve({ rawHeaders: response.rawHeaders, body }));
          response.on("error", reject);
        },
      );
      request.on("error", reject);
      request.end();
    });
    const pairs = (raw: string[]) =>
      raw.flatMap((value, index) => (index % 2 === 0 ? [[value.toLowerCase(), raw[index + 1]] as const] : []));

    // What the application received: both X-Keep in order, one Host, none of the proxy's own.
    const seen = pairs(JSON.parse(reply.body) as string[]);
    expect(seen.filter(([name]) => name === "x-keep").map(([, value]) => value)).toEqual(["a", "b"]);
    expect(seen.filter(([name]) => name === "host")).toEqual([["host", "app.test"]]);
    expect(seen.map(([name]) => name)).not.toContain("x-drop");
    expect(seen.map(([name]) => name)).not.toContain("keep-alive");
    expect(seen.find(([name]) => name === "x-forwarded-for")?.[1]).toBe("127.0.0.1");

    // What the client received: both cookies in order, not the header meant for the hop.
    const answered = pairs(reply.rawHeaders);
    expect(answered.filter(([name]) => name === "set-cookie").map(([, value]) => value)).toEqual(["a=1", "b=2"]);
    expect(answered.map(([name]) => name)).not.toContain("x-secret");
  });
});

describe("ferry proxy: switching and draining", () => {
  it("switches 10 times under keep-alive load from 16 clients with 0 failed requests, then the old colour stops with none either", async () => {
    const blue = await startUpstream("blue");
    const green = await startUpstream("green");
    const { proxy, port } = await startProxy();
    await proxy.putRoute("app", { host: "app.test", upstream: blue.url, colour: "blue" });

    const agent = new http.Agent({ keepAlive: true, maxSockets: 16 });
    cleanUp(() => agent.destroy());
    let running = true;
    const bodies = new Map<string, number>();
    const failures: string[] = [];
    const client = async () => {
      while (running) {
        try {
          const reply = await get(port, "app.test", "/", { agent });
          if (reply.status !== 200 || (reply.body !== "blue" && reply.body !== "green")) {
            failures.push(`${reply.status} ${reply.body}`);
          }
          bodies.set(reply.body, (bodies.get(reply.body) ?? 0) + 1);
        } catch (error) {
          failures.push((error as Error).message);
        }
      }
    };
    const clients = Array.from({ length: 16 }, client);

    for (let switchNumber = 1; switchNumber <= 10; switchNumber += 1) {
      await sleep(270);
      const [to, colour] = switchNumber % 2 === 1 ? [green.url, "green"] : [blue.url, "blue"];
      const { previous } = await proxy.setRoute("app", to, colour);
      expect(previous.upstream).toBe(switchNumber % 2 === 1 ? blue.url : green.url);
    }
    // Live is blue again: drain green, stop it while the load goes on.
    await proxy.setRoute("app", green.url, "green");
    const drained = await proxy.drain(blue.url, 5_000);
    expect(drained.drained).toBe(true);
    await blue.stop();
    await sleep(300);
    running = false;
    await Promise.all(clients);

    expect(failures).toEqual([]);
    const total = [...bodies.values()].reduce((sum, count) => sum + count, 0);
    expect(total).toBeGreaterThan(1_000);
    expect(bodies.get("blue")).toBeGreaterThan(0);
    expect(bodies.get("green")).toBeGreaterThan(0);
    const stats = proxy.stats();
    expect(stats.reduce((sum, entry) => sum + entry.failed, 0)).toBe(0);
    expect(stats.reduce((sum, entry) => sum + entry.served, 0)).toBe(total);
  });

  it("runs 5 blue/green deploys under load (new colour, switch, drain, stop the old one) with 0 failed requests", async () => {
    let live = await startUpstream("release-0");
    const { proxy, port } = await startProxy();
    await proxy.putRoute("app", { host: "app.test", upstream: live.url, colour: "blue" });
    const agent = new http.Agent({ keepAlive: true, maxSockets: 16 });
    cleanUp(() => agent.destroy());
    let running = true;
    let served = 0;
    const failures: string[] = [];
    const clients = Array.from({ length: 16 }, async () => {
      while (running) {
        const reply = await get(port, "app.test", "/", { agent }).catch((error: Error) => ({
          status: 0,
          body: error.message,
        }));
        if (reply.status === 200 && reply.body.startsWith("release-")) served += 1;
        else failures.push(`${reply.status} ${reply.body}`);
      }
    });
    for (let release = 1; release <= 5; release += 1) {
      await sleep(150);
      const next = await startUpstream(`release-${release}`);
      const { previous } = await proxy.setRoute("app", next.url, release % 2 === 0 ? "blue" : "green");
      expect((await proxy.drain(previous.upstream, 5_000)).drained).toBe(true);
      await live.stop();
      live = next;
    }
    await sleep(150);
    running = false;
    await Promise.all(clients);
    expect(failures).toEqual([]);
    expect(served).toBeGreaterThan(500);
  });

  it("lets a 2 s request in flight at the switch finish on the old colour; drain resolves after it", async () => {
    const blue = await startUpstream("blue");
    const green = await startUpstream("green");
    const { proxy, port } = await startProxy();
    await proxy.putRoute("app", { host: "app.test", upstream: blue.url, colour: "blue" });

    const slow = get(port, "app.test", "/slow");
    await sleep(200);
    // Still live: it cannot drain, and says so at once.
    expect(await proxy.drain(blue.url, 5_000)).toMatchObject({ drained: false, routedBy: ["app"], waitedMs: 0 });
    await proxy.setRoute("app", green.url, "green");
    expect((await get(port, "app.test", "/")).body).toBe("green");
    expect(proxy.stats().find((entry) => entry.upstream === blue.url)?.inFlight).toBe(1);

    const drain = proxy.drain(blue.url, 5_000);
    let slowDone = false;
    const reply = await slow.then((result) => {
      slowDone = true;
      return result;
    });
    const drained = await drain;
    expect(slowDone).toBe(true);
    expect(reply).toMatchObject({ status: 200, body: "blue" });
    expect(drained.drained).toBe(true);
    expect(drained.inFlight).toBe(0);
    expect(drained.waitedMs).toBeGreaterThan(1_000);

    // A deadline that passes first reports what is still in flight.
    const another = get(port, "app.test", "/slow");
    await sleep(100);
    await proxy.setRoute("app", blue.url, "blue");
    expect(await proxy.drain(green.url, 200)).toMatchObject({ drained: false, inFlight: 1 });
    expect((await another).body).toBe("green");
  });

  it("retries an idempotent request once on the route's current upstream after a connect error; not a POST", async () => {
    const green = await startUpstream("green");
    let proxy: FerryProxy | undefined;
    // This colour stops the moment it sees a request, after the route moved to green: the
    // request reaches no application and must be sent again to green.
    const dying = await startUpstream("dying", (request) => {
      void proxy?.setRoute("app", green.url, "green").then(() => request.socket.destroy());
      return true;
    });
    const started = await startProxy();
    proxy = started.proxy;
    await proxy.putRoute("app", { host: "app.test", upstream: dying.url, colour: "blue" });
    const reply = await get(started.port, "app.test", "/");
    expect(reply).toMatchObject({ status: 200, body: "green" });
    expect(proxy.stats()).toEqual(
      expect.arrayContaining([
        expect.objectContaining({ upstream: dying.url, retried: 1, failed: 0, inFlight: 0 }),
        expect.objectContaining({ upstream: green.url, served: 1, failed: 0, inFlight: 0 }),
      ]),
    );

    // A POST with a body may have reached the application: no retry, a 502.
    await proxy.setRoute("app", dying.url, "blue");
    const post = await get(started.port, "app.test", "/", { method: "POST", body: "order" });
    expect(post.status).toBe(502);
    expect(JSON.parse(post.body)).toMatchObject({ type: "urn:ferry:problem:upstream-unavailable", status: 502 });

    // Live upstream down and still down on the retry: 502.
    await green.stop();
    await proxy.setRoute("app", green.url, "green");
    const down = await get(started.port, "app.test", "/");
    expect(down.status).toBe(502);
    expect(down.headers["content-type"]).toContain("application/problem+json");

    // Every answered or failed request is timed once, under the upstream that ended it;
    // a retried attempt is not (its time counts in the retry's, which runs from the arrival).
    for (const entry of proxy.stats()) {
      expect(entry.duration.count, entry.upstream).toBe(entry.served + entry.failed);
      expect(entry.duration.buckets.at(-1)?.count).toBeLessThanOrEqual(entry.duration.count);
    }
    expect(proxy.stats().find((entry) => entry.upstream === dying.url)?.duration.count).toBe(1);
    expect(proxy.stats().find((entry) => entry.upstream === green.url)?.duration.count).toBe(2);
  });
});

describe("ferry proxy: upgrades and streams", () => {
  it("passes an Upgrade through and pipes the raw sockets both ways", async () => {
    const upstream = await startUpstream("ws");
    upstream.server.on("upgrade", (request: http.IncomingMessage, socket: Duplex) => {
      socket.write(
        `HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: ${request.headers.upgrade}\r\n\r\n`,
      );
      socket.on("data", (data: Buffer) => socket.write(`echo:${data.toString()}`));
      socket.on("end", () => socket.destroy());
    });
    const { proxy, port } = await startProxy();
    await proxy.putRoute("ws", { host: "ws.test", upstream: upstream.url });

    const request = http.request({
      host: "127.0.0.1",
      port,
      path: "/socket",
      headers: { host: "ws.test", connection: "Upgrade", upgrade: "ferry-echo" },
    });
    request.end();
    const [response, socket] = (await once(request, "upgrade")) as [http.IncomingMessage, Duplex];
    expect(response.statusCode).toBe(101);
    expect(response.headers.upgrade).toBe("ferry-echo");
    socket.write("hello");
    const [data] = (await once(socket, "data")) as [Buffer];
    expect(data.toString()).toBe("echo:hello");
    expect(proxy.stats()[0]?.inFlight).toBe(1);
    socket.destroy();
    await expect.poll(() => proxy.stats()[0]?.inFlight).toBe(0);
  });

  it("streams server-sent events as they come, without buffering", async () => {
    let releaseSecond = () => {};
    const secondAllowed = new Promise<void>((resolve) => {
      releaseSecond = resolve;
    });
    const upstream = await startUpstream("sse", (_request, response) => {
      response.writeHead(200, { "content-type": "text/event-stream", "cache-control": "no-cache" });
      response.write("data: first\n\n");
      void secondAllowed.then(() => response.end("data: second\n\n"));
      return true;
    });
    const { proxy, port } = await startProxy();
    await proxy.putRoute("events", { host: "events.test", upstream: upstream.url });

    const request = http.request({ host: "127.0.0.1", port, path: "/events", headers: { host: "events.test" } });
    request.end();
    const [response] = (await once(request, "response")) as [http.IncomingMessage];
    expect(response.headers["content-type"]).toBe("text/event-stream");
    let received = "";
    const ended = once(response, "end");
    response.on("data", (chunk: Buffer) => {
      received += chunk.toString();
    });
    // The upstream holds the second event back until the first has reached the client.
    await expect.poll(() => received).toBe("data: first\n\n");
    releaseSecond();
    await ended;
    expect(received).toBe("data: first\n\ndata: second\n\n");
  });
});

describe("ferry proxy: admin API", () => {
  it("serves routes, switch, drain and stats on a loopback port with a token, and refuses a missing or wrong token", async () => {
    const blue = await startUpstream("blue");
    const green = await startUpstream("green");
    const { proxy, port, stateDir } = await startProxy();
    const { token, path } = await readOrCreateAdminToken(stateDir);
    expect(statSync(path).mode & 0o777).toBe(0o600);
    expect((await readOrCreateAdminToken(stateDir)).token).toBe(token);
    const admin = await startProxyAdmin(proxy, { port: 0 }, token);
    cleanUp(() => admin.close());

    const client = new ProxyAdminClient({ url: admin.address }, token);
    cleanUp(() => client.close());
    const put = await client.putRoute("app", { host: "app.test", pathPrefix: "/", upstream: blue.url, colour: "blue" });
    expect(put).toMatchObject({ created: true, route: { name: "app", upstream: blue.url, colour: "blue" } });
    expect(await client.listRoutes()).toEqual([expect.objectContaining({ name: "app", host: "app.test" })]);
    expect((await get(port, "app.test")).body).toBe("blue");
    const switched = await client.switchRoute("app", { upstream: green.url, colour: "green" });
    expect(switched.previous).toEqual({ upstream: blue.url, colour: "blue" });
    expect((await get(port, "app.test")).body).toBe("green");
    expect(await client.drain(blue.url, 1_000)).toMatchObject({ drained: true, inFlight: 0 });
    const stats = await client.stats();
    expect(stats).toHaveLength(2);
    expect(stats).toEqual(
      expect.arrayContaining([
        expect.objectContaining({ route: "app", upstream: blue.url, served: 1, failed: 0, inFlight: 0 }),
        expect.objectContaining({ route: "app", upstream: green.url, served: 1, failed: 0, inFlight: 0 }),
      ]),
    );
    for (const entry of stats) {
      expect(entry.duration).toMatchObject({ count: 1, buckets: expect.arrayContaining([{ le: 10, count: 1 }]) });
      expect(entry.duration.sum).toBeGreaterThan(0);
    }

    const invalid = await client
      .putRoute("app", { host: "app.test:80", pathPrefix: "api", upstream: "https://x" })
      .catch((error: unknown) => error);
    expect(invalid).toBeInstanceOf(ProxyAdminError);
    expect((invalid as ProxyAdminError).status).toBe(400);
    const missing = await client.switchRoute("nothing", { upstream: blue.url }).catch((error: unknown) => error);
    expect((missing as ProxyAdminError).status).toBe(404);

    const noToken = await fetch(`${admin.address}/routes`);
    expect(noToken.status).toBe(401);
    expect(noToken.headers.get("content-type")).toContain("application/problem+json");
    const wrongToken = new ProxyAdminClient({ url: admin.address }, "not-the-token");
    cleanUp(() => wrongToken.close());
    const refused = await wrongToken.listRoutes().catch((error: unknown) => error);
    expect((refused as ProxyAdminError).status).toBe(401);
  });
});

describe("ferry proxy: the real process", () => {
  function startProcess(stateDir: string): Promise<{ child: ChildProcess; port: number }> {
    const child = spawn(
      process.execPath,
      [join(root, "bin", "ferry"), "proxy", "--listen", "127.0.0.1:0", "--state-dir", stateDir],
      { stdio: ["ignore", "pipe", "pipe"] },
    );
    cleanUp(() => {
      if (child.exitCode === null) child.kill("SIGKILL");
    });
    return new Promise((resolve, reject) => {
      let output = "";
      child.stdout?.on("data", (chunk: Buffer) => {
        output += chunk.toString();
        const match = /traffic on http:\/\/127\.0\.0\.1:(\d+)/.exec(output);
        if (match?.[1]) resolve({ child, port: Number(match[1]) });
      });
      child.stderr?.on("data", (chunk: Buffer) => {
        output += chunk.toString();
      });
      child.on("exit", (code) => reject(new Error(`ferry proxy exited with ${code}: ${output}`)));
    });
  }

  it("keeps its routes across a restart and a kill -9, and on SIGTERM finishes the request in flight", async () => {
    const blue = await startUpstream("blue");
    const stateDir = temporaryDir();
    const first = await startProcess(stateDir);
    const socketPath = join(stateDir, "admin.sock");
    expect(statSync(socketPath).mode & 0o777).toBe(0o600);
    const token = readFileSync(join(stateDir, "admin-token"), "utf8").trim();
    const client = new ProxyAdminClient({ socketPath }, token);
    cleanUp(() => client.close());
    await client.putRoute("app", { host: "app.test", upstream: blue.url, colour: "blue" });
    expect((await get(first.port, "app.test")).body).toBe("blue");

    const slow = get(first.port, "app.test", "/slow");
    await sleep(200);
    const exited = once(first.child, "exit");
    first.child.kill("SIGTERM");
    expect(await slow).toMatchObject({ status: 200, body: "blue" });
    expect((await exited)[0]).toBe(0);

    const second = await startProcess(stateDir);
    const again = new ProxyAdminClient({ socketPath }, token);
    cleanUp(() => again.close());
    expect(await again.listRoutes()).toEqual([
      expect.objectContaining({ name: "app", host: "app.test", upstream: blue.url, colour: "blue" }),
    ]);
    expect((await get(second.port, "app.test")).body).toBe("blue");

    // A crash (kill -9) leaves its socket file behind; the next start replaces it and has the routes.
    await again.switchRoute("app", { upstream: blue.url, colour: "green" });
    const killed = once(second.child, "exit");
    second.child.kill("SIGKILL");
    await killed;
    const third = await startProcess(stateDir);
    const afterCrash = new ProxyAdminClient({ socketPath }, token);
    cleanUp(() => afterCrash.close());
    expect(await afterCrash.listRoutes()).toEqual([expect.objectContaining({ name: "app", colour: "green" })]);
    expect((await get(third.port, "app.test")).body).toBe("blue");
    third.child.kill("SIGTERM");
    await once(third.child, "exit");
  });
});
