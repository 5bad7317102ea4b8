import type { Kysely } from "kysely";
import { TARGET_INFO_COLUMNS, type TargetInfo, targetInfoOf } from "./deployments.js";
import type { Database } from "./schema.js";

/*
 * The hosts each task touched: written before a step runs on a target, read by clean-up
 * after a crash or cancel, so leftovers are removed where they are, not on whichever
 * server node happens to recover the task.
 */

/** Notes that the task is about to run a step on the target (null: the server's own host, not recorded). */
export async function recordTaskTarget(db: Kysely<Database>, taskId: string, targetId: string | null): Promise<void> {
  if (targetId === null) return;
  await db
    .insertInto("task_targets")
    .values({ task_id: taskId, target_id: targetId })
    .onConflict((conflict) => conflict.columns(["task_id", "target_id"]).doNothing())
    .execute();
}

/** The targets a task touched that still exist. */
export async function touchedTargets(db: Kysely<Database>, taskId: string): Promise<TargetInfo[]> {
  const rows = await db
    .selectFrom("task_targets as tt")
    .innerJoin("targets as t", "t.id", "tt.target_id")
    .select(TARGET_INFO_COLUMNS)
    .where("tt.task_id", "=", taskId)
    .orderBy("t.name")
    .execute();
  return rows.map(targetInfoOf);
}
