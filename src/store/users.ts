import type { Paging } from "../domain/common.js";
import { ConflictError, NotFoundError } from "../domain/errors.js";
import type { CreateUser, UpdateUser, User } from "../domain/users.js";
import { generateCsrfToken, generateSessionToken, hashSessionToken } from "../security/apiKeys.js";
import { hashPassword, passwordHashForUnknownUser, verifyPassword } from "../security/passwords.js";
import { newId, nowIso, type StoreContext, toPage } from "./common.js";
import { isUniqueViolation } from "./db.js";
import type { Database } from "./schema.js";

type UserRow = Database["users"];

function toUser(
  row: Pick<UserRow, "id" | "username" | "display_name" | "is_admin" | "disabled" | "created_at" | "updated_at">,
): User {
  return {
    id: row.id,
    username: row.username,
    displayName: row.display_name,
    isAdmin: Number(row.is_admin) === 1,
    disabled: Number(row.disabled) === 1,
    createdAt: row.created_at,
    updatedAt: row.updated_at,
  };
}

const userColumns = ["id", "username", "display_name", "is_admin", "disabled", "created_at", "updated_at"] as const;

export async function createUser({ db }: StoreContext, input: CreateUser): Promise<User> {
  const now = nowIso();
  const row = {
    id: newId("usr"),
    username: input.username,
    display_name: input.displayName ?? input.username,
    password_hash: await hashPassword(input.password),
    is_admin: input.isAdmin ? 1 : 0,
    disabled: 0,
    created_at: now,
    updated_at: now,
  };
  try {
    await db.insertInto("users").values(row).execute();
  } catch (error) {
    if (isUniqueViolation(error))
      throw new ConflictError(`a user named '${input.username}' exists; choose another username`);
    throw error;
  }
  return toUser(row);
}

export async function listUsers({ db }: StoreContext, paging: Paging) {
  const rows = await db
    .selectFrom("users")
    .select(userColumns)
    .orderBy("username")
    .limit(paging.limit)
    .offset(paging.offset)
    .execute();
  const { count } = await db
    .selectFrom("users")
    .select((eb) => eb.fn.countAll<number | string>().as("count"))
    .executeTakeFirstOrThrow();
  return toPage(rows.map(toUser), Number(count), paging);
}

/** A user by id or username. */
export async function getUser({ db }: StoreContext, reference: string): Promise<User> {
  const row = await db
    .selectFrom("users")
    .select(userColumns)
    .where((eb) => eb.or([eb("id", "=", reference), eb("username", "=", reference)]))
    .executeTakeFirst();
  if (!row) throw noSuchUser(reference);
  return toUser(row);
}

/** The answer for a user that does not exist, also given to a caller who may not see the one that does. */
export function noSuchUser(reference: string): NotFoundError {
  return new NotFoundError(`no user '${reference}'; list them with GET /api/v1/users (administrators)`);
}

/**
 * Changes a user. A new password, disabling, or losing admin signs the user out everywhere
 * (their sessions are deleted), so the change takes effect at once.
 */
export async function updateUser(context: StoreContext, reference: string, input: UpdateUser): Promise<User> {
  const { db } = context;
  const user = await getUser(context, reference);
  await db
    .updateTable("users")
    .set({
      ...(input.displayName !== undefined && { display_name: input.displayName }),
      ...(input.password !== undefined && { password_hash: await hashPassword(input.password) }),
      ...(input.isAdmin !== undefined && { is_admin: input.isAdmin ? 1 : 0 }),
      ...(input.disabled !== undefined && { disabled: input.disabled ? 1 : 0 }),
      updated_at: nowIso(),
    })
    .where("id", "=", user.id)
    .execute();
  if (input.password !== undefined || input.disabled === true || input.isAdmin === false) {
    await db.deleteFrom("sessions").where("user_id", "=", user.id).execute();
  }
  return getUser(context, user.id);
}

/** Deletes a user with their sessions and API keys. */
export async function deleteUser(context: StoreContext, reference: string): Promise<void> {
  const user = await getUser(context, reference);
  await context.db.transaction().execute(async (trx) => {
    await trx.deleteFrom("sessions").where("user_id", "=", user.id).execute();
    await trx.deleteFrom("api_keys").where("user_id", "=", user.id).execute();
    await trx.deleteFrom("users").where("id", "=", user.id).execute();
  });
}

/**
 * The user behind a username and password, or undefined. An unknown username, a wrong
 * password and a disabled user take the same time and give the same answer. Routes call
 * it through verifyCredentialsWithinLimits (src/store/signInAttempts.ts), never directly.
 */
export async function verifyCredentials(
  { db }: StoreContext,
  username: string,
  password: string,
): Promise<User | undefined> {
  const row = await db.selectFrom("users").selectAll().where("username", "=", username).executeTakeFirst();
  const matches = await verifyPassword(password, row?.password_hash ?? (await passwordHashForUnknownUser()));
  if (!row || !matches || Number(row.disabled) === 1) return undefined;
  return toUser(row);
}

export async function setPassword({ db }: StoreContext, userId: string, password: string, keepSessionId?: string) {
  await db
    .updateTable("users")
    .set({ password_hash: await hashPassword(password), updated_at: nowIso() })
    .where("id", "=", userId)
    .execute();
  // Other sessions end: whoever knew the old password is signed out.
  let query = db.deleteFrom("sessions").where("user_id", "=", userId);
  if (keepSessionId) query = query.where("id", "!=", keepSessionId);
  await query.execute();
}

/** Sessions last 12 hours from sign-in, and end after 2 hours without a request. */
const SESSION_LIFETIME_MS = 12 * 60 * 60 * 1000;
const SESSION_IDLE_MS = 2 * 60 * 60 * 1000;
/** last_seen_at is written at most once a minute (as for API keys' last_used_at). */
const LAST_SEEN_RESOLUTION_MS = 60_000;

export interface SessionIdentity {
  sessionId: string;
  csrfToken: string;
  user: User;
}

/** A new session for `userId`: returns the cookie's token (stored only as a hash) and the CSRF token. */
export async function createSession({ db }: StoreContext, userId: string) {
  const token = generateSessionToken();
  const csrfToken = generateCsrfToken();
  const now = new Date();
  const id = newId("ses");
  await db
    .insertInto("sessions")
    .values({
      id,
      token_hash: hashSessionToken(token),
      user_id: userId,
      csrf_token: csrfToken,
      created_at: now.toISOString(),
      last_seen_at: now.toISOString(),
      expires_at: new Date(now.getTime() + SESSION_LIFETIME_MS).toISOString(),
    })
    .execute();
  return { id, token, csrfToken, maxAgeSeconds: SESSION_LIFETIME_MS / 1000 };
}

/** The session behind a cookie's token, or undefined when unknown, expired, idle too long or its user is disabled. */
export async function authenticateSession({ db }: StoreContext, token: string): Promise<SessionIdentity | undefined> {
  const row = await db
    .selectFrom("sessions")
    .innerJoin("users", "users.id", "sessions.user_id")
    .select([
      "sessions.id as session_id",
      "sessions.csrf_token",
      "sessions.last_seen_at",
      "sessions.expires_at",
      ...userColumns.map((column) => `users.${column}` as const),
    ])
    .where("sessions.token_hash", "=", hashSessionToken(token))
    .executeTakeFirst();
  if (!row) return undefined;
  const now = Date.now();
  const expired = Date.parse(row.expires_at) <= now || Date.parse(row.last_seen_at) + SESSION_IDLE_MS <= now;
  if (expired || Number(row.disabled) === 1) {
    await db.deleteFrom("sessions").where("id", "=", row.session_id).execute();
    return undefined;
  }
  if (now - Date.parse(row.last_seen_at) > LAST_SEEN_RESOLUTION_MS) {
    await db
      .updateTable("sessions")
      .set({ last_seen_at: new Date(now).toISOString() })
      .where("id", "=", row.session_id)
      .execute();
  }
  return { sessionId: row.session_id, csrfToken: row.csrf_token, user: toUser(row) };
}

export async function deleteSession({ db }: StoreContext, sessionId: string): Promise<void> {
  await db.deleteFrom("sessions").where("id", "=", sessionId).execute();
}
