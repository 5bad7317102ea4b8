import type { Insertable, Kysely, Selectable } from "kysely";
import type { Artifact } from "../domain/artifacts.js";
import { NotFoundError } from "../domain/errors.js";
import type { ArtifactContent } from "./artifactContent.js";
import type { Executor } from "./common.js";
import type { ArtifactRow as ArtifactTable, Database } from "./schema.js";

/** An artifact's row as read (its size a string on PostgreSQL, whose bigint pg returns as text). */
export type ArtifactRow = Selectable<ArtifactTable>;

export function toArtifact(row: ArtifactRow): Artifact {
  return {
    id: row.id,
    taskId: row.task_id,
    name: row.name,
    size: Number(row.size),
    sha256: row.sha256,
    step: row.step_name,
    target: row.target_name,
    projectId: row.project_id,
    environmentId: row.environment_id,
    runbookId: row.runbook_id,
    createdAt: row.created_at,
  };
}

export async function insertArtifact(db: Executor, row: Insertable<ArtifactTable>): Promise<void> {
  await db.insertInto("artifacts").values(row).execute();
}

/** A task's artifacts, in the order they were attached. */
export async function listTaskArtifacts(db: Executor, taskId: string): Promise<ArtifactRow[]> {
  return db
    .selectFrom("artifacts")
    .selectAll()
    .where("task_id", "=", taskId)
    .orderBy("created_at")
    .orderBy("id")
    .execute();
}

export async function getArtifactRow(db: Executor, id: string): Promise<ArtifactRow> {
  const row = await db.selectFrom("artifacts").selectAll().where("id", "=", id).executeTakeFirst();
  if (!row) throw new NotFoundError(`no artifact '${id}'; list a task's with 'ferry artifact list --task <task>'`);
  return row;
}

/**
 * Removes artifacts, row and bytes. A large object goes in its row's own transaction; a file
 * right after its row (a crash in between leaves a file no row names, which shows nothing to
 * anyone). Returns how many were removed.
 */
export async function deleteArtifacts(
  db: Kysely<Database>,
  content: ArtifactContent,
  rows: readonly ArtifactRow[],
): Promise<number> {
  let removed = 0;
  for (const row of rows) {
    const deleted = await db.transaction().execute(async (transaction) => {
      const result = await transaction.deleteFrom("artifacts").where("id", "=", row.id).executeTakeFirst();
      if (Number(result.numDeletedRows) === 0) return false;
      if (row.storage === "largeObject") await content.remove(row.location, transaction);
      return true;
    });
    if (!deleted) continue;
    if (row.storage === "directory") await content.remove(row.location, db);
    removed++;
  }
  return removed;
}

/** The artifacts of these tasks (for removal with them). */
export async function artifactsOfTasks(db: Executor, taskIds: readonly string[]): Promise<ArtifactRow[]> {
  if (taskIds.length === 0) return [];
  return db
    .selectFrom("artifacts")
    .selectAll()
    .where("task_id", "in", [...taskIds])
    .execute();
}
