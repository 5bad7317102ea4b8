import { randomBytes } from "node:crypto";
import { type Expression, type ExpressionBuilder, type Kysely, type SqlBool, sql, type Transaction } from "kysely";
import type { Reach } from "../domain/access.js";
import { type Page, type Paging, slugify } from "../domain/common.js";
import { ConflictError, type FieldIssue, InputError, NotFoundError } from "../domain/errors.js";
import type { SecretBox } from "../security/secretBox.js";
import { isUniqueViolation } from "./db.js";
import type { Database } from "./schema.js";

export type Executor = Kysely<Database> | Transaction<Database>;

/** What every store function needs: the database and the box for sensitive values. */
export interface StoreContext {
  readonly db: Kysely<Database>;
  readonly secrets: SecretBox;
}

/** Tables whose rows have a unique name and slug and can be referenced by either id or slug. */
export type NamedTable =
  | "environments"
  | "lifecycles"
  | "projects"
  | "targets"
  | "feeds"
  | "roles"
  | "teams"
  | "variable_sets";

/** Human words for each table, used in messages. */
const nouns: Record<NamedTable, string> = {
  environments: "environment",
  lifecycles: "lifecycle",
  projects: "project",
  targets: "target",
  feeds: "feed",
  roles: "role",
  teams: "team",
  variable_sets: "variable set",
};

/** Ids are prefixed by kind ("env_…") so a stray id in a log says what it is. */
export function newId(prefix: string): string {
  return `${prefix}_${randomBytes(10).toString("hex")}`;
}

export function nowIso(): string {
  return new Date().toISOString();
}

interface NamedRow {
  id: string;
  slug: string;
  name: string;
}

/** Finds a row by id or slug, or throws NotFoundError naming what was looked for. */
export async function findNamed(db: Executor, table: NamedTable, reference: string): Promise<NamedRow> {
  const row = await findNamedOrUndefined(db, table, reference);
  if (!row) {
    throw new NotFoundError(`no ${nouns[table]} '${reference}'; list them with 'ferry ${cliGroup(table)} list'`);
  }
  return row;
}

async function findNamedOrUndefined(db: Executor, table: NamedTable, reference: string) {
  return (db as Kysely<Database>)
    .selectFrom(table as "environments")
    .select(["id", "slug", "name"])
    .where((eb) => eb.or([eb("id", "=", reference), eb("slug", "=", reference)]))
    .executeTakeFirst();
}

function cliGroup(table: NamedTable): string {
  if (table === "variable_sets") return "varset";
  return table === "environments" ? "env" : nouns[table];
}

/**
 * Resolves references found in a request body (ids or slugs) to ids. Unknown ones become
 * field issues at `pointer/<index>`, all reported together.
 */
export async function resolveReferences(
  db: Executor,
  table: NamedTable,
  references: readonly string[],
  pointer: string,
  issues: FieldIssue[],
): Promise<string[]> {
  const ids: string[] = [];
  for (const [index, reference] of references.entries()) {
    const row = await findNamedOrUndefined(db, table, reference);
    if (row) ids.push(row.id);
    else issues.push({ pointer: `${pointer}/${index}`, detail: `no ${nouns[table]} '${reference}'` });
  }
  return ids;
}

export async function resolveReference(
  db: Executor,
  table: NamedTable,
  reference: string,
  pointer: string,
  issues: FieldIssue[],
): Promise<string> {
  const row = await findNamedOrUndefined(db, table, reference);
  if (!row) issues.push({ pointer, detail: `no ${nouns[table]} '${reference}'` });
  return row?.id ?? "";
}

export function throwIfIssues(issues: readonly FieldIssue[]): void {
  if (issues.length > 0) {
    throw new InputError(
      "the request refers to things that do not exist or breaks a rule; fix the fields listed",
      issues,
    );
  }
}

/**
 * Refuses a name or slug another row of the table already has. Checked before writing for
 * a precise message; the unique indexes still decide under concurrency (see
 * `translateUniqueViolation`).
 */
export async function assertNameAndSlugFree(
  db: Executor,
  table: NamedTable,
  values: { name?: string | undefined; slug?: string | undefined },
  exceptId?: string,
): Promise<void> {
  for (const field of ["name", "slug"] as const) {
    const value = values[field];
    if (value === undefined) continue;
    let query = (db as Kysely<Database>)
      .selectFrom(table as "environments")
      .select("id")
      .where(field, "=", value);
    if (exceptId) query = query.where("id", "!=", exceptId);
    if (await query.executeTakeFirst()) {
      throw new ConflictError(
        `${/^[aeiou]/.test(nouns[table]) ? "an" : "a"} ${nouns[table]} with ${field} '${value}' already exists; choose another ${field}`,
      );
    }
  }
}

/** Runs a write, turning a unique-index violation into a ConflictError with the given message. */
export async function translateUniqueViolation<T>(message: string, write: () => Promise<T>): Promise<T> {
  try {
    return await write();
  } catch (error) {
    if (isUniqueViolation(error)) throw new ConflictError(message);
    throw error;
  }
}

export async function countRows(db: Executor, table: keyof Database): Promise<number> {
  const row = await (db as Kysely<Database>)
    .selectFrom(table)
    .select((eb) => eb.fn.countAll<number | string>().as("count"))
    .executeTakeFirstOrThrow();
  return Number(row.count);
}

/**
 * A WHERE condition for rows with a project and an environment column: true for the pairs
 * the reach covers (src/domain/access.ts). Only for restricted reaches (boxes not null).
 */
export function reachCondition<DB, TB extends keyof DB>(
  eb: ExpressionBuilder<DB, TB>,
  boxes: NonNullable<Reach["boxes"]>,
  projectColumn: string,
  environmentColumn: string,
): Expression<SqlBool> {
  const nothing = sql<SqlBool>`1 = 0`;
  const within = (column: string, ids: readonly string[] | null) =>
    ids === null
      ? []
      : [ids.length === 0 ? nothing : sql<SqlBool>`${sql.ref(column)} in (${sql.join(ids.map((id) => sql.val(id)))})`];
  const alternatives = boxes.map((box) =>
    eb.and([...within(projectColumn, box.projects), ...within(environmentColumn, box.environments)]),
  );
  return alternatives.length === 0 ? nothing : eb.or(alternatives);
}

export function toPage<T>(items: T[], total: number, paging: Paging): Page<T> {
  return { items, total, limit: paging.limit, offset: paging.offset };
}

export function parseJsonList(text: string): string[] {
  const value: unknown = JSON.parse(text);
  return Array.isArray(value) ? value.map(String) : [];
}

/** The slug given, or one derived from the name; a name with no letters or digits needs an explicit slug. */
export function slugFor(input: { name: string; slug?: string | undefined }): string {
  const slug = input.slug ?? slugify(input.name);
  if (slug === "") {
    throw new InputError("the name has no letters or digits to derive a slug from", [
      { pointer: "/slug", detail: "give a slug such as 'web-api'" },
    ]);
  }
  return slug;
}
