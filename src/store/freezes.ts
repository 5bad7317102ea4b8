import { type FieldIssue, NotFoundError } from "../domain/errors.js";
import { type CreateFreeze, type Freeze, freezeCovers, freezeWindowSchema } from "../domain/freezes.js";
import {
  type Executor,
  findNamed,
  newId,
  nowIso,
  resolveReferences,
  type StoreContext,
  throwIfIssues,
  translateUniqueViolation,
} from "./common.js";
import type { FreezeRow } from "./schema.js";

/* Deployment freezes of a project, and which one (if any) covers an environment now. */

async function toFreeze(db: Executor, row: FreezeRow, projectSlug: string): Promise<Freeze> {
  const ids = JSON.parse(row.environment_ids) as string[];
  const environments = ids.length
    ? await db.selectFrom("environments").select(["id", "slug"]).where("id", "in", ids).execute()
    : [];
  const slugs = new Map(environments.map((environment) => [environment.id, environment.slug]));
  return {
    id: row.id,
    project: projectSlug,
    name: row.name,
    description: row.description,
    environments: ids.flatMap((id) => slugs.get(id) ?? []),
    window: freezeWindowSchema.parse(JSON.parse(row.window)),
    timeZone: row.time_zone,
    runbooks: row.runbooks === 1,
    createdBy: row.created_by,
    createdAt: row.created_at,
  };
}

export async function listFreezes({ db }: StoreContext, projectReference: string): Promise<Freeze[]> {
  const project = await findNamed(db, "projects", projectReference);
  const rows = await db
    .selectFrom("freezes")
    .selectAll()
    .where("project_id", "=", project.id)
    .orderBy("name")
    .execute();
  return Promise.all(rows.map((row) => toFreeze(db, row, project.slug)));
}

export async function createFreeze(
  { db }: StoreContext,
  projectReference: string,
  input: CreateFreeze,
  createdBy: string,
): Promise<Freeze> {
  const project = await findNamed(db, "projects", projectReference);
  const issues: FieldIssue[] = [];
  const environmentIds = await resolveReferences(db, "environments", input.environments, "/environments", issues);
  throwIfIssues(issues);
  const row: FreezeRow = {
    id: newId("frz"),
    project_id: project.id,
    name: input.name,
    description: input.description,
    environment_ids: JSON.stringify([...new Set(environmentIds)]),
    window: JSON.stringify(input.window),
    time_zone: input.timeZone,
    runbooks: input.runbooks ? 1 : 0,
    created_by: createdBy,
    created_at: nowIso(),
  };
  await translateUniqueViolation(`project '${project.slug}' already has a freeze named '${input.name}'`, () =>
    db.insertInto("freezes").values(row).execute(),
  );
  return toFreeze(db, row, project.slug);
}

/** A freeze by id or name. */
async function getFreezeRow(db: Executor, projectId: string, reference: string): Promise<FreezeRow> {
  const row = await db
    .selectFrom("freezes")
    .selectAll()
    .where("project_id", "=", projectId)
    .where((eb) => eb.or([eb("id", "=", reference), eb("name", "=", reference)]))
    .executeTakeFirst();
  if (!row) throw new NotFoundError(`no freeze '${reference}' in this project; list them with 'ferry freeze list'`);
  return row;
}

export async function getFreeze({ db }: StoreContext, projectReference: string, reference: string): Promise<Freeze> {
  const project = await findNamed(db, "projects", projectReference);
  return toFreeze(db, await getFreezeRow(db, project.id, reference), project.slug);
}

export async function deleteFreeze({ db }: StoreContext, projectReference: string, reference: string): Promise<void> {
  const project = await findNamed(db, "projects", projectReference);
  const row = await getFreezeRow(db, project.id, reference);
  await db.deleteFrom("freezes").where("id", "=", row.id).execute();
}

/**
 * The freeze that covers the project's environment at `now`, if any (the first by name):
 * for a deployment any freeze of it, for a runbook run only one that says so.
 */
export async function activeFreeze(
  db: Executor,
  projectId: string,
  environmentId: string,
  what: "deployment" | "runbook",
  now: Date = new Date(),
): Promise<{ name: string; description: string } | undefined> {
  const rows = await db.selectFrom("freezes").selectAll().where("project_id", "=", projectId).orderBy("name").execute();
  return rows.find(
    (row) =>
      (JSON.parse(row.environment_ids) as string[]).includes(environmentId) &&
      (what === "deployment" || row.runbooks === 1) &&
      freezeCovers(freezeWindowSchema.parse(JSON.parse(row.window)), row.time_zone, now),
  );
}
