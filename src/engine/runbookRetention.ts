import type { FastifyBaseLogger } from "fastify";
import type { Kysely } from "kysely";
import { runsPastRetention } from "../domain/retention.js";
import { deleteFinishedTasks, type RetentionScope, retentionScopes } from "../store/runbookSchedules.js";
import type { Database } from "../store/schema.js";
import type { TaskFinishedEvent, TaskObserver } from "./observers.js";

/*
 * Retention of runbook runs (issue 14, part 7; ADR 0036): per runbook and environment, the
 * finished runs past a count or an age are deleted with their tasks and logs — never the
 * newest run that succeeded. It runs on a timer on every node (deleting is idempotent) and
 * after each runbook run ends, for that runbook and environment.
 */

/**
 * Told which tasks are about to be deleted, before their rows go: what keeps files of its
 * own for a task (artifacts) removes them here. A listener that throws keeps those tasks
 * (their rows stay, and the next sweep tries again). Several nodes may sweep at once, so a
 * listener may be told of a task twice, or of one another node already deleted: it must be
 * idempotent.
 */
export type TaskDeletionListener = (taskIds: readonly string[]) => Promise<void>;

export interface RetentionSettings {
  /** Between two sweeps of every runbook (jittered). */
  intervalMs: number;
}

export const defaultRetentionSettings: RetentionSettings = { intervalMs: 60 * 60_000 };

export class RunbookRetention implements TaskObserver {
  private readonly listeners: TaskDeletionListener[] = [];
  private timer: NodeJS.Timeout | undefined;
  private stopped = true;
  /** Sweeps run one after another: two never delete the same runs at once on a node. */
  private pending: Promise<void> = Promise.resolve();

  constructor(private readonly options: RetentionSettings & { db: Kysely<Database>; logger: FastifyBaseLogger }) {}

  /** Adds what runs before a task is deleted (e.g. removing its artifacts). */
  onTaskDeleted(listener: TaskDeletionListener): void {
    this.listeners.push(listener);
  }

  start(): void {
    this.stopped = false;
    this.schedule(Math.min(this.options.intervalMs, 10_000));
  }

  async stop(): Promise<void> {
    this.stopped = true;
    clearTimeout(this.timer);
    await this.pending;
  }

  /** A runbook run ended: apply its runbook's retention in its environment (without the engine waiting). */
  taskFinished(event: TaskFinishedEvent): void {
    if (event.kind !== "runbook" || event.environmentId === null || this.stopped) return;
    const taskId = event.taskId;
    void this.enqueue(async () => {
      const run = await this.options.db
        .selectFrom("runbook_runs")
        .select(["runbook_id", "environment_id"])
        .where("task_id", "=", taskId)
        .executeTakeFirst();
      if (run) await this.apply({ runbookId: run.runbook_id, environmentId: run.environment_id });
    });
  }

  /** Applies every runbook's retention (or one runbook's in one environment); returns the tasks deleted. */
  sweep(only?: { runbookId: string; environmentId: string }): Promise<number> {
    return this.enqueue(() => this.apply(only));
  }

  private enqueue<T>(work: () => Promise<T>): Promise<T> {
    const result = this.pending.then(work);
    this.pending = result.then(
      () => undefined,
      (error: unknown) => this.options.logger.warn({ err: error }, "could not apply the retention of runbook runs"),
    );
    return result;
  }

  private schedule(delayMs: number): void {
    if (this.stopped) return;
    this.timer = setTimeout(() => {
      void this.sweep()
        .catch(() => {})
        .finally(() => this.schedule(this.options.intervalMs * (0.75 + Math.random() / 2)));
    }, delayMs);
    this.timer.unref();
  }

  private async apply(only?: { runbookId: string; environmentId: string }): Promise<number> {
    let deleted = 0;
    const now = new Date();
    for (const scope of await retentionScopes(this.options.db, only)) {
      const taskIds = runsPastRetention(scope.runs, scope.policy, now);
      if (taskIds.length === 0) continue;
      deleted += await this.delete(scope, taskIds);
    }
    return deleted;
  }

  private async delete(scope: RetentionScope, taskIds: string[]): Promise<number> {
    for (const listener of this.listeners) {
      try {
        await listener(taskIds);
      } catch (error) {
        this.options.logger.warn(
          { err: error, runbook: scope.runbookId, environment: scope.environmentId },
          "runs past their retention were kept: removing what belongs to them failed (tried again at the next sweep)",
        );
        return 0;
      }
    }
    const count = await deleteFinishedTasks(this.options.db, taskIds);
    this.options.logger.info(
      { runbook: scope.runbookId, environment: scope.environmentId, deleted: count, ...scope.policy },
      `retention deleted ${count} run(s) of a runbook with their logs`,
    );
    return count;
  }
}
