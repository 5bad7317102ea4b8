import { type Reach, reachesEvery, reachesSome } from "../domain/access.js";
import type { Paging } from "../domain/common.js";
import { ConflictError, type FieldIssue, ForbiddenError, InputError, NotFoundError } from "../domain/errors.js";
import {
  type CreateVariable,
  displayedValue,
  scopeKey,
  type UpdateVariable,
  type Variable,
  type VariableScopeInput,
} from "../domain/variables.js";
import {
  type Executor,
  findNamed,
  newId,
  nowIso,
  resolveReferences,
  type StoreContext,
  throwIfIssues,
  toPage,
  translateUniqueViolation,
} from "./common.js";
import type { VariableRow } from "./schema.js";

const valueContext = (variableId: string) => `variable:${variableId}`;

export interface ResolvedScope {
  environmentIds: string[];
  roles: string[];
  targetIds: string[];
}

export async function resolveScope(trx: Executor, scope: VariableScopeInput): Promise<ResolvedScope> {
  const issues: FieldIssue[] = [];
  const environmentIds = await resolveReferences(
    trx,
    "environments",
    scope.environments,
    "/scope/environments",
    issues,
  );
  const targetIds = await resolveReferences(trx, "targets", scope.targets, "/scope/targets", issues);
  throwIfIssues(issues);
  return {
    environmentIds: [...new Set(environmentIds)],
    roles: [...new Set(scope.roles)],
    targetIds: [...new Set(targetIds)],
  };
}

async function writeScope(trx: Executor, variableId: string, scope: ResolvedScope): Promise<void> {
  await trx.deleteFrom("variable_scopes").where("variable_id", "=", variableId).execute();
  const rows = [
    ...scope.environmentIds.map((value) => ({ variable_id: variableId, kind: "environment", value })),
    ...scope.roles.map((value) => ({ variable_id: variableId, kind: "role", value })),
    ...scope.targetIds.map((value) => ({ variable_id: variableId, kind: "target", value })),
  ];
  if (rows.length > 0) await trx.insertInto("variable_scopes").values(rows).execute();
}

async function loadVariables(db: Executor, projectSlug: string, rows: VariableRow[]): Promise<Variable[]> {
  if (rows.length === 0) return [];
  const ids = rows.map((row) => row.id);
  const scopes = await db
    .selectFrom("variable_scopes as s")
    .leftJoin("environments as e", (join) => join.onRef("e.id", "=", "s.value").on("s.kind", "=", "environment"))
    .leftJoin("targets as t", (join) => join.onRef("t.id", "=", "s.value").on("s.kind", "=", "target"))
    .select(["s.variable_id", "s.kind", "s.value", "e.slug as environment", "t.slug as target"])
    .where("s.variable_id", "in", ids)
    .orderBy("s.kind")
    .orderBy("s.value")
    .execute();
  return rows.map((row) => {
    const own = scopes.filter((scope) => scope.variable_id === row.id);
    return {
      id: row.id,
      project: projectSlug,
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
  `the project already has a variable '${name}' with exactly this scope; update that one or change the scope`;

export async function createVariable(
  { db, secrets }: StoreContext,
  projectReference: string,
  input: CreateVariable,
): Promise<Variable> {
  return db.transaction().execute(async (trx) => {
    const project = await findNamed(trx, "projects", projectReference);
    const scope = await resolveScope(trx, input.scope);
    const now = nowIso();
    const id = newId("var");
    const row: VariableRow = {
      id,
      project_id: project.id,
      name: input.name,
      sensitive: input.sensitive ? 1 : 0,
      value: input.sensitive ? null : input.value,
      value_sealed: input.sensitive ? secrets.seal(input.value, valueContext(id)) : null,
      scope_key: scopeKey(scope),
      created_at: now,
      updated_at: now,
    };
    await translateUniqueViolation(duplicateMessage(input.name), () =>
      trx.insertInto("variables").values(row).execute(),
    );
    await writeScope(trx, id, scope);
    const [variable] = await loadVariables(trx, project.slug, [row]);
    if (!variable) throw new Error(`variable ${id} vanished while loading`);
    return variable;
  });
}

/** Finds a project's variable by id, or by name when exactly one variable has that name. */
async function findVariableRow(trx: Executor, projectId: string, reference: string): Promise<VariableRow> {
  const rows = await trx
    .selectFrom("variables")
    .selectAll()
    .where("project_id", "=", projectId)
    .where((eb) => eb.or([eb("id", "=", reference), eb("name", "=", reference)]))
    .execute();
  const byId = rows.find((row) => row.id === reference);
  if (byId) return byId;
  const [only, ...others] = rows;
  if (!only) throw noVariable(reference);
  if (others.length > 0) {
    throw new ConflictError(
      `the project has ${rows.length} variables named '${reference}' with different scopes; refer to one by its id`,
    );
  }
  return only;
}

/**
 * What a caller may do with a project's variables (ADR 0020): see one scoped to an
 * environment they may view (an unscoped one applies everywhere, their environments
 * too); see a sensitive one's name only with viewSensitiveNames there as well; change one
 * only with editVariables on every environment it is scoped to (on all, when unscoped).
 */
export interface VariableAccess {
  view: Reach;
  sensitiveNames: Reach;
  edit: Reach;
}

/** Everything: for server-internal reads. */
const unlimited: VariableAccess = { view: { boxes: null }, sensitiveNames: { boxes: null }, edit: { boxes: null } };

function restricted(access: VariableAccess): boolean {
  return access.view.boxes !== null || access.sensitiveNames.boxes !== null;
}

async function environmentScopes(db: Executor, variableIds: readonly string[]): Promise<Map<string, string[]>> {
  const scopes = new Map<string, string[]>();
  if (variableIds.length === 0) return scopes;
  const rows = await db
    .selectFrom("variable_scopes")
    .select(["variable_id", "value"])
    .where("variable_id", "in", variableIds)
    .where("kind", "=", "environment")
    .execute();
  for (const row of rows) scopes.set(row.variable_id, [...(scopes.get(row.variable_id) ?? []), row.value]);
  return scopes;
}

function mayView(access: VariableAccess, projectId: string, row: VariableRow, environments: readonly string[]) {
  return (
    reachesSome(access.view, projectId, environments) &&
    (row.sensitive !== 1 || reachesSome(access.sensitiveNames, projectId, environments))
  );
}

export async function getVariable(
  { db }: StoreContext,
  projectReference: string,
  reference: string,
  access: VariableAccess = unlimited,
): Promise<Variable> {
  const project = await findNamed(db, "projects", projectReference);
  const row = await findVariableRow(db, project.id, reference);
  const scopes = await environmentScopes(db, [row.id]);
  if (!mayView(access, project.id, row, scopes.get(row.id) ?? [])) throw noVariable(reference);
  const [variable] = await loadVariables(db, project.slug, [row]);
  if (!variable) throw new Error(`variable ${row.id} vanished while loading`);
  return variable;
}

/**
 * Refuses a change unless the caller may edit the variable as it is (`reference`) and as it
 * will be (`scope`). A variable the caller may not view is "not found".
 */
export async function assertMayEditVariable(
  { db }: StoreContext,
  projectReference: string,
  access: VariableAccess,
  change: { reference?: string; scope?: VariableScopeInput | undefined },
): Promise<void> {
  const project = await findNamed(db, "projects", projectReference);
  const refuse = () =>
    new ForbiddenError(
      `you may not change this variable: it needs 'editVariables' on project '${project.slug}' in every environment it is scoped to (every environment when unscoped)`,
    );
  if (change.reference !== undefined) {
    const row = await findVariableRow(db, project.id, change.reference);
    const environments = (await environmentScopes(db, [row.id])).get(row.id) ?? [];
    if (!mayView(access, project.id, row, environments)) throw noVariable(change.reference);
    if (!reachesEvery(access.edit, project.id, environments)) throw refuse();
  }
  if (change.scope !== undefined) {
    const issues: FieldIssue[] = [];
    const environments = await resolveReferences(
      db,
      "environments",
      change.scope.environments,
      "/scope/environments",
      issues,
    );
    throwIfIssues(issues);
    if (!reachesEvery(access.edit, project.id, environments)) throw refuse();
  }
}

function noVariable(reference: string): NotFoundError {
  return new NotFoundError(`the project has no variable '${reference}'; list them with 'ferry var list'`);
}

export async function listVariables(
  { db }: StoreContext,
  projectReference: string,
  paging: Paging,
  access: VariableAccess = unlimited,
) {
  const project = await findNamed(db, "projects", projectReference);
  const inOrder = db
    .selectFrom("variables")
    .selectAll()
    .where("project_id", "=", project.id)
    .orderBy("name")
    .orderBy("scope_key");
  if (restricted(access)) {
    // A project has tens or hundreds of variables: filter them all, then page.
    const all = await inOrder.execute();
    const scopes = await environmentScopes(
      db,
      all.map((row) => row.id),
    );
    const visible = all.filter((row) => mayView(access, project.id, row, scopes.get(row.id) ?? []));
    const page = visible.slice(paging.offset, paging.offset + paging.limit);
    return toPage(await loadVariables(db, project.slug, page), visible.length, paging);
  }
  const rows = await inOrder.limit(paging.limit).offset(paging.offset).execute();
  const { count } = await db
    .selectFrom("variables")
    .select((eb) => eb.fn.countAll<number | string>().as("count"))
    .where("project_id", "=", project.id)
    .executeTakeFirstOrThrow();
  return toPage(await loadVariables(db, project.slug, rows), Number(count), paging);
}

export async function updateVariable(
  { db, secrets }: StoreContext,
  projectReference: string,
  reference: string,
  input: UpdateVariable,
): Promise<Variable> {
  return db.transaction().execute(async (trx) => {
    const project = await findNamed(trx, "projects", projectReference);
    const current = await findVariableRow(trx, project.id, reference);
    const wasSensitive = current.sensitive === 1;
    const sensitive = input.sensitive ?? wasSensitive;
    if (wasSensitive && !sensitive && input.value === undefined) {
      // Turning the flag off must not reveal the stored secret: the caller supplies the new clear value.
      throw new InputError("making a sensitive variable non-sensitive needs its new value", [
        { pointer: "/value", detail: "send the value to store in clear" },
      ]);
    }
    const value =
      input.value ??
      (wasSensitive && current.value_sealed
        ? secrets.open(current.value_sealed, valueContext(current.id))
        : (current.value ?? ""));
    const scope = input.scope ? await resolveScope(trx, input.scope) : undefined;
    const name = input.name ?? current.name;
    await translateUniqueViolation(duplicateMessage(name), () =>
      trx
        .updateTable("variables")
        .set({
          name,
          sensitive: sensitive ? 1 : 0,
          value: sensitive ? null : value,
          value_sealed: sensitive ? secrets.seal(value, valueContext(current.id)) : null,
          ...(scope && { scope_key: scopeKey(scope) }),
          updated_at: nowIso(),
        })
        .where("id", "=", current.id)
        .execute(),
    );
    if (scope) await writeScope(trx, current.id, scope);
    const row = await trx.selectFrom("variables").selectAll().where("id", "=", current.id).executeTakeFirstOrThrow();
    const [variable] = await loadVariables(trx, project.slug, [row]);
    if (!variable) throw new Error(`variable ${row.id} vanished while loading`);
    return variable;
  });
}

export async function deleteVariable({ db }: StoreContext, projectReference: string, reference: string): Promise<void> {
  await db.transaction().execute(async (trx) => {
    const project = await findNamed(trx, "projects", projectReference);
    const row = await findVariableRow(trx, project.id, reference);
    await trx.deleteFrom("variables").where("id", "=", row.id).execute();
  });
}
