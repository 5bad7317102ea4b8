import { once } from "node:events";
import http from "node:http";
import type { AddressInfo } from "node:net";
import { setTimeout as sleep } from "node:timers/promises";
import { afterEach, expect } from "vitest";
import type { Router, RouteSpec } from "../../src/traffic/router.js";
import { type LoadResult, startLoad } from "./load.js";

/**
 * What the router tests (nginx.test.ts, haproxy.test.ts, haproxyCanary.test.ts, and for the
 * builtin proxy proxy.test.ts, proxyCanary.test.ts, proxyMaintenance.test.ts, canaryScenario.ts)
 * share: clean-ups run after each test, real upstreams on free ports, and a request through
 * the router with a Host header.
 */

/** Clean-ups run in reverse order after each test of the file that calls this. */
export function cleanUpAfterEach(): (cleanup: () => Promise<unknown> | unknown) => void {
  const cleanups: (() => Promise<unknown> | unknown)[] = [];
  afterEach(async () => {
    for (const cleanup of cleanups.splice(0).reverse()) await cleanup();
  });
  return (cleanup) => cleanups.push(cleanup);
}

export interface Upstream {
  url: string;
  /** The server listening now (a new one after each `start`). */
  readonly server: http.Server;
  stop(): Promise<void>;
  /** Listens again on the same port, as a restarted container would. */
  start(): Promise<void>;
}

/**
 * A real upstream on a free port: answers its name; after 2 s for /slow; its request as JSON
 * for /headers; 500 for /error; unless `handler` takes the request (returns true).
 */
export async function startUpstream(
  name: string,
  cleanUp: (cleanup: () => Promise<unknown> | unknown) => void,
  handler?: (request: http.IncomingMessage, response: http.ServerResponse) => boolean | undefined,
): Promise<Upstream> {
  let server: http.Server | undefined;
  let port = 0;
  const start = async () => {
    const created = http.createServer((request, response) => {
      if (handler?.(request, response)) return;
      request.resume();
      if (request.url?.startsWith("/slow")) {
        setTimeout(() => response.end(name), 2_000);
        return;
      }
      if (request.url?.startsWith("/headers")) {
        response.setHeader("content-type", "application/json");
        response.end(JSON.stringify({ name, url: request.url, headers: request.headers }));
        return;
      }
      if (request.url?.startsWith("/error")) response.writeHead(500);
      response.end(name);
    });
    created.listen(port, "127.0.0.1");
    await once(created, "listening");
    port = (created.address() as AddressInfo).port;
    server = created;
  };
  const stop = async () => {
    const running = server;
    server = undefined;
    if (!running) return;
    const closed = new Promise<void>((resolve) => running.close(() => resolve()));
    running.closeAllConnections();
    await closed;
  };
  await start();
  cleanUp(stop);
  return {
    url: `http://127.0.0.1:${port}`,
    get server() {
      if (!server) throw new Error(`the upstream ${name} is stopped`);
      return server;
    },
    stop,
    start,
  };
}

/**
 * The head of a router driver's test file: clean-ups after each test; upstreams; the real
 * router program (nginx, HAProxy) `startServer` starts, and drivers `open` opens over it, each
 * stopped or closed after the test.
 */
export function routerDriverTests<Server extends { stop(): Promise<void> }, Driver extends Router>(
  startServer: () => Promise<Server>,
  open: (server: Server) => Driver,
) {
  const cleanUp = cleanUpAfterEach();
  return {
    cleanUp,
    startUpstream: (name: string): Promise<Upstream> => startUpstream(name, cleanUp),
    async startServer(): Promise<Server> {
      const server = await startServer();
      cleanUp(() => server.stop());
      return server;
    },
    openRouter(server: Server): Driver {
      const router = open(server);
      cleanUp(() => router.close());
      return router;
    },
  };
}

export interface Reply {
  status: number;
  body: string;
  headers: http.IncomingHttpHeaders;
  /** The Set-Cookie headers; none: []. */
  setCookie: string[];
}

export interface GetOptions {
  headers?: Record<string, string>;
  /** The connection's agent; none given: a fresh connection. */
  agent?: http.Agent | false;
  method?: string;
  body?: string;
  /** Fails the request when no answer has come by then. */
  timeoutMs?: number;
}

/**
 * A request (GET unless `method` says otherwise) through the router on 127.0.0.1:`port` for
 * `host`; a fresh connection unless an agent is given.
 */
export function get(port: number, host: string, path = "/", options: GetOptions = {}): Promise<Reply> {
  return new Promise((resolve, reject) => {
    const request = http.request(
      {
        host: "127.0.0.1",
        port,
        path,
        method: options.method ?? "GET",
        headers: { host, ...options.headers },
        agent: options.agent ?? false,
      },
      (response) => {
        const chunks: Buffer[] = [];
        response.on("data", (chunk: Buffer) => chunks.push(chunk));
        response.on("end", () =>
          resolve({
            status: response.statusCode ?? 0,
            body: Buffer.concat(chunks).toString(),
            headers: response.headers,
            setCookie: response.headers["set-cookie"] ?? [],
          }),
        );
        response.on("error", reject);
      },
    );
    request.on("error", reject);
    const { timeoutMs } = options;
    if (timeoutMs !== undefined) {
      request.setTimeout(timeoutMs, () => request.destroy(new Error(`no answer within ${timeoutMs / 1000} s`)));
    }
    request.end(options.body);
  });
}

/**
 * A visitor that keeps the router's stickiness cookie `cookieName`, as a browser does: each call
 * is one GET of / for `host` on `agent`, with the cookie the router gave it last.
 */
export function cookieVisitor(
  port: number,
  host: string,
  cookieName: string,
  agent: http.Agent,
  options: Pick<GetOptions, "timeoutMs"> = {},
): () => Promise<Reply> {
  let cookie: string | undefined;
  return async () => {
    const reply = await get(port, host, "/", { ...options, agent, headers: cookie ? { cookie } : {} });
    const given = reply.setCookie.find((value) => value.startsWith(`${cookieName}=`));
    if (given) cookie = given.split(";")[0];
    return reply;
  };
}

/**
 * The share (per cent) of answers from `name` over a 16-connection keep-alive load of
 * cookie-less requests for app.test through the router on `port`, at least `requests` of them;
 * none may fail.
 */
export async function measuredShare(port: number, name: string, requests: number) {
  const load = startLoad({ port, host: "app.test", connections: 16 });
  while (load.completed() < requests) await sleep(50);
  const result = await load.stop();
  expect(result.failures).toEqual([]);
  return { share: ((result.bodies.get(name) ?? 0) / result.requests) * 100, requests: result.requests };
}

/**
 * 300 visitors keeping the router's cookie after a split of 20 % to green: each one's later
 * requests (five more rounds) land where its first did, and more than 20 and fewer than 110 of
 * them landed on green. The visitors and what they saw first.
 */
export async function stickyAt20(visitor: () => () => Promise<Reply>) {
  const visitors = Array.from({ length: 300 }, visitor);
  const first = await Promise.all(visitors.map((visit) => visit()));
  const sideAt20 = first.map((reply) => reply.body);
  for (let round = 0; round < 5; round += 1) {
    expect((await Promise.all(visitors.map((visit) => visit()))).map((reply) => reply.body)).toEqual(sideAt20);
  }
  const onGreenAt20 = sideAt20.filter((side) => side === "green").length;
  expect(onGreenAt20).toBeGreaterThan(20);
  expect(onGreenAt20).toBeLessThan(110);
  return { visitors, first, sideAt20, onGreenAt20 };
}

/**
 * 10 switches of `route` between blue and green (blue live at the start) under a 16-connection
 * keep-alive load through the router on `port`; after each, the old colour is drained, stopped
 * and started again on its address, as a deployment does. `afterSwitch` checks what the driver
 * promises right after a switch. Ends on blue with the load's result and each switch's time.
 */
export async function switchTenTimesUnderLoad(
  router: Router,
  port: number,
  route: RouteSpec,
  blue: Upstream,
  green: Upstream,
  afterSwitch: (colour: string) => Promise<void> = async () => undefined,
): Promise<{ result: LoadResult; switchTimes: number[] }> {
  const load = startLoad({ port, host: route.host, connections: 16 });
  const colours = [
    { upstream: green, colour: "green" },
    { upstream: blue, colour: "blue" },
  ];
  const switchTimes: number[] = [];
  for (let index = 0; index < 10; index += 1) {
    await sleep(150);
    const next = colours[index % 2];
    if (!next) throw new Error("unreachable");
    const { previous, switchMs } = await router.switch(route, { upstream: next.upstream.url, colour: next.colour });
    switchTimes.push(switchMs);
    if (!previous) throw new Error("the route existed");
    expect(previous.upstream).not.toBe(next.upstream.url);
    await afterSwitch(next.colour);
    const drained = await router.drain(previous.upstream, 10_000);
    expect(drained.drained).toBe(true);
    // As a deployment stops the old colour (and later starts a new one on its address).
    const old = previous.upstream === blue.url ? blue : green;
    await old.stop();
    await sleep(50);
    await old.start();
  }
  await sleep(150);
  return { result: await load.stop(), switchTimes };
}

/**
 * The first scenario of every router driver: routes `web` (App.Example.com/, blue) and `api`
 * (app.example.com/api) created on an empty router, served by host (any case, any port) and
 * longest path prefix ("/api" matches "/api" and "/api/x", not "/apix"), other hosts a 404
 * problem. `afterFirst` checks what the first switch did. Returns the headers the upstream
 * saw and the routes as `routes()` must list them.
 */
export async function servesTwoRoutes(
  router: Router,
  port: number,
  web: Upstream,
  api: Upstream,
  afterFirst: () => void = () => undefined,
): Promise<{ headers: Record<string, string>; expected: (RouteSpec & { upstream: string; colour: string | null })[] }> {
  expect(await router.routes()).toEqual([]);
  const created = await router.switch(
    { name: "web", host: "App.Example.com", pathPrefix: "/" },
    { upstream: web.url, colour: "blue" },
  );
  expect(created.previous).toBeUndefined();
  afterFirst();
  await router.switch(
    { name: "api", host: "app.example.com", pathPrefix: "/api" },
    { upstream: `${api.url}/`, colour: null },
  );

  expect((await get(port, "app.example.com", "/")).body).toBe("web");
  expect((await get(port, "APP.example.com:8443", "/api/users?x=1")).body).toBe("api");
  expect((await get(port, "app.example.com", "/api")).body).toBe("api");
  expect((await get(port, "app.example.com", "/apix")).body).toBe("web");
  const unknown = await get(port, "nobody.example.com", "/");
  expect(unknown.status).toBe(404);
  expect(JSON.parse(unknown.body)).toMatchObject({ type: "urn:ferry:problem:no-route", status: 404 });
  const echoed = JSON.parse((await get(port, "app.example.com", "/headers")).body) as {
    headers: Record<string, string>;
  };
  const expected = [
    { name: "api", host: "app.example.com", pathPrefix: "/api", upstream: api.url, colour: null },
    { name: "web", host: "app.example.com", pathPrefix: "/", upstream: web.url, colour: "blue" },
  ];
  expect(await router.routes()).toEqual(expected);
  expect(await router.live("web")).toEqual({ upstream: web.url, colour: "blue" });
  expect(await router.live("nothing")).toBeUndefined();
  return { headers: echoed.headers, expected };
}
