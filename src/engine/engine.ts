import { randomBytes } from "node:crypto";
import { EventEmitter } from "node:events";
import type { FastifyBaseLogger } from "fastify";
import type { Kysely } from "kysely";
import { InputError } from "../domain/errors.js";
import type { Task, TaskState } from "../domain/tasks.js";
import { escapeControlCharacters } from "../domain/text.js";
import type { DialectName } from "../store/db.js";
import { decide, getDecision, openDecision, withdrawDecision } from "../store/decisions.js";
import { claimPendingCleanup, duePendingCleanups } from "../store/pendingCleanups.js";
import type { Database, TaskRow } from "../store/schema.js";
import {
  claimTasks,
  enqueueTask,
  finishTask,
  interruptExpiredTasks,
  type NewTask,
  renewLeases,
  requestCancel,
  setActiveState,
  toTask,
} from "../store/tasks.js";
import type { TaskFinishedEvent, TaskObserver, TaskOutcome, TaskStartedEvent } from "./observers.js";
import { defaultTaskLogOptions, TaskLog, type TaskLogOptions } from "./taskLog.js";
import { type TaskContext, TaskFailure, type TaskKind } from "./types.js";

export interface EngineOptions {
  db: Kysely<Database>;
  dialect: DialectName;
  kinds: readonly TaskKind[];
  logger: FastifyBaseLogger;
  /** Tasks this engine runs at once. */
  concurrency?: number;
  /** How long a claim or lock holds without a heartbeat (ms). Heartbeats come every third of it. */
  leaseMs?: number;
  /** How often queued work is looked for when nothing wakes the engine (ms). */
  pollMs?: number;
  taskLog?: Partial<TaskLogOptions>;
  /** Told when a task starts and ends (metrics, deployment events). */
  observers?: readonly TaskObserver[];
}

interface RunningTask {
  controller: AbortController;
  done: Promise<void>;
  /** Why the run is being stopped, decided by whoever aborts it first. */
  stopReason?: "cancelled" | "lease-lost" | "shutdown";
}

/**
 * The task engine: claims queued tasks from the database, runs them through their kind,
 * keeps their leases alive, and interrupts tasks whose server died. It has no HTTP in it;
 * tests drive it directly. Several engines (nodes) may share one PostgreSQL database.
 */
export class TaskEngine {
  /** Emits "log" (taskId) after log lines are stored and "state" (taskId) after a state change. */
  readonly events = new EventEmitter();
  readonly owner = `engine_${randomBytes(6).toString("hex")}`;
  private readonly kinds = new Map<string, TaskKind>();
  private readonly running = new Map<string, RunningTask>();
  private readonly concurrency: number;
  private readonly leaseMs: number;
  private readonly pollMs: number;
  private readonly logOptions: TaskLogOptions;
  private pollTimer: NodeJS.Timeout | undefined;
  private heartbeatTimer: NodeJS.Timeout | undefined;
  private stopped = true;
  private polling: Promise<void> | undefined;
  private pollAgain = false;

  constructor(private readonly options: EngineOptions) {
    for (const kind of options.kinds) this.kinds.set(kind.kind, kind);
    this.concurrency = options.concurrency ?? 4;
    this.leaseMs = options.leaseMs ?? 15_000;
    this.pollMs = options.pollMs ?? 500;
    this.logOptions = {
      ...defaultTaskLogOptions,
      ...options.taskLog,
      onFlush: (taskId) => this.events.emit("log", taskId),
    };
    this.events.setMaxListeners(0);
  }

  /** Validates the payload against its kind and queues the task. */
  async enqueue(input: Omit<NewTask, "payload"> & { payload: unknown }): Promise<Task> {
    const kind = this.kinds.get(input.kind);
    if (!kind) throw new Error(`no task kind '${input.kind}' is registered`);
    const parsed = kind.payload.safeParse(input.payload);
    if (!parsed.success) throw new InputError(`invalid ${input.kind} task: ${parsed.error.message}`);
    const row = await enqueueTask(this.options.db, { ...input, payload: parsed.data });
    this.events.emit("state", row.id);
    this.wake();
    return toTask(row);
  }

  async cancel(taskId: string): Promise<TaskState> {
    const state = await requestCancel(this.options.db, taskId);
    this.events.emit("state", taskId);
    const local = this.running.get(taskId);
    if (local && !local.stopReason) {
      local.stopReason = "cancelled";
      local.controller.abort(new TaskFailure("cancelled by a user"));
    }
    return state;
  }

  /** Answers a waiting task's question; its runner (on whichever node) continues. */
  async decide(
    taskId: string,
    answer: {
      decision: string;
      comment?: string | undefined;
      decidedBy: string;
      principal?: string | null | undefined;
    },
  ) {
    const decision = await decide(this.options.db, taskId, answer);
    this.events.emit("decision", taskId);
    return decision;
  }

  /** Recovers tasks of dead servers, then starts claiming and heartbeating. */
  async start(): Promise<void> {
    this.stopped = false;
    await this.sweepExpired();
    this.heartbeatTimer = setInterval(() => void this.heartbeat(), Math.max(50, Math.floor(this.leaseMs / 3)));
    this.heartbeatTimer.unref();
    this.schedulePoll(0);
  }

  /**
   * Stops claiming; running tasks get `graceMs` to finish, then are aborted and left for
   * recovery (their lease expires and they become interrupted, with clean-up).
   */
  async stop(graceMs = 10_000): Promise<void> {
    this.stopped = true;
    clearTimeout(this.pollTimer);
    await this.polling;
    const all = Promise.all([...this.running.values()].map((task) => task.done));
    const grace = new Promise<void>((resolve) => setTimeout(resolve, graceMs).unref());
    await Promise.race([all, grace]);
    for (const task of this.running.values()) {
      task.stopReason ??= "shutdown";
      task.controller.abort(new TaskFailure("the server is shutting down"));
    }
    await all;
    clearInterval(this.heartbeatTimer);
    // A retry under way finishes (or gives up on its own timeouts) before the store closes.
    await this.retryingCleanups;
  }

  /** Looks for work now instead of at the next poll. */
  wake(): void {
    if (!this.stopped) this.schedulePoll(0);
  }

  private schedulePoll(delay: number): void {
    clearTimeout(this.pollTimer);
    this.pollTimer = setTimeout(() => void this.poll(), delay);
    this.pollTimer.unref();
  }

  private async poll(): Promise<void> {
    if (this.polling) {
      // A claim round is in flight; it polls again at once when it ends.
      this.pollAgain = true;
      return;
    }
    this.polling = this.claimWhileCapacity();
    try {
      await this.polling;
    } finally {
      this.polling = undefined;
      const again = this.pollAgain;
      this.pollAgain = false;
      if (!this.stopped) this.schedulePoll(again ? 0 : this.pollMs);
    }
  }

  private async claimWhileCapacity(): Promise<void> {
    try {
      for (;;) {
        const capacity = this.concurrency - this.running.size;
        if (this.stopped || capacity <= 0) return;
        const claimed = await claimTasks(this.options.db, this.options.dialect, {
          owner: this.owner,
          capacity,
          leaseMs: this.leaseMs,
        });
        for (const row of claimed) this.launch(row);
        // A full batch may mean more is waiting; fewer means the queue had nothing else runnable.
        if (claimed.length < capacity) return;
      }
    } catch (error) {
      this.options.logger.error({ err: error }, "claiming tasks failed; retrying");
    }
  }

  private launch(row: TaskRow): void {
    const controller = new AbortController();
    const entry: RunningTask = { controller, done: Promise.resolve() };
    this.running.set(row.id, entry);
    this.events.emit("state", row.id);
    const started = startedEvent(row);
    this.notify(row.id, (observer) => observer.taskStarted?.(started));
    entry.done = this.execute(row, entry)
      .catch((error: unknown) => {
        // The store failed while recording the outcome; the lease expires and recovery interrupts the task.
        this.options.logger.error({ err: error, taskId: row.id }, "recording a task's outcome failed");
      })
      .finally(() => {
        this.running.delete(row.id);
        this.events.emit("state", row.id);
        this.wake();
      });
  }

  private async execute(row: TaskRow, entry: RunningTask): Promise<void> {
    const log = new TaskLog(this.options.db, row.id, this.logOptions, Number(row.log_bytes));
    const kind = this.kinds.get(row.kind);
    const payload: unknown = JSON.parse(row.payload);
    const whileWaiting = async <T>(wait: () => Promise<T>): Promise<T> => {
      await setActiveState(this.options.db, row.id, this.owner, "waiting");
      this.events.emit("state", row.id);
      try {
        return await wait();
      } finally {
        await setActiveState(this.options.db, row.id, this.owner, "running");
        this.events.emit("state", row.id);
      }
    };
    const context: TaskContext = {
      taskId: row.id,
      signal: entry.controller.signal,
      log,
      whileWaiting,
      waitForDecision: (question) =>
        whileWaiting(async () => {
          const id = await openDecision(this.options.db, row.id, {
            kind: question.kind,
            prompt: log.redact(question.prompt),
            allowed: question.allowed,
            excludedPrincipal: question.separateFromStarter ? row.created_by_principal : null,
          });
          log.warn(`waiting for a decision: ${question.prompt} (answer: ${question.allowed.join(" / ")})`);
          await log.flush();
          const { withdraw } = question;
          // Woken by an answer, a cancel, or the step withdrawing its question.
          const wake = withdraw ? AbortSignal.any([entry.controller.signal, withdraw]) : entry.controller.signal;
          for (;;) {
            const decision = await getDecision(this.options.db, id);
            if (decision.decision !== null) {
              log.info(
                // Escaped: a comment with a newline would otherwise write a second, forged log line.
                `${escapeControlCharacters(decision.decidedBy ?? "someone")} chose ${decision.decision}${decision.comment ? `: ${escapeControlCharacters(decision.comment)}` : ""}`,
              );
              return decision;
            }
            if (withdraw?.aborted && !entry.controller.signal.aborted) {
              const reason = log.redact(
                withdraw.reason instanceof Error ? withdraw.reason.message : String(withdraw.reason),
              );
              // Someone may have answered between the read above and this: then their answer is read next.
              if (await withdrawDecision(this.options.db, id, reason)) {
                log.warn(`question withdrawn: ${escapeControlCharacters(reason)}`);
                // The dashboard's task stream takes the question away, as for an answer.
                this.events.emit("decision", row.id);
                throw withdraw.reason;
              }
              continue;
            }
            try {
              await this.nextEvent("decision", row.id, 500, wake);
            } catch (error) {
              // Withdrawn: the loop closes the question; cancelled or stopped: the wait ends here.
              if (entry.controller.signal.aborted || !withdraw?.aborted) throw error;
            }
          }
        }),
    };
    let outcome: Parameters<typeof finishTask>[3];
    try {
      if (!kind) throw new TaskFailure(`this server does not know task kind '${row.kind}'`);
      const result = await kind.run(context, kind.payload.parse(payload));
      outcome = { state: "succeeded", result };
      log.info("task succeeded");
    } catch (error) {
      const message = error instanceof Error ? error.message : String(error);
      if (entry.stopReason === "cancelled") {
        log.warn("task cancelled; cleaning up what it created");
        await this.cleanup(kind, row.id, payload, log);
        outcome = { state: "cancelled", error: "cancelled by a user" };
      } else if (entry.stopReason === "lease-lost" || entry.stopReason === "shutdown") {
        // Another node (or the next start) interrupts it and cleans up: do not write an outcome.
        await log.flush().catch(() => {});
        return;
      } else {
        log.error(`task failed: ${message}`);
        if (!(error instanceof TaskFailure)) this.options.logger.error({ taskId: row.id }, "task crashed");
        // The error is shown by the API: masked like the log (a step's message may quote a value).
        outcome = { state: "failed", error: log.redact(message) };
      }
    }
    await log.flush();
    if (await finishTask(this.options.db, row.id, this.owner, outcome)) {
      const finished = finishedEvent(row, outcome.state);
      this.notify(row.id, (observer) => observer.taskFinished?.(finished));
    }
  }

  /** Tells each observer; one that throws must not break the engine or the others. */
  private notify(taskId: string, tell: (observer: TaskObserver) => void): void {
    for (const observer of this.options.observers ?? []) {
      try {
        tell(observer);
      } catch (error) {
        this.options.logger.error({ err: error, taskId }, "a task observer failed");
      }
    }
  }

  /** Resolves on the task's next event of that name, after `timeoutMs` at most; rejects on abort. */
  private nextEvent(event: string, taskId: string, timeoutMs: number, signal: AbortSignal): Promise<void> {
    return new Promise((resolve, reject) => {
      const done = () => {
        clearTimeout(timer);
        this.events.off(event, onEvent);
        signal.removeEventListener("abort", onAbort);
      };
      const onEvent = (id: string) => {
        if (id !== taskId) return;
        done();
        resolve();
      };
      const onAbort = () => {
        done();
        reject(signal.reason);
      };
      const timer = setTimeout(() => {
        done();
        resolve();
      }, timeoutMs);
      this.events.on(event, onEvent);
      if (signal.aborted) onAbort();
      else signal.addEventListener("abort", onAbort, { once: true });
    });
  }

  private async cleanup(kind: TaskKind | undefined, taskId: string, payload: unknown, log: TaskLog): Promise<void> {
    if (!kind?.cleanup) return;
    try {
      await kind.cleanup(taskId, kind.payload.parse(payload), log);
    } catch (error) {
      log.error(`clean-up failed: ${error instanceof Error ? error.message : String(error)}`);
    }
  }

  private async heartbeat(): Promise<void> {
    try {
      const ids = [...this.running.keys()];
      const held = await renewLeases(this.options.db, { owner: this.owner, taskIds: ids, leaseMs: this.leaseMs });
      const heldIds = new Set(held.map((task) => task.id));
      for (const id of ids) {
        const entry = this.running.get(id);
        if (!entry || entry.stopReason) continue;
        if (!heldIds.has(id)) {
          entry.stopReason = "lease-lost";
          entry.controller.abort(new TaskFailure("this server lost its claim on the task"));
        } else if (held.find((task) => task.id === id)?.cancelRequested) {
          entry.stopReason = "cancelled";
          entry.controller.abort(new TaskFailure("cancelled by a user"));
        }
      }
      await this.sweepExpired();
      this.retryingCleanups ??= this.retryPendingCleanups().finally(() => {
        this.retryingCleanups = undefined;
      });
    } catch (error) {
      this.options.logger.error({ err: error }, "task heartbeat failed");
    }
  }

  /** The retries of clean-ups under way (one round at a time: a host that takes long to answer must not pile them up). */
  private retryingCleanups: Promise<void> | undefined;

  /**
   * Retries clean-ups of hosts that could not be reached when their task stopped, when
   * their time has come; each is claimed first, so two nodes never retry the same one.
   */
  private async retryPendingCleanups(): Promise<void> {
    try {
      for (const pending of await duePendingCleanups(this.options.db)) {
        const kind = this.kinds.get(pending.taskKind);
        if (!kind?.retryCleanup || !(await claimPendingCleanup(this.options.db, pending))) continue;
        const log = new TaskLog(this.options.db, pending.taskId, this.logOptions, pending.logBytes);
        const done = await kind.retryCleanup(pending, log).catch(() => false);
        await log.flush();
        if (done)
          this.options.logger.info(
            { taskId: pending.taskId, target: pending.target.name },
            "clean-up retried and done",
          );
      }
    } catch (error) {
      this.options.logger.error({ err: error }, "retrying pending clean-ups failed");
    }
  }

  /** Interrupts tasks whose lease expired (their server died) and cleans up after them. */
  private async sweepExpired(): Promise<void> {
    for (const row of await interruptExpiredTasks(this.options.db)) {
      const log = new TaskLog(this.options.db, row.id, this.logOptions, Number(row.log_bytes));
      await this.cleanup(this.kinds.get(row.kind), row.id, JSON.parse(row.payload), log);
      log.info("clean-up after the interruption finished");
      await log.flush();
      this.events.emit("state", row.id);
      const finished = finishedEvent(row, "interrupted");
      this.notify(row.id, (observer) => observer.taskFinished?.(finished));
      this.options.logger.warn({ taskId: row.id }, "interrupted a task whose server stopped");
    }
  }
}

function startedEvent(row: TaskRow): TaskStartedEvent {
  return {
    taskId: row.id,
    kind: row.kind,
    projectId: row.project_id,
    environmentId: row.environment_id,
    createdAt: row.created_at,
    startedAt: row.started_at ?? row.created_at,
  };
}

function finishedEvent(row: TaskRow, outcome: TaskOutcome): TaskFinishedEvent {
  const started = startedEvent(row);
  const finishedAt = new Date();
  return {
    ...started,
    outcome,
    finishedAt: finishedAt.toISOString(),
    durationSeconds: Math.max(0, (finishedAt.getTime() - Date.parse(started.startedAt)) / 1000),
  };
}
