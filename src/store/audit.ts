import {
  type AuditActor,
  AuditChainVerifier,
  type AuditDiff,
  type AuditEntryContent,
  type AuditEvent,
  type AuditResource,
  type AuditVerification,
  type ChainedAuditEntry,
  canonicalJson,
  chainHash,
} from "../domain/audit.js";
import type { SecretBox } from "../security/secretBox.js";
import { newId, nowIso, type StoreContext } from "./common.js";
import type { AuditEventRow } from "./schema.js";

/*
 * The audit log's table. Rows are only inserted, one at a time, each holding the hash of
 * the row before it (see src/domain/audit.ts). Appends are serialised by the row lock of
 * the single `audit_chain` row: every appender UPDATEs it first, inside its transaction,
 * so on PostgreSQL a second node's append waits there until the first commits and then
 * reads the new head; SQLite has one writer anyway. The chain is therefore linear however
 * many nodes append, and `seq` has no gaps.
 */

export interface NewAuditEvent {
  actor: AuditActor;
  /** The client's address, "engine" or "server". */
  source: string;
  action: string;
  resource: AuditResource;
  diff?: AuditDiff | undefined;
}

export interface AuditQuery {
  /** Entries with a seq above this one (0: from the first). */
  after: number;
  limit: number;
  /** "project" (every project entry) or "project:<id or name>". */
  resource?: string | undefined;
  /** Exact action, e.g. "variable.update". */
  action?: string | undefined;
}

export interface AuditPage {
  items: AuditEvent[];
  /** Entries matching the filters, in all pages. */
  total: number;
  limit: number;
  /** The `after` of the next page; null on the last one. */
  next: number | null;
}

/** The chain key per master key: derived once, never stored (derived again after a rotation, ADR 0046). */
const chainKeys = new WeakMap<SecretBox, { keyId: string; key: Buffer }>();

function chainKey(secrets: SecretBox): Buffer {
  let cached = chainKeys.get(secrets);
  if (cached?.keyId !== secrets.keyId) {
    cached = { keyId: secrets.keyId, key: secrets.deriveKey("audit-chain") };
    chainKeys.set(secrets, cached);
  }
  return cached.key;
}

/** Appends one entry at the end of the chain and returns it. */
export async function appendAuditEvent(context: StoreContext, event: NewAuditEvent): Promise<AuditEvent> {
  const id = newId("aud");
  const diff = canonicalJson(event.diff ?? {});
  return context.db.transaction().execute(async (trx) => {
    // First statement of the transaction: takes the head's row lock (see the top of this file).
    const head = await trx
      .updateTable("audit_chain")
      .set((eb) => ({ seq: eb("seq", "+", 1) }))
      .where("id", "=", 1)
      .returning(["seq", "hash"])
      .executeTakeFirst();
    if (!head) {
      throw new Error(
        "the audit chain head (table audit_chain, row 1) is missing, so nothing can be appended to the audit log; run 'ferry admin verify-audit'",
      );
    }
    // Read under the head's lock, together: a master key rotation (ADR 0046) re-chains the
    // log holding this lock, and switches the key before it takes it.
    const keyId = context.secrets.keyId;
    const key = chainKey(context.secrets);
    const content: AuditEntryContent = {
      seq: Number(head.seq),
      id,
      // Taken under the lock, so times follow the chain's order on one node.
      at: nowIso(),
      actorId: event.actor.id,
      actorName: event.actor.name,
      source: event.source,
      action: event.action,
      resourceType: event.resource.type,
      resourceId: event.resource.id ?? null,
      resourceName: event.resource.name ?? null,
      diff,
      keyId,
    };
    const hash = chainHash(key, head.hash, content);
    const row = toRow({ ...content, prevHash: head.hash, hash });
    await trx.insertInto("audit_events").values(row).execute();
    await trx.updateTable("audit_chain").set({ hash }).where("id", "=", 1).execute();
    return toAuditEvent(row);
  });
}

/** A page of entries in chain order (oldest first), after `query.after`. */
export async function listAuditEvents({ db }: StoreContext, query: AuditQuery): Promise<AuditPage> {
  let filtered = db.selectFrom("audit_events");
  if (query.resource) {
    const [type = "", reference] = splitResource(query.resource);
    filtered = filtered.where("resource_type", "=", type);
    if (reference !== undefined) {
      filtered = filtered.where((eb) =>
        eb.or([eb("resource_id", "=", reference), eb("resource_name", "=", reference)]),
      );
    }
  }
  if (query.action) filtered = filtered.where("action", "=", query.action);
  const rows = await filtered.selectAll().where("seq", ">", query.after).orderBy("seq").limit(query.limit).execute();
  const { count } = await filtered
    .select((eb) => eb.fn.countAll<number | string>().as("count"))
    .executeTakeFirstOrThrow();
  const last = rows.at(-1);
  return {
    items: rows.map(toAuditEvent),
    total: Number(count),
    limit: query.limit,
    next: rows.length === query.limit && last ? Number(last.seq) : null,
  };
}

/** Every entry after `after`, in chain order, read a page at a time (for the JSON-lines export). */
export async function* readAuditEvents(context: StoreContext, after = 0): AsyncGenerator<AuditEvent> {
  for await (const rows of auditRowPages(context, after)) yield* rows.map(toAuditEvent);
}

/**
 * Re-computes the chain from the first entry: each entry's hash from its columns, its
 * prev_hash against the entry before, seq without gaps, and the newest entry against the
 * chain head. Stops at the first fault and names that entry.
 */
export async function verifyAuditChain(context: StoreContext): Promise<AuditVerification> {
  const headRow = await context.db
    .selectFrom("audit_chain")
    .select(["seq", "hash"])
    .where("id", "=", 1)
    .executeTakeFirst();
  const head = headRow ? { seq: Number(headRow.seq), hash: headRow.hash } : null;
  const verifier = new AuditChainVerifier(chainKey(context.secrets), context.secrets.keyId, head ?? undefined);
  for await (const rows of auditRowPages(context, 0)) {
    for (const row of rows) {
      const fault = verifier.check(toEntry(row));
      if (fault) return { ok: false, checked: verifier.checked, head, firstBad: fault };
    }
  }
  const fault = verifier.finish();
  return fault
    ? { ok: false, checked: verifier.checked, head, firstBad: fault }
    : { ok: true, checked: verifier.checked, head };
}

const PAGE_ROWS = 1000;

/** Pages by seq (an index range scan each), so a long read holds no transaction or lock. */
async function* auditRowPages({ db }: StoreContext, after: number): AsyncGenerator<AuditEventRow[]> {
  for (let last = after; ; ) {
    const rows = await db
      .selectFrom("audit_events")
      .selectAll()
      .where("seq", ">", last)
      .orderBy("seq")
      .limit(PAGE_ROWS)
      .execute();
    if (rows.length > 0) yield rows;
    const newest = rows.at(-1);
    if (rows.length < PAGE_ROWS || !newest) return;
    last = Number(newest.seq);
  }
}

function splitResource(filter: string): [string, string | undefined] {
  const colon = filter.indexOf(":");
  return colon < 0 ? [filter, undefined] : [filter.slice(0, colon), filter.slice(colon + 1)];
}

function toRow(entry: ChainedAuditEntry): AuditEventRow {
  return {
    seq: entry.seq,
    id: entry.id,
    at: entry.at,
    actor_id: entry.actorId,
    actor_name: entry.actorName,
    source: entry.source,
    action: entry.action,
    resource_type: entry.resourceType,
    resource_id: entry.resourceId,
    resource_name: entry.resourceName,
    diff: entry.diff,
    key_id: entry.keyId,
    prev_hash: entry.prevHash,
    hash: entry.hash,
  };
}

/** A stored entry's chained content (what its hash covers), as verification and a key rotation read it. */
export function auditEntryContent(row: AuditEventRow): AuditEntryContent {
  return {
    seq: Number(row.seq),
    id: row.id,
    at: row.at,
    actorId: row.actor_id,
    actorName: row.actor_name,
    source: row.source,
    action: row.action,
    resourceType: row.resource_type,
    resourceId: row.resource_id,
    resourceName: row.resource_name,
    diff: row.diff,
    keyId: row.key_id,
  };
}

function toEntry(row: AuditEventRow): ChainedAuditEntry {
  return { ...auditEntryContent(row), prevHash: row.prev_hash, hash: row.hash };
}

function toAuditEvent(row: AuditEventRow): AuditEvent {
  return {
    seq: Number(row.seq),
    id: row.id,
    at: row.at,
    actor: { id: row.actor_id, name: row.actor_name },
    source: row.source,
    action: row.action,
    resource: { type: row.resource_type, id: row.resource_id, name: row.resource_name },
    diff: parseDiff(row.diff),
    keyId: row.key_id,
    prevHash: row.prev_hash,
    hash: row.hash,
  };
}

/** The stored diff; a row edited into something that is not a JSON object still lists (and fails verification). */
function parseDiff(text: string): AuditDiff {
  try {
    const value: unknown = JSON.parse(text);
    if (value !== null && typeof value === "object" && !Array.isArray(value)) return value as AuditDiff;
  } catch {
    // Shown as it is below.
  }
  return { "(stored diff is not a JSON object)": { from: null, to: text } };
}
