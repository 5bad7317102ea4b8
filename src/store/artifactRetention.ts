import type { ArtifactRetention } from "../domain/artifacts.js";
import type { FieldIssue } from "../domain/errors.js";
import type { FinishedRun } from "../domain/retention.js";
import { type Executor, findNamed, type StoreContext, throwIfIssues } from "./common.js";
import { getRunbookRow } from "./runbooks.js";
import type { ArtifactRetentionRow } from "./schema.js";

/** A runbook's artifact retention, environments by slug ("*" for the default). */
export async function getArtifactRetention(
  { db }: StoreContext,
  projectReference: string,
  runbookReference: string,
): Promise<ArtifactRetention> {
  const project = await findNamed(db, "projects", projectReference);
  const runbook = await getRunbookRow(db, project.id, runbookReference);
  return retentionOf(db, runbook.id);
}

async function retentionOf(db: Executor, runbookId: string): Promise<ArtifactRetention> {
  const rows = await db
    .selectFrom("artifact_retention as r")
    .leftJoin("environments as e", "e.id", "r.environment_id")
    .select(["r.environment_id", "e.slug", "r.keep_runs", "r.keep_days"])
    .where("r.runbook_id", "=", runbookId)
    .orderBy("r.environment_id")
    .execute();
  return {
    policies: rows.map((row) => ({
      environment: row.environment_id === "*" ? "*" : (row.slug ?? row.environment_id),
      keepRuns: row.keep_runs,
      keepDays: row.keep_days,
    })),
  };
}

/** Replaces a runbook's artifact retention (an empty list: keep every run's artifacts until the run goes). */
export async function setArtifactRetention(
  { db }: StoreContext,
  projectReference: string,
  runbookReference: string,
  retention: ArtifactRetention,
): Promise<ArtifactRetention> {
  const project = await findNamed(db, "projects", projectReference);
  const runbook = await getRunbookRow(db, project.id, runbookReference);
  const issues: FieldIssue[] = [];
  const rows: ArtifactRetentionRow[] = [];
  for (const [index, policy] of retention.policies.entries()) {
    let environmentId = "*";
    if (policy.environment !== "*") {
      const environment = await db
        .selectFrom("environments")
        .select("id")
        .where((eb) => eb.or([eb("id", "=", policy.environment), eb("slug", "=", policy.environment)]))
        .executeTakeFirst();
      if (!environment) {
        issues.push({
          pointer: `/policies/${index}/environment`,
          detail: `no environment '${policy.environment}'; list them with 'ferry env list', or use * for every environment`,
        });
        continue;
      }
      environmentId = environment.id;
    }
    rows.push({
      runbook_id: runbook.id,
      environment_id: environmentId,
      keep_runs: policy.keepRuns,
      keep_days: policy.keepDays,
    });
  }
  throwIfIssues(issues);
  await db.transaction().execute(async (transaction) => {
    await transaction.deleteFrom("artifact_retention").where("runbook_id", "=", runbook.id).execute();
    if (rows.length > 0) await transaction.insertInto("artifact_retention").values(rows).execute();
  });
  return retentionOf(db, runbook.id);
}

/** One runbook in one environment where it has artifacts, with the policy that applies there and its finished runs. */
export interface ArtifactRetentionScope {
  runbookId: string;
  environmentId: string;
  policy: { keepRuns: number | null; keepDays: number | null };
  runs: FinishedRun[];
}

/**
 * The runbook × environment pairs with artifacts and a policy (one runbook and environment,
 * or all), each with every finished run of that runbook there: the newest successful one
 * among them is what retention never touches.
 */
export async function artifactRetentionScopes(
  db: Executor,
  only?: { runbookId: string; environmentId: string },
): Promise<ArtifactRetentionScope[]> {
  let pairsQuery = db
    .selectFrom("artifacts")
    .select(["runbook_id", "environment_id"])
    .where("runbook_id", "is not", null)
    .groupBy(["runbook_id", "environment_id"]);
  if (only)
    pairsQuery = pairsQuery.where("runbook_id", "=", only.runbookId).where("environment_id", "=", only.environmentId);
  const pairs = await pairsQuery.execute();
  const scopes: ArtifactRetentionScope[] = [];
  for (const pair of pairs) {
    const runbookId = pair.runbook_id as string;
    const policies = await db
      .selectFrom("artifact_retention")
      .selectAll()
      .where("runbook_id", "=", runbookId)
      .where("environment_id", "in", [pair.environment_id, "*"])
      .execute();
    const policy =
      policies.find((candidate) => candidate.environment_id === pair.environment_id) ??
      policies.find((candidate) => candidate.environment_id === "*");
    if (!policy) continue;
    const runs = await db
      .selectFrom("runbook_runs as r")
      .innerJoin("tasks as t", "t.id", "r.task_id")
      .select(["t.id", "t.state", "t.finished_at"])
      .where("r.runbook_id", "=", runbookId)
      .where("r.environment_id", "=", pair.environment_id)
      .where("t.state", "in", ["succeeded", "failed", "cancelled", "interrupted"])
      .execute();
    scopes.push({
      runbookId,
      environmentId: pair.environment_id,
      policy: { keepRuns: policy.keep_runs, keepDays: policy.keep_days },
      runs: runs.map((run) => ({
        taskId: run.id,
        finishedAt: run.finished_at ?? "",
        succeeded: run.state === "succeeded",
      })),
    });
  }
  return scopes;
}
