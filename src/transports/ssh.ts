import { Agent as HttpAgent } from "node:http";
import type { Socket } from "node:net";
import type { Duplex, Readable } from "node:stream";
import { pipeline } from "node:stream/promises";
import { connect as tlsConnect } from "node:tls";
// ssh2 is CommonJS: Node's ESM loader gives its exports on the default import only.
import ssh2, { type Client, type ClientChannel } from "ssh2";
import { Agent, type buildConnector } from "undici";
import { LineSplitter } from "../engine/lineSplitter.js";
import { TaskFailure } from "../engine/types.js";
import { DockerRuntime } from "../runtimes/docker.js";
import type { RuntimeKind, RuntimesByKind } from "../runtimes/types.js";
import { guardedDestination, type OutboundPolicy } from "../security/outboundGuard.js";
import { hostKeyFingerprint } from "../security/sshKeys.js";
import { type HttpOutcome, type HttpRequest, sendRequest } from "../steps/http.js";
import type { SshConnectionSettings } from "../store/targets.js";
import { completedStream, readFailure } from "./fileStream.js";
import { LAUNCHER_COMMAND, LAUNCHER_REFUSED, LauncherInputError, launcherRequest, runRequest } from "./sshLauncher.js";
import { StreamSocket } from "./streamSocket.js";
import { type ProcessExit, type ProcessSpec, stepFileName, type Transport } from "./types.js";
import { announcedBytes, checkUpload, type UploadSpec, uploadArguments, uploadOutcome, watchSource } from "./upload.js";

/**
 * FERRY_SSH_CONNECT_TIMEOUT_SECONDS and FERRY_SSH_OPERATION_TIMEOUT_SECONDS: how long
 * connecting (TCP, key exchange, host key check, sign-in) may take, and how long one
 * operation other than a step's process or an upload (a directory, a file, a kill, opening a
 * channel) may take.
 */
export interface SshTimeouts {
  connectMs: number;
  operationMs: number;
}

/** Both unset: 15 s to connect, 30 s per operation. */
export const defaultSshTimeouts: SshTimeouts = { connectMs: 15_000, operationMs: 30_000 };
/** A pooled connection nobody used for this long is closed. */
const IDLE_MS = 60_000;
/**
 * Keep-alives, as OpenSSH's ServerAliveInterval and ServerAliveCountMax: after `intervalMs`
 * with nothing from the host a keep-alive is sent, and a connection whose host left
 * `countMax` of them in a row unanswered is closed, failing what runs on it. A host whose
 * link is cut is so noticed after about intervalMs × (countMax + 1).
 */
export interface SshKeepalive {
  intervalMs: number;
  countMax: number;
}

/** FERRY_SSH_KEEPALIVE_INTERVAL_SECONDS and FERRY_SSH_KEEPALIVE_COUNT_MAX unset: 10 s × 3. */
export const defaultSshKeepalive: SshKeepalive = { intervalMs: 10_000, countMax: 3 };
/** After a process is told to stop (timeout, cancel), how long to wait for its exit before giving up on the channel. */
const STOP_GRACE_MS = 10_000;
/** The most of a file readFile returns (a step's outputs). */
const MAX_FILE_BYTES = 16 * 1024 * 1024;

/** The settings of a target by id, read fresh at each connection (a key or host key may have changed). */
export type SshSettingsLoader = (targetId: string) => Promise<SshConnectionSettings>;

/** A host key as presented: its fingerprint and its type (ssh-ed25519…), as `ssh-keygen -lf` shows both. */
export interface PresentedHostKey {
  fingerprint: string;
  type: string;
}

function presentedKey(key: Buffer): PresentedHostKey {
  // The wire form starts with the key type as an SSH string: uint32 length, then the name.
  const length = key.length >= 4 ? key.readUInt32BE(0) : 0;
  const type = length > 0 && length < 64 ? key.subarray(4, 4 + length).toString("latin1") : "unknown";
  return { fingerprint: hostKeyFingerprint(key), type };
}

/** "target 'web-1' (deploy@10.0.0.5:22)": how messages name a connection. */
function describeTarget(settings: SshConnectionSettings): string {
  return `target '${settings.targetName}' (${settings.user}@${hostPort(settings.host, settings.port)})`;
}

function hostPort(host: string, port: number): string {
  return `${host.includes(":") ? `[${host}]` : host}:${port}`;
}

/** Why a presented host key is refused, or undefined when it is the trusted one. */
function hostKeyRefusal(
  what: string,
  targetName: string,
  trusted: string | null,
  presented: PresentedHostKey,
): string | undefined {
  if (trusted === presented.fingerprint) return undefined;
  if (trusted === null) {
    return `the host key of ${what} is not trusted yet: it presents ${presented.type} ${presented.fingerprint}. Compare it with the host's own (ssh-keygen -lf /etc/ssh/ssh_host_ed25519_key.pub on the host), then run: ferry target trust ${targetName}`;
  }
  return `the host key of ${what} changed: Ferry trusts ${trusted}, the host presents ${presented.type} ${presented.fingerprint}. Nothing was sent. If the host was reinstalled or its keys replaced, compare the new key with the host's own and run: ferry target trust ${targetName}; otherwise someone may be intercepting the connection`;
}

interface ClientOptions {
  host: string;
  port: number;
  user: string;
  privateKey: string;
  passphrase: string | undefined;
  /** How messages name this connection. */
  what: string;
  targetName: string;
  /**
   * Decides on the presented host key: a refusal message, or undefined to go on. The
   * connection stops right there when refused: nothing is signed or sent to that host.
   */
  checkHostKey(presented: PresentedHostKey): string | undefined;
  /** A stream to run SSH over (a channel through a jump host) instead of a TCP connection. */
  sock?: Duplex | undefined;
  /** Default: defaultSshKeepalive (a host key read lasts a moment; the pool passes the server's setting). */
  keepalive?: SshKeepalive | undefined;
  connectTimeoutMs: number;
}

/** Connects and signs in, or fails with a TaskFailure that says what to do. */
function openClient(options: ClientOptions): Promise<Client> {
  return new Promise((resolve, reject) => {
    const client = new ssh2.Client();
    let refusal: string | undefined;
    let settled = false;
    // Listening until the end, not once: ssh2 may emit more errors after the first (a peer
    // that never answers gets "Timed out while waiting for handshake", then "Connection lost
    // before handshake" when its socket closes; a bad banner, then the handshake timeout),
    // and an 'error' nobody listens to is an uncaught exception that ends `ferry server`.
    const fail = (error: Error & { level?: string; code?: string }) => {
      if (settled) return;
      settled = true;
      client.end();
      if (refusal) return reject(new TaskFailure(refusal));
      if (error.level === "client-authentication") {
        return reject(
          new TaskFailure(
            `${options.what} refused the private key: add its public key to ~${options.user}/.ssh/authorized_keys on the host`,
          ),
        );
      }
      if (error.level === "client-timeout") {
        return reject(
          new TaskFailure(
            `no SSH answer from ${options.what} within ${options.connectTimeoutMs / 1000} s (FERRY_SSH_CONNECT_TIMEOUT_SECONDS)`,
          ),
        );
      }
      reject(new TaskFailure(`could not connect to ${options.what} (${error.code ?? error.message})`));
    };
    client.once("ready", () => {
      settled = true;
      client.off("error", fail);
      // From now on an error closes the connection ('close' follows); the pool drops it then.
      client.on("error", () => {});
      resolve(client);
    });
    client.on("error", fail);
    client.connect({
      host: options.host,
      port: options.port,
      username: options.user,
      privateKey: options.privateKey,
      ...(options.passphrase !== undefined && { passphrase: options.passphrase }),
      ...(options.sock && { sock: options.sock }),
      readyTimeout: options.connectTimeoutMs,
      keepaliveInterval: (options.keepalive ?? defaultSshKeepalive).intervalMs,
      keepaliveCountMax: (options.keepalive ?? defaultSshKeepalive).countMax,
      // Never an agent or keyboard-interactive: the target's own key only.
      tryKeyboard: false,
      hostVerifier: (key: Buffer) => {
        refusal = options.checkHostKey(presentedKey(key));
        return refusal === undefined;
      },
    });
  });
}

/** A TCP channel from the host to address:port (ssh -L without a local port). */
function forwardOut(
  client: Client,
  address: string,
  port: number,
  what: string,
  operationMs: number,
): Promise<ClientChannel> {
  return withTimeout(
    new Promise<ClientChannel>((resolve, reject) => {
      client.forwardOut("127.0.0.1", 0, address, port, (error, channel) => {
        if (error) {
          // The reason sshd gives ("Connection refused") becomes the code fetch errors are read by.
          const refused = /refused/i.test(error.message);
          reject(
            Object.assign(new Error(`${what} could not connect to ${hostPort(address, port)}: ${error.message}`), {
              code: refused ? "ECONNREFUSED" : "ECONNFAILED",
            }),
          );
        } else resolve(channel);
      });
    }),
    operationMs,
    () =>
      new TaskFailure(
        `${what} did not open a connection to ${hostPort(address, port)} within ${operationMs / 1000} s (FERRY_SSH_OPERATION_TIMEOUT_SECONDS)`,
      ),
  );
}

async function withTimeout<T>(promise: Promise<T>, milliseconds: number, timedOut: () => Error): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  try {
    return await Promise.race([
      promise,
      new Promise<never>((_, reject) => {
        timer = setTimeout(() => reject(timedOut()), milliseconds);
      }),
    ]);
  } finally {
    clearTimeout(timer);
  }
}

/** The connections to one target: the target's own and, when it has one, the jump host's it runs through. */
interface Connection {
  client: Client;
  jump: Client | undefined;
}

async function connect(
  settings: SshConnectionSettings,
  keepalive: SshKeepalive,
  timeouts: SshTimeouts,
): Promise<Connection> {
  const what = describeTarget(settings);
  const credentials = { privateKey: settings.privateKey, passphrase: settings.passphrase };
  let jump: Client | undefined;
  let sock: Duplex | undefined;
  if (settings.jumpHost) {
    const { jumpHost } = settings;
    const jumpWhat = `jump host ${jumpHost.user}@${hostPort(jumpHost.host, jumpHost.port)} of target '${settings.targetName}'`;
    jump = await openClient({
      ...credentials,
      host: jumpHost.host,
      port: jumpHost.port,
      user: jumpHost.user,
      what: jumpWhat,
      targetName: settings.targetName,
      keepalive,
      connectTimeoutMs: timeouts.connectMs,
      checkHostKey: (presented) => hostKeyRefusal(jumpWhat, settings.targetName, jumpHost.hostKey, presented),
    });
    try {
      sock = await forwardOut(jump, settings.host, settings.port, jumpWhat, timeouts.operationMs);
    } catch (error) {
      jump.end();
      throw error instanceof TaskFailure ? error : new TaskFailure((error as Error).message);
    }
  }
  try {
    const client = await openClient({
      ...credentials,
      host: settings.host,
      port: settings.port,
      user: settings.user,
      what,
      targetName: settings.targetName,
      sock,
      keepalive,
      connectTimeoutMs: timeouts.connectMs,
      checkHostKey: (presented) => hostKeyRefusal(what, settings.targetName, settings.hostKey, presented),
    });
    // The jump connection serves this one only.
    client.once("close", () => jump?.end());
    return { client, jump };
  } catch (error) {
    jump?.end();
    throw error;
  }
}

interface PoolEntry {
  version: string;
  ready: Promise<Connection>;
  users: number;
  idle: NodeJS.Timeout | undefined;
  /** Replaced by a connection with newer settings: closed once nobody uses it. */
  retired: boolean;
  closed: boolean;
}

/** A connection lent out: give it back with release() (once). */
export interface SshLease {
  client: Client;
  settings: SshConnectionSettings;
  release(): void;
}

/**
 * One SSH connection per target, shared by every operation on it and closed after a minute
 * unused. Each lease reads the target's settings again: when they changed (a new key, a
 * newly trusted host key, another host) the next lease gets a new connection, and the old
 * one closes when its last user is done.
 */
export class SshConnections {
  readonly #entries = new Map<string, PoolEntry>();
  #closed = false;

  constructor(
    private readonly load: SshSettingsLoader,
    private readonly idleMs = IDLE_MS,
    private readonly keepalive: SshKeepalive = defaultSshKeepalive,
    readonly timeouts: SshTimeouts = defaultSshTimeouts,
  ) {}

  async lease(targetId: string): Promise<SshLease> {
    if (this.#closed) throw new TaskFailure("the server is shutting down: no new SSH connections");
    const settings = await this.load(targetId);
    // Closed while the settings were read: no connection may outlive the pool.
    if (this.#closed) throw new TaskFailure("the server is shutting down: no new SSH connections");
    const entry = this.#entryFor(settings);
    entry.users++;
    clearTimeout(entry.idle);
    let connection: Connection;
    try {
      connection = await entry.ready;
    } catch (error) {
      entry.users--;
      throw error;
    }
    let released = false;
    return {
      client: connection.client,
      settings,
      release: () => {
        if (released) return;
        released = true;
        entry.users--;
        if (entry.users > 0) return;
        if (entry.retired) this.#end(entry);
        else entry.idle = setTimeout(() => this.#drop(targetId, entry), this.idleMs).unref();
      },
    };
  }

  #entryFor(settings: SshConnectionSettings): PoolEntry {
    const current = this.#entries.get(settings.targetId);
    if (current && !current.closed && current.version === settings.version) return current;
    if (current) {
      current.retired = true;
      if (current.users === 0) this.#end(current);
    }
    const entry: PoolEntry = {
      version: settings.version,
      ready: connect(settings, this.keepalive, this.timeouts),
      users: 0,
      idle: undefined,
      retired: false,
      closed: false,
    };
    this.#entries.set(settings.targetId, entry);
    const forget = () => {
      entry.closed = true;
      clearTimeout(entry.idle);
      if (this.#entries.get(settings.targetId) === entry) this.#entries.delete(settings.targetId);
    };
    entry.ready.then(
      (connection) => connection.client.once("close", forget),
      () => forget(),
    );
    return entry;
  }

  #drop(targetId: string, entry: PoolEntry): void {
    if (entry.users > 0) return;
    if (this.#entries.get(targetId) === entry) this.#entries.delete(targetId);
    this.#end(entry);
  }

  #end(entry: PoolEntry): void {
    entry.closed = true;
    clearTimeout(entry.idle);
    entry.ready.then(
      (connection) => connection.client.end(),
      () => {},
    );
  }

  /** How many targets have a connection open or opening (for tests and metrics). */
  get size(): number {
    return this.#entries.size;
  }

  /** Closes every connection (the server is stopping); operations still running fail. */
  async close(): Promise<void> {
    this.#closed = true;
    const entries = [...this.#entries.values()];
    this.#entries.clear();
    for (const entry of entries) this.#end(entry);
    await Promise.allSettled(entries.map((entry) => entry.ready));
  }
}

/** What an operation of the launcher printed and how it ended. */
interface LauncherResult {
  code: number | null;
  stdout: string;
  stderr: string;
  /** The target, as messages name it. */
  what: string;
}

/** Opens a channel running the launcher: the one command string Ferry sends (sshLauncher.ts). */
function openLauncher(client: Client, what: string, operationMs: number): Promise<ClientChannel> {
  return withTimeout(
    new Promise<ClientChannel>((resolve, reject) => {
      client.exec(LAUNCHER_COMMAND, (error, channel) => {
        if (error) {
          // sshd allows MaxSessions (10 by default) commands at once on one connection, and the
          // steps on a target share one.
          const hint = /open failed|prohibited/i.test(error.message)
            ? "; too many commands at once on this target? sshd's MaxSessions (10 by default) limits them"
            : "";
          reject(new TaskFailure(`${what} refused to run a command (${error.message}${hint})`));
        } else resolve(channel);
      });
    }),
    operationMs,
    () =>
      new TaskFailure(
        `${what} did not start a command within ${operationMs / 1000} s (FERRY_SSH_OPERATION_TIMEOUT_SECONDS)`,
      ),
  );
}

/**
 * The host of an ssh target, reached through the pool's connection: processes through the
 * launcher (argv and env as data, never spliced into the command), HTTP requests from the
 * host through forwarded channels. Work runs as the target's SSH user.
 */
export class SshTransport implements Transport {
  readonly kind = "ssh" as const;

  constructor(
    private readonly connections: SshConnections,
    readonly targetId: string,
  ) {}

  /** One launcher operation whose input is complete up front; stdout is kept up to MAX_FILE_BYTES. */
  async #call(fields: readonly { name: string; value: string }[], purpose: string): Promise<LauncherResult> {
    const request = launcherRequest(fields);
    const lease = await this.connections.lease(this.targetId);
    const what = describeTarget(lease.settings);
    try {
      const channel = await openLauncher(lease.client, what, this.connections.timeouts.operationMs);
      const done = new Promise<LauncherResult>((resolve, reject) => {
        const stdout: Buffer[] = [];
        let stdoutBytes = 0;
        let stderr = "";
        let code: number | null = null;
        channel.on("data", (chunk: Buffer) => {
          stdoutBytes += chunk.length;
          if (stdoutBytes > MAX_FILE_BYTES) {
            channel.close();
            reject(new TaskFailure(`${purpose} on ${what} printed more than ${MAX_FILE_BYTES / 1024 / 1024} MiB`));
            return;
          }
          stdout.push(chunk);
        });
        channel.stderr.on("data", (chunk: Buffer) => {
          if (stderr.length < 4096) stderr += chunk.toString("utf8");
        });
        channel.on("exit", (exitCode: number | null) => {
          code = exitCode;
        });
        channel.on("close", () => resolve({ code, stdout: Buffer.concat(stdout).toString("utf8"), stderr, what }));
      });
      channel.end(request);
      const { operationMs } = this.connections.timeouts;
      const result = await withTimeout(done, operationMs, () => {
        channel.close();
        return new TaskFailure(
          `${purpose} on ${what} took longer than ${operationMs / 1000} s (FERRY_SSH_OPERATION_TIMEOUT_SECONDS)`,
        );
      });
      if (result.code === LAUNCHER_REFUSED) {
        throw new TaskFailure(`${what} refused ${purpose}: ${result.stderr.trim().slice(0, 500)}`);
      }
      return result;
    } finally {
      lease.release();
    }
  }

  #expectSuccess(result: LauncherResult, purpose: string): LauncherResult {
    if (result.code !== 0) {
      throw new TaskFailure(
        `${purpose} on ${result.what} failed (exit ${result.code ?? "none"}): ${result.stderr.trim().slice(0, 500)}`,
      );
    }
    return result;
  }

  async stepDirectory(taskId: string, prefix: string): Promise<string> {
    const purpose = "creating a step directory";
    const result = await this.#call(
      [
        { name: "the operation", value: "mkstep" },
        { name: "the task id", value: taskId },
        { name: "the prefix", value: prefix },
      ],
      purpose,
    );
    return this.#expectSuccess(result, purpose).stdout.trim();
  }

  async readFile(path: string): Promise<string | undefined> {
    const purpose = "reading a file";
    const result = await this.#call(
      [
        { name: "the operation", value: "read" },
        { name: "the path", value: path },
      ],
      purpose,
    );
    if (result.code === 3) return undefined;
    return this.#expectSuccess(result, purpose).stdout;
  }

  async finishStep(directory: string, fileName: string): Promise<string | undefined> {
    const text = await this.readFile(`${directory}/${stepFileName(fileName)}`);
    await this.removeDirectory(directory);
    return text;
  }

  /**
   * The launcher's `cat` on a channel of its own: the channel's window is the backpressure
   * (ssh2 stops granting window while the stream is not read), and the stream ends only after
   * the host's exit status 0 — a connection lost part-way destroys it instead. Read as the
   * SSH user, the account every step on this target runs as.
   */
  async readStream(_taskId: string, path: string, signal: AbortSignal): Promise<Readable> {
    if (!path.startsWith("/")) throw new TaskFailure("a file to read on the host needs an absolute path");
    let request: Buffer;
    try {
      request = launcherRequest([
        { name: "the operation", value: "cat" },
        { name: "the path", value: path },
      ]);
    } catch (error) {
      if (error instanceof LauncherInputError) throw new TaskFailure(error.message);
      throw error;
    }
    signal.throwIfAborted();
    const lease = await this.connections.lease(this.targetId);
    const what = describeTarget(lease.settings);
    let channel: ClientChannel;
    try {
      channel = await openLauncher(lease.client, what, this.connections.timeouts.operationMs);
    } catch (error) {
      lease.release();
      throw error;
    }
    let stderr = "";
    let code: number | null | undefined;
    channel.stderr.on("data", (chunk: Buffer) => {
      if (stderr.length < 2000) stderr += chunk.toString("utf8");
    });
    channel.on("exit", (exitCode: number | null) => {
      code = exitCode;
    });
    const finished = new Promise<void>((resolve, reject) => {
      channel.once("close", () => {
        lease.release();
        if (code === 0) resolve();
        else if (code === undefined)
          reject(new TaskFailure(`the SSH connection to ${what} was lost while ${path.slice(0, 500)} was read`));
        else if (code === LAUNCHER_REFUSED)
          reject(new TaskFailure(`${what} refused to read a file: ${stderr.trim().slice(0, 300)}`));
        else reject(readFailure(path, code, stderr, what));
      });
    });
    channel.end(request);
    const stream = completedStream(channel, finished, () => channel.close());
    const onAbort = () => stream.destroy(signal.reason instanceof Error ? signal.reason : new TaskFailure("cancelled"));
    signal.addEventListener("abort", onAbort, { once: true });
    stream.once("close", () => signal.removeEventListener("abort", onAbort));
    return stream;
  }

  /**
   * The launcher's `upload` on a channel of its own: the request's fields, then the file's
   * bytes on the same standard input, paced by the channel's window (ssh2's write() says when
   * to wait), then end of input. Written as the SSH user, the account every step on this
   * target runs as. A connection lost part-way leaves the host's script short of bytes: it
   * removes its temporary file, and this fails.
   */
  async upload(spec: UploadSpec, source: Readable): Promise<void> {
    checkUpload(spec);
    const [path, mode, bytes, sha256, directories] = uploadArguments(spec);
    let request: Buffer;
    try {
      request = launcherRequest([
        { name: "the operation", value: "upload" },
        { name: "the path", value: path ?? "" },
        { name: "the mode", value: mode ?? "" },
        { name: "the size", value: bytes ?? "" },
        { name: "the sha256", value: sha256 ?? "" },
        { name: "the directories", value: directories ?? "" },
      ]);
    } catch (error) {
      if (error instanceof LauncherInputError) throw new TaskFailure(error.message);
      throw error;
    }
    spec.signal.throwIfAborted();
    const lease = await this.connections.lease(this.targetId);
    const what = describeTarget(lease.settings);
    try {
      const channel = await openLauncher(lease.client, what, this.connections.timeouts.operationMs);
      let stderr = "";
      let code: number | null | undefined;
      channel.stderr.on("data", (chunk: Buffer) => {
        if (stderr.length < 2000) stderr += chunk.toString("utf8");
      });
      channel.on("data", () => {});
      channel.on("exit", (exitCode: number | null) => {
        code = exitCode;
      });
      const closed = new Promise<void>((resolve) => channel.once("close", resolve));
      let stopped: TaskFailure | undefined;
      const stop = (why: TaskFailure) => {
        stopped ??= why;
        source.destroy();
        channel.close();
      };
      const timer = setTimeout(
        () =>
          stop(
            new TaskFailure(
              `writing ${spec.path.slice(0, 500)} on ${what} took longer than ${spec.timeoutMs / 1000} s`,
            ),
          ),
        spec.timeoutMs,
      );
      const onAbort = () => stop(new TaskFailure("cancelled"));
      spec.signal.addEventListener("abort", onAbort, { once: true });
      try {
        channel.write(request);
        const checked = announcedBytes(spec);
        const sourceError = watchSource(source, checked, channel);
        // The channel is not ended by a failing source: the host then sees fewer bytes than
        // announced (end of input below, or the closed channel) and writes nothing.
        const sendError = await pipeline(source, checked, channel, { end: false }).then(
          () => undefined,
          (error: unknown) => (error instanceof Error ? error : new Error(String(error))),
        );
        channel.end();
        await closed;
        if (code === LAUNCHER_REFUSED) {
          throw new TaskFailure(`${what} refused to write a file: ${stderr.trim().slice(0, 300)}`);
        }
        const failure = uploadOutcome({
          path: spec.path,
          where: what,
          stopped,
          sourceError: sourceError(),
          code,
          stderr,
          sendError,
        });
        if (failure) throw failure;
      } finally {
        clearTimeout(timer);
        spec.signal.removeEventListener("abort", onAbort);
      }
    } finally {
      lease.release();
    }
  }

  /**
   * Best effort, like finishTask: steps remove their directory in a `finally`, and a host
   * that was lost meanwhile must not replace the step's own error with this one. What stays
   * goes with the task's directory.
   */
  async removeDirectory(path: string): Promise<void> {
    await this.#call(
      [
        { name: "the operation", value: "rmdir" },
        { name: "the path", value: path },
      ],
      "removing a directory",
    ).catch(() => undefined);
  }

  /**
   * Removes the task's work directory on the host. A host that cannot be reached now keeps
   * it (under ~/.cache/ferry/work/<task>): the end of a task must not fail on a clean-up,
   * and what the step reported stands.
   */
  async finishTask(taskId: string): Promise<void> {
    await this.#call(
      [
        { name: "the operation", value: "finish" },
        { name: "the task id", value: taskId },
      ],
      "removing the task's work directory",
    ).catch(() => undefined);
  }

  async killTaskProcesses(taskId: string): Promise<number> {
    const purpose = "killing the task's processes";
    const result = await this.#call(
      [
        { name: "the operation", value: "killtask" },
        { name: "the task id", value: taskId },
      ],
      purpose,
    );
    return Number(this.#expectSuccess(result, purpose).stdout.trim()) || 0;
  }

  /** Kills a process group on the host: a second exec, with the group id as data. */
  async #killGroup(group: number): Promise<void> {
    await this.#call(
      [
        { name: "the operation", value: "kill" },
        { name: "the process group", value: String(group) },
      ],
      "stopping a process",
    );
  }

  async run(spec: ProcessSpec): Promise<ProcessExit> {
    let request: Buffer;
    try {
      request = runRequest(spec);
    } catch (error) {
      if (error instanceof LauncherInputError) throw new TaskFailure(error.message);
      throw error;
    }
    spec.signal.throwIfAborted();
    const lease = await this.connections.lease(this.targetId);
    const what = describeTarget(lease.settings);
    try {
      const channel = await openLauncher(lease.client, what, this.connections.timeouts.operationMs);
      return await new Promise<ProcessExit>((resolve, reject) => {
        let group: number | undefined;
        let firstLine = "";
        let stopping: "timeout" | "abort" | undefined;
        let exitCode: number | null | undefined;
        let stderrTail = "";
        let grace: NodeJS.Timeout | undefined;
        const stdout = new LineSplitter((text, cut) => spec.onLine("stdout", text, cut));
        const stderr = new LineSplitter((text, cut) => spec.onLine("stderr", text, cut));
        const killGroup = () => {
          if (group !== undefined) void this.#killGroup(group).catch(() => undefined);
        };
        // Two ways, so that either suffices: the kill exec, and the end of the launcher's
        // input, on which it kills the group itself (also what happens when the connection dies).
        const stop = (why: "timeout" | "abort") => {
          if (stopping) return;
          stopping = why;
          killGroup();
          channel.end();
          grace = setTimeout(() => channel.close(), STOP_GRACE_MS);
        };
        const timer = setTimeout(() => stop("timeout"), spec.timeoutMs);
        const onAbort = () => stop("abort");
        spec.signal.addEventListener("abort", onAbort, { once: true });
        channel.setEncoding("utf8");
        channel.stderr.setEncoding("utf8");
        channel.on("data", (chunk: string) => {
          if (group !== undefined) {
            stdout.push(chunk);
            return;
          }
          // The launcher's first line is the process group id, printed before the program starts.
          firstLine += chunk;
          const newline = firstLine.indexOf("\n");
          if (newline === -1) return;
          group = Number(firstLine.slice(0, newline));
          const rest = firstLine.slice(newline + 1);
          if (stopping) killGroup();
          if (rest !== "") stdout.push(rest);
        });
        channel.stderr.on("data", (chunk: string) => {
          if (group === undefined) stderrTail = (stderrTail + chunk).slice(-2000);
          stderr.push(chunk);
        });
        channel.on("exit", (code: number | null) => {
          exitCode = code;
          // The program is done: the launcher needs no more input.
          channel.end();
        });
        channel.on("close", () => {
          clearTimeout(timer);
          clearTimeout(grace);
          spec.signal.removeEventListener("abort", onAbort);
          stdout.end();
          stderr.end();
          if (stopping) return resolve({ code: null, timedOut: stopping === "timeout" });
          if (exitCode === undefined) {
            return reject(
              new TaskFailure(
                `the SSH connection to ${what} was lost while the process ran; the host stops the process when sshd notices the session is gone (docs/targets.md)`,
              ),
            );
          }
          if (group === undefined && exitCode === LAUNCHER_REFUSED) {
            return reject(new TaskFailure(`${what} could not start the process: ${stderrTail.trim().slice(0, 500)}`));
          }
          resolve({ code: exitCode, timedOut: false });
        });
        channel.write(request);
      });
    } finally {
      lease.release();
    }
  }

  /**
   * The request is made from the host: each connection is a channel the host opens to the
   * URL's address (ssh -L without a listening port), TLS on top for https. With a guard,
   * the address is checked first, a name resolved on the host and the channel opened to the
   * address that was checked.
   */
  async request(url: URL, request: HttpRequest): Promise<HttpOutcome> {
    const agent = new Agent({ connect: this.#connector(request.guard), pipelining: 1 });
    try {
      return await sendRequest(url, request, agent);
    } finally {
      // Graceful: a response body still being read finishes first.
      void agent.close().catch(() => undefined);
    }
  }

  #connector(guard: OutboundPolicy | undefined): buildConnector.connector {
    return (options, callback) => {
      this.#openStream(options, guard).then(
        (socket) => callback(null, socket as never),
        (error: Error) => callback(error, null),
      );
    };
  }

  async #openStream(options: buildConnector.Options, guard: OutboundPolicy | undefined): Promise<Duplex> {
    const host = options.hostname.replace(/^\[(.*)\]$/, "$1");
    const https = options.protocol === "https:";
    const port = Number(options.port) || (https ? 443 : 80);
    let address = host;
    if (guard) {
      const verdict = await guardedDestination(guard, host, port, (name) => this.#resolve(name));
      if ("refused" in verdict) throw verdict.refused;
      address = verdict.address;
    }
    const lease = await this.connections.lease(this.targetId);
    let channel: ClientChannel;
    try {
      channel = await forwardOut(
        lease.client,
        address,
        port,
        describeTarget(lease.settings),
        this.connections.timeouts.operationMs,
      );
    } catch (error) {
      lease.release();
      throw error;
    }
    // The connection stays leased while the channel is open: the idle timer cannot close it under a response.
    channel.once("close", () => lease.release());
    const stream = new StreamSocket(channel, channel);
    if (!https) return stream;
    return new Promise((resolve, reject) => {
      const socket = tlsConnect({
        socket: stream,
        servername: options.servername || host,
        ALPNProtocols: ["http/1.1"],
      });
      socket.once("secureConnect", () => resolve(socket));
      socket.once("error", reject);
    });
  }

  /** The addresses a name has on the host (getent ahosts), for the guard: the host's resolver decides where it goes. */
  async #resolve(name: string): Promise<string[]> {
    const result = await this.#call(
      [
        { name: "the operation", value: "resolve" },
        { name: "the host name", value: name },
      ],
      "resolving a host name",
    );
    if (result.code !== 0) return [];
    const addresses = result.stdout
      .split("\n")
      .map((line) => line.split(/\s+/)[0] ?? "")
      .filter((address) => address !== "");
    return [...new Set(addresses)];
  }

  #docker: DockerRuntime | undefined;

  /**
   * The host's Docker engine, through its socket forwarded over the SSH connection
   * (direct-streamlocal, as `ssh -L /local.sock:/var/run/docker.sock` without the local
   * socket): no TCP port is opened on the host, and the SSH user needs access to the
   * socket (root or the docker group). The process runtime is the target's (ADR 0035).
   */
  runtime<K extends RuntimeKind>(kind: K): RuntimesByKind[K] {
    if (kind !== "docker") {
      // The process runtime is the target's (RemoteProcessRuntime, made in transports/registry.ts with the target's slug).
      throw new TaskFailure(`the ${kind} runtime over SSH comes from the target, not from its transport`);
    }
    this.#docker ??= new DockerRuntime({ socketPath: DOCKER_SOCKET, agent: new EngineAgent(this) });
    return this.#docker as RuntimesByKind[K];
  }

  /** A channel to a unix socket on the host (the Docker engine's). */
  async openSocket(path: string): Promise<Duplex> {
    const lease = await this.connections.lease(this.targetId);
    const what = describeTarget(lease.settings);
    let channel: ClientChannel;
    try {
      channel = await withTimeout(
        new Promise<ClientChannel>((resolve, reject) => {
          lease.client.openssh_forwardOutStreamLocal(path, (error, opened) => {
            if (error) reject(new TaskFailure(`${what} could not open ${path} (${error.message})`));
            else resolve(opened);
          });
        }),
        this.connections.timeouts.operationMs,
        () =>
          new TaskFailure(
            `${what} did not open ${path} within ${this.connections.timeouts.operationMs / 1000} s (FERRY_SSH_OPERATION_TIMEOUT_SECONDS)`,
          ),
      );
    } catch (error) {
      lease.release();
      throw error;
    }
    channel.once("close", () => lease.release());
    return new StreamSocket(channel, channel);
  }
}

/** Where the Docker engine listens on a host. */
const DOCKER_SOCKET = "/var/run/docker.sock";

/**
 * An HTTP agent whose connections are channels to the engine's socket on the host: what
 * dockerode (docker-modem) talks HTTP over instead of a local socket.
 */
class EngineAgent extends HttpAgent {
  constructor(private readonly transport: SshTransport) {
    super({ keepAlive: false });
  }

  override createConnection(
    _options: unknown,
    callback?: (error: Error | null, socket: Socket) => void,
  ): Socket | undefined {
    this.transport.openSocket(DOCKER_SOCKET).then(
      (socket) => callback?.(null, socket as Socket),
      (error: Error) => callback?.(error, undefined as never),
    );
    return undefined;
  }
}

/** The host keys a target presents, for `ferry target trust`. */
export interface PresentedHostKeys {
  /** The target's own; undefined when its jump host's key is not trusted yet (nothing was sent through it). */
  host: PresentedHostKey | undefined;
  /** The jump host's; undefined without one. */
  jumpHost: PresentedHostKey | undefined;
}

/**
 * Connects far enough to see the host keys, and no further: the target's key is read during
 * key exchange, before signing in, and the connection is dropped there. Through a jump host
 * Ferry signs in to the jump host only when its key is `acceptJumpHostKey` (the trusted one,
 * or the one the caller is confirming): otherwise it returns the jump host's key alone.
 */
export async function presentedHostKeys(
  settings: SshConnectionSettings,
  acceptJumpHostKey: string | null | undefined,
  timeouts: SshTimeouts = defaultSshTimeouts,
): Promise<PresentedHostKeys> {
  let jumpHost: PresentedHostKey | undefined;
  let sock: Duplex | undefined;
  let jump: Client | undefined;
  const credentials = { privateKey: settings.privateKey, passphrase: settings.passphrase };
  try {
    if (settings.jumpHost) {
      const { jumpHost: jumpSettings } = settings;
      const what = `jump host ${jumpSettings.user}@${hostPort(jumpSettings.host, jumpSettings.port)}`;
      const seen = await readKey(
        {
          ...credentials,
          host: jumpSettings.host,
          port: jumpSettings.port,
          user: jumpSettings.user,
          what,
          targetName: settings.targetName,
          connectTimeoutMs: timeouts.connectMs,
        },
        (presented) => presented.fingerprint === acceptJumpHostKey,
      );
      jumpHost = seen.key;
      if (!seen.client) return { host: undefined, jumpHost };
      jump = seen.client;
      sock = await forwardOut(jump, settings.host, settings.port, what, timeouts.operationMs);
    }
    const seen = await readKey(
      {
        ...credentials,
        host: settings.host,
        port: settings.port,
        user: settings.user,
        what: describeTarget(settings),
        targetName: settings.targetName,
        sock,
        connectTimeoutMs: timeouts.connectMs,
      },
      () => false,
    );
    return { host: seen.key, jumpHost };
  } finally {
    jump?.end();
  }
}

/** Reads the presented host key; goes on to sign in only when `proceed` says so (then the client is returned). */
async function readKey(
  options: Omit<ClientOptions, "checkHostKey">,
  proceed: (presented: PresentedHostKey) => boolean,
): Promise<{ key: PresentedHostKey; client: Client | undefined }> {
  let key: PresentedHostKey | undefined;
  let accepted = false;
  try {
    const client = await openClient({
      ...options,
      checkHostKey: (presented) => {
        key = presented;
        accepted = proceed(presented);
        return accepted ? undefined : "host key read";
      },
    });
    if (!key) throw new TaskFailure(`${options.what} presented no host key`);
    return { key, client };
  } catch (error) {
    // Refused on purpose after reading the key: that is the answer. Any other failure is not.
    if (key && !accepted) return { key, client: undefined };
    throw error;
  }
}
