/** How a task that ran ended. */
export type TaskOutcome = "succeeded" | "failed" | "cancelled" | "interrupted";

/** A task this engine started running (its claim won). */
export interface TaskStartedEvent {
  readonly taskId: string;
  readonly kind: string;
  readonly projectId: string | null;
  readonly environmentId: string | null;
  /** When it was queued and when it started (ISO-8601 UTC). */
  readonly createdAt: string;
  readonly startedAt: string;
}

/**
 * A task that ended: run by this engine, or interrupted by it because the node running it
 * died. A task cancelled before it ever started has no events.
 */
export interface TaskFinishedEvent extends TaskStartedEvent {
  readonly outcome: TaskOutcome;
  readonly finishedAt: string;
  readonly durationSeconds: number;
}

/**
 * Told when tasks start and end (metrics, deployment webhooks). The engine calls it
 * synchronously on its own path: an observer returns at once, starting any slow work of
 * its own without the engine waiting for it. What it throws is logged and ignored.
 */
export interface TaskObserver {
  taskStarted?(event: TaskStartedEvent): void;
  taskFinished?(event: TaskFinishedEvent): void;
}
