import type { Kysely } from "kysely";
import { type Reach, reaches } from "../domain/access.js";
import { type DeploymentKind, deploymentKinds } from "../domain/deployments.js";
import type { DeploymentRecord } from "../domain/dora.js";
import type { Database } from "./schema.js";

const ENDED_STATES = ["succeeded", "failed", "cancelled", "interrupted"] as const;

/**
 * Every ended deployment of the project and/or environment (all when not given), ordered
 * by project, environment position and end. The whole history, not only the window: the
 * DORA figures need what came before it (domain/dora.ts).
 */
export async function loadDeploymentRecords(
  db: Kysely<Database>,
  filter: { projectId?: string | undefined; environmentId?: string | undefined; visible?: Reach },
): Promise<DeploymentRecord[]> {
  let query = db
    .selectFrom("deployments as d")
    .innerJoin("tasks as t", "t.id", "d.task_id")
    .innerJoin("releases as r", "r.id", "d.release_id")
    .innerJoin("projects as p", "p.id", "d.project_id")
    .innerJoin("environments as e", "e.id", "d.environment_id")
    .select([
      "d.id",
      "d.kind",
      "d.project_id",
      "d.environment_id",
      "p.slug as project",
      "e.slug as environment",
      "r.id as releaseId",
      "r.created_at as releaseCreatedAt",
      "t.finished_at as finishedAt",
      "t.state as outcome",
    ])
    .where("t.state", "in", ENDED_STATES)
    .where("t.finished_at", "is not", null);
  if (filter.projectId) query = query.where("d.project_id", "=", filter.projectId);
  if (filter.environmentId) query = query.where("d.environment_id", "=", filter.environmentId);
  const rows = await query.orderBy("p.slug").orderBy("e.position").orderBy("t.finished_at").orderBy("d.id").execute();
  const visible = filter.visible;
  return rows
    .filter((row) => !visible || reaches(visible, row.project_id, row.environment_id))
    .map((row) => ({
      id: row.id,
      project: row.project,
      environment: row.environment,
      releaseId: row.releaseId,
      releaseCreatedAt: row.releaseCreatedAt,
      finishedAt: row.finishedAt ?? "",
      outcome: row.outcome as DeploymentRecord["outcome"],
      kind: (deploymentKinds as readonly string[]).includes(row.kind) ? (row.kind as DeploymentKind) : "deploy",
    }));
}
