import { randomBytes } from "node:crypto";
import { existsSync, readdirSync, readFileSync } from "node:fs";
import http from "node:http";
import { join } from "node:path";
import { setTimeout as sleep } from "node:timers/promises";
import { expect } from "vitest";
import { FERRY, type FerryServer, isolatedEnv, testAdminKey, trackedResources } from "./cli.js";
import { crashTestClient } from "./crashClient.js";
import { type LoadResult, type RunningLoad, startLoad } from "./load.js";
import { processAppStep } from "./processService.js";
import { freePort } from "./registry.js";
import { type TestServer, taskLogText } from "./server.js";
import { type SshHosts, startSshHosts } from "./sshHosts.js";

/** The port the remote hosts' `ferry proxy` listens on in the data-plane tests. */
export const PROXY_PORT = 8000;

/** What the proxy at `address` answers for the route's host name (the body, trimmed). */
export function served(address: string, routeHost: string): Promise<string> {
  return new Promise<string>((resolve, reject) => {
    const request = http.get(
      { host: address, port: PROXY_PORT, path: "/", headers: { host: routeHost }, agent: false },
      (response) => {
        let body = "";
        response.setEncoding("utf8");
        response.on("data", (chunk: string) => {
          body += chunk;
        });
        response.on("end", () => resolve(body.trim()));
      },
    );
    request.setTimeout(10_000, () => request.destroy(new Error("no answer within 10 s")));
    request.on("error", reject);
  });
}

/** An environment "prod" and a lifecycle "auto" whose one phase deploys every release there on its own. */
export async function createAutoProd(test: TestServer): Promise<void> {
  expect((await test.call("POST", "/api/v1/environments", { name: "prod" })).status).toBe(201);
  expect(
    (
      await test.call("POST", "/api/v1/lifecycles", {
        name: "auto",
        phases: [{ environments: ["prod"], autoDeploy: true }],
      })
    ).status,
  ).toBe(201);
}

/**
 * A project on the lifecycle "auto" (named `prefix-` and a random suffix) with these
 * variables and steps; its slug.
 */
export async function createAutoProject(
  test: TestServer,
  prefix: string,
  steps: unknown[],
  variables: Record<string, string> = {},
): Promise<string> {
  const created = await test.call<{ slug: string }>("POST", "/api/v1/projects", {
    name: `${prefix}-${randomBytes(4).toString("hex")}`,
    lifecycle: "auto",
  });
  expect(created.status).toBe(201);
  const slug = created.body.slug;
  for (const [name, value] of Object.entries(variables)) {
    const variable = await test.call("POST", `/api/v1/projects/${slug}/variables`, { name, value });
    expect(variable.status, JSON.stringify(variable.body)).toBe(201);
  }
  const process = await test.call("PUT", `/api/v1/projects/${slug}/process`, { steps });
  expect(process.status, JSON.stringify(process.body)).toBe(200);
  return slug;
}

/** Creates release `version` of the project; the task of the deployment it started on its own. */
export async function releaseDeployed(test: TestServer, slug: string, version: string): Promise<string> {
  const created = await test.call<{ deployments: { taskId: string }[] }>("POST", `/api/v1/projects/${slug}/releases`, {
    version,
  });
  expect(created.status, JSON.stringify(created.body)).toBe(201);
  return created.body.deployments[0]?.taskId ?? "";
}

/** Processes (the namespaces share this machine's process table) whose command line holds `text`. */
export function commandLinesContaining(text: string): string[] {
  const found: string[] = [];
  for (const entry of readdirSync("/proc")) {
    if (!/^\d+$/.test(entry)) continue;
    try {
      const commandLine = readFileSync(`/proc/${entry}/cmdline`, "latin1");
      if (commandLine.includes(text)) found.push(commandLine.replaceAll("\0", " "));
    } catch {
      // Exited meanwhile.
    }
  }
  return found;
}

/** Processes (the namespaces share this machine's process table) whose environment holds this NAME=value entry. */
export function processesCarrying(entry: string): number[] {
  const found: number[] = [];
  for (const name of readdirSync("/proc")) {
    if (!/^\d+$/.test(name)) continue;
    try {
      if (readFileSync(`/proc/${name}/environ`, "latin1").split("\0").includes(entry)) found.push(Number(name));
    } catch {
      // Gone, or not readable.
    }
  }
  return found;
}

/** Where the process runtime keeps a target's instances on a host reached as root (processHost.ts). */
export const ROOT_INSTANCES = "/var/lib/ferry/processes";

/** Polls `condition` every 100 ms; fails naming `what` when it does not hold within `timeoutMs`. */
export async function waitUntil(
  condition: () => boolean | Promise<boolean>,
  what: string,
  timeoutMs: number,
): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!(await condition())) {
    if (Date.now() > deadline) throw new Error(`timed out after ${timeoutMs} ms waiting until ${what}`);
    await sleep(100);
  }
}

/**
 * `action` under 16 keep-alive clients sending requests for `routeHost` to the router at
 * `address`: 50 answers before it starts and 50 after it ends. Its result and what the load saw.
 */
export async function underLoad<T>(
  address: string,
  routeHost: string,
  action: () => Promise<T>,
): Promise<{ result: T; seen: LoadResult }> {
  const load: RunningLoad = startLoad({ address, port: PROXY_PORT, host: routeHost, connections: 16 });
  try {
    while (load.completed() < 50) await sleep(20);
    const result = await action();
    const after = load.completed();
    while (load.completed() < after + 50) await sleep(20);
    return { result, seen: await load.stop() };
  } finally {
    await load.stop().catch(() => undefined);
  }
}

/**
 * The body of POST /api/v1/targets for the first host of `hosts`: an SSH target in prod with the
 * role web, reached as root, whose router (`driver` and its `settings`) listens on PROXY_PORT
 * and is run there as this checkout's ferry.
 */
export function sshTargetBody(
  name: string,
  hosts: SshHosts,
  driver: string,
  settings: Record<string, unknown>,
): Record<string, unknown> {
  const host = hosts.hosts[0];
  if (!host) throw new Error("no host");
  return {
    name,
    environments: ["prod"],
    roles: ["web"],
    transport: "ssh",
    ssh: { host: host.address, user: "root", privateKey: hosts.privateKey, hostKey: host.fingerprint },
    router: { driver, listen: `0.0.0.0:${PROXY_PORT}`, ...settings, command: FERRY },
  };
}

/**
 * The process step of the remote blue/green tests: the app of `AppDirectory` (its version from
 * the release number, `env` besides), blue/green on the targets with `role`, behind `routeHost`.
 */
export function remoteProcessStep(
  routeHost: string,
  options: { role?: string; env?: Record<string, string>; healthDeadlineSeconds?: number } = {},
) {
  return {
    ...processAppStep(routeHost, {
      env: { APP_VERSION: "#{Ferry.Release.Number}", ...options.env },
      blueGreen: {
        healthCheck: {
          path: "/health",
          intervalMs: 100,
          timeoutMs: 1000,
          deadlineSeconds: options.healthDeadlineSeconds ?? 10,
        },
        drainSeconds: 3,
        keepPreviousRunning: true,
        retain: 2,
      },
      settleSeconds: 0.3,
      stopTimeoutSeconds: 3,
    }),
    roles: [options.role ?? "web"],
  };
}

/** Stops the `ferry proxy --detach` whose state is in `stateDir` through its pid file, if it runs. */
export function stopDetachedProxy(stateDir: string): void {
  const pidFile = join(stateDir, "proxy.pid");
  if (!existsSync(pidFile)) return;
  try {
    process.kill(Number(readFileSync(pidFile, "utf8").trim()), "SIGTERM");
  } catch {
    // Gone.
  }
}

/**
 * The crash tests of SSH targets: a real `ferry server` process (its data in a temp directory
 * named after `resourcePrefix`, the test's admin key, `serverEnv` besides) that a test kills
 * with -9 and starts again on the same port, and one namespace host with its own sshd.
 * `open` goes in beforeAll; `killServer` first and `close` last in afterAll.
 */
export function crashServerWithSshHost(resourcePrefix: string, serverEnv: Record<string, string> = {}) {
  const resources = trackedResources(resourcePrefix);
  const apiKey = testAdminKey();
  let hosts: SshHosts | undefined;
  let dataDir = "";
  let port = 0;
  let server: FerryServer | undefined;
  const client = crashTestClient(() => port, apiKey);
  const start = async () => {
    server = await resources.startFerryServer({
      dataDir,
      env: isolatedEnv(dataDir, { FERRY_ADMIN_API_KEY: apiKey, ...serverEnv }),
      port,
    });
  };
  return {
    ...client,
    makeTemporaryDirectory: resources.makeTemporaryDirectory,
    logText: (taskId: string) => taskLogText(client.call, taskId),
    get hosts(): SshHosts {
      if (!hosts) throw new Error("the SSH host is not started (open() in beforeAll)");
      return hosts;
    },
    address: () => hosts?.hosts[0]?.address ?? "",
    /** Starts the host and the server. */
    async open() {
      hosts = await startSshHosts(1);
      dataDir = await resources.makeTemporaryDirectory();
      port = await freePort();
      await start();
    },
    /** Starts the server again, on its data and port. */
    start,
    /** What the server started last wrote to its standard output (its log). */
    stdout: () => server?.stdout() ?? "",
    /** Kills the server with -9; `exited`: waits until it is gone. */
    async killServer(exited = false) {
      const running = server;
      running?.process.kill("SIGKILL");
      if (exited) await new Promise((resolve) => running?.process.once("exit", resolve));
    },
    /** The environment prod and the lifecycle `one` of it alone, created through the API. */
    async createProdLifecycle() {
      expect((await client.call("POST", "/api/v1/environments", { name: "prod" })).status).toBe(201);
      expect(
        (await client.call("POST", "/api/v1/lifecycles", { name: "one", phases: [{ environments: ["prod"] }] })).status,
      ).toBe(201);
    },
    /** Stops the host, then the servers still running and their temp directories. */
    async close() {
      await hosts?.close();
      await resources.cleanUp();
    },
  };
}
