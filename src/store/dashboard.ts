import { type ExpressionBuilder, type Kysely, sql } from "kysely";
import type { Dashboard, DashboardCell, DashboardDeployment, DashboardQuery } from "../domain/dashboard.js";
import type { FieldIssue } from "../domain/errors.js";
import { type TaskState, taskStates } from "../domain/tasks.js";
import { type NamedTable, nowIso, resolveReference, type StoreContext, throwIfIssues } from "./common.js";
import type { Database } from "./schema.js";

/*
 * The dashboard: for a page of projects and every environment, the newest deployment and
 * the newest successful one ("live"). It only reads: nothing is maintained beside the
 * deployments and tasks themselves (docs/decisions/0014-dashboard.md says why).
 *
 * The cost of a page is bounded by projects × environments, never by history: each cell
 * is one seek in a partial index of migration 0006 that also holds the answer (the
 * newest deployment task's sequence), then one batched read of those tasks with their
 * deployments and releases. Only where the newest deployment did not succeed (a few
 * cells) does a second seek, in the index of succeeded ones, find the live release.
 * Order is the task's `sequence` (enqueue order, unique and monotonic):
 * deployments to one environment run one at a time in that order, so the newest
 * succeeded one by sequence is also the one that finished last — what the environment runs.
 */

/** Tasks are read in batches of this many (bound parameters stay far under SQLite's limit). */
const DETAIL_BATCH = 1000;
/** (project, environment) pairs are looked up in batches of this many. */
const PAIR_BATCH = 200;

type CellScope = ExpressionBuilder<
  Database & { p: { id: string; lifecycle_id: string }; e: Database["environments"] },
  "p" | "e"
>;

/**
 * The sequence of the newest deployment task of the cell's (project, environment),
 * optionally only a succeeded one. The literals are inlined on purpose: a planner uses a
 * partial index only when the query's own condition implies the index's, which a bound
 * parameter cannot show.
 */
function newestDeploymentTask(eb: CellScope, onlySucceeded: boolean) {
  let query = eb
    .selectFrom("tasks as t")
    .select("t.sequence")
    .whereRef("t.project_id", "=", "p.id")
    .whereRef("t.environment_id", "=", "e.id")
    .where("t.kind", "=", sql.lit("deployment"));
  if (onlySucceeded) query = query.where("t.state", "=", sql.lit("succeeded"));
  return query.orderBy("t.sequence", "desc").limit(1);
}

export async function getDashboard({ db }: StoreContext, query: DashboardQuery): Promise<Dashboard> {
  const generatedAt = nowIso();
  const issues: FieldIssue[] = [];
  const filter = async (table: NamedTable, reference: string | undefined, pointer: string) =>
    reference === undefined ? undefined : resolveReference(db, table, reference, pointer, issues);
  const projectId = await filter("projects", query.project, "/project");
  const environmentId = await filter("environments", query.environment, "/environment");
  throwIfIssues(issues.map((issue) => ({ ...issue, in: "query" as const })));

  let environmentQuery = db.selectFrom("environments").select(["id", "slug", "name"]).orderBy("position");
  if (environmentId !== undefined) environmentQuery = environmentQuery.where("id", "=", environmentId);
  const environments = await environmentQuery.execute();

  let projectQuery = db
    .selectFrom("projects as pr")
    .innerJoin("lifecycles as l", "l.id", "pr.lifecycle_id")
    .select(["pr.id", "pr.slug", "pr.name", "pr.lifecycle_id", "l.slug as lifecycle"]);
  if (projectId !== undefined) projectQuery = projectQuery.where("pr.id", "=", projectId);
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

  // One row per (project of the page, environment), in display order.
  const cells = await db
    .selectFrom([pageOfProjects.as("p"), "environments as e"])
    .where(
      "e.id",
      "in",
      environments.map((environment) => environment.id),
    )
    .select((eb) => [
      "p.id as projectId",
      "p.slug as projectSlug",
      "p.name as projectName",
      "p.lifecycle",
      "e.id as environmentId",
      "e.slug as environmentSlug",
      eb
        .exists(
          eb
            .selectFrom("lifecycle_phase_environments as m")
            .select("m.position")
            .whereRef("m.lifecycle_id", "=", "p.lifecycle_id")
            .whereRef("m.environment_id", "=", "e.id"),
        )
        .as("inLifecycle"),
      newestDeploymentTask(eb, false).as("latestSequence"),
    ])
    .orderBy("p.name")
    .orderBy("e.position")
    .execute();

  const deployments = await deploymentsOfTasks(
    db,
    cells.map((cell) => cell.latestSequence).filter((sequence) => sequence !== null),
  );
  // Where the newest deployment succeeded it is also the live one (usually nearly every
  // cell); only the others need a second seek, for their newest successful deployment.
  const liveSequences = await newestSucceeded(
    db,
    cells.filter((cell) => {
      if (cell.latestSequence === null) return false;
      return deployments.get(Number(cell.latestSequence))?.state !== "succeeded";
    }),
  );
  for (const [sequence, deployment] of await deploymentsOfTasks(db, [...liveSequences.values()])) {
    deployments.set(sequence, deployment);
  }

  const items: Dashboard["items"] = [];
  for (const cell of cells) {
    let row = items.at(-1);
    if (row?.project.id !== cell.projectId) {
      row = {
        project: { id: cell.projectId, slug: cell.projectSlug, name: cell.projectName },
        lifecycle: cell.lifecycle,
        environments: [],
      };
      items.push(row);
    }
    const newest = cell.latestSequence === null ? undefined : deployments.get(Number(cell.latestSequence));
    const latest =
      cell.latestSequence === null
        ? null
        : (newest ?? (await newestRecordedDeployment(db, cell.projectId, cell.environmentId)));
    const liveSequence = liveSequences.get(`${cell.projectId}/${cell.environmentId}`);
    const live =
      newest?.state === "succeeded"
        ? newest
        : liveSequence === undefined
          ? null
          : (deployments.get(liveSequence) ?? null);
    const inLifecycle = Boolean(cell.inLifecycle);
    // An environment outside the lifecycle that was never deployed to is noise: leave it out.
    if (!inLifecycle && latest === null) continue;
    row.environments.push({ environment: cell.environmentSlug, inLifecycle, latest, live } satisfies DashboardCell);
  }
  return { ...page, items };
}

/** The sequence of the newest succeeded deployment task of each (project, environment) given, by "project/environment". */
async function newestSucceeded(
  db: Kysely<Database>,
  cells: readonly { projectId: string; environmentId: string }[],
): Promise<Map<string, number>> {
  const found = new Map<string, number>();
  for (let start = 0; start < cells.length; start += PAIR_BATCH) {
    const rows = await db
      .selectFrom(["projects as p", "environments as e"])
      .where((eb) =>
        eb.or(
          cells
            .slice(start, start + PAIR_BATCH)
            .map((cell) => eb.and([eb("p.id", "=", cell.projectId), eb("e.id", "=", cell.environmentId)])),
        ),
      )
      .select((eb) => ["p.id as projectId", "e.id as environmentId", newestDeploymentTask(eb, true).as("sequence")])
      .execute();
    for (const row of rows) {
      if (row.sequence !== null) found.set(`${row.projectId}/${row.environmentId}`, Number(row.sequence));
    }
  }
  return found;
}

function selectDeployments(db: Kysely<Database>) {
  return db
    .selectFrom("tasks as t")
    .innerJoin("deployments as d", "d.task_id", "t.id")
    .innerJoin("releases as r", "r.id", "d.release_id")
    .select([
      "t.sequence",
      "t.id as taskId",
      "d.id as deploymentId",
      "r.version as release",
      "t.state",
      "d.created_at as createdAt",
      "t.started_at as startedAt",
      "t.finished_at as finishedAt",
    ]);
}

type DeploymentRow = Awaited<ReturnType<ReturnType<typeof selectDeployments>["executeTakeFirstOrThrow"]>>;

function toDeployment({ sequence: _sequence, ...row }: DeploymentRow): DashboardDeployment {
  return { ...row, state: toTaskState(row.state) };
}

async function deploymentsOfTasks(
  db: Kysely<Database>,
  sequences: readonly (number | string)[],
): Promise<Map<number, DashboardDeployment>> {
  const unique = [...new Set(sequences.map(Number))];
  const found = new Map<number, DashboardDeployment>();
  for (let start = 0; start < unique.length; start += DETAIL_BATCH) {
    const rows = await selectDeployments(db)
      .where("t.sequence", "in", unique.slice(start, start + DETAIL_BATCH))
      .execute();
    for (const row of rows) found.set(Number(row.sequence), toDeployment(row));
  }
  return found;
}

/**
 * The newest deployment task whose deployment row exists. Needed only in the moment
 * between a deployment's task being queued and its row being written (a separate
 * statement), when the newest task has no deployment yet; a task that succeeded always
 * has one (it reads it to run).
 */
async function newestRecordedDeployment(
  db: Kysely<Database>,
  projectId: string,
  environmentId: string,
): Promise<DashboardDeployment | null> {
  const row = await selectDeployments(db)
    .where("t.project_id", "=", projectId)
    .where("t.environment_id", "=", environmentId)
    .where("t.kind", "=", sql.lit("deployment"))
    .orderBy("t.sequence", "desc")
    .limit(1)
    .executeTakeFirst();
  return row === undefined ? null : toDeployment(row);
}

function toTaskState(state: string): TaskState {
  const known = taskStates.find((candidate) => candidate === state);
  if (known === undefined) throw new Error(`task state '${state}' is not one Ferry knows`);
  return known;
}
