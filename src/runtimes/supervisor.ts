import { type ChildProcess, spawn } from "node:child_process";
import { closeSync, copyFileSync, openSync, statSync, truncateSync } from "node:fs";
import { readFile, rm } from "node:fs/promises";
import { join } from "node:path";
import { setTimeout as sleep } from "node:timers/promises";
import {
  type InstanceSpec,
  type InstanceState,
  identityOf,
  isAlive,
  OUTPUT_LOG,
  type ProcessIdentity,
  readSpec,
  readState,
  writeState,
} from "./processFiles.js";

/**
 * The supervisor of one instance of the process runtime (`ferry supervise <directory>`): a
 * small detached process, one per running instance, that starts the instance's command in
 * a process group of its own, sends its output to output.log, restarts it by its restart
 * policy (with a growing pause between quick failures), and on SIGTERM stops it and exits.
 * It is what keeps an app serving while the Ferry server is stopped, restarted or upgraded:
 * the server only writes the spec, reads the state and sends signals.
 */

/** A child that ran this long before it failed counts as having worked: the pause starts small again. */
const HEALTHY_RUN_MS = 10_000;
const FIRST_PAUSE_MS = 500;
const LONGEST_PAUSE_MS = 30_000;
/** output.log is cut (copied to output.log.1, then emptied) beyond this size. */
const LOG_ROTATE_BYTES = 16 * 1024 * 1024;
const LOG_CHECK_MS = 10_000;
/** An adopted child (not ours to wait for) is looked at this often. */
const ADOPTED_POLL_MS = 250;
/** The stop request's file: how long the child has after SIGTERM before SIGKILL (seconds). */
export const STOP_REQUEST_FILE = "stop-request";
const DEFAULT_STOP_TIMEOUT_SECONDS = 10;

interface Exit {
  code: number | null;
  signal: string | null;
  error: string;
}

export async function superviseInstance(directory: string): Promise<void> {
  const spec = await readSpec(directory);
  if (!spec) throw new Error(`${directory} holds no readable instance.json`);
  const me = await identityOf(process.pid);
  if (!me) throw new Error("cannot read this process's own start time from /proc");
  const previous = await readState(directory);
  // Two supervisors of one instance would each start the command: the second leaves.
  if (previous?.supervisor && previous.supervisor.pid !== process.pid && (await isAlive(previous.supervisor))) {
    log(`another supervisor (pid ${previous.supervisor.pid}) runs this instance; leaving`);
    return;
  }
  const state: InstanceState = {
    state: "starting",
    supervisor: me,
    child: null,
    restartCount: 0,
    exitCode: previous?.exitCode ?? null,
    exitSignal: previous?.exitSignal ?? null,
    error: "",
    startedAt: null,
    stopping: false,
  };
  const save = () => writeState(directory, state);

  let stopRequested = false;
  let wake = () => {};
  let running: { identity: ProcessIdentity; child?: ChildProcess } | undefined;
  const onStop = (signal: NodeJS.Signals) => {
    if (stopRequested) return;
    stopRequested = true;
    log(`${signal}: stopping`);
    state.stopping = true;
    save().catch(() => {});
    wake();
    if (running) void stopChild(directory, running.identity);
  };
  process.on("SIGTERM", onStop);
  process.on("SIGINT", onStop);
  process.on("SIGHUP", () => {});
  // Only now: a stop sent before the handlers existed would have ended this process unrecorded.
  await save();

  const rotation = setInterval(() => rotateOutput(directory), LOG_CHECK_MS);
  rotation.unref();

  // A child left running by a supervisor that died (kill -9, an upgrade) is watched, not started twice.
  let adopt = previous?.child && (await isAlive(previous.child)) ? previous.child : undefined;
  let quickFailures = 0;
  while (!stopRequested) {
    const startedAt = adopt ? (previous?.startedAt ?? Date.now()) : Date.now();
    const started = adopt ? { identity: adopt, exited: watchAdopted(adopt) } : await startChild(directory, spec);
    adopt = undefined;
    // Spawned, even when it ended before its start time could be read (a command that exits at once).
    if (started.child) state.startedAt = startedAt;
    if (started.identity) {
      running = { identity: started.identity, ...(started.child && { child: started.child }) };
      state.state = "running";
      state.child = started.identity;
      state.startedAt = startedAt;
      state.error = "";
      await save();
      log(`started pid ${started.identity.pid}`);
      // A stop that came while the child was being started.
      if (stopRequested) void stopChild(directory, started.identity);
    }
    const exit = await started.exited;
    // What the leader left behind in its group (a background job of a wrapper) goes with it.
    if (running) killGroup(running.identity.pid, "SIGKILL");
    running = undefined;
    state.child = null;
    state.exitCode = exit.code;
    state.exitSignal = exit.signal;
    state.error = exit.error;
    log(
      exit.error
        ? `could not start: ${exit.error}`
        : `exited with ${exit.signal ? `signal ${exit.signal}` : `code ${exit.code ?? "unknown"}`}`,
    );
    if (stopRequested) break;
    const failed = exit.error !== "" || exit.code !== 0;
    if (!(spec.restartPolicy === "always" || (spec.restartPolicy === "on-failure" && failed))) break;
    if (Date.now() - startedAt >= HEALTHY_RUN_MS) quickFailures = 0;
    const pause = Math.min(LONGEST_PAUSE_MS, FIRST_PAUSE_MS * 2 ** quickFailures);
    quickFailures++;
    state.state = "restarting";
    await save();
    log(`restarting in ${pause} ms (restart policy ${spec.restartPolicy})`);
    await new Promise<void>((resolve) => {
      const timer = setTimeout(resolve, pause);
      wake = () => {
        clearTimeout(timer);
        resolve();
      };
    });
    wake = () => {};
    if (stopRequested) break;
    state.restartCount++;
  }
  clearInterval(rotation);
  state.state = "exited";
  state.supervisor = null;
  await save();
  await rm(join(directory, STOP_REQUEST_FILE), { force: true });
  log("supervisor exits");
}

/** Starts the command in its own process group (a session of its own), output appended to output.log. */
async function startChild(
  directory: string,
  spec: InstanceSpec,
): Promise<{ identity?: ProcessIdentity; child?: ChildProcess; exited: Promise<Exit> }> {
  // "node" is the Node.js this supervisor runs on: it exists, whatever PATH says.
  const command = spec.command === "node" ? process.execPath : spec.command;
  const limits = [
    ...(spec.limits.addressSpaceMb !== undefined
      ? [`--as=${spec.limits.addressSpaceMb * 1024 * 1024}:${spec.limits.addressSpaceMb * 1024 * 1024}`]
      : []),
    ...(spec.limits.openFiles !== undefined ? [`--nofile=${spec.limits.openFiles}:${spec.limits.openFiles}`] : []),
  ];
  // prlimit (util-linux) sets the limits on itself and execs the command: same pid, same group.
  const [program, args] =
    limits.length > 0 ? ["prlimit", [...limits, "--", command, ...spec.args]] : [command, spec.args];
  const output = openSync(join(directory, OUTPUT_LOG), "a", 0o600);
  let child: ChildProcess;
  try {
    child = spawn(program, args, {
      cwd: spec.workingDirectory,
      env: {
        PATH: process.env.PATH ?? "/usr/local/bin:/usr/bin:/bin",
        HOME: spec.workingDirectory,
        LANG: "C.UTF-8",
        ...spec.env,
        ...(spec.port !== null && { PORT: String(spec.port) }),
      },
      detached: true,
      stdio: ["ignore", output, output],
      ...(spec.account && { uid: spec.account.uid, gid: spec.account.gid }),
    });
  } catch (error) {
    return { exited: Promise.resolve({ code: null, signal: null, error: (error as Error).message }) };
  } finally {
    closeSync(output);
  }
  const exited = new Promise<Exit>((resolve) => {
    child.once("error", (error) => resolve({ code: null, signal: null, error: error.message }));
    child.once("exit", (code, signal) => resolve({ code, signal, error: "" }));
  });
  if (child.pid === undefined) return { exited };
  const identity = await identityOf(child.pid);
  return { ...(identity && { identity }), child, exited };
}

/** Waits for a process this supervisor did not start to end; its exit code cannot be known. */
async function watchAdopted(identity: ProcessIdentity): Promise<Exit> {
  log(`adopting pid ${identity.pid}, left running by an earlier supervisor`);
  while (await isAlive(identity)) await sleep(ADOPTED_POLL_MS);
  return { code: null, signal: null, error: "" };
}

/** SIGTERM to the child's group; SIGKILL when it has not exited after the stop request's timeout. */
async function stopChild(directory: string, identity: ProcessIdentity): Promise<void> {
  const requested = Number((await readFile(join(directory, STOP_REQUEST_FILE), "utf8").catch(() => "")).trim());
  const timeoutMs = (Number.isFinite(requested) && requested >= 0 ? requested : DEFAULT_STOP_TIMEOUT_SECONDS) * 1000;
  killGroup(identity.pid, timeoutMs === 0 ? "SIGKILL" : "SIGTERM");
  const deadline = Date.now() + timeoutMs;
  while (Date.now() < deadline && (await isAlive(identity))) await sleep(50);
  if (await isAlive(identity)) {
    log(`pid ${identity.pid} did not exit within ${timeoutMs / 1000} s of SIGTERM: SIGKILL`);
    killGroup(identity.pid, "SIGKILL");
  }
}

function killGroup(pid: number, signal: NodeJS.Signals): void {
  try {
    process.kill(-pid, signal);
  } catch {
    // The group is gone.
  }
}

/**
 * copytruncate: the child holds output.log open for appending, so the file is copied to
 * output.log.1 and emptied in place; the child's next write lands at the new end. Lines
 * written between the copy and the truncate are lost: a few, once per 16 MiB.
 */
function rotateOutput(directory: string): void {
  const path = join(directory, OUTPUT_LOG);
  try {
    if (statSync(path).size <= LOG_ROTATE_BYTES) return;
    copyFileSync(path, `${path}.1`);
    truncateSync(path, 0);
  } catch (error) {
    log(`could not rotate output.log: ${(error as Error).message}`);
  }
}

function log(message: string): void {
  process.stdout.write(`${new Date().toISOString()} ${message}\n`);
}
