import { ConflictError, type FieldIssue, InputError, NotFoundError } from "../domain/errors.js";
import {
  type CreateVariable,
  displayedValue,
  scopeKey,
  type UpdateVariable,
  type VariableScopeInput,
} from "../domain/variables.js";
import {
  type Executor,
  newId,
  nowIso,
  resolveReferences,
  type StoreContext,
  throwIfIssues,
  translateUniqueViolation,
} from "./common.js";
import type { VariableRow } from "./schema.js";

/**
 * Scoped variable rows and their sealing, one implementation for the two owners that hold
 * them: a project (variables, variable_scopes) and a variable set (variable_set_variables,
 * variable_set_scopes; ADR 0047). The tables have the same columns but the owner's, so the
 * queries here name the project's tables to Kysely and run on the owner's: `tables()` is
 * the one place that says so.
 */
export interface VariableOwner<Field extends "project" | "set"> {
  /** The field of an answer that names the owner ("project": its slug). */
  readonly field: Field;
  readonly variables: "variables" | "variable_set_variables";
  readonly scopes: "variable_scopes" | "variable_set_scopes";
  readonly ownerColumn: "project_id" | "set_id";
  readonly idPrefix: string;
  /** What a variable's sealed value is bound to, so it cannot be swapped for another's. */
  valueContext(variableId: string): string;
  /** "the project", "the variable set": in messages. */
  readonly noun: string;
  /** How to list them, for a "no such variable" message. */
  readonly listHint: string;
}

export const projectOwner: VariableOwner<"project"> = {
  field: "project",
  variables: "variables",
  scopes: "variable_scopes",
  ownerColumn: "project_id",
  idPrefix: "var",
  valueContext: (variableId) => `variable:${variableId}`,
  noun: "the project",
  listHint: "ferry var list",
};

export const setOwner: VariableOwner<"set"> = {
  field: "set",
  variables: "variable_set_variables",
  scopes: "variable_set_scopes",
  ownerColumn: "set_id",
  idPrefix: "svar",
  valueContext: (variableId) => `variable-set-variable:${variableId}`,
  noun: "the variable set",
  listHint: "ferry varset var list --set SET",
};

/** A variable row of either owner, without its owner column. */
export type StoredVariable = Omit<VariableRow, "project_id">;

/** A variable as the API shows it, its owner named by `field`. */
export type ScopedVariable<Field extends string> = {
  id: string;
  name: string;
  value: string;
  sensitive: boolean;
  scope: { environments: string[]; roles: string[]; targets: string[] };
  createdAt: string;
  updatedAt: string;
} & Record<Field, string>;

/**
 * The owner's tables under the project's names (see the module comment): a set's rows have
 * `set_id` where these types say `project_id`, and only `ownerColumn` ever names that column.
 */
function tables(owner: VariableOwner<"project" | "set">) {
  return {
    variables: owner.variables as "variables",
    scopes: owner.scopes as "variable_scopes",
    ownerColumn: owner.ownerColumn as "project_id",
  };
}

interface ResolvedScope {
  environmentIds: string[];
  roles: string[];
  targetIds: string[];
}

async function resolveScope(trx: Executor, scope: VariableScopeInput): Promise<ResolvedScope> {
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

async function writeScope(
  trx: Executor,
  owner: VariableOwner<"project" | "set">,
  variableId: string,
  scope: ResolvedScope,
): Promise<void> {
  const { scopes } = tables(owner);
  await trx.deleteFrom(scopes).where("variable_id", "=", variableId).execute();
  const rows = [
    ...scope.environmentIds.map((value) => ({ variable_id: variableId, kind: "environment", value })),
    ...scope.roles.map((value) => ({ variable_id: variableId, kind: "role", value })),
    ...scope.targetIds.map((value) => ({ variable_id: variableId, kind: "target", value })),
  ];
  if (rows.length > 0) await trx.insertInto(scopes).values(rows).execute();
}

/** The rows as the API shows them, their scopes named by slug. */
export async function loadVariables<Field extends "project" | "set">(
  db: Executor,
  owner: VariableOwner<Field>,
  ownerSlug: string,
  rows: readonly StoredVariable[],
): Promise<ScopedVariable<Field>[]> {
  if (rows.length === 0) return [];
  const scopes = await db
    .selectFrom(`${tables(owner).scopes} as s`)
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
    // The owner's field second, where each answer has always had it.
    return {
      id: row.id,
      [owner.field]: ownerSlug,
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
    } as ScopedVariable<Field>;
  });
}

/** One row loaded as the API shows it. */
export async function loadVariable<Field extends "project" | "set">(
  db: Executor,
  owner: VariableOwner<Field>,
  ownerSlug: string,
  row: StoredVariable,
): Promise<ScopedVariable<Field>> {
  const [variable] = await loadVariables(db, owner, ownerSlug, [row]);
  if (!variable) throw new Error(`variable ${row.id} vanished while loading`);
  return variable;
}

export function noVariable(owner: VariableOwner<"project" | "set">, reference: string): NotFoundError {
  return new NotFoundError(`${owner.noun} has no variable '${reference}'; list them with '${owner.listHint}'`);
}

/** Finds an owner's variable by id, or by name when exactly one variable has that name. */
export async function findVariableRow(
  trx: Executor,
  owner: VariableOwner<"project" | "set">,
  ownerId: string,
  reference: string,
): Promise<StoredVariable> {
  const { variables, ownerColumn } = tables(owner);
  const rows = await trx
    .selectFrom(variables)
    .selectAll()
    .where(ownerColumn, "=", ownerId)
    .where((eb) => eb.or([eb("id", "=", reference), eb("name", "=", reference)]))
    .execute();
  const byId = rows.find((row) => row.id === reference);
  if (byId) return byId;
  const [only, ...others] = rows;
  if (!only) throw noVariable(owner, reference);
  if (others.length > 0) {
    throw new ConflictError(
      `${owner.noun} has ${rows.length} variables named '${reference}' with different scopes; refer to one by its id`,
    );
  }
  return only;
}

/** The owner's variables by name and scope, a page of them, and how many there are. */
export async function pageOfVariables(
  db: Executor,
  owner: VariableOwner<"project" | "set">,
  ownerId: string,
  paging: { limit: number; offset: number },
): Promise<{ rows: StoredVariable[]; count: number }> {
  const { variables, ownerColumn } = tables(owner);
  const rows = await allVariables(db, owner, [ownerId]).limit(paging.limit).offset(paging.offset).execute();
  const { count } = await db
    .selectFrom(variables)
    .select((eb) => eb.fn.countAll<number | string>().as("count"))
    .where(ownerColumn, "=", ownerId)
    .executeTakeFirstOrThrow();
  return { rows, count: Number(count) };
}

/** The owners' variables by name and scope (a query, to page or run whole). */
export function allVariables(db: Executor, owner: VariableOwner<"project" | "set">, ownerIds: readonly string[]) {
  const { variables, ownerColumn } = tables(owner);
  return db.selectFrom(variables).selectAll().where(ownerColumn, "in", ownerIds).orderBy("name").orderBy("scope_key");
}

function duplicateMessage(owner: VariableOwner<"project" | "set">, name: string): string {
  return `${owner.noun} already has a variable '${name}' with exactly this scope; update that one or change the scope`;
}

/** Stores a new variable of the owner, its value sealed when sensitive; returns its row. */
export async function insertVariable(
  trx: Executor,
  { secrets }: Pick<StoreContext, "secrets">,
  owner: VariableOwner<"project" | "set">,
  ownerId: string,
  input: CreateVariable,
): Promise<StoredVariable> {
  const scope = await resolveScope(trx, input.scope);
  const now = nowIso();
  const id = newId(owner.idPrefix);
  const row: StoredVariable = {
    id,
    name: input.name,
    sensitive: input.sensitive ? 1 : 0,
    value: input.sensitive ? null : input.value,
    value_sealed: input.sensitive ? secrets.seal(input.value, owner.valueContext(id)) : null,
    scope_key: scopeKey(scope),
    created_at: now,
    updated_at: now,
  };
  const { variables, ownerColumn } = tables(owner);
  await translateUniqueViolation(duplicateMessage(owner, input.name), () =>
    trx
      .insertInto(variables)
      .values({ ...row, [ownerColumn]: ownerId } as VariableRow)
      .execute(),
  );
  await writeScope(trx, owner, id, scope);
  return row;
}

/** Changes a variable (`current`), sealing its value again when sensitive; returns its row as it now is. */
export async function changeVariable(
  trx: Executor,
  { secrets }: Pick<StoreContext, "secrets">,
  owner: VariableOwner<"project" | "set">,
  current: StoredVariable,
  input: UpdateVariable,
): Promise<StoredVariable> {
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
      ? secrets.open(current.value_sealed, owner.valueContext(current.id))
      : (current.value ?? ""));
  const scope = input.scope ? await resolveScope(trx, input.scope) : undefined;
  const name = input.name ?? current.name;
  const { variables } = tables(owner);
  await translateUniqueViolation(duplicateMessage(owner, name), () =>
    trx
      .updateTable(variables)
      .set({
        name,
        sensitive: sensitive ? 1 : 0,
        value: sensitive ? null : value,
        value_sealed: sensitive ? secrets.seal(value, owner.valueContext(current.id)) : null,
        ...(scope && { scope_key: scopeKey(scope) }),
        updated_at: nowIso(),
      })
      .where("id", "=", current.id)
      .execute(),
  );
  if (scope) await writeScope(trx, owner, current.id, scope);
  return trx.selectFrom(variables).selectAll().where("id", "=", current.id).executeTakeFirstOrThrow();
}

export async function removeVariable(
  trx: Executor,
  owner: VariableOwner<"project" | "set">,
  variableId: string,
): Promise<void> {
  await trx.deleteFrom(tables(owner).variables).where("id", "=", variableId).execute();
}

/**
 * The owners' variables (by name and scope) with their scopes by id, as a snapshot takes
 * them: a sensitive value is still sealed with `owner.valueContext`.
 */
export async function variablesWithScopes(
  trx: Executor,
  owner: VariableOwner<"project" | "set">,
  ownerIds: readonly string[],
): Promise<{ row: StoredVariable; ownerId: string; scope: ResolvedScopeById }[]> {
  if (ownerIds.length === 0) return [];
  const { scopes: scopeTable, ownerColumn } = tables(owner);
  const variables = await allVariables(trx, owner, ownerIds).execute();
  const scopes = variables.length
    ? await trx
        .selectFrom(scopeTable)
        .selectAll()
        .where(
          "variable_id",
          "in",
          variables.map((variable) => variable.id),
        )
        .execute()
    : [];
  return variables.map((variable) => {
    const own = scopes.filter((scope) => scope.variable_id === variable.id);
    const of = (kind: string) => own.filter((scope) => scope.kind === kind).map((scope) => scope.value);
    return {
      row: variable,
      ownerId: variable[ownerColumn],
      scope: { environments: of("environment"), roles: of("role"), targets: of("target") },
    };
  });
}

/** A scope as stored: environment and target ids, role names. */
interface ResolvedScopeById {
  environments: string[];
  roles: string[];
  targets: string[];
}
