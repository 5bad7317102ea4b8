import { spawn } from "node:child_process";
import { mkdir, mkdtemp, readFile, rm } from "node:fs/promises";
import { join } from "node:path";
import { LineSplitter } from "../engine/lineSplitter.js";
import { localDocker } from "../runtimes/docker.js";
import { giveToLocalUser, type LocalUser, spawnCredentials } from "../runtimes/localUser.js";
import { killTaskProcesses, recordProcessGroup } from "../runtimes/processGroups.js";
import type { RuntimeKind, RuntimesByKind } from "../runtimes/types.js";
import { type HttpOutcome, type HttpRequest, sendRequest } from "../steps/http.js";
import type { LazyRouter } from "../traffic/routers.js";
import type { ProcessExit, ProcessSpec, Target, Transport } from "./types.js";

/** The server's own host: processes spawned here, its Docker engine through the local socket. */
export class LocalTransport implements Transport {
  readonly kind = "local" as const;

  /**
   * @param workRoot where tasks keep working files on this host (their process-group records among them)
   * @param localUser the account processes run as (docs/security.md); undefined: the server's own
   */
  constructor(
    private readonly workRoot: string,
    private readonly localUser?: LocalUser,
  ) {}

  runtime<K extends RuntimeKind>(kind: K): RuntimesByKind[K] {
    const runtimes: RuntimesByKind = { docker: localDocker() };
    return runtimes[kind];
  }

  /**
   * The task's directory on this host. The server's (0711 when work runs as another
   * account): that account passes through to its step directories, but cannot list or
   * change the records of the processes the task started.
   */
  private async taskDirectory(taskId: string): Promise<string> {
    const directory = join(this.workRoot, taskId);
    await mkdir(directory, { recursive: true, mode: this.localUser?.kind === "user" ? 0o711 : 0o700 });
    return directory;
  }

  async stepDirectory(taskId: string, prefix: string): Promise<string> {
    const directory = await mkdtemp(join(await this.taskDirectory(taskId), prefix));
    // The step's own directory (a script's HOME and $FERRY_OUTPUT) belongs to the account it runs as.
    await giveToLocalUser(directory, this.localUser);
    return directory;
  }

  readFile(path: string): Promise<string | undefined> {
    return readFile(path, "utf8").catch(() => undefined);
  }

  async removeDirectory(path: string): Promise<void> {
    await rm(path, { recursive: true, force: true });
  }

  async finishTask(taskId: string): Promise<void> {
    await rm(join(this.workRoot, taskId), { recursive: true, force: true });
  }

  /**
   * Spawns with an argument array (no shell line is ever built), in its own process group
   * so a cancel or timeout kills the process and everything it started.
   */
  async run(spec: ProcessSpec): Promise<ProcessExit> {
    // Never with the server's rights unless the operator chose so (FERRY_RUN_AS, docs/security.md).
    const credentials = spawnCredentials(this.localUser);
    const taskDirectory = await this.taskDirectory(spec.taskId);
    // "node" is the binary running Ferry: it exists, whatever PATH the process gets.
    const command = spec.command === "node" ? process.execPath : spec.command;
    const child = spawn(command, [...spec.args], {
      // The host's PATH unless the process brings its own: the programs are this host's.
      env: { PATH: process.env.PATH ?? "/usr/local/bin:/usr/bin:/bin", ...spec.env },
      cwd: spec.cwd,
      detached: true,
      stdio: ["ignore", "pipe", "pipe"],
      ...credentials,
    });
    // Listen before any await: a quick process may have exited by the time we look again.
    const exited = new Promise<number | null>((resolve, reject) => {
      child.on("error", reject);
      child.on("close", (exitCode) => resolve(exitCode));
    });
    exited.catch(() => {}); // handled where it is awaited below; this only keeps Node from calling it unhandled
    // Recorded at once, so that if this server dies, the one that interrupts the task can kill the group.
    if (child.pid !== undefined) recordProcessGroup(taskDirectory, child.pid);
    // The whole group, even when its leader has exited: a background job the script started
    // (`sleep 30 &`) keeps running, and holds stdout open, after bash itself is gone.
    const killGroup = () => {
      if (child.pid === undefined) return;
      try {
        process.kill(-child.pid, "SIGKILL");
      } catch {
        // The group is already gone.
      }
    };
    let timedOut = false;
    const timer = setTimeout(() => {
      timedOut = true;
      killGroup();
    }, spec.timeoutMs);
    const onAbort = () => killGroup();
    spec.signal.addEventListener("abort", onAbort, { once: true });
    // Lines of at most 64 KiB: a longer one is cut, and its rest dropped as it arrives.
    const pipeLines = (stream: NodeJS.ReadableStream, name: "stdout" | "stderr") => {
      const splitter = new LineSplitter((text, cut) => spec.onLine(name, text, cut));
      stream.setEncoding("utf8");
      stream.on("data", (chunk: string) => splitter.push(chunk));
      stream.on("end", () => splitter.end());
    };
    pipeLines(child.stdout, "stdout");
    pipeLines(child.stderr, "stderr");
    try {
      return { code: await exited, timedOut };
    } finally {
      clearTimeout(timer);
      spec.signal.removeEventListener("abort", onAbort);
      killGroup();
    }
  }

  /** From the server itself: this host's loopback is the server's. */
  request(url: URL, request: HttpRequest): Promise<HttpOutcome> {
    return sendRequest(url, request);
  }

  killTaskProcesses(taskId: string): Promise<number> {
    return killTaskProcesses(join(this.workRoot, taskId), taskId);
  }
}

/**
 * A target on the server's own host. Until remote transports exist every target is one of
 * these, and they share the host's Docker engine and router.
 */
export function localTarget(
  transport: LocalTransport,
  router: LazyRouter | undefined,
  target: { id: string | null; name: string; roles: readonly string[] },
): Target {
  return {
    ...target,
    transport,
    runtime: (kind) => transport.runtime(kind),
    runtimes: () => [transport.runtime("docker")],
    router: async () => {
      if (!router) throw new Error("this server has no traffic router for blue/green deployments");
      return router.get();
    },
    routerInUse: async () => router?.inUse(),
  };
}
