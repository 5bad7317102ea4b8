import { type Expression, type Kysely, sql } from "kysely";
import { type Reach, reachedIds, reaches } from "../domain/access.js";
import type { Dashboard, DashboardCell, DashboardDeployment, DashboardQuery } from "../domain/dashboard.js";
import { type FieldIssue, NotFoundError } from "../domain/errors.js";
import { type TaskState, taskStates } from "../domain/tasks.js";
import { type NamedTable, nowIso, resolveReference, type StoreContext, throwIfIssues } from "./common.js";
import type { Database } from "./schema.js";

/*
 * The dashboard: for a page of projects and every environment, the newest deployment and
 * the newest successful one ("live"). It only reads: nothing is maintained beside the
 * deployments and tasks themselves (docs/decisions/0014-dashboard.md says why).
 *
 * The cost of a page is bounded by projects × environments, never by history: each cell
 * is one seek in a partial index of migration 0006 that also holds the answer (the newest
 * deployment task's sequence), then that task, its deployment and release by key. Only
 * where the newest deployment did not succeed (a few cells) does a second seek, in the
 * index of succeeded ones, find the live release. All of it is one statement, so a page
 * costs three round trips (environments, count, cells) however many cells it has.
 *
 * Order is the task's `sequence` (enqueue order, unique and monotonic): deployments to
 * one environment run one at a time in that order, so the newest succeeded one by
 * sequence is also the one that finished last — what the environment runs.
 */

/**
 * The sequence of the newest deployment task of a (project, environment), optionally only
 * a succeeded one. The literals are inlined on purpose: a planner uses a partial index
 * only when the query's own condition implies the index's, which a bound parameter cannot
 * show.
 */
function newestDeploymentTask(
  db: Kysely<Database>,
  projectId: Expression<string>,
  environmentId: Expression<string>,
  onlySucceeded: boolean,
) {
  let query = db
    .selectFrom("tasks as t")
    .select("t.sequence")
    .where("t.project_id", "=", projectId)
    .where("t.environment_id", "=", environmentId)
    .where("t.kind", "=", sql.lit("deployment"));
  if (onlySucceeded) query = query.where("t.state", "=", sql.lit("succeeded"));
  return query.orderBy("t.sequence", "desc").limit(1);
}

/** With `visible`, only the projects, environments and cells the caller may view. */
export async function getDashboard(
  { db }: StoreContext,
  query: DashboardQuery,
  visible: Reach = { boxes: null },
): Promise<Dashboard> {
  const generatedAt = nowIso();
  const issues: FieldIssue[] = [];
  const filter = async (table: NamedTable, reference: string | undefined, pointer: string) =>
    reference === undefined ? undefined : resolveReference(db, table, reference, pointer, issues);
  const projectId = await filter("projects", query.project, "/project");
  const environmentId = await filter("environments", query.environment, "/environment");
  throwIfIssues(issues.map((issue) => ({ ...issue, in: "query" as const })));

  // A project or environment the caller may not view is answered like one that does not exist.
  const visibleProjects = reachedIds(visible, "projects");
  const visibleEnvironments = reachedIds(visible, "environments");
  if (projectId !== undefined && visibleProjects && !visibleProjects.has(projectId)) {
    throw new NotFoundError(`no project '${query.project}'; list them with 'ferry project list'`);
  }
  if (environmentId !== undefined && visibleEnvironments && !visibleEnvironments.has(environmentId)) {
    throw new NotFoundError(`no environment '${query.environment}'; list them with 'ferry env list'`);
  }
  let environmentQuery = db.selectFrom("environments").select(["id", "slug", "name"]).orderBy("position");
  if (environmentId !== undefined) environmentQuery = environmentQuery.where("id", "=", environmentId);
  if (visibleEnvironments) environmentQuery = environmentQuery.where("id", "in", ["", ...visibleEnvironments]);
  const environments = await environmentQuery.execute();

  let projectQuery = db
    .selectFrom("projects as pr")
    .innerJoin("lifecycles as l", "l.id", "pr.lifecycle_id")
    .select(["pr.id", "pr.slug", "pr.name", "pr.lifecycle_id", "l.slug as lifecycle"]);
  if (projectId !== undefined) projectQuery = projectQuery.where("pr.id", "=", projectId);
  if (visibleProjects) projectQuery = projectQuery.where("pr.id", "in", ["", ...visibleProjects]);
  const { count } = await db
    .selectFrom(projectQuery.as("matching"))
    .select((eb) => eb.fn.countAll<number | string>().as("count"))
    .executeTakeFirstOrThrow();
  const pageOfProjects = projectQuery.orderBy("pr.name").limit(query.limit).offset(query.offset);
  const page = { generatedAt, environments, total: Number(count), limit: query.limit, offset: query.offset };

  if (environments.length === 0) {
    const projects = await pageOfProjects.execute();
    return {
      ...page,
      items: projects.map(({ id, slug, name, lifecycle }) => ({
        project: { id, slug, name },
        lifecycle,
        environments: [],
      })),
    };
  }

  const cells = await db
    // One row per (project of the page, environment) with its newest deployment task's
    // sequence. Materialized, so each seek runs once per cell: inlined, a planner may
    // copy the subquery into every place its result is used.
    .with(
      (cte) => cte("c").materialized(),
      (qb) =>
        qb
          .selectFrom([pageOfProjects.as("p"), "environments as e"])
          .where(
            "e.id",
            "in",
            environments.map((environment) => environment.id),
          )
          .select((eb) => [
            "p.id as project_id",
            "p.slug as project_slug",
            "p.name as project_name",
            "p.lifecycle",
            "e.id as environment_id",
            "e.slug as environment_slug",
            "e.position",
            eb
              .exists(
                eb
                  .selectFrom("lifecycle_phase_environments as m")
                  .select("m.position")
                  .whereRef("m.lifecycle_id", "=", "p.lifecycle_id")
                  .whereRef("m.environment_id", "=", "e.id"),
              )
              .as("in_lifecycle"),
            newestDeploymentTask(db, sql.ref("p.id"), sql.ref("e.id"), false).as("latest_sequence"),
          ]),
    )
    // The newest deployment itself, and where it did not succeed, the newest that did.
    .with(
      (cte) => cte("n").materialized(),
      (qb) =>
        qb
          .selectFrom("c")
          .leftJoin("tasks as t", "t.sequence", "c.latest_sequence")
          .leftJoin("deployments as d", "d.task_id", "t.id")
          .leftJoin("releases as r", "r.id", "d.release_id")
          .selectAll("c")
          .select([
            "t.id as latest_task_id",
            "t.state as latest_state",
            "t.started_at as latest_started_at",
            "t.finished_at as latest_finished_at",
            "d.id as latest_deployment_id",
            "d.created_at as latest_created_at",
            "r.version as latest_release",
            sql<
              number | string | null
            >`case when ${sql.ref("c.latest_sequence")} is null or ${sql.ref("t.state")} = 'succeeded' then null else (${newestDeploymentTask(db, sql.ref("c.project_id"), sql.ref("c.environment_id"), true)}) end`.as(
              "live_sequence",
            ),
          ]),
    )
    .selectFrom("n")
    .leftJoin("tasks as t", "t.sequence", "n.live_sequence")
    .leftJoin("deployments as d", "d.task_id", "t.id")
    .leftJoin("releases as r", "r.id", "d.release_id")
    .selectAll("n")
    .select([
      "t.id as live_task_id",
      "t.state as live_state",
      "t.started_at as live_started_at",
      "t.finished_at as live_finished_at",
      "d.id as live_deployment_id",
      "d.created_at as live_created_at",
      "r.version as live_release",
    ])
    .orderBy("n.project_name")
    .orderBy("n.position")
    .execute();

  const items: Dashboard["items"] = [];
  for (const cell of cells) {
    let row = items.at(-1);
    if (row?.project.id !== cell.project_id) {
      row = {
        project: { id: cell.project_id, slug: cell.project_slug, name: cell.project_name },
        lifecycle: cell.lifecycle,
        environments: [],
      };
      items.push(row);
    }
    const newest = deployment({
      taskId: cell.latest_task_id,
      deploymentId: cell.latest_deployment_id,
      release: cell.latest_release,
      state: cell.latest_state,
      createdAt: cell.latest_created_at,
      startedAt: cell.latest_started_at,
      finishedAt: cell.latest_finished_at,
    });
    const latest =
      newest ??
      (cell.latest_sequence === null ? null : await newestRecordedDeployment(db, cell.project_id, cell.environment_id));
    const live =
      newest?.state === "succeeded"
        ? newest
        : deployment({
            taskId: cell.live_task_id,
            deploymentId: cell.live_deployment_id,
            release: cell.live_release,
            state: cell.live_state,
            createdAt: cell.live_created_at,
            startedAt: cell.live_started_at,
            finishedAt: cell.live_finished_at,
          });
    if (!reaches(visible, cell.project_id, cell.environment_id)) continue;
    const inLifecycle = Boolean(cell.in_lifecycle);
    // An environment outside the lifecycle that was never deployed to is noise: leave it out.
    if (!inLifecycle && latest === null) continue;
    row.environments.push({ environment: cell.environment_slug, inLifecycle, latest, live } satisfies DashboardCell);
  }
  return { ...page, items };
}

/** A deployment from outer-joined columns: null when the task or its deployment row is missing. */
function deployment(columns: {
  taskId: string | null;
  deploymentId: string | null;
  release: string | null;
  state: string | null;
  createdAt: string | null;
  startedAt: string | null;
  finishedAt: string | null;
}): DashboardDeployment | null {
  const { taskId, deploymentId, release, state, createdAt } = columns;
  if (taskId === null || deploymentId === null || release === null || state === null || createdAt === null) {
    return null;
  }
  return {
    deploymentId,
    taskId,
    release,
    state: toTaskState(state),
    createdAt,
    startedAt: columns.startedAt,
    finishedAt: columns.finishedAt,
  };
}

/**
 * The newest deployment task whose deployment row exists. Today a deployment's task and
 * row are written in one transaction; a database written by an earlier Ferry (which wrote
 * them in two statements) can still hold a task whose row never came, when the server
 * stopped in between.
 */
async function newestRecordedDeployment(
  db: Kysely<Database>,
  projectId: string,
  environmentId: string,
): Promise<DashboardDeployment | null> {
  const row = await db
    .selectFrom("tasks as t")
    .innerJoin("deployments as d", "d.task_id", "t.id")
    .innerJoin("releases as r", "r.id", "d.release_id")
    .select([
      "t.id as taskId",
      "d.id as deploymentId",
      "r.version as release",
      "t.state",
      "d.created_at as createdAt",
      "t.started_at as startedAt",
      "t.finished_at as finishedAt",
    ])
    .where("t.project_id", "=", projectId)
    .where("t.environment_id", "=", environmentId)
    .where("t.kind", "=", sql.lit("deployment"))
    .orderBy("t.sequence", "desc")
    .limit(1)
    .executeTakeFirst();
  return row === undefined ? null : deployment(row);
}

function toTaskState(state: string): TaskState {
  const known = taskStates.find((candidate) => candidate === state);
  if (known === undefined) throw new Error(`task state '${state}' is not one Ferry knows`);
  return known;
}
