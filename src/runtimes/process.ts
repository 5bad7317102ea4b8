import { execFileSync, spawn } from "node:child_process";
import { closeSync, openSync } from "node:fs";
import { chmod, chown, mkdir, open, readdir, rm, writeFile } from "node:fs/promises";
import { createServer } from "node:net";
import { isAbsolute, join, normalize } from "node:path";
import { setTimeout as sleep } from "node:timers/promises";
import { fileURLToPath } from "node:url";
import { ConflictError, InputError, NotFoundError } from "../domain/errors.js";
import type { LocalUser } from "./localUser.js";
import {
  APP_DIRECTORY,
  type InstanceSpec,
  type InstanceState,
  isAlive,
  OUTPUT_LOG,
  type RestartPolicy,
  readSpec,
  readState,
  SUPERVISOR_LOG,
  writeSpec,
  writeState,
} from "./processFiles.js";
import { STOP_REQUEST_FILE } from "./supervisor.js";
import type { Runtime } from "./types.js";

/**
 * The process runtime: an application's instances as supervised processes on a host
 * without Docker (docs/decisions/0029-process-runtime.md). Each instance is a directory
 * under the runtime's root (its spec, state, logs and, when asked, its own copy of the
 * app) and, while it runs, a detached `ferry supervise` process that starts the command
 * in a process group of its own and restarts it by its restart policy. The supervisors
 * outlive the server, so traffic never depends on it; this class reads their state files
 * and sends them signals, and so works the same after a server restart.
 */

/** The same rule as container names, so a colour's name reads the same on either runtime. */
const instanceNamePattern = /^[a-zA-Z0-9][a-zA-Z0-9_.-]{0,127}$/;
const envNamePattern = /^[A-Za-z_][A-Za-z0-9_]{0,254}$/;
const labelKeyPattern = /^[a-z0-9](?:[a-z0-9._-]{0,126}[a-z0-9])?$/;
/** Most log bytes read for a tail. */
const MAX_LOG_BYTES = 256 * 1024;
/** How long a supervisor has to start its command and say so. */
const LAUNCH_TIMEOUT_MS = 20_000;
const COPY_TIMEOUT_MS = 10 * 60_000;

export interface ProcessInstanceSpec {
  name: string;
  /** The program ("node": the Node.js that runs Ferry) and its arguments; never a shell line. */
  command: string;
  args?: readonly string[];
  env?: Readonly<Record<string, string>>;
  /**
   * An absolute directory on the host copied (as the account the instance runs as, so it
   * can copy only what that account may read) into the instance's own directory, which
   * becomes its working directory: each instance keeps the files it started with.
   */
  copyFrom?: string | undefined;
  /** Absolute working directory; left out, the instance's own directory (or its copy). */
  workingDirectory?: string | undefined;
  labels?: Readonly<Record<string, string>>;
  /** Default on-failure. */
  restartPolicy?: RestartPolicy;
  /**
   * The port the instance is told to listen on (PORT): "auto" for a free one on 127.0.0.1
   * (chosen again at a later start if another process took it meanwhile), a number for
   * that one, left out for none.
   */
  port?: number | "auto" | undefined;
  /** Resource limits the kernel enforces per process (setrlimit, through prlimit). */
  limits?: { addressSpaceMb?: number | undefined; openFiles?: number | undefined } | undefined;
}

export interface StartedProcess {
  id: string;
  name: string;
  /** The port it was told to listen on (PORT); undefined when none. */
  port: number | undefined;
}

export interface ProcessStatus {
  id: string;
  name: string;
  running: boolean;
  /** Waiting to be started again by its restart policy. */
  restarting: boolean;
  /** Restarts by the restart policy since it was last started. */
  restartCount: number;
  /** The last exit code (null: none yet, or killed by a signal). */
  exitCode: number | null;
  /** "running", "restarting" or "exited". */
  status: string;
  /** Why the command could not be started, when it could not. */
  error: string;
  labels: Record<string, string>;
  port: number | undefined;
  /** The process id of the running command. */
  pid: number | undefined;
}

export interface ProcessSummary {
  id: string;
  name: string;
  state: string;
  labels: Record<string, string>;
  /** When the instance was created (Unix seconds, with fractions: two colours a moment apart still sort). */
  created: number;
}

export interface CallOptions {
  signal?: AbortSignal | undefined;
}

export interface ProcessRuntimeOptions {
  /** Where the instances' directories are; it must outlast the server (and, for instances to come back, reboots). */
  directory: string;
  /**
   * The account instances run as; undefined: the server's own. A string: local processes
   * are refused, and this says why (docs/security.md).
   */
  account?: { uid: number; gid: number } | string | undefined;
}

/**
 * The process runtime as a step, blue/green and clean-up use it: supervised processes on the
 * server's own host (ProcessRuntime) or on a remote target's host, driven through its
 * transport (RemoteProcessRuntime, remoteProcess.ts).
 */
export interface Processes extends Runtime {
  readonly kind: "process";
  createAndStart(spec: ProcessInstanceSpec, options?: CallOptions): Promise<StartedProcess>;
  /**
   * Creates and starts `name` running what `nameOrId` runs (command, arguments, env, limits,
   * restart policy, a copy of its files), with its labels and `labels` over them, on a free
   * port when the source's was chosen for it: a fresh instance of the same release. The env
   * values never leave the host.
   */
  clone(
    nameOrId: string,
    name: string,
    labels: Readonly<Record<string, string>>,
    options?: CallOptions,
  ): Promise<StartedProcess>;
  start(nameOrId: string, options?: CallOptions): Promise<StartedProcess>;
  stop(nameOrId: string, options?: CallOptions & { stopTimeoutSeconds?: number }): Promise<void>;
  stopAndRemove(nameOrId: string, options?: CallOptions & { stopTimeoutSeconds?: number }): Promise<boolean>;
  inspect(nameOrId: string, options?: CallOptions): Promise<ProcessStatus | undefined>;
  listByLabel(label: string, value: string, options?: CallOptions): Promise<ProcessSummary[]>;
  removeByLabel(
    label: string,
    value: string,
    options?: CallOptions & { keep?: (instance: ProcessSummary) => boolean },
  ): Promise<string[]>;
  logTail(nameOrId: string, lines: number, options?: CallOptions): Promise<string[]>;
}

/** Supervised processes on the server's own host; the `process` kind of Runtime. */
export class ProcessRuntime implements Processes {
  readonly kind = "process" as const;
  private readonly root: string;
  private readonly account: { uid: number; gid: number } | string | undefined;
  /** One operation per instance at a time (start, stop, remove): they read and write its files. */
  private readonly busy = new Map<string, Promise<unknown>>();

  constructor(options: ProcessRuntimeOptions) {
    this.root = options.directory;
    this.account = options.account;
  }

  /**
   * Creates an instance and starts its supervisor, which starts the command. Fails (and
   * leaves nothing behind) when the copy fails or the command cannot be started at all.
   */
  createAndStart(spec: ProcessInstanceSpec, options: CallOptions = {}): Promise<StartedProcess> {
    checkSpec(spec);
    return this.exclusive(spec.name, async () => {
      const account = this.runAs();
      await mkdir(this.root, { recursive: true, mode: 0o711 });
      // Instances' accounts pass through to their own directories; they list nothing here.
      await chmod(this.root, 0o711);
      const directory = join(this.root, spec.name);
      try {
        await mkdir(directory, { mode: 0o711 });
      } catch (error) {
        if ((error as NodeJS.ErrnoException).code === "EEXIST") {
          throw new ConflictError(`a process instance named ${spec.name} exists; remove it or choose another name`);
        }
        throw error;
      }
      try {
        const app = join(directory, APP_DIRECTORY);
        await mkdir(app, { mode: 0o700 });
        if (account) await chown(app, account.uid, account.gid);
        if (spec.copyFrom !== undefined) await copyAs(account, spec.copyFrom, app, options.signal);
        const port = spec.port === "auto" ? await freePort() : (spec.port ?? null);
        const instance: InstanceSpec = {
          name: spec.name,
          command: spec.command,
          args: [...(spec.args ?? [])],
          env: { ...spec.env },
          workingDirectory: spec.workingDirectory ?? app,
          labels: { ...spec.labels },
          restartPolicy: spec.restartPolicy ?? "on-failure",
          port,
          portChosen: spec.port === "auto",
          limits: {
            ...(spec.limits?.addressSpaceMb !== undefined && { addressSpaceMb: spec.limits.addressSpaceMb }),
            ...(spec.limits?.openFiles !== undefined && { openFiles: spec.limits.openFiles }),
          },
          account: account ?? null,
          createdAt: Date.now(),
        };
        await writeSpec(directory, instance);
        await this.launch(directory, spec.name, options.signal);
        return { id: spec.name, name: spec.name, port: port ?? undefined };
      } catch (error) {
        await this.stopSupervised(directory, 0).catch(() => {});
        await rm(directory, { recursive: true, force: true });
        throw error;
      }
    });
  }

  /**
   * A fresh instance running what an existing one runs (see Processes.clone). Its files are
   * a copy of the source instance's own directory as it is now (the directory it was copied
   * from may be gone: a package unpacked for a task that ended); an instance working in a
   * directory of the host's (workingDirectory) works in that same one.
   */
  async clone(
    nameOrId: string,
    name: string,
    labels: Readonly<Record<string, string>>,
    options: CallOptions = {},
  ): Promise<StartedProcess> {
    checkName(nameOrId);
    const directory = join(this.root, nameOrId);
    const source = await readSpec(directory);
    if (!source) throw new NotFoundError(`no process instance named ${nameOrId}`);
    if (!source.portChosen && source.port !== null) {
      throw new ConflictError(
        `process ${nameOrId} listens on port ${source.port}, given to it: a copy beside it cannot listen there too`,
      );
    }
    const ownFiles = source.workingDirectory === join(directory, APP_DIRECTORY);
    return this.createAndStart(
      {
        name,
        command: source.command,
        args: source.args,
        env: source.env,
        ...(ownFiles ? { copyFrom: source.workingDirectory } : { workingDirectory: source.workingDirectory }),
        labels: { ...source.labels, ...labels },
        restartPolicy: source.restartPolicy,
        port: source.portChosen ? "auto" : undefined,
        limits: source.limits,
      },
      options,
    );
  }

  /**
   * Starts an existing instance (a no-op when its supervisor runs) and says its port: a
   * port chosen for it that another process took meanwhile is replaced by a free one.
   */
  start(nameOrId: string, options: CallOptions = {}): Promise<StartedProcess> {
    checkName(nameOrId);
    return this.exclusive(nameOrId, async () => {
      const directory = join(this.root, nameOrId);
      const spec = await readSpec(directory);
      if (!spec) throw new NotFoundError(`no process instance named ${nameOrId}`);
      const state = await readState(directory);
      if (!(await isAlive(state?.supervisor))) {
        // A command still running without its supervisor (killed) is adopted, so it keeps its port.
        if (!(await isAlive(state?.child)) && spec.portChosen && spec.port !== null && !(await portIsFree(spec.port))) {
          spec.port = await freePort();
          await writeSpec(directory, spec);
        }
        this.runAs();
        await this.launch(directory, nameOrId, options.signal);
      }
      return { id: nameOrId, name: nameOrId, port: spec.port ?? undefined };
    });
  }

  /**
   * Stops an instance (SIGTERM to its process group, SIGKILL after `stopTimeoutSeconds`)
   * and keeps it, so it can be started again (a retained colour). Already stopped is fine.
   */
  stop(nameOrId: string, options: CallOptions & { stopTimeoutSeconds?: number } = {}): Promise<void> {
    checkName(nameOrId);
    return this.exclusive(nameOrId, () =>
      this.stopSupervised(join(this.root, nameOrId), options.stopTimeoutSeconds ?? 10),
    );
  }

  /** Stops and removes an instance with its files and logs; false when there was none. */
  stopAndRemove(nameOrId: string, options: CallOptions & { stopTimeoutSeconds?: number } = {}): Promise<boolean> {
    checkName(nameOrId);
    return this.exclusive(nameOrId, async () => {
      const directory = join(this.root, nameOrId);
      if (!(await readSpec(directory))) return false;
      await this.stopSupervised(directory, options.stopTimeoutSeconds ?? 10);
      await rm(directory, { recursive: true, force: true });
      return true;
    });
  }

  /** The instance's state; undefined when there is no such instance. */
  async inspect(nameOrId: string, _options: CallOptions = {}): Promise<ProcessStatus | undefined> {
    checkName(nameOrId);
    const directory = join(this.root, nameOrId);
    const spec = await readSpec(directory);
    if (!spec) return undefined;
    const state = await readState(directory);
    const running = await isAlive(state?.child);
    const restarting = !running && state?.state === "restarting" && (await isAlive(state.supervisor));
    return {
      id: spec.name,
      name: spec.name,
      running,
      restarting,
      restartCount: state?.restartCount ?? 0,
      exitCode: state?.exitCode ?? null,
      status: running ? "running" : restarting ? "restarting" : "exited",
      error: state?.error ?? "",
      labels: spec.labels,
      port: spec.port ?? undefined,
      pid: running ? state?.child?.pid : undefined,
    };
  }

  /** Instances, running or not, carrying the label `label=value`. */
  async listByLabel(label: string, value: string, _options: CallOptions = {}): Promise<ProcessSummary[]> {
    checkLabel(label, value);
    const found: ProcessSummary[] = [];
    for (const name of await readdir(this.root).catch(() => [] as string[])) {
      if (!instanceNamePattern.test(name)) continue;
      const directory = join(this.root, name);
      const spec = await readSpec(directory);
      if (!spec || spec.labels[label] !== value) continue;
      const state = await readState(directory);
      const running = await isAlive(state?.child);
      const restarting = !running && state?.state === "restarting" && (await isAlive(state.supervisor));
      found.push({
        id: spec.name,
        name: spec.name,
        state: running ? "running" : restarting ? "restarting" : "exited",
        labels: spec.labels,
        created: spec.createdAt / 1000,
      });
    }
    return found;
  }

  /** Stops (at once) and removes every instance labelled `label=value` but those `keep` accepts; the names removed. */
  async removeByLabel(
    label: string,
    value: string,
    options: CallOptions & { keep?: (instance: ProcessSummary) => boolean } = {},
  ): Promise<string[]> {
    const removed: string[] = [];
    for (const instance of await this.listByLabel(label, value, options)) {
      if (options.keep?.(instance)) continue;
      if (await this.stopAndRemove(instance.name, { stopTimeoutSeconds: 0 })) removed.push(instance.name);
    }
    return removed;
  }

  /** The last `lines` lines of the instance's stdout and stderr, interleaved as written. */
  async logTail(nameOrId: string, lines: number, _options: CallOptions = {}): Promise<string[]> {
    checkName(nameOrId);
    const directory = join(this.root, nameOrId);
    if (!(await readSpec(directory))) throw new NotFoundError(`no process instance named ${nameOrId}`);
    const wanted = Math.max(1, Math.floor(lines));
    const path = join(directory, OUTPUT_LOG);
    let text = await readTail(path, MAX_LOG_BYTES);
    // Just after a rotation the current part is short: the previous one holds the rest.
    if (text.split("\n").length <= wanted) text = (await readTail(`${path}.1`, MAX_LOG_BYTES)) + text;
    return text === "" ? [] : text.replace(/\n$/, "").split(/\r?\n/).slice(-wanted);
  }

  /** The account instances run as now; throws why local processes are refused, when they are. */
  private runAs(): { uid: number; gid: number } | undefined {
    if (typeof this.account === "string") throw new Error(this.account);
    return this.account;
  }

  /**
   * Starts `ferry supervise` for the instance, detached (a session of its own, no pipes to
   * the server), and waits until it has started the command or failed to.
   */
  private async launch(directory: string, name: string, signal: AbortSignal | undefined): Promise<InstanceState> {
    await rm(join(directory, STOP_REQUEST_FILE), { force: true });
    const launchedAt = Date.now();
    const log = openSync(join(directory, SUPERVISOR_LOG), "a", 0o600);
    let exited = false;
    let supervisorPid: number | undefined;
    try {
      const child = spawn(process.execPath, [ferryBinary(), "supervise", directory], {
        detached: true,
        stdio: ["ignore", log, log],
        // Nothing of the server's environment (its secrets) reaches the supervisor or the app.
        env: { PATH: process.env.PATH ?? "/usr/local/bin:/usr/bin:/bin" },
      });
      child.once("exit", () => {
        exited = true;
      });
      child.once("error", () => {
        exited = true;
      });
      child.unref();
      supervisorPid = child.pid;
    } finally {
      closeSync(log);
    }
    const deadline = Date.now() + LAUNCH_TIMEOUT_MS;
    for (;;) {
      const state = await readState(directory);
      if (state && state.supervisor?.pid === supervisorPid && state.state !== "starting") {
        if (state.child === null && state.error !== "") {
          // The command could not be started at all (no such program, no permission): like a
          // container whose executable is missing, the start fails instead of retrying forever.
          await this.stopSupervised(directory, 0);
          throw new Error(`process ${name} could not start: ${state.error}`);
        }
        return state;
      }
      if (exited) {
        // The command may have run and ended already, with nothing to restart (policy `no`).
        const final = await readState(directory);
        if (final?.state === "exited" && (final.startedAt ?? 0) >= launchedAt) return final;
        if (final?.state === "exited" && final.error !== "")
          throw new Error(`process ${name} could not start: ${final.error}`);
        const tail = await readTail(join(directory, SUPERVISOR_LOG), 4096);
        throw new Error(`the supervisor of process ${name} exited at start: ${tail.trim().split("\n").pop() ?? ""}`);
      }
      if (Date.now() > deadline) {
        throw new Error(`the supervisor of process ${name} did not start it within ${LAUNCH_TIMEOUT_MS / 1000} s`);
      }
      await sleep(25, undefined, signal ? { signal } : {});
    }
  }

  /**
   * Asks the supervisor to stop the command (SIGTERM to its group, SIGKILL after the
   * timeout) and exit; when the supervisor does not, or is gone, the group is killed here.
   */
  private async stopSupervised(directory: string, stopTimeoutSeconds: number): Promise<void> {
    const state = await readState(directory);
    if (!state) return;
    if (await isAlive(state.supervisor)) {
      await writeFile(join(directory, STOP_REQUEST_FILE), String(stopTimeoutSeconds), { mode: 0o600 });
      signalProcess(state.supervisor?.pid, "SIGTERM");
      const deadline = Date.now() + stopTimeoutSeconds * 1000 + 5000;
      while (Date.now() < deadline && (await isAlive(state.supervisor))) await sleep(25);
      if (!(await isAlive(state.supervisor))) return;
      signalProcess(state.supervisor?.pid, "SIGKILL");
    }
    // No supervisor (killed, or it did not answer): the command's group is ended from here.
    const latest = (await readState(directory)) ?? state;
    if (await isAlive(latest.child)) {
      signalGroup(latest.child?.pid, stopTimeoutSeconds === 0 ? "SIGKILL" : "SIGTERM");
      const deadline = Date.now() + stopTimeoutSeconds * 1000;
      while (Date.now() < deadline && (await isAlive(latest.child))) await sleep(25);
      signalGroup(latest.child?.pid, "SIGKILL");
    }
    await writeState(directory, { ...latest, state: "exited", supervisor: null, child: null, stopping: true });
  }

  /** Runs `operation` after the instance's earlier one ended. */
  private exclusive<T>(name: string, operation: () => Promise<T>): Promise<T> {
    const previous = this.busy.get(name) ?? Promise.resolve();
    const next = previous.catch(() => {}).then(operation);
    const settled = next.catch(() => {});
    this.busy.set(name, settled);
    settled.then(() => {
      if (this.busy.get(name) === settled) this.busy.delete(name);
    });
    return next;
  }
}

const localRuntimes = new Map<string, ProcessRuntime>();

/**
 * The process runtime of the server's own host for a work root, shared by every transport
 * on it (one object per directory: it serialises the operations on each instance). The
 * instances live beside the tasks' directories, in <work root>/processes, where the
 * accounts they run as can reach their own directories (the data directory is 0700).
 */
export function localProcesses(workRoot: string, localUser: LocalUser | undefined): ProcessRuntime {
  const directory = join(workRoot, "processes");
  let runtime = localRuntimes.get(directory);
  if (!runtime) {
    runtime = new ProcessRuntime({ directory, account: instanceAccount(localUser) });
    localRuntimes.set(directory, runtime);
  }
  return runtime;
}

/**
 * The account instances run as: the one local work runs as when FERRY_RUN_AS names one, the
 * server's own with FERRY_RUN_AS=server; otherwise `nobody` — an instance outlives the task
 * that started it, so it must not run as an account that task's clean-up ends.
 */
export function instanceAccount(user: LocalUser | undefined): ProcessRuntimeOptions["account"] {
  if (user === undefined) return undefined;
  switch (user.kind) {
    case "server":
      return undefined;
    case "refused":
      return user.reason;
    case "user":
      return { uid: user.uid, gid: user.gid };
    default:
      return {
        uid: Number(execFileSync("id", ["-u", "nobody"], { encoding: "utf8", timeout: 5000 })),
        gid: Number(execFileSync("id", ["-g", "nobody"], { encoding: "utf8", timeout: 5000 })),
      };
  }
}

/** The HTTP origin of an instance's port on the host's loopback ("http://127.0.0.1:41234"). */
export function processOrigin(port: number): string {
  return `http://127.0.0.1:${port}`;
}

export function isProcessName(name: string): boolean {
  return instanceNamePattern.test(name);
}

function checkName(name: string): void {
  if (!isProcessName(name)) {
    throw new InputError(
      `'${name.slice(0, 200)}' is not a process instance name: use up to 128 letters, digits, '_', '.' and '-', starting with a letter or digit`,
    );
  }
}

function checkLabel(key: string, value: string): void {
  if (!labelKeyPattern.test(key)) {
    throw new InputError(`'${key.slice(0, 200)}' is not a label key: use lowercase letters, digits, '.', '_' and '-'`);
  }
  if (value.length > 4096 || value.includes("\0"))
    throw new InputError(`the value of label ${key} is too long or has a NUL`);
}

function checkAbsolute(what: string, path: string): void {
  if (
    path.includes("\0") ||
    !isAbsolute(path) ||
    normalize(path).replace(/(.)\/+$/, "$1") !== path.replace(/(.)\/+$/, "$1")
  ) {
    throw new InputError(`${what} '${path.slice(0, 200)}' must be a normalised absolute path`);
  }
}

export function checkSpec(spec: ProcessInstanceSpec): void {
  checkName(spec.name);
  if (spec.command === "" || spec.command.includes("\0")) throw new InputError("a process needs a command without NUL");
  for (const argument of spec.args ?? []) {
    if (argument.includes("\0")) throw new InputError("an argument of the command contains a NUL character");
  }
  for (const [name, value] of Object.entries(spec.env ?? {})) {
    if (!envNamePattern.test(name)) {
      throw new InputError(
        `'${name.slice(0, 200)}' is not an environment variable name: use letters, digits and '_', not starting with a digit`,
      );
    }
    if (value.includes("\0")) throw new InputError(`environment variable ${name} contains a NUL character`);
  }
  for (const [key, value] of Object.entries(spec.labels ?? {})) checkLabel(key, value);
  if (spec.copyFrom !== undefined) checkAbsolute("copyFrom", spec.copyFrom);
  if (spec.workingDirectory !== undefined) checkAbsolute("workingDirectory", spec.workingDirectory);
  if (typeof spec.port === "number" && !(Number.isInteger(spec.port) && spec.port >= 1 && spec.port <= 65535)) {
    throw new InputError(`port ${spec.port} is not from 1 to 65535`);
  }
  const { addressSpaceMb, openFiles } = spec.limits ?? {};
  if (addressSpaceMb !== undefined && !(Number.isInteger(addressSpaceMb) && addressSpaceMb >= 16)) {
    throw new InputError("limits.addressSpaceMb must be a whole number of at least 16");
  }
  if (openFiles !== undefined && !(Number.isInteger(openFiles) && openFiles >= 16)) {
    throw new InputError("limits.openFiles must be a whole number of at least 16");
  }
}

/**
 * Copies a directory's contents with the account's rights (cp as that user): a process
 * config cannot make Ferry copy files its account could not read itself.
 */
function copyAs(
  account: { uid: number; gid: number } | undefined,
  source: string,
  destination: string,
  signal: AbortSignal | undefined,
): Promise<void> {
  return new Promise((resolve, reject) => {
    // "<source>/." copies what is in it, dot files included; the paths are absolute, never options.
    const child = spawn("cp", ["-R", "--preserve=mode,timestamps", "--", `${source}/.`, destination], {
      stdio: ["ignore", "ignore", "pipe"],
      timeout: COPY_TIMEOUT_MS,
      ...(signal && { signal }),
      ...(account && { uid: account.uid, gid: account.gid }),
    });
    let errors = "";
    child.stderr.setEncoding("utf8").on("data", (chunk: string) => {
      if (errors.length < 4096) errors += chunk;
    });
    child.once("error", reject);
    child.once("close", (code) => {
      if (code === 0) resolve();
      else
        reject(
          new Error(
            `copying ${source} failed${account ? ` (as uid ${account.uid})` : ""}: ${errors.trim().split("\n")[0] ?? `cp exited with ${code}`}`,
          ),
        );
    });
  });
}

/** A port no one listens on at 127.0.0.1 now, as the kernel picks one. */
function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const server = createServer();
    server.once("error", reject);
    server.listen(0, "127.0.0.1", () => {
      const address = server.address();
      const port = typeof address === "object" && address ? address.port : 0;
      server.close(() => resolve(port));
    });
  });
}

function portIsFree(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const server = createServer();
    server.once("error", () => resolve(false));
    server.listen(port, "127.0.0.1", () => server.close(() => resolve(true)));
  });
}

/** At most the last `maxBytes` of a file as text (from a line start when cut); "" when there is none. */
async function readTail(path: string, maxBytes: number): Promise<string> {
  let file: Awaited<ReturnType<typeof open>>;
  try {
    file = await open(path, "r");
  } catch {
    return "";
  }
  try {
    const { size } = await file.stat();
    const length = Math.min(size, maxBytes);
    const buffer = Buffer.alloc(length);
    await file.read(buffer, 0, length, size - length);
    const text = buffer.toString("utf8");
    return length < size ? text.slice(text.indexOf("\n") + 1) : text;
  } finally {
    await file.close();
  }
}

function signalProcess(pid: number | undefined, signal: NodeJS.Signals): void {
  if (pid === undefined) return;
  try {
    process.kill(pid, signal);
  } catch {
    // Gone.
  }
}

function signalGroup(pid: number | undefined, signal: NodeJS.Signals): void {
  if (pid === undefined || pid <= 1) return;
  signalProcess(-pid, signal);
}

/** bin/ferry of this installation (the same path from src/ in tests and from dist/). */
export function ferryBinary(): string {
  return fileURLToPath(new URL("../../bin/ferry", import.meta.url));
}
