import { readFile } from "node:fs/promises";
import { join } from "node:path";
import { z } from "zod";
import { writeFileAtomic } from "../traffic/atomicFile.js";

/*
 * The files of one instance of the process runtime, in its own directory: what the runtime
 * (process.ts, in the server) and the instance's supervisor (supervisor.ts, `ferry
 * supervise`, a detached process) share. They never talk otherwise: the runtime writes the
 * instance's spec and signals the supervisor; the supervisor writes the state. Both outlive
 * the server, so what the runtime knows after a restart is what these files say.
 *
 *   instance.json   the spec (command, env, labels, port, limits, restart policy), 0600
 *   state.json      the supervisor's and the child's pids and start times, the state, exit codes
 *   output.log      the child's stdout and stderr (output.log.1: the previous part)
 *   supervisor.log  the supervisor's own lines (starts, exits, restarts)
 *   app/            the copy of `copyFrom`, owned by the account the child runs as
 */

const SPEC_FILE = "instance.json";
const STATE_FILE = "state.json";
export const OUTPUT_LOG = "output.log";
export const SUPERVISOR_LOG = "supervisor.log";
export const APP_DIRECTORY = "app";

const restartPolicies = ["no", "on-failure", "always"] as const;
export type RestartPolicy = (typeof restartPolicies)[number];

const instanceSpecSchema = z.object({
  name: z.string(),
  /** The program ("node" is the Node.js that runs Ferry) and its arguments: never a shell line. */
  command: z.string(),
  args: z.array(z.string()),
  env: z.record(z.string(), z.string()),
  /** Absolute working directory of the child. */
  workingDirectory: z.string(),
  labels: z.record(z.string(), z.string()),
  restartPolicy: z.enum(restartPolicies),
  /** The port the child is told to listen on (PORT); null: none. */
  port: z.number().int().nullable(),
  /** True: a new free port is chosen at a start when this one is taken meanwhile. */
  portChosen: z.boolean(),
  limits: z.object({ addressSpaceMb: z.number().int().optional(), openFiles: z.number().int().optional() }),
  /** The account the child runs as; null: the supervisor's own. */
  account: z.object({ uid: z.number().int(), gid: z.number().int() }).nullable(),
  /** When the instance was created (Unix milliseconds). */
  createdAt: z.number(),
});
export type InstanceSpec = z.infer<typeof instanceSpecSchema>;

/** A process and its start time (clock ticks since boot, /proc/PID/stat): a pid alone may be reused. */
const processIdentitySchema = z.object({ pid: z.number().int(), startTicks: z.number() });
export type ProcessIdentity = z.infer<typeof processIdentitySchema>;

const instanceStateSchema = z.object({
  /**
   * starting: the supervisor is up, the child not yet; running: the child runs;
   * restarting: waiting to start it again (its restart policy); exited: nothing runs and
   * nothing will by itself.
   */
  state: z.enum(["starting", "running", "restarting", "exited"]),
  supervisor: processIdentitySchema.nullable(),
  child: processIdentitySchema.nullable(),
  /** Restarts by the restart policy since the supervisor started. */
  restartCount: z.number().int(),
  /** The last exit: its code, or the signal that ended it. */
  exitCode: z.number().int().nullable(),
  exitSignal: z.string().nullable(),
  /** Why the child could not be started (e.g. "spawn ./server ENOENT"). */
  error: z.string(),
  /** When the child last started (Unix milliseconds). */
  startedAt: z.number().nullable(),
  /** The supervisor was asked to stop: it restarts nothing any more. */
  stopping: z.boolean(),
});
export type InstanceState = z.infer<typeof instanceStateSchema>;

export async function readSpec(directory: string): Promise<InstanceSpec | undefined> {
  return readJson(join(directory, SPEC_FILE), instanceSpecSchema);
}

export async function readState(directory: string): Promise<InstanceState | undefined> {
  return readJson(join(directory, STATE_FILE), instanceStateSchema);
}

export function writeSpec(directory: string, spec: InstanceSpec): Promise<void> {
  return writeFileAtomic(join(directory, SPEC_FILE), `${JSON.stringify(spec, null, 2)}\n`);
}

export function writeState(directory: string, state: InstanceState): Promise<void> {
  return writeFileAtomic(join(directory, STATE_FILE), `${JSON.stringify(state)}\n`);
}

async function readJson<T>(path: string, schema: z.ZodType<T>): Promise<T | undefined> {
  let text: string;
  try {
    text = await readFile(path, "utf8");
  } catch {
    return undefined;
  }
  try {
    return schema.parse(JSON.parse(text));
  } catch {
    // Written atomically, so only a file someone else changed can be unreadable.
    return undefined;
  }
}

/** The process's start time in clock ticks since boot (field 22 of /proc/PID/stat); undefined when it is gone. */
async function startTicksOf(pid: number): Promise<number | undefined> {
  try {
    const stat = await readFile(`/proc/${pid}/stat`, "latin1");
    // The command name (field 2) is in parentheses and may hold spaces or ')': count from the last ')'.
    const fields = stat.slice(stat.lastIndexOf(")") + 2).split(" ");
    // fields[0] is field 3 (the state); a zombie has exited already.
    if (fields[0] === "Z") return undefined;
    const ticks = Number(fields[19]);
    return Number.isFinite(ticks) ? ticks : undefined;
  } catch {
    return undefined;
  }
}

/** Whether the process recorded is still that one (not gone, not a new process with its pid). */
export async function isAlive(identity: ProcessIdentity | null | undefined): Promise<boolean> {
  if (!identity) return false;
  return (await startTicksOf(identity.pid)) === identity.startTicks;
}

export async function identityOf(pid: number): Promise<ProcessIdentity | undefined> {
  const startTicks = await startTicksOf(pid);
  return startTicks === undefined ? undefined : { pid, startTicks };
}
