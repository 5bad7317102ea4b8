import { setMaxListeners } from "node:events";
import type { FastifyBaseLogger } from "fastify";
import type { Kysely } from "kysely";
import type { TargetInfo } from "../store/deployments.js";
import type { Database } from "../store/schema.js";
import { claimDueTargets, type DueTarget, recordTargetHealth, type TargetHealthResult } from "../store/targetHealth.js";
import type { Target } from "../transports/types.js";

/*
 * Target health (issue 12, part 5): is the host reachable, does its Docker engine answer
 * (and which version), how much space is left where Ferry keeps work files, is its traffic
 * router alive. Written only against Target and Transport, so every transport — local, ssh,
 * the agent — gets it without code of its own.
 */

/** Runs `work` with a deadline: past it the signal aborts and the promise rejects, naming what did not answer. */
async function withDeadline<T>(
  what: string,
  timeoutMs: number,
  outer: AbortSignal | undefined,
  work: (signal: AbortSignal) => Promise<T>,
): Promise<T> {
  outer?.throwIfAborted();
  const controller = new AbortController();
  const onOuterAbort = () => controller.abort(outer?.reason);
  outer?.addEventListener("abort", onOuterAbort, { once: true });
  // Rejects at the deadline, or with the outer reason when the caller gives up first.
  const deadline = new Promise<never>((_, reject) => {
    const timer = setTimeout(
      () => controller.abort(new Error(`${what} did not answer within ${formatSeconds(timeoutMs)}`)),
      timeoutMs,
    );
    timer.unref();
    controller.signal.addEventListener(
      "abort",
      () => {
        clearTimeout(timer);
        reject(controller.signal.reason);
      },
      { once: true },
    );
  });
  // Settled after the work won the race (finally below aborts): nobody waits for it then.
  deadline.catch(() => {});
  try {
    return await Promise.race([work(controller.signal), deadline]);
  } finally {
    if (!controller.signal.aborted) controller.abort();
    outer?.removeEventListener("abort", onOuterAbort);
  }
}

function formatSeconds(milliseconds: number): string {
  return `${Math.round(milliseconds / 100) / 10} s`;
}

const messageOf = (error: unknown) => (error instanceof Error ? error.message : String(error));

/**
 * Runs a process on the host in a fresh step directory of `taskId` and returns its output:
 * the proof that the host can be reached and can run work, which is what a step needs.
 */
async function runOnHost(
  target: Target,
  taskId: string,
  argv: readonly [string, ...string[]],
  timeoutMs: number,
  signal: AbortSignal,
): Promise<{ code: number | null; stdout: string[] }> {
  const directory = await target.transport.stepDirectory(taskId, "health-");
  const stdout: string[] = [];
  try {
    const [command, ...args] = argv;
    const exit = await target.transport.run({
      command,
      args,
      env: {},
      cwd: directory,
      taskId,
      timeoutMs,
      signal,
      onLine: (stream, text) => {
        if (stream === "stdout" && stdout.length < 20) stdout.push(text);
      },
    });
    if (exit.timedOut) throw new Error(`${command} on the host did not end within ${formatSeconds(timeoutMs)}`);
    return { code: exit.code, stdout };
  } finally {
    await target.transport.removeDirectory(directory).catch(() => {});
  }
}

/**
 * Whether a deployment can reach the target now: undefined when a process ran on it, else
 * why not ("could not connect …", "did not answer within 20 s"). The probe's work files
 * belong to `taskId` and go with the task's.
 */
export async function probeTarget(
  target: Target,
  taskId: string,
  timeoutMs: number,
  signal?: AbortSignal,
): Promise<string | undefined> {
  // A transport with a cheaper proof uses it: the server's own host answers while the server
  // runs (a process there may still be refused — no FERRY_RUN_AS on a non-root server — which
  // a step that needs one reports itself); an agent answers a call through its held poll,
  // one round trip instead of three calls and a process (docs/benchmarks.md, rolling-agents).
  const { transport } = target;
  try {
    await withDeadline(`target '${target.name}'`, timeoutMs, signal, async (deadline) => {
      if (transport.checkReachable) await transport.checkReachable(timeoutMs, deadline);
      else await runOnHost(target, taskId, ["true"], timeoutMs, deadline);
    });
    return undefined;
  } catch (error) {
    signal?.throwIfAborted();
    return messageOf(error);
  }
}

/** `df -Pk DIR`'s answer: the available 1 KiB blocks of the file system holding DIR, in bytes. */
export function freeBytesOfDf(lines: readonly string[]): number | undefined {
  // POSIX format: a header, then "Filesystem 1024-blocks Used Available Capacity Mounted-on".
  const fields = lines[1]?.trim().split(/\s+/);
  const available = Number(fields?.[3]);
  return fields && fields.length >= 6 && Number.isSafeInteger(available) ? available * 1024 : undefined;
}

/**
 * One health check of a target: reachable (a process runs there; `df` of its work
 * directory gives the free space), its Docker engine's version when it has the docker
 * runtime, its router when one is in use. Down when the host cannot be reached or a part
 * that it uses does not answer; `error` names each failure.
 */
async function checkTargetHealth(
  target: Target,
  runtimes: readonly string[],
  timeoutMs: number,
  signal?: AbortSignal,
): Promise<TargetHealthResult> {
  const checkId = `health-${target.id ?? "server"}`;
  const errors: string[] = [];
  let reachable = false;
  let diskFreeBytes: number | null = null;
  try {
    const df = await withDeadline(`target '${target.name}'`, timeoutMs, signal, (deadline) =>
      runOnHost(target, checkId, ["df", "-Pk", "."], timeoutMs, deadline),
    );
    reachable = true;
    diskFreeBytes = df.code === 0 ? (freeBytesOfDf(df.stdout) ?? null) : null;
    if (diskFreeBytes === null) errors.push("could not read the free disk space of the work directory (df)");
  } catch (error) {
    signal?.throwIfAborted();
    errors.push(messageOf(error));
  } finally {
    // The check's own work directory: nothing of it stays on the host. From a host that did
    // not answer in time it is removed in the background (bounded by the transport's own
    // timeouts), so that a hanging host does not hold the check for longer than its timeout.
    const removing = target.transport.finishTask(checkId).catch(() => {});
    if (reachable) await removing;
  }
  let dockerVersion: string | null = null;
  let router: "up" | "down" | null = null;
  if (reachable) {
    if (runtimes.includes("docker")) {
      try {
        dockerVersion = await target.runtime("docker").engineVersion({ timeoutMs, ...(signal && { signal }) });
      } catch (error) {
        signal?.throwIfAborted();
        errors.push(`the Docker engine did not answer: ${messageOf(error)}`);
      }
    }
    try {
      const inUse = await withDeadline("the traffic router", timeoutMs, signal, () => target.routerInUse());
      if (inUse) {
        await withDeadline("the traffic router", timeoutMs, signal, () => inUse.routes());
        router = "up";
      }
    } catch (error) {
      signal?.throwIfAborted();
      router = "down";
      errors.push(`the traffic router did not answer: ${messageOf(error)}`);
    }
  }
  return {
    state: reachable && errors.length === 0 ? "up" : "down",
    checkedAt: new Date().toISOString(),
    reachable,
    dockerVersion,
    diskFreeBytes,
    router,
    error: errors.length === 0 ? null : errors.join("; "),
  };
}

export interface TargetHealthSettings {
  /** Between the end of one check of a target and the start of the next (FERRY_TARGET_HEALTH_INTERVAL_SECONDS). */
  intervalMs: number;
  /** How long a target may take to answer (FERRY_TARGET_HEALTH_TIMEOUT_SECONDS). */
  timeoutMs: number;
}

/** Health checks one server node runs at the same time. */
const MAX_CHECKS = 50;

export const defaultTargetHealthSettings: TargetHealthSettings = { intervalMs: 60_000, timeoutMs: 20_000 };

/**
 * Checks every target on a schedule shared by the server nodes (store/targetHealth.ts): one
 * check per target at a time, each bounded by the timeout, checks of different targets in
 * parallel so one host that hangs delays no other.
 */
export class TargetHealthMonitor {
  private timer: NodeJS.Timeout | undefined;
  private readonly controller = new AbortController();
  private readonly running = new Map<string, Promise<void>>();
  private ticking: Promise<void> | undefined;

  constructor(
    private readonly options: TargetHealthSettings & {
      db: Kysely<Database>;
      target: (info: TargetInfo) => Target;
      logger: FastifyBaseLogger;
    },
  ) {
    // Each check under way listens for the monitor's stop (withDeadline): up to MAX_CHECKS at
    // once is by design, not the leak Node warns about past 10 (it did with 20 agents).
    setMaxListeners(MAX_CHECKS + 10, this.controller.signal);
  }

  start(): void {
    this.schedule();
  }

  /** Stops scheduling and waits for the checks under way (they end at their timeout at the latest). */
  async stop(): Promise<void> {
    clearTimeout(this.timer);
    this.timer = undefined;
    this.controller.abort();
    await this.ticking;
    await Promise.allSettled(this.running.values());
  }

  private schedule(): void {
    if (this.controller.signal.aborted) return;
    // Often enough to keep the interval to within a few seconds; jittered so nodes do not stampede.
    const period = Math.min(this.options.intervalMs, 5_000) * (0.75 + Math.random() / 2);
    this.timer = setTimeout(() => {
      this.ticking = this.tick()
        .catch((error: unknown) => this.options.logger.warn({ err: error }, "could not schedule target health checks"))
        .finally(() => {
          this.ticking = undefined;
          this.schedule();
        });
    }, period);
    this.timer.unref();
  }

  private async tick(): Promise<void> {
    // At most MAX_CHECKS at once on a node: a thousand targets are checked in waves, the
    // longest due first, rather than as a thousand sessions opened in the same second.
    const room = MAX_CHECKS - this.running.size;
    if (room <= 0) return;
    // A claim lasts a little longer than the check may: the check's timeout bounds each of its parts.
    const due = await claimDueTargets(this.options.db, new Date(), this.options.timeoutMs * 4 + 5_000, room);
    for (const target of due) {
      if (this.running.has(target.id)) continue;
      const check = this.check(target).finally(() => this.running.delete(target.id));
      this.running.set(target.id, check);
    }
  }

  private async check(due: DueTarget): Promise<void> {
    const signal = this.controller.signal;
    try {
      const result = await checkTargetHealth(this.options.target(due), due.runtimes, this.options.timeoutMs, signal);
      await recordTargetHealth(this.options.db, due.id, result, new Date(Date.now() + this.options.intervalMs));
    } catch (error) {
      if (signal.aborted) return;
      this.options.logger.warn({ err: error, target: due.slug }, "a target health check failed");
    }
  }
}
