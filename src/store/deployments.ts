import type { ExpressionBuilder, Kysely } from "kysely";
import type { ProgressionPhase } from "../domain/progression.js";
import { type TargetRouter, type TransportKind, transportKinds } from "../domain/targets.js";
import { type Executor, findNamed, nowIso } from "./common.js";
import type { Database } from "./schema.js";
import { routerOf } from "./targets.js";

/*
 * Queries deployments need: lifecycle phases by environment id, where a release has
 * succeeded, and an environment's targets.
 */

export async function lifecyclePhases(
  db: Kysely<Database>,
  projectId: string,
): Promise<{ name: string; phases: ProgressionPhase[] }> {
  const lifecycle = await db
    .selectFrom("projects as p")
    .innerJoin("lifecycles as l", "l.id", "p.lifecycle_id")
    .select(["l.id", "l.name"])
    .where("p.id", "=", projectId)
    .executeTakeFirstOrThrow();
  const phases = await db
    .selectFrom("lifecycle_phases")
    .selectAll()
    .where("lifecycle_id", "=", lifecycle.id)
    .orderBy("position")
    .execute();
  const members = await db
    .selectFrom("lifecycle_phase_environments")
    .selectAll()
    .where("lifecycle_id", "=", lifecycle.id)
    .orderBy("position")
    .execute();
  return {
    name: lifecycle.name,
    phases: phases.map((phase) => ({
      name: phase.name,
      environmentIds: members
        .filter((member) => Number(member.phase_position) === Number(phase.position))
        .map((member) => member.environment_id),
      autoDeploy: phase.auto_deploy === 1,
      optional: phase.optional === 1,
      acceptSkippedSteps: phase.accept_skipped_steps === 1,
      separateApprover: phase.separate_approver === 1,
    })),
  };
}

/**
 * Environments where this release has a successful deployment that counts for the
 * lifecycle: per environment, one seek in deployments_by_release that stops at the first
 * success, however often the release was deployed there (every deployment request asks
 * this). A deployment whose required steps a person skipped counts only in the
 * environments listed in `acceptSkippedSteps` (their phase says it may).
 */
export async function succeededEnvironments(
  db: Kysely<Database>,
  releaseId: string,
  acceptSkippedSteps: readonly string[] = [],
): Promise<Set<string>> {
  const rows = await db
    .selectFrom("environments as e")
    .select("e.id")
    .where(({ exists, selectFrom }) =>
      exists(
        selectFrom("deployments as d")
          .innerJoin("tasks as t", "t.id", "d.task_id")
          .select("d.id")
          .whereRef("d.environment_id", "=", "e.id")
          .where("d.release_id", "=", releaseId)
          .where("t.state", "=", "succeeded")
          .where((eb) => countsForLifecycle(eb, acceptSkippedSteps)),
      ),
    )
    .execute();
  return new Set(rows.map((row) => row.id));
}

/** No skipped required step, or skipped in an environment whose phase accepts it. */
function countsForLifecycle(
  eb: ExpressionBuilder<Database & { d: Database["deployments"] }, "d">,
  acceptSkippedSteps: readonly string[],
) {
  const clean = eb("d.skipped_steps", "=", 0);
  return acceptSkippedSteps.length === 0
    ? clean
    : eb.or([clean, eb("d.environment_id", "in", [...acceptSkippedSteps])]);
}

export async function environmentNames(db: Kysely<Database>): Promise<(id: string) => string> {
  const rows = await db.selectFrom("environments").select(["id", "name"]).execute();
  const names = new Map(rows.map((row) => [row.id, row.name]));
  return (id) => names.get(id) ?? id;
}

/**
 * The releases deployed successfully to the environments, newest first. With
 * `countingFor`, only deployments that count for the lifecycle (see succeededEnvironments).
 */
export async function successfulReleases(
  db: Kysely<Database>,
  projectId: string,
  environmentIds: readonly string[],
  countingFor?: { acceptSkippedSteps: readonly string[] },
) {
  if (environmentIds.length === 0) return [];
  let query = db
    .selectFrom("deployments as d")
    .innerJoin("tasks as t", "t.id", "d.task_id")
    .innerJoin("releases as r", "r.id", "d.release_id")
    .select(["r.id as releaseId", "r.version", "d.environment_id as environmentId", "t.finished_at as finishedAt"])
    .where("d.project_id", "=", projectId)
    .where("d.environment_id", "in", environmentIds)
    .where("t.state", "=", "succeeded");
  if (countingFor) query = query.where((eb) => countsForLifecycle(eb, countingFor.acceptSkippedSteps));
  return query.orderBy("t.finished_at", "desc").execute();
}

/** Whether the latest deployment that ran in the environment (started and ended) succeeded; true when none did. */
export async function lastDeploymentSucceeded(db: Kysely<Database>, projectId: string, environmentId: string) {
  const latest = await db
    .selectFrom("deployments as d")
    .innerJoin("tasks as t", "t.id", "d.task_id")
    .select("t.state")
    .where("d.project_id", "=", projectId)
    .where("d.environment_id", "=", environmentId)
    .where("t.started_at", "is not", null)
    .where("t.finished_at", "is not", null)
    .orderBy("t.finished_at", "desc")
    .limit(1)
    .executeTakeFirst();
  return latest === undefined || latest.state === "succeeded";
}

export interface TargetInfo {
  id: string;
  /** Part of the default names of what steps create there: two targets on one host do not share a container. */
  slug: string;
  name: string;
  roles: string[];
  /** How the host is reached; the transport loads the rest of its settings (an SSH key…) when it connects. */
  transport: TransportKind;
  /** The traffic router on the host (remote targets); null: none configured. */
  router: TargetRouter | null;
}

/** The columns targetInfoOf reads. */
export const TARGET_INFO_COLUMNS = ["t.id", "t.slug", "t.name", "t.roles", "t.transport", "t.router"] as const;

/** A target row's id, name, roles, transport and router as the engine sees them. */
export function targetInfoOf(row: {
  id: string;
  slug: string;
  name: string;
  roles: string;
  transport: string;
  router: string | null;
}): TargetInfo {
  return {
    id: row.id,
    slug: row.slug,
    router: routerOf(row),
    name: row.name,
    roles: JSON.parse(row.roles) as string[],
    transport: (transportKinds as readonly string[]).includes(row.transport)
      ? (row.transport as TransportKind)
      : "local",
  };
}

export async function environmentTargets(db: Kysely<Database>, environmentId: string): Promise<TargetInfo[]> {
  const rows = await db
    .selectFrom("target_environments as te")
    .innerJoin("targets as t", "t.id", "te.target_id")
    .select(TARGET_INFO_COLUMNS)
    .where("te.environment_id", "=", environmentId)
    .orderBy("t.name")
    .execute();
  return rows.map(targetInfoOf);
}

/** Every target with a router of its own on its host (start-up reconciliation visits each). */
export async function targetsWithRouters(db: Kysely<Database>): Promise<TargetInfo[]> {
  const rows = await db
    .selectFrom("targets as t")
    .select(TARGET_INFO_COLUMNS)
    .where("t.router", "is not", null)
    .orderBy("t.name")
    .execute();
  return rows.map(targetInfoOf);
}

/** One target (by id or slug) as the engine sees it; NotFoundError naming it when there is none. */
export async function targetInfo(db: Kysely<Database>, reference: string): Promise<TargetInfo> {
  const { id } = await findNamed(db, "targets", reference);
  const row = await db
    .selectFrom("targets as t")
    .select(TARGET_INFO_COLUMNS)
    .where("t.id", "=", id)
    .executeTakeFirstOrThrow();
  return targetInfoOf(row);
}

/** Ids of the targets in an environment (a deployment there locks each). */
export async function environmentTargetIds(db: Kysely<Database>, environmentId: string): Promise<string[]> {
  const rows = await db
    .selectFrom("target_environments")
    .select("target_id")
    .where("environment_id", "=", environmentId)
    .execute();
  return rows.map((row) => row.target_id);
}

/** A deployment's row, written in the transaction that queues its task. */
export async function insertDeployment(
  trx: Executor,
  deployment: { id: string; projectId: string; releaseId: string; environmentId: string; taskId: string; kind: string },
): Promise<void> {
  await trx
    .insertInto("deployments")
    .values({
      id: deployment.id,
      project_id: deployment.projectId,
      release_id: deployment.releaseId,
      environment_id: deployment.environmentId,
      task_id: deployment.taskId,
      created_at: nowIso(),
      kind: deployment.kind,
    })
    .execute();
}

/** What a deployment task works on: the deployment with its release, project and environment. */
export async function loadDeploymentRun(db: Kysely<Database>, deploymentId: string) {
  const deployment = await db
    .selectFrom("deployments")
    .selectAll()
    .where("id", "=", deploymentId)
    .executeTakeFirstOrThrow();
  const [release, project, environment] = await Promise.all([
    db.selectFrom("releases").selectAll().where("id", "=", deployment.release_id).executeTakeFirstOrThrow(),
    db.selectFrom("projects").selectAll().where("id", "=", deployment.project_id).executeTakeFirstOrThrow(),
    db.selectFrom("environments").selectAll().where("id", "=", deployment.environment_id).executeTakeFirstOrThrow(),
  ]);
  return { deployment, release, project, environment };
}

/** Records how many required steps a person skipped (guided failure): progression reads it. */
export async function setSkippedSteps(db: Kysely<Database>, deploymentId: string, skippedSteps: number): Promise<void> {
  await db.updateTable("deployments").set({ skipped_steps: skippedSteps }).where("id", "=", deploymentId).execute();
}

/** Who started a task, as a principal ("user:<id>"); null for the engine's own tasks. */
export async function taskStarterPrincipal(db: Kysely<Database>, taskId: string): Promise<string | null> {
  const row = await db.selectFrom("tasks").select("created_by_principal").where("id", "=", taskId).executeTakeFirst();
  return row?.created_by_principal ?? null;
}
