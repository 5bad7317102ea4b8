import type { Kysely } from "kysely";
import type { Paging } from "../domain/common.js";
import { InputError, NotFoundError } from "../domain/errors.js";
import { nextFiring } from "../domain/runbookSchedules.js";
import {
  type CreateScheduledTrigger,
  type ScheduledTrigger,
  scheduledTriggerSchema,
  type UpdateScheduledTrigger,
} from "../domain/scheduledTriggers.js";
import {
  type Executor,
  findNamed,
  newId,
  nowIso,
  type StoreContext,
  toPage,
  translateUniqueViolation,
} from "./common.js";
import type { Database, ScheduledTriggerRow } from "./schema.js";

type Row = ScheduledTriggerRow & { from_slug: string; to_slug: string };

function toScheduledTrigger(row: Row, projectSlug: string): ScheduledTrigger {
  return scheduledTriggerSchema.parse({
    id: row.id,
    project: projectSlug,
    name: row.name,
    cron: row.cron,
    timeZone: row.time_zone,
    from: row.from_slug,
    to: row.to_slug,
    paused: row.paused === 1,
    nextFireAt: row.next_fire_at,
    lastFiredAt: row.last_fired_at,
    lastOutcome: row.last_outcome,
    lastFiring:
      row.last_fired_at === null ? null : { at: row.last_fired_at, cause: "schedule", outcome: row.last_outcome ?? "" },
    createdAt: row.created_at,
    updatedAt: row.updated_at,
  });
}

function selectRows(db: Executor) {
  return db
    .selectFrom("scheduled_triggers as t")
    .innerJoin("environments as f", "f.id", "t.from_environment_id")
    .innerJoin("environments as e", "e.id", "t.to_environment_id")
    .selectAll("t")
    .select(["f.slug as from_slug", "e.slug as to_slug"]);
}

async function loadRow(db: Executor, projectId: string, reference: string): Promise<Row> {
  const row = await selectRows(db)
    .where("t.project_id", "=", projectId)
    .where((eb) => eb.or([eb("t.id", "=", reference), eb("t.name", "=", reference)]))
    .executeTakeFirst();
  if (!row) {
    throw new NotFoundError(
      `the project has no scheduled trigger '${reference}'; list them with ferry scheduled-trigger list`,
    );
  }
  return row;
}

async function environmentId(db: Executor, reference: string, pointer: string): Promise<string> {
  try {
    return (await findNamed(db, "environments", reference)).id;
  } catch {
    throw new InputError(`no environment '${reference}'`, [
      { pointer, detail: "use an environment slug or id ('ferry env list')" },
    ]);
  }
}

/** The next firing after now, or null while paused. */
function nextFireAt(cron: string, timeZone: string, paused: boolean): string | null {
  return paused ? null : (nextFiring(cron, timeZone, new Date())?.toISOString() ?? null);
}

export async function createScheduledTrigger(
  { db }: StoreContext,
  project: string,
  input: CreateScheduledTrigger,
): Promise<ScheduledTrigger> {
  const { id: projectId, slug } = await findNamed(db, "projects", project);
  const from = await environmentId(db, input.from, "/from");
  const to = await environmentId(db, input.to, "/to");
  if (from === to) {
    throw new InputError("a scheduled trigger deploys from one environment to another", [
      { pointer: "/to", detail: "choose an environment other than 'from'" },
    ]);
  }
  const now = nowIso();
  const id = newId("sch");
  await translateUniqueViolation(`the project already has a scheduled trigger named '${input.name}'`, () =>
    db
      .insertInto("scheduled_triggers")
      .values({
        id,
        project_id: projectId,
        name: input.name,
        cron: input.cron,
        time_zone: input.timeZone,
        from_environment_id: from,
        to_environment_id: to,
        paused: input.paused ? 1 : 0,
        next_fire_at: nextFireAt(input.cron, input.timeZone, input.paused),
        last_fired_at: null,
        last_outcome: null,
        created_at: now,
        updated_at: now,
      })
      .execute(),
  );
  return toScheduledTrigger(await loadRow(db, projectId, id), slug);
}

export async function listScheduledTriggers({ db }: StoreContext, project: string, paging: Paging) {
  const { id: projectId, slug } = await findNamed(db, "projects", project);
  const rows = await selectRows(db)
    .where("t.project_id", "=", projectId)
    .orderBy("t.name")
    .limit(paging.limit)
    .offset(paging.offset)
    .execute();
  const { count } = await db
    .selectFrom("scheduled_triggers")
    .where("project_id", "=", projectId)
    .select((eb) => eb.fn.countAll<number | string>().as("count"))
    .executeTakeFirstOrThrow();
  return toPage(
    rows.map((row) => toScheduledTrigger(row, slug)),
    Number(count),
    paging,
  );
}

export async function getScheduledTrigger({ db }: StoreContext, project: string, reference: string) {
  const { id: projectId, slug } = await findNamed(db, "projects", project);
  return toScheduledTrigger(await loadRow(db, projectId, reference), slug);
}

export async function updateScheduledTrigger(
  { db }: StoreContext,
  project: string,
  reference: string,
  input: UpdateScheduledTrigger,
): Promise<ScheduledTrigger> {
  const { id: projectId, slug } = await findNamed(db, "projects", project);
  const current = await loadRow(db, projectId, reference);
  const from = input.from === undefined ? current.from_environment_id : await environmentId(db, input.from, "/from");
  const to = input.to === undefined ? current.to_environment_id : await environmentId(db, input.to, "/to");
  if (from === to) {
    throw new InputError("a scheduled trigger deploys from one environment to another", [
      { pointer: "/to", detail: "choose an environment other than 'from'" },
    ]);
  }
  const cron = input.cron ?? current.cron;
  const timeZone = input.timeZone ?? current.time_zone;
  const paused = input.paused ?? current.paused === 1;
  await translateUniqueViolation(`the project already has a scheduled trigger named '${input.name}'`, () =>
    db
      .updateTable("scheduled_triggers")
      .set({
        ...(input.name !== undefined && { name: input.name }),
        cron,
        time_zone: timeZone,
        from_environment_id: from,
        to_environment_id: to,
        paused: paused ? 1 : 0,
        // From now: a resumed trigger fires at its next time, never for what it missed while paused.
        next_fire_at: nextFireAt(cron, timeZone, paused),
        updated_at: nowIso(),
      })
      .where("id", "=", current.id)
      .execute(),
  );
  return toScheduledTrigger(await loadRow(db, projectId, current.id), slug);
}

export async function deleteScheduledTrigger({ db }: StoreContext, project: string, reference: string) {
  const { id: projectId } = await findNamed(db, "projects", project);
  const row = await loadRow(db, projectId, reference);
  await db.deleteFrom("scheduled_triggers").where("id", "=", row.id).execute();
}

export interface DueScheduledTrigger {
  id: string;
  name: string;
  projectId: string;
  fromEnvironmentId: string;
  toEnvironmentId: string;
  /** The firing claimed (its time). */
  dueAt: Date;
}

/**
 * Claims the triggers whose firing is due: each moves to its next firing in the same
 * conditional UPDATE, so one node fires it once however many share the database.
 */
export async function claimDueScheduledTriggers(db: Kysely<Database>, now: Date): Promise<DueScheduledTrigger[]> {
  const due = await db
    .selectFrom("scheduled_triggers")
    .selectAll()
    .where("paused", "=", 0)
    .where("next_fire_at", "is not", null)
    .where("next_fire_at", "<=", now.toISOString())
    .limit(100)
    .execute();
  const claimed: DueScheduledTrigger[] = [];
  for (const row of due) {
    const next = nextFiring(row.cron, row.time_zone, now)?.toISOString() ?? null;
    const result = await db
      .updateTable("scheduled_triggers")
      .set({ next_fire_at: next })
      .where("id", "=", row.id)
      .where("next_fire_at", "=", row.next_fire_at)
      .executeTakeFirst();
    if (Number(result.numUpdatedRows) !== 1 || row.next_fire_at === null) continue;
    claimed.push({
      id: row.id,
      name: row.name,
      projectId: row.project_id,
      fromEnvironmentId: row.from_environment_id,
      toEnvironmentId: row.to_environment_id,
      dueAt: new Date(row.next_fire_at),
    });
  }
  return claimed;
}

export async function recordScheduledFiring(db: Kysely<Database>, id: string, outcome: string): Promise<void> {
  await db
    .updateTable("scheduled_triggers")
    .set({ last_fired_at: nowIso(), last_outcome: outcome.slice(0, 2000) })
    .where("id", "=", id)
    .execute();
}

/** When the earliest firing of any trigger that is not paused is due (the runner sleeps until then); undefined: none is. */
export async function nextScheduledFiringAt(db: Kysely<Database>): Promise<Date | undefined> {
  const row = await db
    .selectFrom("scheduled_triggers")
    .select((eb) => eb.fn.min("next_fire_at").as("next"))
    .where("paused", "=", 0)
    .where("next_fire_at", "is not", null)
    .executeTakeFirst();
  return row?.next ? new Date(row.next) : undefined;
}
