import type { Readable } from "node:stream";
import type { Runtime, RuntimeKind, RuntimesByKind } from "../runtimes/types.js";
import type { HttpOutcome, HttpRequest } from "../steps/http.js";
import type { Router } from "../traffic/router.js";
import type { UploadSpec } from "./upload.js";

/** A process to run on a host: an argument array, never a shell line; values travel as env or argv. */
export interface ProcessSpec {
  /** The program; "node" is the Node.js that runs Ferry on the server's own host. */
  readonly command: string;
  readonly args: readonly string[];
  /** The environment of the process: nothing of the server's own is inherited but the host's PATH. */
  readonly env: Readonly<Record<string, string>>;
  /** Working directory on the host, usually a step directory (Transport.stepDirectory). */
  readonly cwd: string;
  /** The task it belongs to: clean-up after a crash finds and kills the process by it. */
  readonly taskId: string;
  readonly timeoutMs: number;
  /** Aborting kills the process and everything it started. */
  readonly signal: AbortSignal;
  /** Each line of output as it arrives; a line longer than the transport keeps is cut (`cut`). */
  onLine(stream: "stdout" | "stderr", text: string, cut: boolean): void;
  /**
   * Backpressure for onLine: while `full`, the transport stops reading the process's output
   * (the process blocks on a full pipe) until `drained()` settles. `ferry agent` uses it
   * while its lines wait for a slow server.
   */
  readonly outputGate?: OutputGate | undefined;
  /**
   * Text for the process's standard input (it gets none otherwise). How a value too
   * sensitive for a command line or an environment (a process runtime's instance spec with
   * its env values) reaches a program on a host: `ps` shows neither stdin nor a pipe.
   */
  readonly stdin?: string | undefined;
  /**
   * Ferry's own work on the host (its router, its process supervisors), which belongs to no
   * task and outlives every task: it runs as the account the transport itself uses there
   * (the server's, the SSH user, the agent's), never as a task's own uid, which the task's
   * clean-up would end. An agent runs only its own Ferry for it (`proxy`, `processes`),
   * whatever `command` says (docs/decisions/0035-process-runtime-on-every-target.md).
   */
  readonly hostService?: boolean | undefined;
}

/** A bounded buffer's state, as a producer of lines sees it. */
export interface OutputGate {
  readonly full: boolean;
  drained(): Promise<void>;
}

/** How a process ended. */
export interface ProcessExit {
  /** The exit code; null when it was killed. */
  readonly code: number | null;
  /** True when it ran past timeoutMs and was killed. */
  readonly timedOut: boolean;
}

/**
 * How the server reaches a host: `local` (its own), `ssh` (agentless) or `agent` (`ferry
 * agent` on the host dials out). A step never knows which: it asks its Target.
 */
export interface Transport {
  readonly kind: "local" | "ssh" | "agent";
  /**
   * Runs a process on the host as the account work runs as there, in its own process group
   * (so a cancel or timeout kills everything it started), streaming its output by line.
   */
  run(spec: ProcessSpec): Promise<ProcessExit>;
  /** A fresh directory for one step of a task on the host, owned by the account work runs as. */
  stepDirectory(taskId: string, prefix: string): Promise<string>;
  /** A file's text on the host; undefined when it does not exist. */
  readFile(path: string): Promise<string | undefined>;
  /**
   * Streams a file of the host (any absolute path), read as the account the task's work runs
   * as there — a step attaches only what it could have read itself, never with the rights of
   * the server or of `ferry agent`. The stream has backpressure (the host's reader waits for
   * a slow consumer) and ends only once the host said the whole file was read: a read that
   * fails part-way, or a link that drops, destroys it with an error instead of ending it
   * short. Destroying it stops the read on the host. Not a regular file, or not readable by
   * that account: a TaskFailure saying so.
   */
  readStream(taskId: string, path: string, signal: AbortSignal): Promise<Readable>;
  /**
   * Writes a file on the host from a stream, as the account the task's work runs as there:
   * streamed with backpressure (neither the server nor the host holds the whole file), into
   * a temporary file beside `spec.path` with its mode set first, renamed into place only once
   * exactly `spec.bytes` bytes with `spec.sha256` arrived. A source that fails or ends short, a
   * link that drops, a timeout or an abort: a TaskFailure, and nothing under `spec.path`.
   * How the package step, the backup copy and step files send files to a host.
   */
  upload(spec: UploadSpec, source: Readable): Promise<void>;
  /** Removes a directory (and what is in it) on the host. */
  removeDirectory(path: string): Promise<void>;
  /**
   * The end of a step: the text of the file `fileName` (a plain name) in the step's
   * directory, undefined when there is none, and the directory removed — one call on a
   * transport where each call is a round trip (an agent).
   */
  finishStep(directory: string, fileName: string): Promise<string | undefined>;
  /**
   * A cheaper proof than running a process that the host can take work now, where the
   * transport has one (the server's own host: it answers while the server runs; an agent:
   * an answer to a call through its poll). Rejects, saying why, when it cannot.
   */
  checkReachable?(timeoutMs: number, signal: AbortSignal): Promise<void>;
  /** Removes what a finished task kept on the host (its work directory). */
  finishTask(taskId: string): Promise<void>;
  /**
   * Sends an HTTP request from the host: health checks and pre-switch tests reach a colour
   * that listens on the host's own loopback.
   */
  request(url: URL, request: HttpRequest): Promise<HttpOutcome>;
  /** The host's runtime of this kind (its Docker engine…), connected on first use. */
  runtime<K extends RuntimeKind>(kind: K): RuntimesByKind[K];
  /**
   * Kills what a task started on this host and is still running (its recorded process
   * groups, any process carrying its id) and removes its work files; returns how many
   * process groups or processes were killed.
   */
  killTaskProcesses(taskId: string): Promise<number>;
}

/**
 * Where a step runs: a host, reached through its transport, with its runtimes and its
 * traffic router. Deployments, runbooks and clean-up all see hosts only through this.
 */
export interface Target {
  /** The target's id; null for the server's own host (steps without roles run there). */
  readonly id: string | null;
  /** The target's slug (part of default container names); undefined for the server's own host. */
  readonly slug?: string | undefined;
  readonly name: string;
  readonly roles: readonly string[];
  readonly transport: Transport;
  runtime<K extends RuntimeKind>(kind: K): RuntimesByKind[K];
  /** Every runtime of the host, for clean-up and reconciliation, which do not care which kind. */
  runtimes(): Runtime[];
  /** The traffic switch on this host, connected on first use. */
  router(): Promise<Router>;
  /** The router only when it is in use (connected, or with routes from an earlier run): clean-up asks it without starting one. */
  routerInUse(): Promise<Router | undefined>;
}

/** A file of a step's directory (Transport.finishStep): a plain name, never a path. */
export function stepFileName(name: string): string {
  if (!/^[A-Za-z0-9_][A-Za-z0-9_.-]{0,63}$/.test(name)) {
    throw new Error(`'${name.slice(0, 80)}' is not a plain file name of a step's directory`);
  }
  return name;
}
