import type { FastifyBaseLogger } from "fastify";
import type { Kysely } from "kysely";
import { runsPastRetention } from "../domain/retention.js";
import type { ArtifactContent } from "../store/artifactContent.js";
import { artifactRetentionScopes } from "../store/artifactRetention.js";
import { type ArtifactRow, artifactsOfTasks, deleteArtifacts } from "../store/artifacts.js";
import type { Database } from "../store/schema.js";
import type { TaskFinishedEvent, TaskObserver } from "./observers.js";

export interface ArtifactRetentionOptions {
  db: Kysely<Database>;
  content: ArtifactContent;
  logger: Pick<FastifyBaseLogger, "info" | "warn">;
  /** Between two sweeps of every runbook (jittered ±25 %); default an hour. */
  intervalMs?: number;
}

/**
 * Artifact retention (issue 14 part 5, ADR 0037): per runbook and environment, the artifacts
 * of runs past the policy's count or age are removed — bytes and rows — never those of the
 * newest run that succeeded. Applied after each runbook run ends (for its runbook and
 * environment) and on a jittered timer on every node (removing is idempotent: a row another
 * node removed first is skipped). The sweep also removes artifacts whose task is gone, so
 * whatever deletes tasks without telling `removeTaskArtifacts` leaves no bytes behind.
 */
export class ArtifactRetention implements TaskObserver {
  #timer: NodeJS.Timeout | undefined;
  #stopped = true;
  /** One sweep at a time on a node: two never remove the same artifacts at once here. */
  #pending: Promise<unknown> = Promise.resolve();

  constructor(private readonly options: ArtifactRetentionOptions) {}

  start(): void {
    this.#stopped = false;
    this.#schedule(Math.min(this.#interval, 10_000));
  }

  async stop(): Promise<void> {
    this.#stopped = true;
    clearTimeout(this.#timer);
    await this.#pending.catch(() => undefined);
  }

  get #interval(): number {
    return this.options.intervalMs ?? 60 * 60_000;
  }

  /** A runbook run ended: its runbook's policy in its environment, without the engine waiting. */
  taskFinished(event: TaskFinishedEvent): void {
    if (event.kind !== "runbook" || event.environmentId === null || this.#stopped) return;
    const { taskId } = event;
    void this.#enqueue(async () => {
      const run = await this.options.db
        .selectFrom("runbook_runs")
        .select(["runbook_id", "environment_id"])
        .where("task_id", "=", taskId)
        .executeTakeFirst();
      return run ? this.#apply({ runbookId: run.runbook_id, environmentId: run.environment_id }) : 0;
    }).catch(() => undefined);
  }

  /** Applies every policy (or one runbook's in one environment) and removes orphans; returns how many artifacts went. */
  sweep(only?: { runbookId: string; environmentId: string }): Promise<number> {
    return this.#enqueue(async () => (await this.#apply(only)) + (only ? 0 : await this.#removeOrphans()));
  }

  /**
   * Removes the artifacts of tasks about to be deleted (run retention calls it first): a
   * failure throws, so the caller keeps the tasks and tries again later.
   */
  removeTaskArtifacts(taskIds: readonly string[]): Promise<number> {
    return this.#enqueue(async () => this.#remove(await artifactsOfTasks(this.options.db, taskIds)));
  }

  #enqueue<T>(work: () => Promise<T>): Promise<T> {
    const result = this.#pending.then(work);
    this.#pending = result.catch((error: unknown) =>
      this.options.logger.warn({ err: error }, "could not apply artifact retention (tried again at the next sweep)"),
    );
    return result;
  }

  #schedule(delayMs: number): void {
    if (this.#stopped) return;
    this.#timer = setTimeout(() => {
      void this.sweep()
        .catch(() => undefined)
        .finally(() => this.#schedule(this.#interval * (0.75 + Math.random() / 2)));
    }, delayMs);
    this.#timer.unref();
  }

  async #apply(only?: { runbookId: string; environmentId: string }): Promise<number> {
    let removed = 0;
    const now = new Date();
    for (const scope of await artifactRetentionScopes(this.options.db, only)) {
      const taskIds = runsPastRetention(scope.runs, scope.policy, now);
      if (taskIds.length === 0) continue;
      const count = await this.#remove(await artifactsOfTasks(this.options.db, taskIds));
      if (count > 0) {
        this.options.logger.info(
          { runbook: scope.runbookId, environment: scope.environmentId, removed: count, ...scope.policy },
          `artifact retention removed ${count} artifact(s) of a runbook's older runs`,
        );
      }
      removed += count;
    }
    return removed;
  }

  async #removeOrphans(): Promise<number> {
    const orphans = await this.options.db
      .selectFrom("artifacts")
      .selectAll()
      .where(({ not, exists, selectFrom }) =>
        not(exists(selectFrom("tasks").select("tasks.id").whereRef("tasks.id", "=", "artifacts.task_id"))),
      )
      .limit(1000)
      .execute();
    return this.#remove(orphans);
  }

  #remove(rows: readonly ArtifactRow[]): Promise<number> {
    return deleteArtifacts(this.options.db, this.options.content, rows);
  }
}
