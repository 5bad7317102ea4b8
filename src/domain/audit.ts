import { createHmac } from "node:crypto";
import { z } from "zod";

/*
 * The audit log's rules, without I/O: how a change becomes a field-level diff that never
 * holds a secret, and how each entry is chained to the one before it so that an entry
 * edited, removed or added through the database is found by `ferry admin verify-audit`.
 */

/** Shown in place of a secret's value (a sensitive variable's value, a feed password, a webhook secret). */
export const SENSITIVE = "(sensitive)";
/** The new value of a secret the request wrote. */
export const CHANGED = "(changed)";

/** The `prev_hash` of the first entry. */
export const GENESIS_HASH = "0".repeat(64);

/** Part of every hashed text: a later change to what is hashed gets a new version. */
const CHAIN_VERSION = "ferry-audit-v1";

/**
 * Fields that say nothing about the change itself: every representation's timestamps, and
 * a target's health, which the server observes rather than anyone changes.
 */
const UNDIFFED_FIELDS = new Set(["createdAt", "updatedAt", "health"]);

/** What an entry is about: "project" web-api (prj_…). */
export interface AuditResource {
  type: string;
  id?: string | null | undefined;
  /** Slug, name or a short label, for people and for filtering. */
  name?: string | null | undefined;
}

interface FieldChange {
  from: unknown;
  to: unknown;
}

/** Field name → what it was and what it became. Secrets appear only as SENSITIVE / CHANGED. */
export type AuditDiff = Record<string, FieldChange>;

/** Who did it and from where: an API key from an address, or the engine. */
export interface AuditActor {
  /** The API key's id; null for the engine and the server itself. */
  id: string | null;
  name: string;
}

/** A change as a route or observer describes it; `diffOf` turns it into the entry's diff. */
export interface AuditChange {
  resource: AuditResource;
  /**
   * The resource as the API shows it before the change (null or absent: it did not exist)
   * and after it (null or absent: it is gone). API representations never hold a secret
   * (they show "set"), so a diff of two of them cannot leak one.
   */
  before?: Record<string, unknown> | null | undefined;
  after?: Record<string, unknown> | null | undefined;
  /** Fields whose values are secrets in either representation; recorded only as SENSITIVE / CHANGED. */
  sensitive?: readonly string[] | undefined;
  /** Fields the request wrote: a secret written is recorded as changed although its representation ("set") is not. */
  written?: readonly string[] | undefined;
}

/** The field-level diff of a change: fields whose value differs, secrets masked. */
export function diffOf(change: AuditChange): AuditDiff {
  const before = change.before ?? null;
  const after = change.after ?? null;
  const sensitive = new Set(change.sensitive ?? []);
  const written = new Set(change.written ?? []);
  const diff: AuditDiff = {};
  const fields = [...new Set([...Object.keys(before ?? {}), ...Object.keys(after ?? {})])].sort();
  for (const field of fields) {
    if (UNDIFFED_FIELDS.has(field)) continue;
    const from = before ? (before[field] ?? null) : null;
    const to = after ? (after[field] ?? null) : null;
    if (sensitive.has(field)) {
      const masked = maskedChange(from, to, after !== null && written.has(field));
      if (masked) diff[field] = masked;
    } else if (canonicalJson(from) !== canonicalJson(to)) {
      diff[field] = { from, to };
    }
  }
  return diff;
}

/** A secret field's change without its value: set, replaced, cleared, or nothing to record. */
function maskedChange(from: unknown, to: unknown, written: boolean): FieldChange | undefined {
  const had = from !== null && from !== "";
  const has = to !== null && to !== "";
  if (!had && !has) return undefined;
  if (had && has && !written) return undefined;
  return { from: had ? SENSITIVE : null, to: has ? (had ? CHANGED : SENSITIVE) : null };
}

/** JSON with object keys sorted at every level: equal values give equal text. */
export function canonicalJson(value: unknown): string {
  return JSON.stringify(sortKeys(value)) ?? "null";
}

function sortKeys(value: unknown): unknown {
  if (Array.isArray(value)) return value.map(sortKeys);
  if (value !== null && typeof value === "object") {
    return Object.fromEntries(
      Object.keys(value)
        .sort()
        .map((key) => [key, sortKeys((value as Record<string, unknown>)[key])]),
    );
  }
  return value;
}

/** An entry's content: every column that its hash covers, as stored. */
export interface AuditEntryContent {
  seq: number;
  id: string;
  at: string;
  actorId: string | null;
  actorName: string;
  source: string;
  action: string;
  resourceType: string;
  resourceId: string | null;
  resourceName: string | null;
  /** canonicalJson of the AuditDiff, exactly as stored. */
  diff: string;
  /** Fingerprint of the master key whose derived key sealed the entry. */
  keyId: string;
}

export interface ChainedAuditEntry extends AuditEntryContent {
  prevHash: string;
  hash: string;
}

/**
 * HMAC-SHA256, under a key derived from the master key, of the previous entry's hash and
 * this entry's columns in a fixed order. Without the key (which lives in the data
 * directory, not the database) nobody can compute the hash of an edited or forged entry,
 * so re-computing the rest of the chain after an edit is not possible either.
 */
export function chainHash(key: Buffer, prevHash: string, entry: AuditEntryContent): string {
  const text = JSON.stringify([
    CHAIN_VERSION,
    prevHash,
    entry.seq,
    entry.id,
    entry.at,
    entry.actorId,
    entry.actorName,
    entry.source,
    entry.action,
    entry.resourceType,
    entry.resourceId,
    entry.resourceName,
    entry.diff,
    entry.keyId,
  ]);
  return createHmac("sha256", key).update(text).digest("hex");
}

/** An entry as the API lists and exports it. */
export const auditEventSchema = z.object({
  seq: z.number().int(),
  id: z.string(),
  at: z.string(),
  actor: z.object({ id: z.string().nullable().describe("API key id"), name: z.string() }),
  source: z.string().describe("the client's address, or 'engine' / 'server'"),
  action: z.string().describe("'project.update', 'task.finish' …"),
  resource: z.object({ type: z.string(), id: z.string().nullable(), name: z.string().nullable() }),
  diff: z.record(z.string(), z.object({ from: z.unknown(), to: z.unknown() })),
  keyId: z.string(),
  prevHash: z.string(),
  hash: z.string(),
});
export type AuditEvent = z.infer<typeof auditEventSchema>;

/** The first entry found broken, named by its seq and id (id null when the entry itself is missing). */
const auditFaultSchema = z.object({
  seq: z.number().int(),
  id: z.string().nullable(),
  reason: z.string(),
});
export type AuditFault = z.infer<typeof auditFaultSchema>;

export const auditVerificationSchema = z.object({
  ok: z.boolean(),
  /** Entries checked and found sound before the first fault (all of them when ok). */
  checked: z.number().int(),
  /** The newest entry as the chain head row records it. */
  head: z.object({ seq: z.number().int(), hash: z.string() }).nullable(),
  firstBad: auditFaultSchema.optional(),
});
export type AuditVerification = z.infer<typeof auditVerificationSchema>;

/** The chain head: the newest entry's seq and hash, kept in its own row (0 and GENESIS_HASH when empty). */
export interface AuditChainHead {
  seq: number;
  hash: string;
}

/**
 * Checks entries one by one in seq order. `head` is read before the first entry: entries
 * appended while the check runs come after it and are checked like the others.
 */
export class AuditChainVerifier {
  private expectedSeq = 1;
  private previousHash = GENESIS_HASH;
  private headEntry: { id: string; hash: string } | undefined;
  checked = 0;

  constructor(
    private readonly key: Buffer,
    private readonly keyId: string,
    private readonly head: AuditChainHead | undefined,
  ) {}

  /** The entry's fault, or undefined when it is sound and follows the one checked before. */
  check(entry: ChainedAuditEntry): AuditFault | undefined {
    const fault = (reason: string): AuditFault => ({ seq: entry.seq, id: entry.id, reason });
    if (entry.seq > this.expectedSeq) {
      const missing =
        entry.seq - 1 === this.expectedSeq
          ? `entry ${this.expectedSeq} is`
          : `entries ${this.expectedSeq}-${entry.seq - 1} are`;
      return fault(`${missing} missing before it: deleted from the database`);
    }
    if (entry.seq < this.expectedSeq) return fault(`its seq repeats an earlier one (expected ${this.expectedSeq})`);
    if (entry.prevHash !== this.previousHash) {
      return fault(
        "its prev_hash is not the hash of the entry before it: that entry was replaced, or this one inserted",
      );
    }
    if (entry.keyId !== this.keyId) {
      return fault(`it was sealed under master key ${entry.keyId}, but this server has master key ${this.keyId}`);
    }
    if (chainHash(this.key, entry.prevHash, entry) !== entry.hash) {
      return fault("its content does not match its hash: it was edited in the database, or forged");
    }
    if (this.head && entry.seq === this.head.seq) this.headEntry = { id: entry.id, hash: entry.hash };
    this.previousHash = entry.hash;
    this.expectedSeq += 1;
    this.checked += 1;
    return undefined;
  }

  /** After the last entry: the chain must reach the head (the newest entries were not deleted). */
  finish(): AuditFault | undefined {
    if (!this.head) return { seq: 0, id: null, reason: "the chain head row (table audit_chain) is missing" };
    const last = this.expectedSeq - 1;
    if (last < this.head.seq) {
      const missing =
        last + 1 === this.head.seq ? `entry ${this.head.seq} is` : `entries ${last + 1}-${this.head.seq} are`;
      return {
        seq: last + 1,
        id: null,
        reason: `${missing} missing: the newest entries were deleted from the database`,
      };
    }
    if (this.head.seq > 0 && this.headEntry?.hash !== this.head.hash) {
      return {
        seq: this.head.seq,
        id: this.headEntry?.id ?? null,
        reason: "the chain head (table audit_chain) records another hash for this entry",
      };
    }
    return undefined;
  }
}
