import { type Reach, reachesEvery, reachesSome } from "../domain/access.js";
import type { Paging } from "../domain/common.js";
import { type FieldIssue, ForbiddenError } from "../domain/errors.js";
import type { CreateVariable, UpdateVariable, Variable, VariableScopeInput } from "../domain/variables.js";
import { type Executor, findNamed, resolveReferences, type StoreContext, throwIfIssues, toPage } from "./common.js";
import {
  allVariables,
  changeVariable,
  findVariableRow,
  insertVariable,
  loadVariable,
  loadVariables,
  noVariable,
  pageOfVariables,
  projectOwner,
  removeVariable,
  type StoredVariable,
} from "./scopedVariables.js";

/** A project's own variables; rows and sealing are shared with variable sets' (scopedVariables.ts). */

export async function createVariable(
  context: StoreContext,
  projectReference: string,
  input: CreateVariable,
): Promise<Variable> {
  return context.db.transaction().execute(async (trx) => {
    const project = await findNamed(trx, "projects", projectReference);
    const row = await insertVariable(trx, context, projectOwner, project.id, input);
    return loadVariable(trx, projectOwner, project.slug, row);
  });
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

function mayView(access: VariableAccess, projectId: string, row: StoredVariable, environments: readonly string[]) {
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
  const row = await findVariableRow(db, projectOwner, project.id, reference);
  const scopes = await environmentScopes(db, [row.id]);
  if (!mayView(access, project.id, row, scopes.get(row.id) ?? [])) throw noVariable(projectOwner, reference);
  return loadVariable(db, projectOwner, project.slug, row);
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
    const row = await findVariableRow(db, projectOwner, project.id, change.reference);
    const environments = (await environmentScopes(db, [row.id])).get(row.id) ?? [];
    if (!mayView(access, project.id, row, environments)) throw noVariable(projectOwner, change.reference);
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

export async function listVariables(
  { db }: StoreContext,
  projectReference: string,
  paging: Paging,
  access: VariableAccess = unlimited,
) {
  const project = await findNamed(db, "projects", projectReference);
  if (restricted(access)) {
    // A project has tens or hundreds of variables: filter them all, then page.
    const all = await allVariables(db, projectOwner, [project.id]).execute();
    const scopes = await environmentScopes(
      db,
      all.map((row) => row.id),
    );
    const visible = all.filter((row) => mayView(access, project.id, row, scopes.get(row.id) ?? []));
    const page = visible.slice(paging.offset, paging.offset + paging.limit);
    return toPage(await loadVariables(db, projectOwner, project.slug, page), visible.length, paging);
  }
  const { rows, count } = await pageOfVariables(db, projectOwner, project.id, paging);
  return toPage(await loadVariables(db, projectOwner, project.slug, rows), count, paging);
}

export async function updateVariable(
  context: StoreContext,
  projectReference: string,
  reference: string,
  input: UpdateVariable,
): Promise<Variable> {
  return context.db.transaction().execute(async (trx) => {
    const project = await findNamed(trx, "projects", projectReference);
    const current = await findVariableRow(trx, projectOwner, project.id, reference);
    const row = await changeVariable(trx, context, projectOwner, current, input);
    return loadVariable(trx, projectOwner, project.slug, row);
  });
}

export async function deleteVariable({ db }: StoreContext, projectReference: string, reference: string): Promise<void> {
  await db.transaction().execute(async (trx) => {
    const project = await findNamed(trx, "projects", projectReference);
    const row = await findVariableRow(trx, projectOwner, project.id, reference);
    await removeVariable(trx, projectOwner, row.id);
  });
}
