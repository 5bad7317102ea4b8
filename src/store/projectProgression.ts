import { sql } from "kysely";
import { type Permission, type Reach, reaches } from "../domain/access.js";
import { canDeploy, type DeployDecision, environmentsAcceptingSkippedSteps } from "../domain/progression.js";
import type { DeploymentSummary, ProgressionQuery, ProjectProgression } from "../domain/projectProgression.js";
import type { TaskState } from "../domain/tasks.js";
import { findNamed, type StoreContext } from "./common.js";
import { lifecyclePhases, succeededEnvironments, successfulReleases } from "./deployments.js";

/*
 * A project's progression: what each environment of its lifecycle runs, what a promotion
 * there would deploy and whether it may, and for a page of releases where each went and
 * may go. The decisions use the rules the deployment routes apply (domain/progression.ts
 * and the promotion rule of engine/deployments.ts), so a client can say "not yet, because…"
 * before anyone presses the button; the routes still decide when it is pressed.
 *
 * Cost: a few statements for the project, plus one per release on the page and one per
 * environment (where a release has succeeded), each a seek in deployments_by_release.
 */

export interface ProgressionOptions {
  /** What the caller may view: other environments are left out. */
  visible: Reach;
  /** What the caller may do on the project in the environment (by ids). */
  permissionsOn(projectId: string, environmentId: string): Permission[];
}

export async function getProjectProgression(
  { db }: StoreContext,
  projectReference: string,
  paging: ProgressionQuery,
  options: ProgressionOptions,
): Promise<ProjectProgression> {
  const project = await findNamed(db, "projects", projectReference);
  const lifecycleRow = await db
    .selectFrom("projects as p")
    .innerJoin("lifecycles as l", "l.id", "p.lifecycle_id")
    .select(["l.slug", "l.name"])
    .where("p.id", "=", project.id)
    .executeTakeFirstOrThrow();
  const lifecycle = await lifecyclePhases(db, project.id);
  // A deployment whose required steps a person skipped counts only where its phase accepts that.
  const acceptSkippedSteps = environmentsAcceptingSkippedSteps(lifecycle.phases);
  const environmentRows = await db.selectFrom("environments").select(["id", "slug", "name"]).execute();
  const environmentsById = new Map(environmentRows.map((row) => [row.id, row]));
  const names = { lifecycle: lifecycle.name, environment: (id: string) => environmentsById.get(id)?.name ?? id };
  const decide = (environmentId: string, succeeded: ReadonlySet<string>) =>
    asDecision(canDeploy(lifecycle.phases, environmentId, succeeded, names));

  // The lifecycle's environments in phase order, as far as the caller may view them.
  const members = lifecycle.phases.flatMap((phase, phaseIndex) =>
    phase.environmentIds.flatMap((environmentId) => {
      const environment = environmentsById.get(environmentId);
      if (environment === undefined || !reaches(options.visible, project.id, environmentId)) return [];
      return [{ environment, phase, phaseIndex }];
    }),
  );

  let releaseQuery = db.selectFrom("releases").where("project_id", "=", project.id);
  if (paging.release !== undefined) {
    const reference = paging.release;
    releaseQuery = releaseQuery.where((eb) => eb.or([eb("version", "=", reference), eb("id", "=", reference)]));
  }
  const releaseRows = await releaseQuery
    .select(["id", "version", "notes", "created_by", "created_at"])
    .orderBy("created_at", "desc")
    .limit(paging.limit)
    .offset(paging.offset)
    .execute();
  const { count } = await releaseQuery
    .select((eb) => eb.fn.countAll<number | string>().as("count"))
    .executeTakeFirstOrThrow();

  // Every deployment of the page's releases, newest first: the first per (release, environment) is its newest there.
  const deploymentRows =
    releaseRows.length === 0
      ? []
      : await db
          .selectFrom("deployments as d")
          .innerJoin("tasks as t", "t.id", "d.task_id")
          .select([
            "d.id as deploymentId",
            "d.release_id as releaseId",
            "d.environment_id as environmentId",
            "d.created_at as createdAt",
            "t.id as taskId",
            "t.state",
            "t.finished_at as finishedAt",
          ])
          .where(
            "d.release_id",
            "in",
            releaseRows.map((row) => row.id),
          )
          .orderBy("t.sequence", "desc")
          .execute();
  const versions = new Map(releaseRows.map((row) => [row.id, row.version]));
  const newestOfRelease = new Map<string, DeploymentSummary>();
  for (const row of deploymentRows) {
    const key = `${row.releaseId} ${row.environmentId}`;
    if (newestOfRelease.has(key)) continue;
    newestOfRelease.set(key, {
      deploymentId: row.deploymentId,
      taskId: row.taskId,
      release: versions.get(row.releaseId) ?? "",
      state: row.state as TaskState,
      createdAt: row.createdAt,
      finishedAt: row.finishedAt,
    });
  }

  const releases = [];
  for (const row of releaseRows) {
    const succeeded = await succeededEnvironments(db, row.id, acceptSkippedSteps);
    releases.push({
      id: row.id,
      version: row.version,
      notes: row.notes,
      createdBy: row.created_by,
      createdAt: row.created_at,
      environments: members.map(({ environment }) => ({
        environment: environment.slug,
        deployment: newestOfRelease.get(`${row.id} ${environment.id}`) ?? null,
        ...decide(environment.id, succeeded),
      })),
    });
  }

  const environments = [];
  for (const { environment, phase, phaseIndex } of members) {
    const [live, latest] = await Promise.all([
      newestDeployment(db, project.id, environment.id, true),
      newestDeployment(db, project.id, environment.id, false),
    ]);
    environments.push({
      environment,
      phase: phase.name,
      phaseIndex,
      autoDeploy: phase.autoDeploy,
      optional: phase.optional,
      live,
      latest,
      promotion: await promotionTo(environment, phaseIndex),
      permissions: options.permissionsOn(project.id, environment.id),
    });
  }

  /** What `ferry promote --to` would deploy there, and whether it may (the words of engine/deployments.ts's promote). */
  async function promotionTo(environment: { id: string; name: string }, phaseIndex: number) {
    const previous = lifecycle.phases[phaseIndex - 1];
    if (previous === undefined) {
      return {
        release: null,
        allowed: false,
        reason: `'${environment.name}' is in the first phase of lifecycle '${lifecycle.name}': there is nothing to promote from; deploy a release instead`,
      };
    }
    // As promote picks it: only a deployment that counts for the lifecycle.
    const [candidate] = await successfulReleases(db, project.id, previous.environmentIds, { acceptSkippedSteps });
    if (candidate === undefined) {
      return {
        release: null,
        allowed: false,
        reason: `no release has been deployed successfully to phase '${previous.name}' yet, so there is nothing to promote to '${environment.name}'`,
      };
    }
    const succeeded = await succeededEnvironments(db, candidate.releaseId, acceptSkippedSteps);
    return { release: candidate.version, ...decide(environment.id, succeeded) };
  }

  return {
    project,
    lifecycle: { slug: lifecycleRow.slug, name: lifecycleRow.name },
    environments,
    releases,
    total: Number(count),
    limit: paging.limit,
    offset: paging.offset,
  };
}

function asDecision(decision: DeployDecision): { allowed: boolean; reason: string | null } {
  return decision.allowed ? { allowed: true, reason: null } : { allowed: false, reason: decision.reason };
}

/** The newest deployment of the project in the environment (only a succeeded one: what runs there). */
async function newestDeployment(
  db: StoreContext["db"],
  projectId: string,
  environmentId: string,
  onlySucceeded: boolean,
): Promise<DeploymentSummary | null> {
  let query = db
    .selectFrom("tasks as t")
    .innerJoin("deployments as d", "d.task_id", "t.id")
    .innerJoin("releases as r", "r.id", "d.release_id")
    .select([
      "d.id as deploymentId",
      "t.id as taskId",
      "r.version as release",
      "t.state",
      "d.created_at as createdAt",
      "t.finished_at as finishedAt",
    ])
    .where("t.project_id", "=", projectId)
    .where("t.environment_id", "=", environmentId)
    // Literals, as in store/dashboard.ts: a planner uses the partial indexes of migration 0006
    // only when it can see that the query's condition implies theirs.
    .where("t.kind", "=", sql.lit("deployment"));
  if (onlySucceeded) query = query.where("t.state", "=", sql.lit("succeeded"));
  const row = await query.orderBy("t.sequence", "desc").limit(1).executeTakeFirst();
  return row === undefined ? null : { ...row, state: row.state as TaskState };
}
