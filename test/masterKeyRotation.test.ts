import { readFileSync } from "node:fs";
import { sql } from "kysely";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { sealedLocations } from "../src/store/masterKeyRotation.js";
import { dialects, openTestDatabase, type TestDatabase } from "./helpers/databases.js";

/*
 * Master key rotation must re-seal every value sealed under the master key (ADR 0046, 0070):
 * one forgotten column stays under the old key and, once that key is gone, cannot be opened.
 * The rotation's list (src/store/masterKeyRotation.ts) is checked here against the schema
 * itself, so a new sealed column fails this test, naming it, until the rotation covers it.
 *
 * A column counts as sealed when its name says so (`*_sealed`) or its documentation in
 * src/store/schema.ts says it holds sealed values (a JSON document such as a release's
 * snapshot, whose sensitive variables are sealed inside it). The migrated database is checked
 * too, on SQLite and PostgreSQL: a migration that adds a sealed column the row types do not
 * declare is caught there.
 */

const SCHEMA = new URL("../src/store/schema.ts", import.meta.url);

/** What marks a column, by its documentation, as holding values sealed under the master key. */
const SEALED_DOCUMENTATION = /\bsealed\b|SecretBox|encrypted/i;

/**
 * The row types of src/store/schema.ts, read line by line (its layout is Biome's: one
 * interface or property per line, documentation in the comment just above): each interface's
 * properties with their documentation.
 */
function rowTypes(): Map<string, { name: string; documentation: string }[]> {
  const types = new Map<string, { name: string; documentation: string }[]>();
  let current: { name: string; documentation: string }[] | undefined;
  let comment: string[] = [];
  let inComment = false;
  for (const line of readFileSync(SCHEMA, "utf8").split("\n")) {
    const trimmed = line.trim();
    if (inComment || trimmed.startsWith("/**")) {
      if (trimmed.startsWith("/**")) comment = [];
      comment.push(trimmed);
      inComment = !trimmed.endsWith("*/");
      continue;
    }
    const declaration = /^(?:export )?interface (\w+)\b/.exec(trimmed);
    if (declaration?.[1]) {
      current = [];
      types.set(declaration[1], current);
    } else if (trimmed === "}") {
      current = undefined;
    } else if (current && line.startsWith("  ") && !line.startsWith("   ")) {
      const property = /^(\w+)\??:/.exec(trimmed);
      if (property?.[1]) current.push({ name: property[1], documentation: comment.join("\n") });
    }
    if (trimmed !== "") comment = [];
  }
  return types;
}

/** "table.column" of every column the row types declare, with its documentation. */
function schemaColumns(): { location: string; name: string; documentation: string }[] {
  const types = rowTypes();
  const database = types.get("Database");
  if (!database) throw new Error("src/store/schema.ts has no interface Database");
  // The Database interface maps each table to its row type: `table: RowType;`.
  const block = /^export interface Database \{\n([\s\S]*?)^\}/m.exec(readFileSync(SCHEMA, "utf8"))?.[1] ?? "";
  const tables = [...block.matchAll(/^ {2}(\w+): (\w+);$/gm)];
  expect(tables.map(([, table]) => table)).toEqual(database.map((member) => member.name));
  const columns: { location: string; name: string; documentation: string }[] = [];
  for (const [, table, rowType] of tables) {
    const row = types.get(rowType ?? "");
    if (!row) throw new Error(`table ${table}: its row type ${rowType} is not declared in src/store/schema.ts`);
    for (const property of row) {
      columns.push({
        location: `${table}.${property.name}`,
        name: property.name,
        documentation: property.documentation,
      });
    }
  }
  return columns;
}

describe("master key rotation covers every sealed column", () => {
  it("re-seals every column the schema declares sealed, and lists no column the schema does not have", () => {
    const columns = schemaColumns();
    expect(columns.length).toBeGreaterThan(100);
    const sealed = columns
      .filter(({ name, documentation }) => name.endsWith("_sealed") || SEALED_DOCUMENTATION.test(documentation))
      .map(({ location }) => location)
      .sort();
    const covered = [...sealedLocations()].sort();
    // Named one by one, so a failure says which column the rotation forgets.
    for (const location of sealed) {
      expect(covered, `${location} holds sealed values: add it to SEALED_COLUMNS or SEALED_DOCUMENTS`).toContain(
        location,
      );
    }
    const declared = new Set(columns.map(({ location }) => location));
    for (const location of covered) {
      expect(declared.has(location), `the rotation lists ${location}, which src/store/schema.ts does not declare`).toBe(
        true,
      );
    }
    // Every one the rotation lists is documented (or named) as sealed, so the check above cannot drift either way.
    expect(covered).toEqual(sealed);
    // The kinds of secret Ferry stores today, each one of them in the list.
    expect(covered).toEqual(
      expect.arrayContaining([
        "variables.value_sealed",
        "variable_set_variables.value_sealed",
        "feeds.password_sealed",
        "targets.ssh_private_key_sealed",
        "targets.ssh_passphrase_sealed",
        "agents.next_credential_sealed",
        "webhooks.secret_sealed",
        "feed_triggers.secret_sealed",
        "releases.snapshot",
        "runbook_snapshots.snapshot",
        "runbook_runs.parameters",
        "runbook_schedules.parameters",
      ]),
    );
  });

  describe.each(dialects)("in the database migrated on %s", { concurrent: true }, (dialect) => {
    let database: TestDatabase;
    beforeAll(async () => {
      database = await openTestDatabase(dialect);
    });
    afterAll(async () => {
      await database?.dispose();
    });

    it("has every column the rotation lists, and no sealed column it does not", async () => {
      const query =
        dialect === "sqlite"
          ? sql<{ location: string }>`
              SELECT m.name || '.' || p.name AS location
              FROM sqlite_master m JOIN pragma_table_info(m.name) p
              WHERE m.type = 'table'`
          : sql<{ location: string }>`
              SELECT table_name || '.' || column_name AS location
              FROM information_schema.columns WHERE table_schema = current_schema()`;
      const locations = new Set((await query.execute(database.store.db)).rows.map((row) => row.location));
      expect(locations.size).toBeGreaterThan(100);
      const covered = sealedLocations();
      for (const location of covered) expect(locations, `${location} in the ${dialect} database`).toContain(location);
      const sealedByName = [...locations].filter((location) => /sealed|encrypted|cipher/i.test(location));
      for (const location of sealedByName) {
        expect(covered, `${location} looks sealed: the rotation must re-seal it`).toContain(location);
      }
    });
  });
});
