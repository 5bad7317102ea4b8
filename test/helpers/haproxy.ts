import { mkdtempSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { setTimeout as sleep } from "node:timers/promises";
import type { HaproxyRouterOptions } from "../../src/traffic/haproxy.js";
import { remoteRouterOnHost } from "../../src/traffic/remoteRouter.js";
import type { Router } from "../../src/traffic/router.js";
import type { Transport } from "../../src/transports/types.js";
import { FERRY } from "./cli.js";
import { freePort } from "./registry.js";

/**
 * A state directory and a free port for a real HAProxy (Debian's package; scripts/
 * test-services.sh installs it) that the haproxy Router driver starts and owns. stop() ends
 * whatever HAProxy the pid file names (master and workers) and removes the directory.
 */
export interface TestHaproxy {
  options: HaproxyRouterOptions;
  port: number;
  dir: string;
  /** The master's pid, when one runs. */
  masterPid(): number | undefined;
  /** The master's workers (children), oldest first. */
  workerPids(): number[];
  stop(): Promise<void>;
}

export async function haproxyStateDir(options: { port?: number } = {}): Promise<TestHaproxy> {
  // Short: the runtime API socket's path must fit in 107 bytes.
  const dir = mkdtempSync(join(tmpdir(), "fhx-"));
  const port = options.port ?? (await freePort());
  const masterPid = () => {
    try {
      const pid = Number.parseInt(readFileSync(join(dir, "haproxy.pid"), "utf8"), 10);
      return isRunning(pid) ? pid : undefined;
    } catch {
      return undefined;
    }
  };
  const workerPids = () => {
    const pid = masterPid();
    return pid === undefined ? [] : childrenOf(pid).filter(isRunning);
  };
  let stopped = false;
  return {
    options: { stateDir: dir, listen: `127.0.0.1:${port}` },
    port,
    dir,
    masterPid,
    workerPids,
    async stop() {
      if (stopped) return;
      stopped = true;
      await stopMaster(masterPid());
      rmSync(dir, { recursive: true, force: true });
    },
  };
}

/** Ends a master (nginx's, HAProxy's) with SIGTERM, and it and its workers with SIGKILL after 5 s. */
export async function stopMaster(pid: number | undefined): Promise<void> {
  if (pid === undefined) return;
  const workers = childrenOf(pid);
  process.kill(pid, "SIGTERM");
  const deadline = Date.now() + 5_000;
  while (isRunning(pid) && Date.now() < deadline) await sleep(20);
  for (const orphan of [pid, ...workers]) if (isRunning(orphan)) process.kill(orphan, "SIGKILL");
}

export function childrenOf(pid: number): number[] {
  try {
    return readFileSync(`/proc/${pid}/task/${pid}/children`, "utf8").split(" ").filter(Boolean).map(Number);
  } catch {
    return [];
  }
}

/** Running, and not a zombie waiting for its parent. */
export function isRunning(pid: number): boolean {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, "utf8");
    return stat.slice(stat.lastIndexOf(")") + 2, stat.lastIndexOf(")") + 3) !== "Z";
  } catch {
    return false;
  }
}

/**
 * The router of a remote host whose proxy is the HAProxy of `haproxy`: `ferry haproxy-router`
 * run through `transport` (a LocalTransport in the tests, this machine standing for the host).
 */
export function remoteHaproxyRouter(transport: Transport, haproxy: TestHaproxy): Promise<Router> {
  const settings = { binary: "haproxy", stateDir: haproxy.dir, listen: haproxy.options.listen };
  return remoteRouterOnHost(transport, { driver: "haproxy", settings, command: FERRY }, "here").get();
}

/**
 * The router of a remote host whose proxy is nginx, with settings that point nowhere: for
 * what the driver offers (a split, modes), never for running it.
 */
export function idleRemoteNginxRouter(transport: Transport): Promise<Router> {
  return remoteRouterOnHost(
    transport,
    {
      driver: "nginx",
      settings: {
        binary: "nginx",
        config: "/x",
        sitesDir: "/x",
        pidFile: "/x",
        listen: "127.0.0.1:1",
        clientKeepalive: false,
      },
      command: FERRY,
    },
    "here",
  ).get();
}
