import type { Kysely } from "kysely";
import { nowIso } from "./common.js";
import { TARGET_INFO_COLUMNS, type TargetInfo, targetInfoOf } from "./deployments.js";
import type { Database } from "./schema.js";

/*
 * Clean-ups of unfinished tasks on hosts that could not be reached when they ran (a host
 * down, a link cut): remembered here and retried until the host answers, so what a task
 * left on a host goes once the host is back (docs/decisions/0031-data-plane-per-host.md).
 */

/** The first retry after this long; each failure doubles the pause, up to MAX_PAUSE_MS. */
const FIRST_PAUSE_MS = 5_000;
const MAX_PAUSE_MS = 5 * 60_000;

export interface PendingCleanup {
  taskId: string;
  taskKind: string;
  /** The task's log size, to append to its log. */
  logBytes: number;
  target: TargetInfo;
  attempts: number;
  /** The value that claims it (compare-and-set), so two server nodes never retry it at once. */
  nextAttemptAt: string;
}

function pauseAfter(attempts: number): number {
  return Math.min(MAX_PAUSE_MS, FIRST_PAUSE_MS * 2 ** Math.min(attempts, 16));
}

/** Remembers that the task's clean-up on the target is still to do (again: the error is updated). */
export async function recordPendingCleanup(
  db: Kysely<Database>,
  taskId: string,
  targetId: string,
  error: string,
): Promise<void> {
  const now = Date.now();
  await db
    .insertInto("pending_cleanups")
    .values({
      task_id: taskId,
      target_id: targetId,
      created_at: new Date(now).toISOString(),
      next_attempt_at: new Date(now + pauseAfter(0)).toISOString(),
      attempts: 0,
      last_error: error.slice(0, 1000),
    })
    .onConflict((conflict) =>
      conflict.columns(["task_id", "target_id"]).doUpdateSet({ last_error: error.slice(0, 1000) }),
    )
    .execute();
}

/** Pending clean-ups whose time has come, on targets that still exist (the others are dropped). */
export async function duePendingCleanups(db: Kysely<Database>, limit = 20): Promise<PendingCleanup[]> {
  // A target deleted meanwhile has nothing left to clean (and nothing to reach it by). Read
  // first: the heartbeat calls this every few seconds, and a write would take SQLite's lock.
  const orphans = await db
    .selectFrom("pending_cleanups as p")
    .leftJoin("targets as t", "t.id", "p.target_id")
    .select(["p.task_id", "p.target_id"])
    .where("t.id", "is", null)
    .limit(100)
    .execute();
  for (const orphan of orphans) await finishPendingCleanup(db, orphan.task_id, orphan.target_id);
  const rows = await db
    .selectFrom("pending_cleanups as p")
    .innerJoin("targets as t", "t.id", "p.target_id")
    .innerJoin("tasks as k", "k.id", "p.task_id")
    .select([...TARGET_INFO_COLUMNS, "p.task_id", "p.attempts", "p.next_attempt_at", "k.kind", "k.log_bytes"])
    .where("p.next_attempt_at", "<=", nowIso())
    .orderBy("p.next_attempt_at")
    .limit(limit)
    .execute();
  return rows.map((row) => ({
    taskId: row.task_id,
    taskKind: row.kind,
    logBytes: Number(row.log_bytes),
    target: targetInfoOf(row),
    attempts: Number(row.attempts),
    nextAttemptAt: row.next_attempt_at,
  }));
}

/**
 * Takes the retry for this node: moves its next attempt on (as if it failed) only if no one
 * else did since it was read. False: another node has it.
 */
export async function claimPendingCleanup(db: Kysely<Database>, pending: PendingCleanup): Promise<boolean> {
  const result = await db
    .updateTable("pending_cleanups")
    .set({
      attempts: pending.attempts + 1,
      next_attempt_at: new Date(Date.now() + pauseAfter(pending.attempts + 1)).toISOString(),
    })
    .where("task_id", "=", pending.taskId)
    .where("target_id", "=", pending.target.id)
    .where("next_attempt_at", "=", pending.nextAttemptAt)
    .executeTakeFirst();
  return Number(result.numUpdatedRows) === 1;
}

export async function finishPendingCleanup(db: Kysely<Database>, taskId: string, targetId: string): Promise<void> {
  await db.deleteFrom("pending_cleanups").where("task_id", "=", taskId).where("target_id", "=", targetId).execute();
}

export async function notePendingCleanupError(
  db: Kysely<Database>,
  taskId: string,
  targetId: string,
  error: string,
): Promise<void> {
  await db
    .updateTable("pending_cleanups")
    .set({ last_error: error.slice(0, 1000) })
    .where("task_id", "=", taskId)
    .where("target_id", "=", targetId)
    .execute();
}
