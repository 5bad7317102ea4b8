import { chainHash, GENESIS_HASH } from "../domain/audit.js";
import { ConflictError } from "../domain/errors.js";
import { sealedVariableContext } from "../domain/releases.js";
import { type SecretBox, sealedKeyId } from "../security/secretBox.js";
import { auditEntryContent } from "./audit.js";
import type { Executor, StoreContext } from "./common.js";
import type { AuditEventRow, Database } from "./schema.js";
import { projectOwner, setOwner } from "./scopedVariables.js";

/*
 * Master key rotation's database half (ADR 0046): every value sealed under a key other than
 * the box's sealing key is opened and sealed again under it, and the audit log's hash chain
 * is re-computed under the new key's derived chain key, all in one transaction.
 *
 * This is the one list of every encrypted column. A new one must be added here, or a
 * rotation leaves it under the old key and, once that key is forgotten, unreadable:
 * test/masterKeyRotation.test.ts reads the schema (src/store/schema.ts, and the migrated
 * database on SQLite and PostgreSQL) and fails naming any column that is sealed (`*_sealed`,
 * or documented as holding sealed values) and not listed here; the e2e test
 * (test/masterKeyRotation.e2e.test.ts) fills them under a running server and checks that
 * none still names the old key.
 */

/** A text column holding one sealed value; `context` is what the value was bound to when sealed. */
interface SealedColumn {
  table: keyof Database;
  key: string;
  column: string;
  context: (key: string) => string;
}

const SEALED_COLUMNS: readonly SealedColumn[] = [
  { table: projectOwner.variables, key: "id", column: "value_sealed", context: projectOwner.valueContext },
  { table: setOwner.variables, key: "id", column: "value_sealed", context: setOwner.valueContext },
  { table: "feeds", key: "id", column: "password_sealed", context: (id) => `feed:${id}:password` },
  { table: "targets", key: "id", column: "ssh_private_key_sealed", context: (id) => `target:${id}:ssh-private-key` },
  { table: "targets", key: "id", column: "ssh_passphrase_sealed", context: (id) => `target:${id}:ssh-passphrase` },
  {
    table: "agents",
    key: "target_id",
    column: "next_credential_sealed",
    context: (id) => `agent:${id}:next-credential`,
  },
  { table: "webhooks", key: "id", column: "secret_sealed", context: (id) => `webhook:${id}:secret` },
  { table: "feed_triggers", key: "id", column: "secret_sealed", context: (id) => `feed-trigger:${id}:secret` },
];

/** A JSON column whose document holds sealed values; `reseal` rewrites them, answering how many it changed. */
interface SealedDocument {
  table: keyof Database;
  key: string;
  columns: readonly string[];
  name: string;
  reseal: (row: Record<string, string>, reseal: (sealed: string, context: string) => string | undefined) => number;
}

type SnapshotVariable = { sensitive?: boolean; sealed?: string | null };

/** The sealed variables of a release's or a runbook snapshot's `snapshot` document. */
function snapshotVariables(column: string, context: (id: string, index: number) => string): SealedDocument["reseal"] {
  return (row, reseal) => {
    const document = JSON.parse(row[column] ?? "{}") as { variables?: SnapshotVariable[] };
    let changed = 0;
    for (const [index, variable] of (document.variables ?? []).entries()) {
      if (!variable.sealed) continue;
      const again = reseal(variable.sealed, context(row.id ?? "", index));
      if (again === undefined) continue;
      variable.sealed = again;
      changed += 1;
    }
    if (changed > 0) row[column] = JSON.stringify(document);
    return changed;
  };
}

/** The sensitive values of a runbook run's or schedule's `parameters` document (names in `sensitive`). */
function sensitiveParameters(context: (id: string, name: string) => string): SealedDocument["reseal"] {
  return (row, reseal) => {
    const parameters = JSON.parse(row.parameters ?? "{}") as Record<string, unknown>;
    let changed = 0;
    for (const name of JSON.parse(row.sensitive ?? "[]") as string[]) {
      const value = parameters[name];
      if (typeof value !== "string") continue;
      const again = reseal(value, context(row.id ?? "", name));
      if (again === undefined) continue;
      parameters[name] = again;
      changed += 1;
    }
    if (changed > 0) row.parameters = JSON.stringify(parameters);
    return changed;
  };
}

const SEALED_DOCUMENTS: readonly SealedDocument[] = [
  {
    table: "releases",
    key: "id",
    columns: ["snapshot"],
    name: "releases.snapshot",
    reseal: snapshotVariables("snapshot", sealedVariableContext),
  },
  {
    table: "runbook_snapshots",
    key: "id",
    columns: ["snapshot"],
    name: "runbook_snapshots.snapshot",
    reseal: snapshotVariables("snapshot", (id, index) => `runbook-snapshot:${id}:variable:${index}`),
  },
  {
    table: "runbook_runs",
    key: "id",
    columns: ["parameters", "sensitive"],
    name: "runbook_runs.parameters",
    reseal: sensitiveParameters((id, name) => `runbook-run:${id}:parameter:${name}`),
  },
  {
    table: "runbook_schedules",
    key: "id",
    columns: ["parameters", "sensitive"],
    name: "runbook_schedules.parameters",
    reseal: sensitiveParameters((id, name) => `runbook-schedule:${id}:parameter:${name}`),
  },
];

/** Every place a sealed value is stored, as "table.column": the columns, then the JSON documents. */
export function sealedLocations(): string[] {
  return [
    ...SEALED_COLUMNS.map(({ table, column }) => `${table}.${column}`),
    ...SEALED_DOCUMENTS.map((document) => document.name),
  ];
}

/** What one pass re-sealed: values per "table.column", and audit entries re-chained. */
export interface ResealCounts {
  values: Record<string, number>;
  auditEntries: number;
}

const PAGE_ROWS = 500;

/**
 * Seals every value that is not under `secrets`' sealing key again under it, and re-chains
 * the audit log under it, in one transaction: either every value and entry moved, or none.
 *
 * The audit chain's head row is locked first, so appends on any node wait for the commit
 * and then chain onto the re-computed head. Every entry is checked under the key it names
 * before it is re-chained: a log that fails verification is not re-signed (that would
 * launder an edit), and the rotation is refused naming the entry.
 */
export async function resealEverything(context: StoreContext): Promise<ResealCounts> {
  const secrets = context.secrets;
  const sealingKeyId = secrets.keyId;
  const reseal = (sealed: string, valueContext: string): string | undefined =>
    sealedKeyId(sealed) === sealingKeyId ? undefined : secrets.seal(secrets.open(sealed, valueContext), valueContext);
  return context.db.transaction().execute(async (trx) => {
    const head = await trx
      .updateTable("audit_chain")
      .set((eb) => ({ seq: eb("seq", "+", 0) }))
      .where("id", "=", 1)
      .returning(["seq", "hash"])
      .executeTakeFirst();
    const values: Record<string, number> = {};
    for (const column of SEALED_COLUMNS) {
      values[`${column.table}.${column.column}`] = await resealColumn(trx, column, reseal);
    }
    for (const document of SEALED_DOCUMENTS) values[document.name] = await resealDocument(trx, document, reseal);
    const auditEntries = head ? await rechainAudit(trx, secrets, head.hash) : 0;
    return { values, auditEntries };
  });
}

async function resealColumn(
  trx: Executor,
  { table, key, column, context }: SealedColumn,
  reseal: (sealed: string, context: string) => string | undefined,
): Promise<number> {
  // Dynamic table and column names: the list above is the schema's own, checked by the test.
  const db = trx as unknown as import("kysely").Kysely<Record<string, Record<string, string | null>>>;
  const rows = await db.selectFrom(table).select([key, column]).where(column, "is not", null).execute();
  let changed = 0;
  for (const row of rows) {
    const id = String(row[key]);
    const again = reseal(String(row[column]), context(id));
    if (again === undefined) continue;
    await db
      .updateTable(table)
      .set({ [column]: again })
      .where(key, "=", id)
      .execute();
    changed += 1;
  }
  return changed;
}

async function resealDocument(
  trx: Executor,
  document: SealedDocument,
  reseal: (sealed: string, context: string) => string | undefined,
): Promise<number> {
  const db = trx as unknown as import("kysely").Kysely<Record<string, Record<string, string>>>;
  let changed = 0;
  for (let offset = 0; ; offset += PAGE_ROWS) {
    const rows = await db
      .selectFrom(document.table)
      .select([document.key, ...document.columns])
      .orderBy(document.key)
      .limit(PAGE_ROWS)
      .offset(offset)
      .execute();
    for (const row of rows) {
      const copy: Record<string, string> = { ...row, id: String(row[document.key]) };
      const count = document.reseal(copy, reseal);
      if (count === 0) continue;
      const column = document.columns[0] ?? "";
      await db
        .updateTable(document.table)
        .set({ [column]: copy[column] ?? "" })
        .where(document.key, "=", copy.id ?? "")
        .execute();
      changed += count;
    }
    if (rows.length < PAGE_ROWS) return changed;
  }
}

/** Checks each entry under the key it names, then chains it again under the sealing key. */
async function rechainAudit(trx: Executor, secrets: SecretBox, headHash: string): Promise<number> {
  const keyId = secrets.keyId;
  const newKey = secrets.deriveKey("audit-chain");
  const oldKeys = new Map<string, Buffer>();
  let previousOld = GENESIS_HASH;
  let previousNew = GENESIS_HASH;
  let changed = 0;
  for (let last = 0; ; ) {
    const rows: AuditEventRow[] = await trx
      .selectFrom("audit_events")
      .selectAll()
      .where("seq", ">", last)
      .orderBy("seq")
      .limit(PAGE_ROWS)
      .execute();
    for (const row of rows) {
      const entry = auditEntryContent(row);
      const refuse = (reason: string) =>
        new ConflictError(
          `the audit log fails verification at entry ${entry.seq} (${entry.id}): ${reason}; the master key was not rotated (a rotation re-signs the log and must not sign an edit): see 'ferry admin verify-audit'`,
        );
      if (!secrets.keyIds.includes(row.key_id)) {
        throw refuse(`it was sealed under master key ${row.key_id}, which this server does not have`);
      }
      let oldKey = oldKeys.get(row.key_id);
      if (!oldKey) {
        oldKey = secrets.deriveKey("audit-chain", row.key_id);
        oldKeys.set(row.key_id, oldKey);
      }
      if (row.prev_hash !== previousOld) throw refuse("its prev_hash is not the hash of the entry before it");
      if (chainHash(oldKey, row.prev_hash, entry) !== row.hash) throw refuse("its content does not match its hash");
      previousOld = row.hash;
      const hash = chainHash(newKey, previousNew, { ...entry, keyId });
      if (hash !== row.hash || row.key_id !== keyId || row.prev_hash !== previousNew) {
        await trx
          .updateTable("audit_events")
          .set({ key_id: keyId, prev_hash: previousNew, hash })
          .where("seq", "=", row.seq)
          .execute();
        changed += 1;
      }
      previousNew = hash;
    }
    const newest = rows.at(-1);
    if (rows.length < PAGE_ROWS || !newest) break;
    last = Number(newest.seq);
  }
  if (previousOld !== headHash) {
    throw new ConflictError(
      "the audit log's newest entry is not the one its chain head names (entries were deleted); the master key was not rotated: see 'ferry admin verify-audit'",
    );
  }
  await trx.updateTable("audit_chain").set({ hash: previousNew }).where("id", "=", 1).execute();
  return changed;
}

/**
 * The first stored value or audit entry under a key `secrets` does not have, named by
 * table and key id; undefined when every one is readable. The server's start asks (a
 * database restored without its master.key fails there, saying so, instead of on each use).
 */
export async function findForeignKey(context: StoreContext): Promise<{ where: string; keyId: string } | undefined> {
  const known = context.secrets.keyIds;
  const db = context.db as unknown as import("kysely").Kysely<Record<string, Record<string, string | null>>>;
  for (const { table, column } of SEALED_COLUMNS) {
    let query = db.selectFrom(table).select(column).where(column, "is not", null);
    for (const keyId of known) query = query.where(column, "not like", `v1:${keyId}:%`);
    const row = await query.limit(1).executeTakeFirst();
    if (row) return { where: `${table}.${column}`, keyId: sealedKeyId(String(row[column])) ?? "(unknown format)" };
  }
  // A document holds several values; one that holds sealed values and none under a known
  // key is what a database restored without its key looks like (the start names it).
  for (const document of SEALED_DOCUMENTS) {
    const column = document.columns[0] ?? "";
    let query = db.selectFrom(document.table).select(column).where(column, "like", '%"v1:%');
    for (const keyId of known) query = query.where(column, "not like", `%"v1:${keyId}:%`);
    const row = await query.limit(1).executeTakeFirst();
    const keyId = /"v1:([0-9a-f]{12}):/.exec(String(row?.[column] ?? ""))?.[1];
    if (row && keyId !== undefined) return { where: document.name, keyId };
  }
  const entry = await context.db
    .selectFrom("audit_events")
    .select("key_id")
    .where("key_id", "not in", known)
    .limit(1)
    .executeTakeFirst();
  return entry ? { where: "audit_events", keyId: entry.key_id } : undefined;
}
