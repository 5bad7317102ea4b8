import type { Kysely } from "kysely";
import type { Database } from "./schema.js";

/*
 * What /metrics reads from the database at scrape time: a few grouped counts over
 * indexed columns, the same answer on every server node.
 */

const ACTIVE_STATES = ["queued", "running", "waiting"] as const;

/** Queued, running and waiting tasks by kind, with the oldest one's queue time. */
export async function activeTaskCounts(db: Kysely<Database>) {
  const rows = await db
    .selectFrom("tasks")
    .select((eb) => [
      "kind",
      "state",
      eb.fn.countAll<number | string>().as("count"),
      eb.fn.min("created_at").as("oldestCreatedAt"),
    ])
    .where("state", "in", ACTIVE_STATES)
    .groupBy(["kind", "state"])
    .execute();
  return rows.map((row) => ({
    kind: row.kind,
    state: row.state,
    count: Number(row.count),
    oldestCreatedAt: row.oldestCreatedAt,
  }));
}

/** Locks held now, and queued tasks that want one of them (they wait for another task to finish). */
export async function lockCounts(db: Kysely<Database>): Promise<{ held: number; waiting: number }> {
  const held = await db
    .selectFrom("task_locks")
    .select((eb) => eb.fn.countAll<number | string>().as("count"))
    .executeTakeFirstOrThrow();
  const waiting = await db
    .selectFrom("task_lock_requests as r")
    .innerJoin("tasks as t", "t.id", "r.task_id")
    .innerJoin("task_locks as l", "l.lock_key", "r.lock_key")
    .select((eb) => eb.fn.count<number | string>("r.task_id").distinct().as("count"))
    .where("t.state", "=", "queued")
    .whereRef("l.task_id", "!=", "r.task_id")
    .executeTakeFirstOrThrow();
  return { held: Number(held.count), waiting: Number(waiting.count) };
}

/** Deployments by project slug, environment slug and their task's state. */
export async function deploymentCounts(db: Kysely<Database>) {
  const rows = await db
    .selectFrom("deployments as d")
    .innerJoin("tasks as t", "t.id", "d.task_id")
    .innerJoin("projects as p", "p.id", "d.project_id")
    .innerJoin("environments as e", "e.id", "d.environment_id")
    .select((eb) => [
      "p.slug as project",
      "e.slug as environment",
      "t.state as state",
      eb.fn.countAll<number | string>().as("count"),
    ])
    .groupBy(["p.slug", "e.slug", "t.state"])
    .orderBy("p.slug")
    .orderBy("e.slug")
    .execute();
  return rows.map((row) => ({ ...row, count: Number(row.count) }));
}
