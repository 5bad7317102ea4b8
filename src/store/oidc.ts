import { createHash, randomBytes } from "node:crypto";
import { ConflictError } from "../domain/errors.js";
import type { User } from "../domain/users.js";
import { hashPassword } from "../security/passwords.js";
import { newId, nowIso, type StoreContext } from "./common.js";
import { isUniqueViolation } from "./db.js";
import { getUser } from "./users.js";

/** How long a sign-in may take between the redirect to the provider and its callback. */
const LOGIN_LIFETIME_MS = 10 * 60 * 1000;

/** The cookie that binds a sign-in to the browser that started it lives as long as the row. */
export const OIDC_LOGIN_MAX_AGE_SECONDS = LOGIN_LIFETIME_MS / 1000;

export interface OidcLogin {
  codeVerifier: string;
  nonce: string;
  returnTo: string;
}

function hashState(state: string): string {
  return createHash("sha256").update(state).digest("hex");
}

/** Keeps a sign-in under way until its callback; drops those that expired meanwhile. */
export async function saveOidcLogin({ db }: StoreContext, state: string, login: OidcLogin): Promise<void> {
  const now = new Date();
  await db.deleteFrom("oidc_logins").where("expires_at", "<=", now.toISOString()).execute();
  await db
    .insertInto("oidc_logins")
    .values({
      state_hash: hashState(state),
      code_verifier: login.codeVerifier,
      nonce: login.nonce,
      return_to: login.returnTo,
      created_at: now.toISOString(),
      expires_at: new Date(now.getTime() + LOGIN_LIFETIME_MS).toISOString(),
    })
    .execute();
}

/**
 * The sign-in behind `state`, consumed: it is deleted here, and only the caller whose
 * DELETE removed the row gets it, so two callbacks racing with one state cannot both win.
 * Undefined when unknown, already used or expired.
 */
export async function takeOidcLogin({ db }: StoreContext, state: string): Promise<OidcLogin | undefined> {
  const stateHash = hashState(state);
  const row = await db.selectFrom("oidc_logins").selectAll().where("state_hash", "=", stateHash).executeTakeFirst();
  if (!row) return undefined;
  const deleted = await db.deleteFrom("oidc_logins").where("state_hash", "=", stateHash).executeTakeFirst();
  if (Number(deleted.numDeletedRows) !== 1) return undefined;
  if (Date.parse(row.expires_at) <= Date.now()) return undefined;
  return { codeVerifier: row.code_verifier, nonce: row.nonce, returnTo: row.return_to };
}

/** The user linked to an OIDC identity, or undefined. */
export async function findUserByOidcIdentity(
  context: StoreContext,
  issuer: string,
  subject: string,
): Promise<User | undefined> {
  const row = await context.db
    .selectFrom("users")
    .select("id")
    .where("oidc_issuer", "=", issuer)
    .where("oidc_subject", "=", subject)
    .executeTakeFirst();
  return row ? getUser(context, row.id) : undefined;
}

export interface OidcLink {
  userId: string;
  issuer: string;
  subject: string;
}

/** Links a user to an OIDC identity (replacing an earlier link); an identity links one user at most. */
export async function linkOidcIdentity(
  context: StoreContext,
  reference: string,
  issuer: string,
  subject: string,
): Promise<OidcLink> {
  const user = await getUser(context, reference);
  try {
    await context.db
      .updateTable("users")
      .set({ oidc_issuer: issuer, oidc_subject: subject, updated_at: nowIso() })
      .where("id", "=", user.id)
      .execute();
  } catch (error) {
    if (isUniqueViolation(error)) {
      throw new ConflictError("another user is linked to this OIDC subject; unlink it there first");
    }
    throw error;
  }
  return { userId: user.id, issuer, subject };
}

/** Removes a user's OIDC link; returns the link that was removed (null when there was none). */
export async function unlinkOidcIdentity(context: StoreContext, reference: string): Promise<OidcLink | null> {
  const user = await getUser(context, reference);
  const row = await context.db
    .selectFrom("users")
    .select(["oidc_issuer", "oidc_subject"])
    .where("id", "=", user.id)
    .executeTakeFirstOrThrow();
  await context.db
    .updateTable("users")
    .set({ oidc_issuer: null, oidc_subject: null, updated_at: nowIso() })
    .where("id", "=", user.id)
    .execute();
  return row.oidc_issuer !== null && row.oidc_subject !== null
    ? { userId: user.id, issuer: row.oidc_issuer, subject: row.oidc_subject }
    : null;
}

/**
 * A new non-admin user for a first OIDC sign-in. Its password hash is an scrypt hash of 32
 * random bytes nobody keeps: no password verifies against it, and a password sign-in for it
 * costs the same work as for any user (a marker value would answer faster and tell OIDC
 * users apart). An administrator may still give it a password. The username is the first
 * free one among the provider's name for the person, and that name with a suffix.
 */
export async function createOidcUser(
  context: StoreContext,
  input: { issuer: string; subject: string; usernames: readonly string[]; displayName: string },
): Promise<User> {
  const passwordHash = await hashPassword(randomBytes(32).toString("base64url"));
  for (const username of input.usernames) {
    const now = nowIso();
    const id = newId("usr");
    try {
      await context.db
        .insertInto("users")
        .values({
          id,
          username,
          display_name: input.displayName,
          password_hash: passwordHash,
          is_admin: 0,
          disabled: 0,
          created_at: now,
          updated_at: now,
          oidc_issuer: input.issuer,
          oidc_subject: input.subject,
        })
        .execute();
      return getUser(context, id);
    } catch (error) {
      if (!isUniqueViolation(error)) throw error;
      // The identity itself was linked meanwhile (a second callback racing): use that user.
      const linked = await findUserByOidcIdentity(context, input.issuer, input.subject);
      if (linked) return linked;
    }
  }
  throw new ConflictError("no free username for this OIDC identity; ask an administrator to create and link a user");
}
