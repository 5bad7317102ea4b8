import type { Paging } from "../domain/common.js";
import { type FieldIssue, InUseError } from "../domain/errors.js";
import type { SnapshotVariable } from "../domain/releases.js";
import type {
  CreateVariableSet,
  ProjectVariableSets,
  PutProjectVariableSets,
  SetVariable,
  UpdateVariableSet,
  VariableSet,
} from "../domain/variableSets.js";
import type { CreateVariable, UpdateVariable } from "../domain/variables.js";
import {
  assertNameAndSlugFree,
  type Executor,
  findNamed,
  newId,
  nowIso,
  resolveReferences,
  type StoreContext,
  slugFor,
  throwIfIssues,
  toPage,
  translateUniqueViolation,
} from "./common.js";
import type { VariableSetRow } from "./schema.js";
import {
  changeVariable,
  findVariableRow,
  insertVariable,
  loadVariable,
  loadVariables,
  pageOfVariables,
  removeVariable,
  setOwner,
  variablesWithScopes,
} from "./scopedVariables.js";

/**
 * Variable sets (ADR 0047): shared values stored like a project's variables, in tables of
 * their own and by the same code (scopedVariables.ts); a project includes sets in an order
 * (project_variable_sets.position).
 */

function toSet(row: VariableSetRow): VariableSet {
  return {
    id: row.id,
    slug: row.slug,
    name: row.name,
    description: row.description,
    createdAt: row.created_at,
    updatedAt: row.updated_at,
  };
}

export async function listVariableSets({ db }: StoreContext, paging: Paging) {
  const rows = await db
    .selectFrom("variable_sets")
    .selectAll()
    .orderBy("name")
    .limit(paging.limit)
    .offset(paging.offset)
    .execute();
  const { count } = await db
    .selectFrom("variable_sets")
    .select((eb) => eb.fn.countAll<number | string>().as("count"))
    .executeTakeFirstOrThrow();
  return toPage(rows.map(toSet), Number(count), paging);
}

export async function getVariableSet({ db }: StoreContext, reference: string): Promise<VariableSet> {
  const { id } = await findNamed(db, "variable_sets", reference);
  return toSet(await db.selectFrom("variable_sets").selectAll().where("id", "=", id).executeTakeFirstOrThrow());
}

export async function createVariableSet({ db }: StoreContext, input: CreateVariableSet): Promise<VariableSet> {
  const slug = slugFor(input);
  return db.transaction().execute(async (trx) => {
    await assertNameAndSlugFree(trx, "variable_sets", { name: input.name, slug });
    const now = nowIso();
    const row: VariableSetRow = {
      id: newId("vset"),
      slug,
      name: input.name,
      description: input.description,
      created_at: now,
      updated_at: now,
    };
    await translateUniqueViolation(`a variable set named '${input.name}' already exists`, () =>
      trx.insertInto("variable_sets").values(row).execute(),
    );
    return toSet(row);
  });
}

export async function updateVariableSet(
  { db }: StoreContext,
  reference: string,
  input: UpdateVariableSet,
): Promise<VariableSet> {
  return db.transaction().execute(async (trx) => {
    const { id } = await findNamed(trx, "variable_sets", reference);
    await assertNameAndSlugFree(trx, "variable_sets", { name: input.name, slug: input.slug }, id);
    await translateUniqueViolation("that name or slug is already used by another variable set", () =>
      trx
        .updateTable("variable_sets")
        .set({
          ...(input.name !== undefined && { name: input.name }),
          ...(input.slug !== undefined && { slug: input.slug }),
          ...(input.description !== undefined && { description: input.description }),
          updated_at: nowIso(),
        })
        .where("id", "=", id)
        .execute(),
    );
    return toSet(await trx.selectFrom("variable_sets").selectAll().where("id", "=", id).executeTakeFirstOrThrow());
  });
}

/** Refused while a project includes the set: removing it would silently change their deployments. */
export async function deleteVariableSet({ db }: StoreContext, reference: string): Promise<void> {
  await db.transaction().execute(async (trx) => {
    const set = await findNamed(trx, "variable_sets", reference);
    const users = await trx
      .selectFrom("project_variable_sets as pvs")
      .innerJoin("projects as p", "p.id", "pvs.project_id")
      .select("p.slug")
      .where("pvs.set_id", "=", set.id)
      .orderBy("p.slug")
      .execute();
    if (users.length > 0) {
      const usedBy = users.map((row) => `project '${row.slug}'`);
      throw new InUseError(
        `variable set '${set.slug}' is included by ${usedBy.join(", ")}; remove it from their variable sets first ('ferry varset include --project P' with the others)`,
        usedBy,
      );
    }
    await trx.deleteFrom("variable_sets").where("id", "=", set.id).execute();
  });
}

// ─── A set's variables ──────────────────────────────────────────────────────────────────

export async function listSetVariables({ db }: StoreContext, setReference: string, paging: Paging) {
  const set = await findNamed(db, "variable_sets", setReference);
  const { rows, count } = await pageOfVariables(db, setOwner, set.id, paging);
  return toPage(await loadVariables(db, setOwner, set.slug, rows), count, paging);
}

export async function getSetVariable({ db }: StoreContext, setReference: string, reference: string) {
  const set = await findNamed(db, "variable_sets", setReference);
  const row = await findVariableRow(db, setOwner, set.id, reference);
  return loadVariable(db, setOwner, set.slug, row);
}

export async function createSetVariable(
  context: StoreContext,
  setReference: string,
  input: CreateVariable,
): Promise<SetVariable> {
  return context.db.transaction().execute(async (trx) => {
    const set = await findNamed(trx, "variable_sets", setReference);
    const row = await insertVariable(trx, context, setOwner, set.id, input);
    await touchSet(trx, set.id);
    return loadVariable(trx, setOwner, set.slug, row);
  });
}

export async function updateSetVariable(
  context: StoreContext,
  setReference: string,
  reference: string,
  input: UpdateVariable,
): Promise<SetVariable> {
  return context.db.transaction().execute(async (trx) => {
    const set = await findNamed(trx, "variable_sets", setReference);
    const current = await findVariableRow(trx, setOwner, set.id, reference);
    const row = await changeVariable(trx, context, setOwner, current, input);
    await touchSet(trx, set.id);
    return loadVariable(trx, setOwner, set.slug, row);
  });
}

export async function deleteSetVariable({ db }: StoreContext, setReference: string, reference: string): Promise<void> {
  await db.transaction().execute(async (trx) => {
    const set = await findNamed(trx, "variable_sets", setReference);
    const row = await findVariableRow(trx, setOwner, set.id, reference);
    await removeVariable(trx, setOwner, row.id);
    await touchSet(trx, set.id);
  });
}

async function touchSet(trx: Executor, setId: string): Promise<void> {
  await trx.updateTable("variable_sets").set({ updated_at: nowIso() }).where("id", "=", setId).execute();
}

// ─── Which sets a project includes ──────────────────────────────────────────────────────

export async function getProjectVariableSets({ db }: StoreContext, projectReference: string) {
  const project = await findNamed(db, "projects", projectReference);
  return { project: project.slug, sets: (await includedSets(db, project.id)).map((set) => set.slug) };
}

/** Replaces the project's list of sets (the whole list, in precedence order). */
export async function setProjectVariableSets(
  { db }: StoreContext,
  projectReference: string,
  input: PutProjectVariableSets,
): Promise<ProjectVariableSets> {
  return db.transaction().execute(async (trx) => {
    const project = await findNamed(trx, "projects", projectReference);
    const issues: FieldIssue[] = [];
    const ids = await resolveReferences(trx, "variable_sets", input.sets, "/sets", issues);
    throwIfIssues(issues);
    await trx.deleteFrom("project_variable_sets").where("project_id", "=", project.id).execute();
    if (ids.length > 0) {
      await trx
        .insertInto("project_variable_sets")
        .values(ids.map((setId, position) => ({ project_id: project.id, set_id: setId, position })))
        .execute();
    }
    await trx.updateTable("projects").set({ updated_at: nowIso() }).where("id", "=", project.id).execute();
    return { project: project.slug, sets: (await includedSets(trx, project.id)).map((set) => set.slug) };
  });
}

async function includedSets(db: Executor, projectId: string) {
  return db
    .selectFrom("project_variable_sets as pvs")
    .innerJoin("variable_sets as s", "s.id", "pvs.set_id")
    .select(["s.id", "s.slug", "pvs.position"])
    .where("pvs.project_id", "=", projectId)
    .orderBy("pvs.position")
    .execute();
}

/**
 * The values of the sets a project includes, as a release snapshots them: each with its set
 * and the set's place. `reseal` gets the context the stored value is sealed with.
 */
export async function snapshotSetVariables(
  trx: Executor,
  projectId: string,
  reseal: (valueContext: string, sealed: string, index: number) => string,
): Promise<SnapshotVariable[]> {
  const sets = await includedSets(trx, projectId);
  const variables = await variablesWithScopes(
    trx,
    setOwner,
    sets.map((set) => set.id),
  );
  const result: SnapshotVariable[] = [];
  // In the project's order of sets, each set's values by name: a stable snapshot.
  for (const set of sets) {
    for (const { row, scope } of variables.filter((variable) => variable.ownerId === set.id)) {
      result.push({
        name: row.name,
        sensitive: row.sensitive === 1,
        value: row.sensitive === 1 ? null : row.value,
        sealed:
          row.sensitive === 1 ? reseal(setOwner.valueContext(row.id), row.value_sealed ?? "", result.length) : null,
        scope,
        set: { id: set.id, slug: set.slug, position: set.position },
      });
    }
  }
  return result;
}

/** Set variables whose scope names the environment or target, for "in use" refusals. */
export async function setVariablesScopedTo(
  trx: Executor,
  kind: "environment" | "target",
  id: string,
): Promise<string[]> {
  const rows = await trx
    .selectFrom("variable_set_scopes as s")
    .innerJoin("variable_set_variables as v", "v.id", "s.variable_id")
    .innerJoin("variable_sets as vs", "vs.id", "v.set_id")
    .select(["v.name as variable", "vs.name as set"])
    .where("s.kind", "=", kind)
    .where("s.value", "=", id)
    .execute();
  return rows.map((row) => `variable '${row.variable}' of variable set '${row.set}'`);
}
