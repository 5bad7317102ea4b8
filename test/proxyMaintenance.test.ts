import { once } from "node:events";
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import http from "node:http";
import type { AddressInfo } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { setTimeout as sleep } from "node:timers/promises";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { ProxyAdminClient } from "../src/traffic/proxyClient.js";
import { readAdminToken } from "../src/traffic/proxyState.js";
import { type CliResult, runFerry } from "./helpers/cli.js";
import { startLoad } from "./helpers/load.js";
import { type ProxyProcess, startProxyProcess } from "./helpers/proxy.js";
import { get as getThrough } from "./helpers/routerDriver.js";

/**
 * Maintenance mode and pausing per route (issue 17 part 5), on a real `ferry proxy` process
 * driven by the real CLI (`ferry proxy maintenance|pause|resume`), with real upstreams and
 * keep-alive clients.
 */
describe("ferry proxy maintenance, pause and resume (real proxy process and CLI)", () => {
  let proxy: ProxyProcess;
  let client: ProxyAdminClient;
  const servers: http.Server[] = [];
  const scratch = mkdtempSync(join(tmpdir(), "ferry-maintenance-"));

  const startUpstream = async (name: string) => {
    const server = http.createServer((request, response) => {
      request.resume();
      response.end(name);
    });
    server.listen(0, "127.0.0.1");
    await once(server, "listening");
    servers.push(server);
    return `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
  };

  const ferry = (args: string[]): Promise<CliResult> =>
    runFerry(["proxy", ...args, "--state-dir", proxy.stateDir], { PATH: process.env.PATH ?? "", HOME: scratch });

  /** A GET of app.test through the proxy, on Node's shared keep-alive agent. */
  const get = async (path = "/") => {
    const reply = await getThrough(proxy.port, "app.test", path, { agent: http.globalAgent });
    return { status: reply.status, body: reply.body, type: String(reply.headers["content-type"]) };
  };

  /** A raw call of the admin API on its socket, to read a problem's field errors. */
  const adminPut = async (path: string, body: unknown) => {
    const token = await readAdminToken(proxy.stateDir);
    return new Promise<{ status: number; body: string }>((resolve, reject) => {
      const request = http.request(
        {
          socketPath: join(proxy.stateDir, "admin.sock"),
          path,
          method: "PUT",
          headers: { authorization: `Bearer ${token}`, "content-type": "application/json" },
        },
        (response) => {
          const chunks: Buffer[] = [];
          response.on("data", (chunk: Buffer) => chunks.push(chunk));
          response.on("end", () =>
            resolve({ status: response.statusCode ?? 0, body: Buffer.concat(chunks).toString() }),
          );
        },
      );
      request.on("error", reject);
      request.end(JSON.stringify(body));
    });
  };

  beforeAll(async () => {
    proxy = await startProxyProcess();
    client = new ProxyAdminClient(
      { socketPath: join(proxy.stateDir, "admin.sock") },
      await readAdminToken(proxy.stateDir),
    );
    await client.putRoute("app", { host: "app.test", upstream: await startUpstream("blue"), colour: "blue" });
  }, 60_000);

  afterAll(async () => {
    await client?.close();
    await proxy?.stop();
    for (const server of servers) {
      server.closeAllConnections();
      server.close();
    }
    rmSync(scratch, { recursive: true, force: true });
  });

  it("maintenance serves the custom page with 503 to every request, across a proxy restart, until resume", async () => {
    const page = join(scratch, "maintenance.html");
    writeFileSync(page, "<h1>Back in five minutes</h1>\n");
    const put = await ferry(["maintenance", "app", "--page", page]);
    expect(put.code, put.stderr).toBe(0);
    expect(put.stdout).toContain("route app: in maintenance (503)");
    expect(await get()).toEqual({
      status: 503,
      body: "<h1>Back in five minutes</h1>\n",
      type: "text/html; charset=utf-8",
    });
    await proxy.kill();
    await proxy.restart();
    expect((await get()).status).toBe(503);

    const resumed = await ferry(["resume", "app"]);
    expect(resumed.code, resumed.stderr).toBe(0);
    expect(await get()).toMatchObject({ status: 200, body: "blue" });

    // Without a page: a problem document that says what it is.
    expect((await ferry(["maintenance", "app"])).code).toBe(0);
    const problem = await get();
    expect(problem.status).toBe(503);
    expect(JSON.parse(problem.body)).toMatchObject({ type: "urn:ferry:problem:maintenance", status: 503 });
    expect((await ferry(["resume", "app"])).code).toBe(0);
  });

  it("pause holds requests while the upstream is swapped; resume sends every held one to the new upstream: 0 failed under load", async () => {
    const green = await startUpstream("green");
    const load = startLoad({ port: proxy.port, host: "app.test", connections: 16 });
    await sleep(300);
    const paused = await ferry(["pause", "app", "--timeout", "30"]);
    expect(paused.code, paused.stderr).toBe(0);
    expect(paused.stdout).toContain("requests are held for up to 30 s");
    // A request sent once the pause is in place is not answered while it lasts.
    let held: { status: number; body: string } | undefined;
    const heldRequest = get().then((reply) => {
      held = reply;
      return reply;
    });
    await sleep(1_000);
    expect(held).toBeUndefined();
    await client.switchRoute("app", { upstream: green, colour: "green" });
    expect((await ferry(["resume", "app"])).code).toBe(0);
    expect(await heldRequest).toMatchObject({ status: 200, body: "green" });
    await sleep(300);
    const seen = await load.stop();
    expect(seen.failures).toEqual([]);
    expect(seen.bodies.get("green")).toBeGreaterThanOrEqual(16);
  });

  it("a request held longer than the pause's timeout gets a 503 problem; bad flags and bodies are refused by name", async () => {
    expect((await ferry(["pause", "app", "--timeout", "1"])).code).toBe(0);
    const late = await get();
    expect(late.status).toBe(503);
    expect(JSON.parse(late.body)).toMatchObject({
      type: "urn:ferry:problem:paused",
      detail: "route 'app' was paused for longer than 1 s; try again",
    });
    expect((await ferry(["resume", "app"])).code).toBe(0);

    const badTimeout = await ferry(["pause", "app", "--timeout", "0"]);
    expect(badTimeout.code).not.toBe(0);
    expect(badTimeout.stderr).toContain("--timeout is how long a request may be held: 1 to 600 seconds");
    const missing = await ferry(["pause", "nothing"]);
    expect(missing.code).not.toBe(0);
    expect(missing.stderr).toContain("there is no route 'nothing'");
    const wrong = await adminPut("/routes/app/mode", { mode: "closed" });
    expect(wrong.status).toBe(400);
    expect(JSON.parse(wrong.body).errors).toEqual([
      { pointer: "/mode", detail: "mode is maintenance (with an optional page) or paused (with timeoutSeconds)" },
    ]);
  });
});
