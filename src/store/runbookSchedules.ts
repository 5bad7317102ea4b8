import type { Kysely } from "kysely";
import { type FieldIssue, InputError, NotFoundError } from "../domain/errors.js";
import type { FinishedRun } from "../domain/retention.js";
import {
  type CreateSchedule,
  type MissedFiringPolicy,
  nextFiring,
  type Retention,
  type Schedule,
  type UpdateSchedule,
} from "../domain/runbookSchedules.js";
import { MASKED, type RunbookDefinition, resolveParameters } from "../domain/runbooks.js";
import { type Executor, findNamed, newId, nowIso, type StoreContext, translateUniqueViolation } from "./common.js";
import { environmentTargets } from "./deployments.js";
import { getRunbookRow, snapshotForRun } from "./runbooks.js";
import type { Database, RunbookRow, RunbookScheduleRow } from "./schema.js";

/*
 * Runbook schedules and retention policies (ADR 0036). A schedule's next_run_at is the claim
 * all server nodes share: a node fires a due schedule by moving next_run_at forward from the
 * value it read, with a conditional UPDATE checked by its row count, so each firing is
 * queued by one node however many poll the same database.
 */

/** A sensitive parameter value of a schedule is bound to the schedule and its name. */
const sealedScheduleParameter = (scheduleId: string, name: string) =>
  `runbook-schedule:${scheduleId}:parameter:${name}`;

/** The definition whose parameters a schedule's values are checked against: the published one, else the draft. */
async function definitionToCheck(context: StoreContext, row: RunbookRow): Promise<RunbookDefinition> {
  if (row.published_snapshot_id) return (await snapshotForRun(context.db, context, row, false, "schedule")).definition;
  return (await snapshotForRun(context.db, context, row, true, "schedule", { dryRun: true })).definition;
}

/** Checks a schedule's environment, parameter values and targets against the runbook; all problems at once. */
async function checkAgainstRunbook(
  context: StoreContext,
  row: RunbookRow,
  environment: { id: string; slug: string; name: string },
  parameters: Record<string, string | number | boolean>,
  targets: readonly string[] | null | undefined,
): Promise<Set<string>> {
  const definition = await definitionToCheck(context, row);
  if (definition.environments.length > 0 && !definition.environments.includes(environment.slug)) {
    throw new InputError(`runbook '${row.slug}' does not run in ${environment.name}`, [
      { pointer: "/environment", detail: `it runs in ${definition.environments.join(", ")} only` },
    ]);
  }
  // A costly pattern check is left to each run the schedule queues (engine/runbookParameters.ts):
  // the store stays free of worker threads, and a run checks its values anyway.
  const resolved = resolveParameters(definition.parameters, parameters, "defer-costly");
  if (targets && targets.length > 0) {
    const known = await environmentTargets(context.db, environment.id);
    const issues: FieldIssue[] = targets.flatMap((reference, index) =>
      known.some((target) => target.id === reference || target.name === reference)
        ? []
        : [{ pointer: `/targets/${index}`, detail: `no target '${reference}' in ${environment.name}` }],
    );
    if (issues.length > 0) throw new InputError("the schedule names targets that are not in its environment", issues);
  }
  // The given values that are sensitive (defaults of sensitive parameters do not exist).
  return new Set(Object.keys(parameters).filter((name) => resolved.sensitive.has(name)));
}

function sealParameters(
  context: StoreContext,
  scheduleId: string,
  parameters: Record<string, string | number | boolean>,
  sensitive: ReadonlySet<string>,
): Record<string, string | number | boolean> {
  return Object.fromEntries(
    Object.entries(parameters).map(([name, value]) => [
      name,
      sensitive.has(name) ? context.secrets.seal(String(value), sealedScheduleParameter(scheduleId, name)) : value,
    ]),
  );
}

function toSchedule(
  row: RunbookScheduleRow,
  names: { project: string; runbook: string; environment: string },
): Schedule {
  const sensitive = new Set(JSON.parse(row.sensitive) as string[]);
  const stored = JSON.parse(row.parameters) as Record<string, string | number | boolean>;
  return {
    id: row.id,
    project: names.project,
    runbook: names.runbook,
    name: row.name,
    environment: names.environment,
    cron: row.cron,
    timeZone: row.time_zone,
    parameters: Object.fromEntries(
      Object.entries(stored).map(([name, value]) => [name, sensitive.has(name) ? MASKED : value]),
    ),
    targets: row.targets === null ? null : (JSON.parse(row.targets) as string[]),
    missed: row.missed as MissedFiringPolicy,
    paused: Number(row.paused) === 1,
    nextRunAt: Number(row.paused) === 1 ? null : row.next_run_at,
    lastFiring:
      row.last_scheduled_for === null
        ? null
        : {
            scheduledFor: row.last_scheduled_for,
            cause: row.last_cause ?? "",
            taskId: row.last_task_id,
            error: row.last_error,
          },
    createdBy: row.created_by,
    createdAt: row.created_at,
    updatedAt: row.updated_at,
  };
}

async function describe(db: Executor, row: RunbookScheduleRow): Promise<Schedule> {
  const names = await db
    .selectFrom("runbooks as r")
    .innerJoin("projects as p", "p.id", "r.project_id")
    .select(["r.slug as runbook", "p.slug as project"])
    .where("r.id", "=", row.runbook_id)
    .executeTakeFirstOrThrow();
  const environment = await db
    .selectFrom("environments")
    .select("slug")
    .where("id", "=", row.environment_id)
    .executeTakeFirstOrThrow();
  return toSchedule(row, { ...names, environment: environment.slug });
}

async function runbookOf(db: Executor, projectReference: string, runbookReference: string) {
  const project = await findNamed(db, "projects", projectReference);
  return { project, runbook: await getRunbookRow(db, project.id, runbookReference) };
}

/** A runbook's schedule by name or id, or NotFoundError saying how to list them. */
export async function getScheduleRow(
  db: Executor,
  projectReference: string,
  runbookReference: string,
  reference: string,
): Promise<RunbookScheduleRow> {
  const { runbook } = await runbookOf(db, projectReference, runbookReference);
  const row = await db
    .selectFrom("runbook_schedules")
    .selectAll()
    .where("runbook_id", "=", runbook.id)
    .where((eb) => eb.or([eb("id", "=", reference), eb("name", "=", reference)]))
    .executeTakeFirst();
  if (!row) {
    throw new NotFoundError(
      `runbook '${runbook.slug}' has no schedule '${reference}'; list them with 'ferry runbook schedule list'`,
    );
  }
  return row;
}

export async function getSchedule(
  { db }: StoreContext,
  projectReference: string,
  runbookReference: string,
  reference: string,
): Promise<Schedule> {
  return describe(db, await getScheduleRow(db, projectReference, runbookReference, reference));
}

/** A runbook's schedules, by name, in the environments `visible` lets the caller see. */
export async function listSchedules(
  { db }: StoreContext,
  projectReference: string,
  runbookReference: string,
  visible: (projectId: string, environmentId: string) => boolean,
): Promise<Schedule[]> {
  const { project, runbook } = await runbookOf(db, projectReference, runbookReference);
  const rows = await db
    .selectFrom("runbook_schedules as s")
    .innerJoin("environments as e", "e.id", "s.environment_id")
    .selectAll("s")
    .select("e.slug as environment_slug")
    .where("s.runbook_id", "=", runbook.id)
    .orderBy("s.name")
    .execute();
  return rows
    .filter((row) => visible(project.id, row.environment_id))
    .map(({ environment_slug, ...row }) =>
      toSchedule(row, { project: project.slug, runbook: runbook.slug, environment: environment_slug }),
    );
}

/** The first firing of a schedule (re)started at `from`. */
function firstFiring(cron: string, timeZone: string, from: Date): string | null {
  return nextFiring(cron, timeZone, from)?.toISOString() ?? null;
}

export async function createSchedule(
  context: StoreContext,
  projectReference: string,
  runbookReference: string,
  input: CreateSchedule,
  createdBy: string,
): Promise<Schedule> {
  const { db } = context;
  const { project, runbook } = await runbookOf(db, projectReference, runbookReference);
  const environment = await findNamed(db, "environments", input.environment).catch(() => {
    throw new InputError(`no environment '${input.environment}'`, [
      { pointer: "/environment", detail: "use an environment slug or id ('ferry env list')" },
    ]);
  });
  const sensitive = await checkAgainstRunbook(context, runbook, environment, input.parameters, input.targets);
  const id = newId("rbsch");
  const now = nowIso();
  const row: RunbookScheduleRow = {
    id,
    runbook_id: runbook.id,
    project_id: project.id,
    environment_id: environment.id,
    name: input.name,
    cron: input.cron,
    time_zone: input.timeZone,
    parameters: JSON.stringify(sealParameters(context, id, input.parameters, sensitive)),
    sensitive: JSON.stringify([...sensitive]),
    targets: input.targets ? JSON.stringify(input.targets) : null,
    missed: input.missed,
    paused: input.paused ? 1 : 0,
    next_run_at: firstFiring(input.cron, input.timeZone, new Date()),
    last_scheduled_for: null,
    last_cause: null,
    last_task_id: null,
    last_error: null,
    created_by: createdBy,
    created_at: now,
    updated_at: now,
  };
  await translateUniqueViolation(
    `runbook '${runbook.slug}' already has a schedule named '${input.name}'; choose another name or change that one`,
    () => db.insertInto("runbook_schedules").values(row).execute(),
  );
  return toSchedule(row, { project: project.slug, runbook: runbook.slug, environment: environment.slug });
}

/** Changes a schedule; a new expression or zone starts counting from now (nothing counts as missed). */
export async function updateSchedule(
  context: StoreContext,
  projectReference: string,
  runbookReference: string,
  reference: string,
  patch: UpdateSchedule,
): Promise<Schedule> {
  const { db } = context;
  const row = await getScheduleRow(db, projectReference, runbookReference, reference);
  const { runbook } = await runbookOf(db, projectReference, runbookReference);
  const environment = await db
    .selectFrom("environments")
    .select(["id", "slug", "name"])
    .where("id", "=", row.environment_id)
    .executeTakeFirstOrThrow();
  const cron = patch.cron ?? row.cron;
  const timeZone = patch.timeZone ?? row.time_zone;
  const targets = patch.targets === undefined ? (row.targets === null ? null : JSON.parse(row.targets)) : patch.targets;
  let parameters = row.parameters;
  let sensitiveNames = row.sensitive;
  if (patch.parameters !== undefined || patch.targets !== undefined) {
    // New values are checked like a new schedule's; unchanged ones were checked already.
    const given = patch.parameters ?? openScheduleParameters(context, row);
    const sensitive = await checkAgainstRunbook(context, runbook, environment, given, targets);
    parameters = JSON.stringify(sealParameters(context, row.id, given, sensitive));
    sensitiveNames = JSON.stringify([...sensitive]);
  }
  const timing = patch.cron !== undefined || patch.timeZone !== undefined;
  const changes = {
    cron,
    time_zone: timeZone,
    parameters,
    sensitive: sensitiveNames,
    targets: targets === null ? null : JSON.stringify(targets),
    missed: patch.missed ?? row.missed,
    ...(timing && { next_run_at: firstFiring(cron, timeZone, new Date()) }),
    updated_at: nowIso(),
  };
  await db.updateTable("runbook_schedules").set(changes).where("id", "=", row.id).execute();
  return describe(db, { ...row, ...changes });
}

export async function deleteSchedule(
  { db }: StoreContext,
  projectReference: string,
  runbookReference: string,
  reference: string,
): Promise<void> {
  const row = await getScheduleRow(db, projectReference, runbookReference, reference);
  await db.deleteFrom("runbook_schedules").where("id", "=", row.id).execute();
}

/**
 * Pauses or resumes. A resumed schedule fires next at its first time after now: the firings
 * of a pause were not missed (someone chose not to run them), so none is reported or caught up.
 */
export async function setSchedulePaused(
  { db }: StoreContext,
  projectReference: string,
  runbookReference: string,
  reference: string,
  paused: boolean,
): Promise<Schedule> {
  const row = await getScheduleRow(db, projectReference, runbookReference, reference);
  // Already so: nothing changes (resuming a running schedule must not skip its due firing).
  if ((Number(row.paused) === 1) === paused) return describe(db, row);
  const changes = {
    paused: paused ? 1 : 0,
    next_run_at: paused ? null : firstFiring(row.cron, row.time_zone, new Date()),
    updated_at: nowIso(),
  };
  await db.updateTable("runbook_schedules").set(changes).where("id", "=", row.id).execute();
  return describe(db, { ...row, ...changes });
}

/** A schedule's parameter values as given, sensitive ones opened (for a firing, never for an answer). */
export function openScheduleParameters(
  { secrets }: StoreContext,
  row: Pick<RunbookScheduleRow, "id" | "parameters" | "sensitive">,
): Record<string, string | number | boolean> {
  const sensitive = new Set(JSON.parse(row.sensitive) as string[]);
  return Object.fromEntries(
    Object.entries(JSON.parse(row.parameters) as Record<string, string | number | boolean>).map(([name, value]) => [
      name,
      sensitive.has(name) ? secrets.open(String(value), sealedScheduleParameter(row.id, name)) : value,
    ]),
  );
}

/** A due schedule, with the names a firing's messages use. */
export interface DueSchedule extends RunbookScheduleRow {
  next_run_at: string;
  project_slug: string;
  runbook_slug: string;
  environment_slug: string;
}

/** Schedules not paused whose next firing is due at `now`, the longest due first. */
export async function dueSchedules(db: Kysely<Database>, now: Date, limit = 100): Promise<DueSchedule[]> {
  const rows = await db
    .selectFrom("runbook_schedules as s")
    .innerJoin("runbooks as r", "r.id", "s.runbook_id")
    .innerJoin("projects as p", "p.id", "s.project_id")
    .innerJoin("environments as e", "e.id", "s.environment_id")
    .selectAll("s")
    .select(["p.slug as project_slug", "r.slug as runbook_slug", "e.slug as environment_slug"])
    .where("s.paused", "=", 0)
    .where("s.next_run_at", "is not", null)
    .where("s.next_run_at", "<=", now.toISOString())
    .orderBy("s.next_run_at")
    .limit(limit)
    .execute();
  return rows as DueSchedule[];
}

/**
 * Claims the firing(s) a node read as due: moves next_run_at from `due` to `next` only if no
 * other node (or a pause, edit or resume) changed it since. True when this call won.
 */
export async function claimFiring(db: Kysely<Database>, scheduleId: string, due: string, next: Date | null) {
  const result = await db
    .updateTable("runbook_schedules")
    .set({ next_run_at: next?.toISOString() ?? null })
    .where("id", "=", scheduleId)
    .where("next_run_at", "=", due)
    .where("paused", "=", 0)
    .executeTakeFirst();
  return Number(result.numUpdatedRows) === 1;
}

/** What the last firing did: the task it queued, or why it was refused. */
export async function recordFiring(
  db: Kysely<Database>,
  scheduleId: string,
  firing: { scheduledFor: Date; cause: string; taskId: string | null; error: string | null },
): Promise<void> {
  await db
    .updateTable("runbook_schedules")
    .set({
      last_scheduled_for: firing.scheduledFor.toISOString(),
      last_cause: firing.cause,
      last_task_id: firing.taskId,
      last_error: firing.error,
    })
    .where("id", "=", scheduleId)
    .execute();
}

/* Retention */

export async function getRetention(
  { db }: StoreContext,
  projectReference: string,
  runbookReference: string,
): Promise<Retention> {
  const { runbook } = await runbookOf(db, projectReference, runbookReference);
  const rows = await db
    .selectFrom("runbook_retention as r")
    .leftJoin("environments as e", "e.id", "r.environment_id")
    .select(["r.environment_id", "e.slug", "r.keep_runs", "r.keep_days"])
    .where("r.runbook_id", "=", runbook.id)
    .execute();
  return {
    policies: rows
      .map((row) => ({
        environment: row.environment_id === "*" ? "*" : (row.slug ?? row.environment_id),
        keepRuns: row.keep_runs === null ? null : Number(row.keep_runs),
        keepDays: row.keep_days === null ? null : Number(row.keep_days),
      }))
      .sort((a, b) =>
        a.environment === "*" ? -1 : b.environment === "*" ? 1 : a.environment.localeCompare(b.environment),
      ),
  };
}

/** Replaces a runbook's retention policies (an empty list: keep every run). */
export async function setRetention(
  context: StoreContext,
  projectReference: string,
  runbookReference: string,
  retention: Retention,
): Promise<Retention> {
  const { db } = context;
  const { runbook } = await runbookOf(db, projectReference, runbookReference);
  const issues: FieldIssue[] = [];
  const rows: { runbook_id: string; environment_id: string; keep_runs: number | null; keep_days: number | null }[] = [];
  for (const [index, policy] of retention.policies.entries()) {
    let environmentId = "*";
    if (policy.environment !== "*") {
      const environment = await findNamed(db, "environments", policy.environment).catch(() => undefined);
      if (!environment) {
        issues.push({
          pointer: `/policies/${index}/environment`,
          detail: `no environment '${policy.environment}' ('ferry env list'; '*' means every environment)`,
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
  if (issues.length > 0) throw new InputError("the retention names environments that do not exist", issues);
  await db.transaction().execute(async (trx) => {
    await trx.deleteFrom("runbook_retention").where("runbook_id", "=", runbook.id).execute();
    if (rows.length > 0) await trx.insertInto("runbook_retention").values(rows).execute();
  });
  return getRetention(context, projectReference, runbookReference);
}

/** One runbook × environment that has a policy, with it and its finished runs. */
export interface RetentionScope {
  runbookId: string;
  environmentId: string;
  policy: { keepRuns: number | null; keepDays: number | null };
  runs: FinishedRun[];
}

const FINISHED = ["succeeded", "failed", "cancelled", "interrupted"] as const;

/**
 * The runbook × environment pairs retention looks at (one runbook, or every one), each with
 * the policy that applies (its own, else the runbook's "*") and its finished runs.
 */
export async function retentionScopes(
  db: Kysely<Database>,
  only?: { runbookId: string; environmentId: string },
): Promise<RetentionScope[]> {
  let policyQuery = db.selectFrom("runbook_retention").selectAll();
  if (only) policyQuery = policyQuery.where("runbook_id", "=", only.runbookId);
  const policies = await policyQuery.execute();
  if (policies.length === 0) return [];
  const runbookIds = [...new Set(policies.map((policy) => policy.runbook_id))];
  let runQuery = db
    .selectFrom("runbook_runs as r")
    .innerJoin("tasks as t", "t.id", "r.task_id")
    .select(["r.runbook_id", "r.environment_id", "r.task_id", "t.state", "t.finished_at"])
    .where("r.runbook_id", "in", runbookIds)
    .where("t.state", "in", [...FINISHED])
    .where("t.finished_at", "is not", null);
  if (only) runQuery = runQuery.where("r.environment_id", "=", only.environmentId);
  const runs = await runQuery.execute();
  const scopes = new Map<string, RetentionScope>();
  for (const run of runs) {
    const policy =
      policies.find((p) => p.runbook_id === run.runbook_id && p.environment_id === run.environment_id) ??
      policies.find((p) => p.runbook_id === run.runbook_id && p.environment_id === "*");
    if (!policy) continue;
    const key = `${run.runbook_id} ${run.environment_id}`;
    let scope = scopes.get(key);
    if (!scope) {
      scope = {
        runbookId: run.runbook_id,
        environmentId: run.environment_id,
        policy: {
          keepRuns: policy.keep_runs === null ? null : Number(policy.keep_runs),
          keepDays: policy.keep_days === null ? null : Number(policy.keep_days),
        },
        runs: [],
      };
      scopes.set(key, scope);
    }
    scope.runs.push({ taskId: run.task_id, finishedAt: run.finished_at ?? "", succeeded: run.state === "succeeded" });
  }
  return [...scopes.values()];
}

/**
 * Deletes finished tasks with everything that goes with them (their log lines, run rows,
 * decisions, target records: all cascade), and the one-off snapshots of draft runs no run
 * uses any more. Only tasks still finished are deleted: a retried one is left alone.
 */
export async function deleteFinishedTasks(db: Kysely<Database>, taskIds: readonly string[]): Promise<number> {
  if (taskIds.length === 0) return 0;
  return db.transaction().execute(async (trx) => {
    const snapshots = await trx
      .selectFrom("runbook_runs as r")
      .innerJoin("runbook_snapshots as s", "s.id", "r.snapshot_id")
      .select("s.id")
      .where("r.task_id", "in", [...taskIds])
      .where("s.version", "is", null)
      .execute();
    const deleted = await trx
      .deleteFrom("tasks")
      .where("id", "in", [...taskIds])
      .where("state", "in", [...FINISHED])
      .executeTakeFirst();
    if (snapshots.length > 0) {
      await trx
        .deleteFrom("runbook_snapshots")
        .where(
          "id",
          "in",
          snapshots.map((snapshot) => snapshot.id),
        )
        .where(({ not, exists, selectFrom }) =>
          not(
            exists(
              selectFrom("runbook_runs").select("id").whereRef("runbook_runs.snapshot_id", "=", "runbook_snapshots.id"),
            ),
          ),
        )
        .execute();
    }
    return Number(deleted.numDeletedRows);
  });
}
