import type { Paging } from "../domain/common.js";
import { NotFoundError } from "../domain/errors.js";
import type { ApiKey } from "../domain/users.js";
import { apiKeyDisplayPrefix, hashApiKey } from "../security/apiKeys.js";
import { countRows, newId, nowIso, type StoreContext, toPage } from "./common.js";
import type { Database } from "./schema.js";

export interface ApiKeyIdentity {
  id: string;
  name: string;
  role: string;
}

/** Who a request comes from: an API key (maybe a user's) or a user's browser session. */
export interface Identity {
  via: "api-key" | "session";
  /** For the audit log: the key's id (api-key) or the user's id (session). */
  id: string;
  /** For the audit log: the key's name, or the username. */
  name: string;
  /** The user behind the request; null for the bootstrap admin key and service keys. */
  userId: string | null;
  /** An admin key, or a key or session of an admin user. */
  isAdmin: boolean;
  /** Present for sessions only. */
  session?: { id: string; csrfToken: string };
}

/**
 * The person (or, for keys without a user, the key) behind a request, the same across a
 * user's sessions and keys: separation of duties compares these, never display names.
 */
export function principalOf(identity: Identity): string {
  return identity.userId !== null ? `user:${identity.userId}` : `key:${identity.id}`;
}

/** Stores a key by its hash only; the key itself is returned to the caller once and forgotten. */
export async function insertApiKey(
  { db }: StoreContext,
  key: string,
  options: { name: string; role: string; userId?: string | null; expiresAt?: string | null },
): Promise<ApiKeyIdentity & { apiKey: ApiKey }> {
  const id = newId("key");
  const row = {
    id,
    name: options.name,
    prefix: apiKeyDisplayPrefix(key),
    hash: hashApiKey(key),
    role: options.role,
    created_at: nowIso(),
    expires_at: options.expiresAt ?? null,
    last_used_at: null,
    revoked_at: null,
    user_id: options.userId ?? null,
  };
  await db.insertInto("api_keys").values(row).execute();
  return { id, name: options.name, role: options.role, apiKey: toApiKey(row) };
}

export async function countApiKeys({ db }: StoreContext): Promise<number> {
  return countRows(db, "api_keys");
}

type ApiKeyRow = Database["api_keys"];

function toApiKey(row: Omit<ApiKeyRow, "hash" | "role">): ApiKey {
  return {
    id: row.id,
    name: row.name,
    prefix: row.prefix,
    userId: row.user_id,
    createdAt: row.created_at,
    expiresAt: row.expires_at,
    lastUsedAt: row.last_used_at,
    revokedAt: row.revoked_at,
  };
}

const listedColumns = [
  "id",
  "name",
  "prefix",
  "user_id",
  "created_at",
  "expires_at",
  "last_used_at",
  "revoked_at",
] as const;

/** Keys of one user, or every key when `userId` is undefined (admins). Never the hash. */
export async function listApiKeys({ db }: StoreContext, owner: { userId: string | null } | undefined, paging: Paging) {
  let query = db.selectFrom("api_keys");
  if (owner) {
    query = owner.userId === null ? query.where("user_id", "is", null) : query.where("user_id", "=", owner.userId);
  }
  const rows = await query
    .select(listedColumns)
    .orderBy("created_at")
    .orderBy("id")
    .limit(paging.limit)
    .offset(paging.offset)
    .execute();
  const { count } = await query.select((eb) => eb.fn.countAll<number | string>().as("count")).executeTakeFirstOrThrow();
  return toPage(rows.map(toApiKey), Number(count), paging);
}

/**
 * Revokes a key (it stays listed, with revokedAt). `owner` limits it to one user's keys:
 * another user's key is "not found", so ids of others' keys cannot be probed.
 */
export async function revokeApiKey(
  { db }: StoreContext,
  keyId: string,
  owner: { userId: string | null } | undefined,
): Promise<ApiKey> {
  let query = db.selectFrom("api_keys").select(listedColumns).where("id", "=", keyId);
  if (owner)
    query = owner.userId === null ? query.where("user_id", "is", null) : query.where("user_id", "=", owner.userId);
  const row = await query.executeTakeFirst();
  if (!row) throw new NotFoundError(`no API key '${keyId}'; list them with 'ferry api-key list'`);
  if (row.revoked_at !== null) return toApiKey(row);
  const revokedAt = nowIso();
  await db.updateTable("api_keys").set({ revoked_at: revokedAt }).where("id", "=", keyId).execute();
  return toApiKey({ ...row, revoked_at: revokedAt });
}

/**
 * The identity behind a presented key, or undefined when the key is unknown, revoked or
 * expired, or its user is disabled. Looked up by hash (indexed, unique): the key never
 * reaches the database.
 */
export async function authenticateApiKey({ db }: StoreContext, key: string): Promise<Identity | undefined> {
  const now = nowIso();
  const row = await db
    .selectFrom("api_keys")
    .leftJoin("users", "users.id", "api_keys.user_id")
    .select([
      "api_keys.id",
      "api_keys.name",
      "api_keys.role",
      "api_keys.expires_at",
      "api_keys.revoked_at",
      "api_keys.last_used_at",
      "api_keys.user_id",
      "users.username",
      "users.is_admin",
      "users.disabled",
    ])
    .where("api_keys.hash", "=", hashApiKey(key))
    .executeTakeFirst();
  if (!row || row.revoked_at !== null || (row.expires_at !== null && row.expires_at <= now)) return undefined;
  if (row.user_id !== null && (row.username === null || Number(row.disabled) === 1)) return undefined;
  // Record use at most once a minute so reads do not turn every request into a write.
  if (row.last_used_at === null || Date.parse(now) - Date.parse(row.last_used_at) > 60_000) {
    await db.updateTable("api_keys").set({ last_used_at: now }).where("id", "=", row.id).execute();
  }
  return {
    via: "api-key",
    id: row.id,
    name: row.user_id === null ? row.name : `${row.username} (${row.name})`,
    userId: row.user_id,
    isAdmin: row.user_id === null ? row.role === "admin" : Number(row.is_admin) === 1,
  };
}
