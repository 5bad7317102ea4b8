import { spawn } from "node:child_process";
import { constants } from "node:fs";
import { lstat, mkdir, mkdtemp, open, readdir, readFile, rm, rmdir, writeFile } from "node:fs/promises";
import { dirname, isAbsolute, join } from "node:path";
import type { Readable } from "node:stream";
import { pipeline } from "node:stream/promises";
import { LineSplitter } from "../engine/lineSplitter.js";
import { TaskFailure } from "../engine/types.js";
import { localDocker } from "../runtimes/docker.js";
import {
  giveToAccount,
  type LocalAccount,
  type LocalUser,
  processesOfUid,
  runningUids,
  spawnCredentials,
} from "../runtimes/localUser.js";
import { localProcesses } from "../runtimes/process.js";
import { killTaskProcesses, recordProcessGroup } from "../runtimes/processGroups.js";
import type { RuntimeKind, RuntimesByKind } from "../runtimes/types.js";
import { type HttpOutcome, type HttpRequest, sendRequest } from "../steps/http.js";
import type { LazyRouter } from "../traffic/routers.js";
import { completedStream, READ_FILE_SCRIPT, readFailure } from "./fileStream.js";
import { type ProcessExit, type ProcessSpec, stepFileName, type Target, type Transport } from "./types.js";
import {
  announcedBytes,
  checkUpload,
  UPLOAD_FILE_SCRIPT,
  type UploadSpec,
  uploadArguments,
  uploadOutcome,
  watchSource,
} from "./upload.js";

/** The server's own host: processes spawned here, its Docker engine through the local socket. */
export class LocalTransport implements Transport {
  readonly kind = "local" as const;
  /** The account of each task with a uid of its own (FERRY_RUN_AS unset, server root). */
  private readonly accounts = new Map<string, LocalAccount>();
  /** Allocations one after another: two tasks starting at once must not take the same uid. */
  private allocating: Promise<unknown> = Promise.resolve();

  /**
   * @param workRoot where tasks keep working files on this host (their process-group records among them)
   * @param localUser the account processes run as (docs/security.md); undefined: the server's own
   * @param dockerSocket this host's Docker engine (DOCKER_HOST, dockerSocketOf); undefined: /var/run/docker.sock
   */
  constructor(
    private readonly workRoot: string,
    private readonly localUser?: LocalUser,
    private readonly dockerSocket?: string,
  ) {}

  runtime<K extends RuntimeKind>(kind: K): RuntimesByKind[K] {
    const runtimes: RuntimesByKind = {
      docker: localDocker(this.dockerSocket),
      process: localProcesses(this.workRoot, this.localUser),
    };
    return runtimes[kind];
  }

  /**
   * The task's directory on this host. The server's (0711 when work runs as another
   * account): that account passes through to its step directories, but cannot list or
   * change the records of the processes the task started.
   */
  private async taskDirectory(taskId: string): Promise<string> {
    const directory = join(this.workRoot, taskId);
    const separate = this.localUser?.kind === "user" || this.localUser?.kind === "perTask";
    await mkdir(directory, { recursive: true, mode: separate ? 0o711 : 0o700 });
    return directory;
  }

  /**
   * The account the task's processes run as: undefined for the server's own; a uid of the
   * task's own from the range (recorded in the task's directory, so clean-up after a crash
   * can kill every process of it) unless one named account was chosen.
   */
  private async accountOf(taskId: string): Promise<LocalAccount | undefined> {
    const user = this.localUser;
    if (user === undefined || user.kind === "server") return undefined;
    if (user.kind === "refused") throw new Error(user.reason);
    if (user.kind === "user") return { uid: user.uid, gid: user.gid };
    const known = this.accounts.get(taskId);
    if (known) return known;
    const allocation = this.allocating.then(async () => {
      const already = this.accounts.get(taskId);
      if (already) return already;
      // Not one a running task of this server holds, and not one any process runs as now
      // (a process of a task whose clean-up has not come yet).
      const taken = new Set([...this.accounts.values()].map((account) => account.uid));
      for (const uid of await runningUids()) taken.add(uid);
      const start = Math.floor(Math.random() * user.count);
      for (let offset = 0; offset < user.count; offset++) {
        const uid = user.firstUid + ((start + offset) % user.count);
        if (taken.has(uid)) continue;
        const account = { uid, gid: uid };
        await writeFile(join(await this.taskDirectory(taskId), "account"), String(uid), { mode: 0o600 });
        this.accounts.set(taskId, account);
        return account;
      }
      throw new Error(
        `every uid of FERRY_RUN_AS_UIDS (${user.count}) is in use by a task; widen the range or run fewer tasks at once`,
      );
    });
    this.allocating = allocation.catch(() => undefined);
    return allocation;
  }

  async stepDirectory(taskId: string, prefix: string): Promise<string> {
    const directory = await mkdtemp(join(await this.taskDirectory(taskId), prefix));
    // The step's own directory (a script's HOME and $FERRY_OUTPUT) belongs to the account it runs as.
    await giveToAccount(directory, await this.accountOf(taskId));
    return directory;
  }

  /**
   * A file the step's account wrote. Opened without following a symbolic link, only when it
   * is a regular file of the directory's owner, and read to at most 1 MiB: the server reads
   * it with its own rights, so a link to /proc/self/environ or /dev/zero must get nothing.
   */
  async readFile(path: string): Promise<string | undefined> {
    let handle: Awaited<ReturnType<typeof open>> | undefined;
    try {
      handle = await open(path, constants.O_RDONLY | constants.O_NOFOLLOW | constants.O_NONBLOCK);
      const [status, owner] = await Promise.all([handle.stat(), lstat(dirname(path))]);
      if (!status.isFile() || status.uid !== owner.uid) return undefined;
      const buffer = Buffer.alloc(Math.min(status.size, MAX_FILE_BYTES));
      const { bytesRead } = await handle.read(buffer, 0, buffer.length, 0);
      return buffer.subarray(0, bytesRead).toString("utf8");
    } catch {
      return undefined;
    } finally {
      await handle?.close();
    }
  }

  async finishStep(directory: string, fileName: string): Promise<string | undefined> {
    const text = await this.readFile(`${directory}/${stepFileName(fileName)}`);
    await this.removeDirectory(directory);
    return text;
  }

  /** The server's own host answers while the server runs. */
  async checkReachable(): Promise<void> {}

  /**
   * Read by `cat` running as the task's account (FERRY_RUN_AS, its uid of its own): the
   * server, often root, never opens a path a script named with its own rights, so a step
   * cannot attach /etc/shadow or the data directory's master key.
   */
  async readStream(taskId: string, path: string, signal: AbortSignal): Promise<Readable> {
    if (!isAbsolute(path)) throw new TaskFailure(`a file to read on the host needs an absolute path`);
    signal.throwIfAborted();
    const credentials = spawnCredentials(await this.accountOf(taskId));
    const child = spawn("bash", ["--noprofile", "--norc", "-c", READ_FILE_SCRIPT, "ferry-read", path], {
      env: { PATH: process.env.PATH ?? "/usr/local/bin:/usr/bin:/bin", LANG: "C.UTF-8" },
      cwd: "/",
      detached: true,
      stdio: ["ignore", "pipe", "pipe"],
      ...credentials,
    });
    let stderr = "";
    child.stderr.setEncoding("utf8");
    child.stderr.on("data", (chunk: string) => {
      if (stderr.length < 2000) stderr += chunk;
    });
    const kill = () => {
      if (child.pid === undefined || child.exitCode !== null) return;
      try {
        process.kill(-child.pid, "SIGKILL");
      } catch {
        // Gone meanwhile.
      }
    };
    const finished = new Promise<void>((resolve, reject) => {
      child.once("error", (error) =>
        reject(new TaskFailure(`could not read ${path.slice(0, 500)} on this host (${error.message})`)),
      );
      child.once("close", (code) => {
        if (code === 0) resolve();
        else reject(readFailure(path, code, stderr, "this host"));
      });
    });
    const stream = completedStream(child.stdout, finished, kill);
    const onAbort = () => stream.destroy(signal.reason instanceof Error ? signal.reason : new TaskFailure("cancelled"));
    signal.addEventListener("abort", onAbort, { once: true });
    stream.once("close", () => signal.removeEventListener("abort", onAbort));
    return stream;
  }

  /**
   * Written by bash running as the task's account (FERRY_RUN_AS, its uid of its own), as
   * readStream reads: the server never writes a path a step named with its own rights. The
   * source is piped into the script's standard input, so the pipe's backpressure paces it.
   */
  async upload(spec: UploadSpec, source: Readable): Promise<void> {
    checkUpload(spec);
    spec.signal.throwIfAborted();
    const credentials = spawnCredentials(await this.accountOf(spec.taskId));
    const child = spawn(
      "bash",
      ["--noprofile", "--norc", "-c", UPLOAD_FILE_SCRIPT, "ferry-upload", ...uploadArguments(spec)],
      {
        env: { PATH: process.env.PATH ?? "/usr/local/bin:/usr/bin:/bin", LANG: "C.UTF-8" },
        cwd: "/",
        detached: true,
        stdio: ["pipe", "ignore", "pipe"],
        ...credentials,
      },
    );
    let stderr = "";
    child.stderr.setEncoding("utf8");
    child.stderr.on("data", (chunk: string) => {
      if (stderr.length < 2000) stderr += chunk;
    });
    const exited = new Promise<number | null>((resolve, reject) => {
      child.once("error", reject);
      child.once("close", (code) => resolve(code));
    });
    exited.catch(() => {}); // awaited below
    const kill = () => {
      if (child.pid === undefined || child.exitCode !== null) return;
      try {
        process.kill(-child.pid, "SIGKILL");
      } catch {
        // Gone meanwhile.
      }
    };
    let stopped: TaskFailure | undefined;
    let grace: NodeJS.Timeout | undefined;
    // Its input ends early: the script sees fewer bytes than announced and removes its
    // temporary file itself. Killed only when it does not exit even then (a hung disk).
    const stop = (why: TaskFailure) => {
      stopped ??= why;
      source.destroy();
      child.stdin.destroy();
      grace ??= setTimeout(kill, STOP_GRACE_MS);
    };
    const timer = setTimeout(
      () =>
        stop(
          new TaskFailure(
            `writing ${spec.path.slice(0, 500)} on this host took longer than ${spec.timeoutMs / 1000} s`,
          ),
        ),
      spec.timeoutMs,
    );
    const onAbort = () => stop(new TaskFailure("cancelled"));
    spec.signal.addEventListener("abort", onAbort, { once: true });
    try {
      const checked = announcedBytes(spec);
      const sourceError = watchSource(source, checked, child.stdin);
      // A source that fails ends the script's input early (pipeline destroys the pipe): it
      // then sees fewer bytes than announced, and writes nothing.
      const sent = pipeline(source, checked, child.stdin).then(
        () => undefined,
        (error: unknown) => (error instanceof Error ? error : new Error(String(error))),
      );
      const code = await exited.catch((error: Error) => {
        throw new TaskFailure(`could not write ${spec.path.slice(0, 500)} on this host (${error.message})`);
      });
      const sendError = await sent;
      const failure = uploadOutcome({
        path: spec.path,
        where: "this host",
        stopped,
        sourceError: sourceError(),
        code,
        stderr,
        sendError,
      });
      if (failure) throw failure;
    } finally {
      clearTimeout(timer);
      clearTimeout(grace);
      spec.signal.removeEventListener("abort", onAbort);
    }
  }

  /** Removed with the rights of its owner: a step's account cannot trick the server into removing anything else. */
  async removeDirectory(path: string): Promise<void> {
    const status = await lstat(path).catch(() => undefined);
    if (!status) return;
    const serverUid = process.getuid?.();
    if (status.isDirectory() && serverUid === 0 && status.uid !== 0) {
      // The owner empties it (the entry itself is in the server's directory, which the owner
      // may not write); root then removes only the empty directory — rmdir never follows a
      // link and refuses what is not empty. What the owner could not remove stays for an operator.
      await emptyAs({ uid: status.uid, gid: status.gid }, path);
      await rmdir(path).catch(() => undefined);
      return;
    }
    await rm(path, { recursive: true, force: true });
  }

  async finishTask(taskId: string): Promise<void> {
    const directory = join(this.workRoot, taskId);
    const account = this.accounts.get(taskId) ?? (await this.recordedAccount(taskId));
    // A process of the task that left its group (setsid) would otherwise outlive it.
    if (account) await killAll(await processesOfUid(account.uid));
    // Step directories belong to the step's account; what is left is the server's own.
    for (const entry of await readdir(directory).catch(() => [] as string[])) {
      await this.removeDirectory(join(directory, entry));
    }
    await rm(directory, { recursive: true, force: true });
    this.accounts.delete(taskId);
  }

  /** The uid a task of its own had, from its directory (after a restart, for clean-up). */
  private async recordedAccount(taskId: string): Promise<LocalAccount | undefined> {
    if (this.localUser?.kind !== "perTask") return undefined;
    const text = await readFile(join(this.workRoot, taskId, "account"), "utf8").catch(() => undefined);
    const uid = Number(text);
    return text !== undefined && Number.isInteger(uid) && uid >= this.localUser.firstUid
      ? { uid, gid: uid }
      : undefined;
  }

  /**
   * Spawns with an argument array (no shell line is ever built), in its own process group
   * so a cancel or timeout kills the process and everything it started.
   */
  async run(spec: ProcessSpec): Promise<ProcessExit> {
    // Never with the server's rights unless the operator chose so (FERRY_RUN_AS, docs/security.md).
    const credentials = spawnCredentials(spec.hostService ? undefined : await this.accountOf(spec.taskId));
    const taskDirectory = await this.taskDirectory(spec.taskId);
    // "node" is the binary running Ferry: it exists, whatever PATH the process gets.
    const command = spec.command === "node" ? process.execPath : spec.command;
    const child = spawn(command, [...spec.args], {
      // The host's PATH unless the process brings its own: the programs are this host's.
      env: { PATH: process.env.PATH ?? "/usr/local/bin:/usr/bin:/bin", ...spec.env },
      cwd: spec.cwd,
      detached: true,
      stdio: ["pipe", "pipe", "pipe"],
      ...credentials,
    });
    // Its input, if any, then end of file (as /dev/null gives). A program that exits without
    // reading it all makes the write fail (EPIPE): its exit code says what happened.
    child.stdin.on("error", () => {});
    child.stdin.end(spec.stdin ?? "");
    // Listen before any await: a quick process may have exited by the time we look again.
    const exited = new Promise<number | null>((resolve, reject) => {
      child.on("error", reject);
      child.on("close", (exitCode) => resolve(exitCode));
    });
    exited.catch(() => {}); // handled where it is awaited below; this only keeps Node from calling it unhandled
    // Recorded at once, so that if this server dies, the one that interrupts the task can kill the group.
    try {
      if (child.pid !== undefined) recordProcessGroup(taskDirectory, child.pid);
    } catch (error) {
      // Without the record a crash would orphan it: it does not run.
      if (child.pid !== undefined) killAll([-child.pid]);
      throw error;
    }
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
    // A listener added after the abort never hears it: a cancel that came while the step was
    // still getting ready (its directory, its account) would let the process run to its end.
    if (spec.signal.aborted) killGroup();
    // Lines of at most 64 KiB: a longer one is cut, and its rest dropped as it arrives.
    const pipeLines = (stream: NodeJS.ReadableStream, name: "stdout" | "stderr") => {
      const splitter = new LineSplitter((text, cut) => spec.onLine(name, text, cut));
      stream.setEncoding("utf8");
      stream.on("data", (chunk: string) => {
        splitter.push(chunk);
        const gate = spec.outputGate;
        if (gate?.full) {
          stream.pause();
          void gate.drained().then(() => stream.resume());
        }
      });
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

  async killTaskProcesses(taskId: string): Promise<number> {
    const killed = await killTaskProcesses(join(this.workRoot, taskId), taskId);
    const account = this.accounts.get(taskId) ?? (await this.recordedAccount(taskId));
    const escaped = account ? await processesOfUid(account.uid) : [];
    await killAll(escaped);
    await this.finishTask(taskId);
    return killed + escaped.length;
  }
}

/** After an upload is stopped, how long its script may take to notice its input ended before it is killed. */
const STOP_GRACE_MS = 10_000;

/** At most this much of a file a step wrote is read back (its output variables). */
const MAX_FILE_BYTES = 1024 * 1024;

/** SIGKILL to each process (a negative id: a process group); gone ones are skipped. */
async function killAll(processIds: readonly number[]): Promise<void> {
  for (const processId of processIds) {
    try {
      process.kill(processId, "SIGKILL");
    } catch {
      // Gone meanwhile.
    }
  }
}

/**
 * Removes what is inside a directory, run as the account, so it can remove only what that
 * account could. `find -P` (the default) never follows a link; the path is absolute, so it
 * cannot be read as an option.
 */
function emptyAs(account: LocalAccount, directory: string): Promise<void> {
  return new Promise((resolve) => {
    const child = spawn("find", [directory, "-mindepth", "1", "-delete"], {
      uid: account.uid,
      gid: account.gid,
      stdio: "ignore",
    });
    child.on("error", () => resolve());
    child.on("close", () => resolve());
  });
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
    runtimes: () => [transport.runtime("docker"), transport.runtime("process")],
    router: async () => {
      if (!router) throw new Error("this server has no traffic router for blue/green deployments");
      return router.get();
    },
    routerInUse: async () => router?.inUse(),
  };
}
