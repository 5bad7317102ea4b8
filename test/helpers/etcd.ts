import { type ChildProcess, spawn } from "node:child_process";
import { randomBytes } from "node:crypto";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { freePort } from "./registry.js";

/**
 * Real etcd servers for tests: Debian's etcd-server (3.4), one single-member cluster per
 * caller on 127.0.0.1 with its own data directory and ports. scripts/test-services.sh
 * installs the package but starts nothing, so tests can run in parallel.
 */
const ETCD_BINARY = "/usr/bin/etcd";
const START_DEADLINE_MS = 20_000;

export interface TestEtcd {
  /** "http://127.0.0.1:PORT" */
  readonly endpoint: string;
  /** Stops the etcd process but keeps its data: etcd is down until restart(). */
  kill(): Promise<void>;
  /** Starts etcd again on the same ports and data directory. */
  restart(): Promise<void>;
  /** Stops etcd and removes its data directory. */
  stop(): Promise<void>;
}

export async function startEtcd(): Promise<TestEtcd> {
  const directory = mkdtempSync(join(tmpdir(), "ferry-etcd-"));
  try {
    // Another process may take a free port before etcd binds it: try again with new ones.
    for (let attempt = 1; ; attempt++) {
      const ports = { client: await freePort(), peer: await freePort() };
      try {
        return await startOn(directory, ports);
      } catch (error) {
        if (attempt >= 3 || !(error instanceof PortTakenError)) throw error;
        rmSync(join(directory, "data"), { recursive: true, force: true });
      }
    }
  } catch (error) {
    rmSync(directory, { recursive: true, force: true });
    throw error;
  }
}

class PortTakenError extends Error {}

interface Running {
  child: ChildProcess;
  exited: Promise<unknown>;
}

async function startOn(directory: string, ports: { client: number; peer: number }): Promise<TestEtcd> {
  const endpoint = `http://127.0.0.1:${ports.client}`;
  const peer = `http://127.0.0.1:${ports.peer}`;
  const args = [
    "--name",
    "default",
    "--data-dir",
    join(directory, "data"),
    "--listen-client-urls",
    endpoint,
    "--advertise-client-urls",
    endpoint,
    "--listen-peer-urls",
    peer,
    "--initial-advertise-peer-urls",
    peer,
    "--initial-cluster",
    `default=${peer}`,
    "--initial-cluster-state",
    "new",
    "--initial-cluster-token",
    `ferry-test-${randomBytes(4).toString("hex")}`,
    "--logger",
    "zap",
    "--log-level",
    "error",
  ];
  let running: Running | undefined = await launch(args, endpoint);

  return {
    endpoint,
    async kill() {
      if (running) await stopProcess(running);
      running = undefined;
    },
    async restart() {
      if (running) await stopProcess(running);
      running = undefined;
      running = await launch(args, endpoint);
    },
    async stop() {
      if (running) await stopProcess(running);
      running = undefined;
      rmSync(directory, { recursive: true, force: true });
    },
  };
}

async function launch(args: string[], endpoint: string): Promise<Running> {
  const child = spawn(ETCD_BINARY, args, { stdio: ["ignore", "pipe", "pipe"] });
  let output = "";
  const keepTail = (chunk: Buffer) => {
    output = (output + chunk.toString("utf8")).slice(-4000);
  };
  child.stdout?.on("data", keepTail);
  child.stderr?.on("data", keepTail);
  const exited = new Promise<number | null>((resolve) => child.once("exit", (code) => resolve(code)));
  const spawnFailed = new Promise<Error>((resolve) => child.once("error", resolve));
  const running = { child, exited };

  const deadline = Date.now() + START_DEADLINE_MS;
  for (;;) {
    const outcome = await Promise.race([
      exited.then((code) => ({ exited: code })),
      spawnFailed.then((error) => ({ error })),
      healthy(endpoint).then((ok) => ({ ok })),
    ]);
    if ("error" in outcome) {
      throw new Error(`cannot start ${ETCD_BINARY} (${outcome.error.message}); run scripts/test-services.sh`);
    }
    if ("exited" in outcome) {
      if (/address already in use/.test(output)) throw new PortTakenError(output);
      throw new Error(`etcd exited with code ${outcome.exited} before it was healthy:\n${output}`);
    }
    if (outcome.ok) return running;
    if (Date.now() > deadline) {
      await stopProcess(running);
      throw new Error(`etcd was not healthy at ${endpoint}/health within ${START_DEADLINE_MS} ms:\n${output}`);
    }
    await new Promise((resolve) => setTimeout(resolve, 50));
  }
}

/** `/health` says true once the member has a leader and serves requests. */
async function healthy(endpoint: string): Promise<boolean> {
  try {
    const response = await fetch(`${endpoint}/health`, { signal: AbortSignal.timeout(1_000) });
    const body = (await response.json()) as { health?: unknown };
    return response.ok && body.health === "true";
  } catch {
    return false;
  }
}

async function stopProcess({ child, exited }: Running): Promise<void> {
  if (child.exitCode !== null || child.signalCode !== null) return;
  child.kill("SIGTERM");
  const killed = setTimeout(() => child.kill("SIGKILL"), 5_000);
  await exited;
  clearTimeout(killed);
}
