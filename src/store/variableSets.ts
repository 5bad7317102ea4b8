import type { Paging } from "../domain/common.js";
import { ConflictError, type FieldIssue, InputError, InUseError, NotFoundError } from "../domain/errors.js";
import type { SnapshotVariable } from "../domain/releases.js";
import type {
  CreateVariableSet,
  ProjectVariableSets,
  PutProjectVariableSets,
  SetVariable,
  UpdateVariableSet,
  VariableSet,
} from "../domain/variableSets.js";
import { type CreateVariable, displayedValue, scopeKey, type UpdateVariable } from "../domain/variables.js";
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
import type { VariableSetRow, VariableSetVariableRow } from "./schema.js";
import { type ResolvedScope, resolveScope } from "./variables.js";

/**
 * Variable sets (ADR 0047): shared values stored like a project's variables, in tables of
 * their own; a project includes sets in an order (project_variable_sets.position).
 */

/** What a set variable's sealed value is bound to, so it cannot be swapped for another's. */
const setValueContext = (variableId: string) => `variable-set-variable:${variableId}`;

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

async function writeScope(trx: Executor, variableId: string, scope: ResolvedScope): Promise<void> {
  await trx.deleteFrom("variable_set_scopes").where("variable_id", "=", variableId).execute();
  const rows = [
    ...scope.environmentIds.map((value) => ({ variable_id: variableId, kind: "environment", value })),
    ...scope.roles.map((value) => ({ variable_id: variableId, kind: "role", value })),
    ...scope.targetIds.map((value) => ({ variable_id: variableId, kind: "target", value })),
  ];
  if (rows.length > 0) await trx.insertInto("variable_set_scopes").values(rows).execute();
}

async function loadSetVariables(db: Executor, setSlug: string, rows: VariableSetVariableRow[]): Promise<SetVariable[]> {
  if (rows.length === 0) return [];
  const scopes = await db
    .selectFrom("variable_set_scopes as s")
    .leftJoin("environments as e", (join) => join.onRef("e.id", "=", "s.value").on("s.kind", "=", "environment"))
    .leftJoin("targets as t", (join) => join.onRef("t.id", "=", "s.value").on("s.kind", "=", "target"))
    .select(["s.variable_id", "s.kind", "s.value", "e.slug as environment", "t.slug as target"])
    .where(
      "s.variable_id",
      "in",
      rows.map((row) => row.id),
    )
    .orderBy("s.kind")
    .orderBy("s.value")
    .execute();
  return rows.map((row) => {
    const own = scopes.filter((scope) => scope.variable_id === row.id);
    return {
      id: row.id,
      set: setSlug,
      name: row.name,
      value: displayedValue(row.sensitive === 1, row.value),
      sensitive: row.sensitive === 1,
      scope: {
        environments: own.flatMap((scope) => (scope.environment ? [scope.environment] : [])),
        roles: own.flatMap((scope) => (scope.kind === "role" ? [scope.value] : [])),
        targets: own.flatMap((scope) => (scope.target ? [scope.target] : [])),
      },
      createdAt: row.created_at,
      updatedAt: row.updated_at,
    };
  });
}

const duplicateMessage = (name: string) =>
  `the variable set already has a variable '${name}' with exactly this scope; update that one or change the scope`;

async function findSetVariableRow(trx: Executor, setId: string, reference: string): Promise<VariableSetVariableRow> {
  const rows = await trx
    .selectFrom("variable_set_variables")
    .selectAll()
    .where("set_id", "=", setId)
    .where((eb) => eb.or([eb("id", "=", reference), eb("name", "=", reference)]))
    .execute();
  const byId = rows.find((row) => row.id === reference);
  if (byId) return byId;
  const [only, ...others] = rows;
  if (!only) {
    throw new NotFoundError(
      `the variable set has no variable '${reference}'; list them with 'ferry varset var list --set SET'`,
    );
  }
  if (others.length > 0) {
    throw new ConflictError(
      `the variable set has ${rows.length} variables named '${reference}' with different scopes; refer to one by its id`,
    );
  }
  return only;
}

export async function listSetVariables({ db }: StoreContext, setReference: string, paging: Paging) {
  const set = await findNamed(db, "variable_sets", setReference);
  const rows = await db
    .selectFrom("variable_set_variables")
    .selectAll()
    .where("set_id", "=", set.id)
    .orderBy("name")
    .orderBy("scope_key")
    .limit(paging.limit)
    .offset(paging.offset)
    .execute();
  const { count } = await db
    .selectFrom("variable_set_variables")
    .select((eb) => eb.fn.countAll<number | string>().as("count"))
    .where("set_id", "=", set.id)
    .executeTakeFirstOrThrow();
  return toPage(await loadSetVariables(db, set.slug, rows), Number(count), paging);
}

export async function getSetVariable({ db }: StoreContext, setReference: string, reference: string) {
  const set = await findNamed(db, "variable_sets", setReference);
  const row = await findSetVariableRow(db, set.id, reference);
  const [variable] = await loadSetVariables(db, set.slug, [row]);
  if (!variable) throw new Error(`variable ${row.id} vanished while loading`);
  return variable;
}

export async function createSetVariable(
  { db, secrets }: StoreContext,
  setReference: string,
  input: CreateVariable,
): Promise<SetVariable> {
  return db.transaction().execute(async (trx) => {
    const set = await findNamed(trx, "variable_sets", setReference);
    const scope = await resolveScope(trx, input.scope);
    const now = nowIso();
    const id = newId("svar");
    const row: VariableSetVariableRow = {
      id,
      set_id: set.id,
      name: input.name,
      sensitive: input.sensitive ? 1 : 0,
      value: input.sensitive ? null : input.value,
      value_sealed: input.sensitive ? secrets.seal(input.value, setValueContext(id)) : null,
      scope_key: scopeKey(scope),
      created_at: now,
      updated_at: now,
    };
    await translateUniqueViolation(duplicateMessage(input.name), () =>
      trx.insertInto("variable_set_variables").values(row).execute(),
    );
    await writeScope(trx, id, scope);
    await touchSet(trx, set.id);
    const [variable] = await loadSetVariables(trx, set.slug, [row]);
    if (!variable) throw new Error(`variable ${id} vanished while loading`);
    return variable;
  });
}

export async function updateSetVariable(
  { db, secrets }: StoreContext,
  setReference: string,
  reference: string,
  input: UpdateVariable,
): Promise<SetVariable> {
  return db.transaction().execute(async (trx) => {
    const set = await findNamed(trx, "variable_sets", setReference);
    const current = await findSetVariableRow(trx, set.id, reference);
    const wasSensitive = current.sensitive === 1;
    const sensitive = input.sensitive ?? wasSensitive;
    if (wasSensitive && !sensitive && input.value === undefined) {
      throw new InputError("making a sensitive variable non-sensitive needs its new value", [
        { pointer: "/value", detail: "send the value to store in clear" },
      ]);
    }
    const value =
      input.value ??
      (wasSensitive && current.value_sealed
        ? secrets.open(current.value_sealed, setValueContext(current.id))
        : (current.value ?? ""));
    const scope = input.scope ? await resolveScope(trx, input.scope) : undefined;
    const name = input.name ?? current.name;
    await translateUniqueViolation(duplicateMessage(name), () =>
      trx
        .updateTable("variable_set_variables")
        .set({
          name,
          sensitive: sensitive ? 1 : 0,
          value: sensitive ? null : value,
          value_sealed: sensitive ? secrets.seal(value, setValueContext(current.id)) : null,
          ...(scope && { scope_key: scopeKey(scope) }),
          updated_at: nowIso(),
        })
        .where("id", "=", current.id)
        .execute(),
    );
    if (scope) await writeScope(trx, current.id, scope);
    await touchSet(trx, set.id);
    const row = await trx
      .selectFrom("variable_set_variables")
      .selectAll()
      .where("id", "=", current.id)
      .executeTakeFirstOrThrow();
    const [variable] = await loadSetVariables(trx, set.slug, [row]);
    if (!variable) throw new Error(`variable ${row.id} vanished while loading`);
    return variable;
  });
}

export async function deleteSetVariable({ db }: StoreContext, setReference: string, reference: string): Promise<void> {
  await db.transaction().execute(async (trx) => {
    const set = await findNamed(trx, "variable_sets", setReference);
    const row = await findSetVariableRow(trx, set.id, reference);
    await trx.deleteFrom("variable_set_variables").where("id", "=", row.id).execute();
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
  if (sets.length === 0) return [];
  const variables = await trx
    .selectFrom("variable_set_variables")
    .selectAll()
    .where(
      "set_id",
      "in",
      sets.map((set) => set.id),
    )
    .orderBy("name")
    .orderBy("scope_key")
    .execute();
  const scopes = variables.length
    ? await trx
        .selectFrom("variable_set_scopes")
        .selectAll()
        .where(
          "variable_id",
          "in",
          variables.map((variable) => variable.id),
        )
        .execute()
    : [];
  const result: SnapshotVariable[] = [];
  // In the project's order of sets, each set's values by name: a stable snapshot.
  for (const set of sets) {
    for (const variable of variables.filter((row) => row.set_id === set.id)) {
      const own = scopes.filter((scope) => scope.variable_id === variable.id);
      const of = (kind: string) => own.filter((scope) => scope.kind === kind).map((scope) => scope.value);
      result.push({
        name: variable.name,
        sensitive: variable.sensitive === 1,
        value: variable.sensitive === 1 ? null : variable.value,
        sealed:
          variable.sensitive === 1
            ? reseal(setValueContext(variable.id), variable.value_sealed ?? "", result.length)
            : null,
        scope: { environments: of("environment"), roles: of("role"), targets: of("target") },
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
