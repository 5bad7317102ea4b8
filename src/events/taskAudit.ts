import type { FastifyBaseLogger } from "fastify";
import type { TaskFinishedEvent, TaskObserver, TaskStartedEvent } from "../engine/observers.js";
import { appendAuditEvent, type NewAuditEvent } from "../store/audit.js";
import type { StoreContext } from "../store/common.js";
import { getTaskRow } from "../store/tasks.js";

const ENGINE = { id: null, name: "engine" };

/**
 * Writes each task's start and end to the audit log (who asked for the task is in the
 * entry of the request that queued it). A task observer: the engine does not wait for
 * these writes; they are made one after the other, so a task's start comes before its end.
 */
export class TaskAudit implements TaskObserver {
  private pending: Promise<void> = Promise.resolve();

  constructor(
    private readonly context: StoreContext,
    private readonly logger: FastifyBaseLogger,
  ) {}

  taskStarted(event: TaskStartedEvent): void {
    this.append(event, "task.start", { from: "queued", to: "running" });
  }

  taskFinished(event: TaskFinishedEvent): void {
    this.append(event, "task.finish", { from: "running", to: event.outcome });
  }

  /** Waits for the writes already asked for. */
  async close(): Promise<void> {
    await this.pending;
  }

  private append(event: TaskStartedEvent, action: string, state: { from: string; to: string }): void {
    this.pending = this.pending
      .then(async () => {
        const title = await getTaskRow(this.context.db, event.taskId).then(
          (row) => row.title,
          () => event.kind,
        );
        const entry: NewAuditEvent = {
          actor: ENGINE,
          source: "engine",
          action,
          resource: { type: "task", id: event.taskId, name: title },
          diff: { state },
        };
        await appendAuditEvent(this.context, entry);
      })
      .catch((error: unknown) => {
        this.logger.error({ err: error, taskId: event.taskId, audit: action }, "could not write to the audit log");
      });
  }
}
