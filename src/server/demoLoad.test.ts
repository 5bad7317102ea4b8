import http from "node:http";
import type { AddressInfo } from "node:net";
import { setTimeout as sleep } from "node:timers/promises";
import { afterEach, describe, expect, it } from "vitest";
import { startDemoLoad } from "./demoLoad.js";

/** The demo's load generator against a real HTTP server standing in for the router. */
describe("startDemoLoad", () => {
  let server: http.Server | undefined;
  afterEach(async () => {
    const running = server;
    server = undefined;
    if (!running?.listening) return;
    running.closeAllConnections();
    await new Promise((resolve) => running.close(resolve));
  });

  /** Answers each host as `answer` says, on kept-alive connections. */
  const listen = async (answer: (host: string) => { status: number; body: string }) => {
    const connections = new Set<unknown>();
    server = http.createServer((request, response) => {
      const { status, body } = answer(request.headers.host ?? "");
      response.writeHead(status, { "content-type": "text/plain" });
      response.end(body);
    });
    server.on("connection", (socket) => connections.add(socket));
    await new Promise<void>((resolve) => server?.listen(0, "127.0.0.1", resolve));
    return { origin: `http://127.0.0.1:${(server.address() as AddressInfo).port}`, connections };
  };

  it("counts every answer per host, and the releases that answered in the order they first did", async () => {
    let release = "1.0.0";
    const { origin, connections } = await listen((host) => ({
      status: 200,
      body: `Hello: demo app release ${release} in ${host} (pid 1)\n`,
    }));
    const load = startDemoLoad(origin, ["dev.localhost", "prod.localhost"], 2);
    await sleep(300);
    release = "1.1.0";
    await sleep(300);
    const figures = await load.stop();
    expect(figures.map((each) => [each.host, each.failed, each.failures, each.releases])).toEqual([
      ["dev.localhost", 0, [], ["1.0.0", "1.1.0"]],
      ["prod.localhost", 0, [], ["1.0.0", "1.1.0"]],
    ]);
    for (const each of figures) expect(each.requests).toBeGreaterThan(4);
    // Kept alive: two connections per host, however many requests.
    expect(connections.size).toBe(4);
  });

  it("counts what is not a 200 as failed, keeping the first five verbatim", async () => {
    let status = 200;
    const { origin } = await listen(() => ({ status, body: status === 200 ? "release 1.0.0 in Dev" : "no upstream" }));
    const load = startDemoLoad(origin, ["dev.localhost"], 1);
    await sleep(200);
    status = 502;
    await sleep(300);
    // Then no router at all: refused connections.
    server?.close();
    server?.closeAllConnections();
    await sleep(200);
    const [dev] = await load.stop();
    expect(dev?.failed).toBeGreaterThan(5);
    expect(dev?.failures).toHaveLength(5);
    expect(dev?.failures[0]).toBe("HTTP 502: no upstream");
    expect(dev?.releases).toEqual(["1.0.0"]);
  });

  it("counts a refused connection as failed, with its error", async () => {
    const { origin } = await listen(() => ({ status: 200, body: "release 1.0.0 in Dev" }));
    server?.close();
    await sleep(50);
    const load = startDemoLoad(origin, ["dev.localhost"], 1);
    await sleep(200);
    const [dev] = await load.stop();
    expect(dev?.requests).toBeGreaterThan(0);
    expect(dev?.failed).toBe(dev?.requests);
    expect(dev?.failures[0]).toMatch(/ECONNREFUSED/);
    expect(dev?.releases).toEqual([]);
  });
});
