import { execFileSync, spawn } from "node:child_process";
import { mkdtempSync, readFileSync, rmSync } from "node:fs";
import http from "node:http";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { setTimeout as sleep } from "node:timers/promises";
import { DockerRuntime } from "../src/runtimes/docker.js";
import { generateApiKey } from "../src/security/apiKeys.js";
import type { DemoImage } from "../test/helpers/images.js";
import { startNginx } from "../test/helpers/nginx.js";
import { freePort } from "../test/helpers/registry.js";

/** What the blue/green benchmarks share: a real `ferry server` process, a project, deploys and rollbacks through its API. */

const ROOT = join(import.meta.dirname ?? ".", "..", "..");
const FERRY = join(ROOT, "bin", "ferry");
export const HOST = "bench.test";

export interface BlueGreenBench {
  /** Where the route serves (the embedded proxy, nginx or HAProxy). */
  trafficPort: number;
  /** The proxy's state dir (builtin driver). */
  proxyStateDir: string;
  /** Creates a release of `image` and deploys it; resolves when the task succeeded. */
  deploy(version: string, image: DemoImage): Promise<{ log: string }>;
  /** Rolls back; the switch time from the task's log and when `expectedBody` was first served. */
  rollback(expectedBody: string): Promise<{ switchMs: number; firstServedMs: number }>;
  stop(): Promise<void>;
}

/**
 * Starts `ferry server` (FERRY_ROUTER=driver; the builtin proxy is started by the server
 * itself, nginx by this function, HAProxy by the server's haproxy driver) and a project
 * deploying the image variable blue/green.
 */
export async function startBlueGreenBench(
  driver: "builtin" | "nginx" | "haproxy",
  project: string,
  blueGreen: Record<string, unknown>,
): Promise<BlueGreenBench> {
  const dataDir = mkdtempSync(join(tmpdir(), `ferry-bench-${project}-`));
  const apiKey = generateApiKey();
  const trafficPort = await freePort();
  const serverPort = await freePort();
  const nginx = driver === "nginx" ? await startNginx({ port: trafficPort }) : undefined;
  const proxyStateDir = join(dataDir, "proxy");
  const haproxyStateDir = join(dataDir, "haproxy");
  const env: NodeJS.ProcessEnv = {
    PATH: process.env.PATH,
    HOME: dataDir,
    FERRY_ADMIN_API_KEY: apiKey,
    FERRY_LOG_LEVEL: "warn",
    FERRY_ROUTER: driver,
    FERRY_PROXY_STATE_DIR: proxyStateDir,
    FERRY_PROXY_LISTEN: `127.0.0.1:${trafficPort}`,
    FERRY_HAPROXY_STATE_DIR: haproxyStateDir,
    FERRY_HAPROXY_LISTEN: `127.0.0.1:${trafficPort}`,
    ...(nginx && {
      FERRY_NGINX_CONFIG: nginx.options.config,
      FERRY_NGINX_SITES_DIR: nginx.options.sitesDir,
      FERRY_NGINX_PID_FILE: nginx.options.pidFile,
      FERRY_NGINX_LISTEN: nginx.options.listen,
    }),
  };
  const server = spawn(process.execPath, [FERRY, "server", "--port", String(serverPort), "--data-dir", dataDir], {
    env,
    stdio: ["ignore", "ignore", "inherit"],
  });
  const api = apiClient(`http://127.0.0.1:${serverPort}`, apiKey);
  const stop = async () => {
    server.kill("SIGTERM");
    await new Promise((resolve) => server.once("exit", resolve));
    stopEmbeddedProxy(proxyStateDir);
    stopHaproxy(haproxyStateDir);
    await new DockerRuntime().removeByLabel("ferry.project", project).catch(() => {});
    await nginx?.stop();
    rmSync(dataDir, { recursive: true, force: true });
  };
  try {
    await api.ready();
    await api.call("POST", "/api/v1/environments", { name: "prod" });
    await api.call("POST", "/api/v1/lifecycles", { name: "bench", phases: [{ environments: ["prod"] }] });
    await api.call("POST", "/api/v1/projects", { name: project, lifecycle: "bench" });
    const variable = await api.call("POST", `/api/v1/projects/${project}/variables`, { name: "Image", value: "-" });
    await api.call("PUT", `/api/v1/projects/${project}/process`, {
      steps: [
        {
          name: "web",
          kind: "container",
          config: {
            strategy: "blueGreen",
            image: "#{Image}",
            route: { host: HOST, port: 8080 },
            blueGreen: {
              healthCheck: { path: "/health", intervalMs: 100, timeoutMs: 1000, deadlineSeconds: 30 },
              drainSeconds: 10,
              ...blueGreen,
            },
            settleSeconds: 0,
            stopTimeoutSeconds: 5,
          },
        },
      ],
    });
    return {
      trafficPort,
      proxyStateDir,
      async deploy(version, image) {
        await api.call("PATCH", `/api/v1/projects/${project}/variables/${variable.id}`, { value: image.reference });
        await api.call("POST", `/api/v1/projects/${project}/releases`, { version });
        const created = await api.call("POST", `/api/v1/projects/${project}/deployments`, {
          release: version,
          environment: "prod",
        });
        const task = await api.waitForTask(String(created.taskId));
        if (task.state !== "succeeded")
          throw new Error(`${driver}: deployment of ${version} ${task.state}: ${task.log}`);
        return task;
      },
      async rollback(expectedBody) {
        const started = performance.now();
        const rolled = await api.call("POST", `/api/v1/projects/${project}/rollbacks`, { environment: "prod" });
        const firstServedMs = await firstServedBy(trafficPort, expectedBody, started);
        const task = await api.waitForTask(String(rolled.taskId));
        if (task.state !== "succeeded") throw new Error(`${driver}: rollback ${task.state}: ${task.log}`);
        const switchMs = Number(/switched route \S+ to colour \S+ \(\S+\) in ([\d.]+) ms/.exec(task.log)?.[1]);
        return { switchMs, firstServedMs };
      },
      stop,
    };
  } catch (error) {
    await stop();
    throw error;
  }
}

/** Polls through the proxy until the body is `expected`; ms since `since`. */
async function firstServedBy(port: number, expected: string, since: number): Promise<number> {
  const agent = new http.Agent({ keepAlive: true });
  try {
    for (;;) {
      const body = await new Promise<string>((resolve, reject) => {
        const request = http.get({ host: "127.0.0.1", port, path: "/", agent, headers: { host: HOST } }, (response) => {
          let text = "";
          response.setEncoding("utf8").on("data", (chunk: string) => {
            text += chunk;
          });
          response.on("end", () => resolve(text.trim()));
        });
        request.on("error", reject);
      });
      if (body === expected) return performance.now() - since;
      if (performance.now() - since > 60_000) throw new Error(`the rollback did not bring back '${expected}'`);
    }
  } finally {
    agent.destroy();
  }
}

function apiClient(url: string, apiKey: string) {
  const call = async (method: string, path: string, body?: unknown) => {
    const response = await fetch(new URL(path, url), {
      method,
      headers: { authorization: `Bearer ${apiKey}`, ...(body !== undefined && { "content-type": "application/json" }) },
      ...(body !== undefined && { body: JSON.stringify(body) }),
    });
    const parsed = (await response.json().catch(() => ({}))) as Record<string, unknown>;
    if (!response.ok) throw new Error(`${method} ${path}: HTTP ${response.status} ${JSON.stringify(parsed)}`);
    return parsed;
  };
  return {
    call,
    async ready() {
      const deadline = Date.now() + 20_000;
      while (Date.now() < deadline) {
        const ok = await fetch(new URL("/readyz", url)).then(
          (response) => response.ok,
          () => false,
        );
        if (ok) return;
        await sleep(50);
      }
      throw new Error(`the Ferry server at ${url} did not become ready`);
    },
    async waitForTask(taskId: string): Promise<{ state: string; log: string }> {
      for (;;) {
        const task = await call("GET", `/api/v1/tasks/${taskId}`);
        if (["succeeded", "failed", "cancelled", "interrupted"].includes(String(task.state))) {
          const log = (await call("GET", `/api/v1/tasks/${taskId}/log`)) as { lines?: { text: string }[] };
          return { state: String(task.state), log: (log.lines ?? []).map((line) => line.text).join("\n") };
        }
        await sleep(25);
      }
    },
  };
}

/** The server started a detached `ferry proxy`; it outlives the server on purpose, so the benchmark stops it. */
function stopEmbeddedProxy(stateDir: string): void {
  try {
    process.kill(Number(readFileSync(join(stateDir, "proxy.pid"), "utf8")), "SIGTERM");
  } catch {
    // Not started (the nginx driver) or already gone.
  }
}

/** The server's haproxy driver started a daemonised HAProxy that outlives it on purpose: stop its master. */
function stopHaproxy(stateDir: string): void {
  try {
    process.kill(Number.parseInt(readFileSync(join(stateDir, "haproxy.pid"), "utf8"), 10), "SIGTERM");
  } catch {
    // Not started (another driver) or already gone.
  }
}

export function numberFlag(name: string, fallback: number): number {
  const index = process.argv.indexOf(name);
  const value = index === -1 ? undefined : Number(process.argv[index + 1]);
  return value !== undefined && Number.isInteger(value) && value > 0 ? value : fallback;
}

export function onPath(tool: string): boolean {
  try {
    execFileSync("sh", ["-c", 'command -v "$1"', "sh", tool], { stdio: "ignore" });
    return true;
  } catch {
    return false;
  }
}
