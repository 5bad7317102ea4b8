import type { Kysely, Selectable } from "kysely";
import type { TargetHealth } from "../domain/targets.js";
import { type Executor, parseJsonList } from "./common.js";
import { TARGET_INFO_COLUMNS, type TargetInfo, targetInfoOf } from "./deployments.js";
import type { Database, TargetHealthRow } from "./schema.js";

/*
 * The last health check of each target, and the schedule of the next one. The schedule is
 * shared by every server node: a node claims a due target by moving its next_check_at
 * forward with a conditional UPDATE (checked by row count), so each target is checked by one
 * node at a time, and a node that dies mid-check leaves the target due again once the claim
 * (the check's timeout) has passed.
 */

/** What one check found (src/engine/targetHealth.ts). */
export interface TargetHealthResult {
  state: "up" | "down";
  checkedAt: string;
  reachable: boolean;
  dockerVersion: string | null;
  diskFreeBytes: number | null;
  router: "up" | "down" | null;
  error: string | null;
}

/** A target due for a check, with what the check needs to know about it. */
export interface DueTarget extends TargetInfo {
  runtimes: string[];
}

const UNKNOWN: TargetHealth = {
  state: "unknown",
  checkedAt: null,
  reachable: null,
  dockerVersion: null,
  diskFreeBytes: null,
  router: null,
  error: null,
  lastUpAt: null,
};

function toHealth(row: Selectable<TargetHealthRow>): TargetHealth {
  return {
    state: row.state === "up" || row.state === "down" ? row.state : "unknown",
    checkedAt: row.checked_at,
    reachable: row.reachable === null ? null : Number(row.reachable) === 1,
    dockerVersion: row.docker_version,
    diskFreeBytes: row.disk_free_bytes === null ? null : Number(row.disk_free_bytes),
    router: row.router === "up" || row.router === "down" ? row.router : null,
    error: row.error,
    lastUpAt: row.last_up_at,
  };
}

/** The health of each target by id; a target never checked is `unknown`. */
export async function targetHealthOf(db: Executor, targetIds: readonly string[]) {
  const health = new Map<string, TargetHealth>(targetIds.map((id) => [id, UNKNOWN]));
  if (targetIds.length === 0) return health;
  const rows = await db.selectFrom("target_health").selectAll().where("target_id", "in", targetIds).execute();
  for (const row of rows) health.set(row.target_id, toHealth(row));
  return health;
}

/**
 * Claims the targets due for a check: each gets a row (due now) the first time it is seen,
 * and a claimed one is not due again until `claimMs` has passed — the check's timeout — or
 * its result is written. Returns only the targets this call claimed, the longest due first,
 * at most `limit`.
 */
export async function claimDueTargets(
  db: Kysely<Database>,
  now: Date,
  claimMs: number,
  limit = 1000,
): Promise<DueTarget[]> {
  const nowText = now.toISOString();
  const unseen = await db
    .selectFrom("targets as t")
    .leftJoin("target_health as h", "h.target_id", "t.id")
    .select("t.id")
    .where("h.target_id", "is", null)
    .execute();
  if (unseen.length > 0) {
    await db
      .insertInto("target_health")
      .values(unseen.map((row) => ({ target_id: row.id, state: "unknown", next_check_at: nowText })))
      // Another node saw it first: its row is as good.
      .onConflict((conflict) => conflict.column("target_id").doNothing())
      .execute();
  }
  const due = await db
    .selectFrom("target_health as h")
    .innerJoin("targets as t", "t.id", "h.target_id")
    .select([...TARGET_INFO_COLUMNS, "t.runtimes", "h.next_check_at"])
    .where("h.next_check_at", "<=", nowText)
    .orderBy("h.next_check_at")
    .limit(limit)
    .execute();
  const claimedUntil = new Date(now.getTime() + claimMs).toISOString();
  const claimed: DueTarget[] = [];
  for (const row of due) {
    // Only if no other node moved it since we read it: one check per target at a time.
    const result = await db
      .updateTable("target_health")
      .set({ next_check_at: claimedUntil })
      .where("target_id", "=", row.id)
      .where("next_check_at", "=", row.next_check_at)
      .executeTakeFirst();
    if (Number(result.numUpdatedRows) !== 1) continue;
    claimed.push({ ...targetInfoOf(row), runtimes: parseJsonList(row.runtimes) });
  }
  return claimed;
}

/** Writes what a check found and when the next one is due; a target deleted meanwhile gets nothing. */
export async function recordTargetHealth(
  db: Kysely<Database>,
  targetId: string,
  result: TargetHealthResult,
  nextCheckAt: Date,
): Promise<void> {
  await db
    .updateTable("target_health")
    .set((eb) => ({
      state: result.state,
      checked_at: result.checkedAt,
      reachable: result.reachable ? 1 : 0,
      docker_version: result.dockerVersion,
      disk_free_bytes: result.diskFreeBytes,
      router: result.router,
      error: result.error,
      last_up_at: result.state === "up" ? result.checkedAt : eb.ref("last_up_at"),
      next_check_at: nextCheckAt.toISOString(),
    }))
    .where("target_id", "=", targetId)
    .execute();
}

/** Each checked target's slug and whether it was up at its last check (for /metrics). */
export async function targetUpStates(db: Kysely<Database>): Promise<{ target: string; up: boolean }[]> {
  const rows = await db
    .selectFrom("target_health as h")
    .innerJoin("targets as t", "t.id", "h.target_id")
    .select(["t.slug", "h.state"])
    .where("h.state", "in", ["up", "down"])
    .orderBy("t.slug")
    .execute();
  return rows.map((row) => ({ target: row.slug, up: row.state === "up" }));
}

/** Forgets a deleted target's health (in the transaction that deletes it). */
export async function deleteTargetHealth(db: Executor, targetId: string): Promise<void> {
  await db.deleteFrom("target_health").where("target_id", "=", targetId).execute();
}
