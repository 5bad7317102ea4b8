import { apiKeyDisplayPrefix, hashApiKey } from "../security/apiKeys.js";
import { countRows, newId, nowIso, type StoreContext } from "./common.js";

export interface ApiKeyIdentity {
  id: string;
  name: string;
  role: string;
}

/** Stores a key by its hash only; the key itself is returned to the caller once and forgotten. */
export async function insertApiKey(
  { db }: StoreContext,
  key: string,
  options: { name: string; role: string },
): Promise<ApiKeyIdentity> {
  const id = newId("key");
  await db
    .insertInto("api_keys")
    .values({
      id,
      name: options.name,
      prefix: apiKeyDisplayPrefix(key),
      hash: hashApiKey(key),
      role: options.role,
      created_at: nowIso(),
      expires_at: null,
      last_used_at: null,
      revoked_at: null,
    })
    .execute();
  return { id, name: options.name, role: options.role };
}

export async function countApiKeys({ db }: StoreContext): Promise<number> {
  return countRows(db, "api_keys");
}

/**
 * The identity behind a presented key, or undefined when the key is unknown, revoked or
 * expired. Looked up by hash (indexed, unique): the key never reaches the database.
 */
export async function authenticateApiKey({ db }: StoreContext, key: string): Promise<ApiKeyIdentity | undefined> {
  const now = nowIso();
  const row = await db
    .selectFrom("api_keys")
    .select(["id", "name", "role", "expires_at", "revoked_at", "last_used_at"])
    .where("hash", "=", hashApiKey(key))
    .executeTakeFirst();
  if (!row || row.revoked_at !== null || (row.expires_at !== null && row.expires_at <= now)) return undefined;
  // Record use at most once a minute so reads do not turn every request into a write.
  if (row.last_used_at === null || Date.parse(now) - Date.parse(row.last_used_at) > 60_000) {
    await db.updateTable("api_keys").set({ last_used_at: now }).where("id", "=", row.id).execute();
  }
  return { id: row.id, name: row.name, role: row.role };
}
