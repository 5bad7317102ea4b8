import { createHash } from "node:crypto";
import { type Kysely, PostgresAdapter, sql, type Transaction } from "kysely";
import { RateLimitedError } from "../domain/errors.js";
import type { User } from "../domain/users.js";
import { newId, type StoreContext } from "./common.js";
import type { Database } from "./schema.js";
import { verifyCredentials } from "./users.js";

/*
 * Sign-in limits (docs/decisions/0018-users-sessions.md, 0024-sign-in-limits-and-audit.md).
 *
 * Every password check is reserved as rows of `login_failures` BEFORE its scrypt hash is
 * computed, one per username and one per client address, and a reservation counts like a
 * failure until its check is known to have succeeded. Counting only the failures already
 * made (the old way) let 100 guesses sent at once all pass the count before the first of
 * them had failed.
 *
 * Reservations of one username or address are serialised, so each one counts every
 * reservation made before it: on PostgreSQL by transaction-scoped advisory locks keyed by
 * the two subjects, taken in a fixed order (two requests never wait for each other in a
 * cycle) and held only while counting and inserting (a few milliseconds, never during the
 * hash); on SQLite by its single writer (Kysely runs a transaction on its only
 * connection). Of 100 guesses at once, exactly the limit are checked.
 *
 * The limit lives in the database, not in memory: it is one limit for every server node
 * sharing a PostgreSQL database (the locks and rows are the database's), and it survives a
 * restart. A node that dies mid-check leaves its reservation behind: it counts as a
 * failure until it is older than the window.
 *
 * A row's subject says what it counts against and whether its check is still running:
 * `user:<username>` and `ip:<address>` are failed checks (as before); with the `checking:`
 * prefix, a check still running. One `refused:user:<username>` row per username holds the
 * last time an attempt was refused for it (it counts for nothing). Prefixes rather than a
 * new column keep the table as it is (no migration), and each counter stays one indexed
 * range or two.
 */

/** Checks counted per username and per client address within the window. */
const WINDOW_MS = 15 * 60 * 1000;
const CHECKS_PER_USERNAME = 5;
const CHECKS_PER_ADDRESS = 20;
const CHECKING = "checking:";
const REFUSED = "refused:";

interface Counter {
  /** The subject of its failed checks; CHECKING + subject while a check runs. */
  subject: string;
  limit: number;
  /** This request's row. */
  rowId: string;
}

/** The rows a check holds until it is known to have failed or succeeded. */
interface Reservation {
  username: Counter;
  address: Counter;
}

function sinceOf(now: number): string {
  return new Date(now - WINDOW_MS).toISOString();
}

/**
 * Checks `password` for `username` within the sign-in limits: at most 5 checks per
 * username and 20 per client address in 15 minutes (a successful one does not count,
 * unless the username is being guessed at: see recordSuccess).
 * Returns the user, or undefined when the username, password or user's state is not
 * right; throws RateLimitedError, before any hash is computed, when a limit is reached,
 * whether the password is right or not.
 */
export async function verifyCredentialsWithinLimits(
  context: StoreContext,
  username: string,
  password: string,
  address: string,
): Promise<User | undefined> {
  const reservation = await reserveCheck(context, username, address);
  let user: User | undefined;
  try {
    // The same scrypt work for an unknown username as for a known one (src/store/users.ts).
    user = await verifyCredentials(context, username, password);
  } catch (error) {
    // A check that broke off counts as failed: it may have been a guess.
    await recordFailure(context, reservation).catch(() => undefined);
    throw error;
  }
  if (user) await recordSuccess(context, reservation);
  else await recordFailure(context, reservation);
  return user;
}

/** Reserves a check for `username` from `address`, or throws RateLimitedError (nothing reserved). */
async function reserveCheck({ db }: StoreContext, username: string, address: string): Promise<Reservation> {
  const reservation: Reservation = {
    username: { subject: `user:${username.toLowerCase()}`, limit: CHECKS_PER_USERNAME, rowId: newId("lgf") },
    address: { subject: `ip:${address}`, limit: CHECKS_PER_ADDRESS, rowId: newId("lgf") },
  };
  const counters = [reservation.username, reservation.address];
  // Most of a flood finds the limit reached: it is refused after two reads, without a lock
  // or a write transaction (the attack pass's 2,000 parallel sign-ins each ran one to be
  // told 429, and SQLite's synchronous work held /healthz for seconds). Only a reservation,
  // or a refusal whose "refused lately" mark is due to move forward, takes the locks.
  const refusedEarly = await quickRefusal(db, reservation, Date.now());
  if (refusedEarly > 0) {
    throw new RateLimitedError(
      `too many sign-in attempts for this username or from this address; try again in ${refusedEarly} seconds`,
      refusedEarly,
    );
  }
  const waitSeconds = await underLocks(db, counters, async (trx) => {
    const now = Date.now();
    const { wait, usernameFull } = await fullness(trx, reservation, now);
    const at = new Date(now).toISOString();
    if (wait > 0) {
      // A refused attempt checks nothing and does not count: otherwise anyone could keep a
      // username locked for ever by sending one request every few minutes. It only marks
      // the username as refused lately (one row, moved forward), which recordSuccess reads.
      if (usernameFull) await markRefused(trx, reservation.username.subject, at);
      return wait;
    }
    await trx
      .insertInto("login_failures")
      .values(counters.map((counter) => ({ id: counter.rowId, subject: `${CHECKING}${counter.subject}`, at })))
      .execute();
    return 0;
  });
  if (waitSeconds > 0) {
    throw new RateLimitedError(
      `too many sign-in attempts for this username or from this address; try again in ${waitSeconds} seconds`,
      waitSeconds,
    );
  }
  return reservation;
}

/**
 * Whether the username's or the address's limit is reached: the seconds until a check fits
 * again (0: it fits now), and whether the username's is one of the full ones.
 */
async function fullness(
  db: Kysely<Database> | Transaction<Database>,
  reservation: Reservation,
  now: number,
): Promise<{ wait: number; usernameFull: boolean }> {
  let wait = 0;
  let usernameFull = false;
  for (const counter of [reservation.username, reservation.address]) {
    const rows = await db
      .selectFrom("login_failures")
      .select("at")
      .where("subject", "in", [counter.subject, `${CHECKING}${counter.subject}`])
      .where("at", ">", sinceOf(now))
      .orderBy("at", "desc")
      .limit(counter.limit)
      .execute();
    // Full: a check fits again when the oldest of the newest `limit` leaves the window.
    const oldest = rows[counter.limit - 1];
    if (!oldest) continue;
    wait = Math.max(wait, Math.ceil((Date.parse(oldest.at) + WINDOW_MS - now) / 1000), 1);
    if (counter === reservation.username) usernameFull = true;
  }
  return { wait, usernameFull };
}

/** How often at most the "refused lately" mark of a username moves forward (recordSuccess reads it within the window). */
const REFUSED_MARK_PRECISION_MS = 30_000;

/**
 * Seconds to wait when a limit is reached and nothing needs writing (the username's
 * refused mark, if it is full, is recent); 0 when the locked path must decide. Without a
 * lock it may see a place free that a concurrent reservation takes: then the locked path,
 * which counts again, refuses — it never admits on what this read.
 */
async function quickRefusal(db: Kysely<Database>, reservation: Reservation, now: number): Promise<number> {
  const { wait, usernameFull } = await fullness(db, reservation, now);
  if (wait === 0) return 0;
  if (usernameFull) {
    const mark = await db
      .selectFrom("login_failures")
      .select("at")
      .where("subject", "=", `${REFUSED}${reservation.username.subject}`)
      .executeTakeFirst();
    if (!mark || Date.parse(mark.at) < now - REFUSED_MARK_PRECISION_MS) return 0;
  }
  return wait;
}

/** The check failed: its rows stay as failures until they are WINDOW_MS old. */
async function recordFailure({ db }: StoreContext, reservation: Reservation): Promise<void> {
  // Checking → failed changes no count, so no lock is needed.
  for (const counter of [reservation.username, reservation.address]) {
    await db.updateTable("login_failures").set({ subject: counter.subject }).where("id", "=", counter.rowId).execute();
  }
  // Old rows count for nothing any more; dropping them keeps the table small.
  await db.deleteFrom("login_failures").where("at", "<=", sinceOf(Date.now())).execute();
}

/** Records that an attempt for `subject` (a username's) was refused at `at`. */
async function markRefused(trx: Transaction<Database>, subject: string, at: string): Promise<void> {
  const marker = `${REFUSED}${subject}`;
  const moved = await trx.updateTable("login_failures").set({ at }).where("subject", "=", marker).executeTakeFirst();
  if (Number(moved.numUpdatedRows) === 0) {
    await trx
      .insertInto("login_failures")
      .values({ id: newId("lgf"), subject: marker, at })
      .execute();
  }
}

/**
 * The check succeeded. For the address it stops counting (knowing one password is no
 * guess), but the address's failures stay: one good account must not unlock guessing at
 * others. For the username, a success clears its failures, so a person's own typos do not
 * add up over the day — unless the username is being guessed at: other checks of it still
 * running (guesses sent alongside this one), or an attempt refused within the window
 * (guesses waiting for the limit to let them in). Clearing then would let the guesser in
 * again, so this check stays, counted like a failure. Under the username's lock, so no
 * reservation is half made while this decides.
 */
async function recordSuccess({ db }: StoreContext, reservation: Reservation): Promise<void> {
  await db.deleteFrom("login_failures").where("id", "=", reservation.address.rowId).execute();
  const { subject, rowId } = reservation.username;
  await underLocks(db, [reservation.username], async (trx) => {
    const guessedAt = await trx
      .selectFrom("login_failures")
      .select("id")
      .where("subject", "in", [`${CHECKING}${subject}`, `${REFUSED}${subject}`])
      .where("id", "!=", rowId)
      .where("at", ">", sinceOf(Date.now()))
      .limit(1)
      .executeTakeFirst();
    if (guessedAt) {
      await trx.updateTable("login_failures").set({ subject }).where("id", "=", rowId).execute();
    } else {
      await trx
        .deleteFrom("login_failures")
        .where((eb) => eb.or([eb("subject", "=", subject), eb("id", "=", rowId)]))
        .execute();
    }
  });
}

/** Namespace of the advisory locks (PostgreSQL's two-key form): "FSIN". */
const LOCK_NAMESPACE = 0x4653494e;

/**
 * Runs `work` in a transaction that holds the counters' locks. On PostgreSQL: an advisory
 * lock per subject (a 32-bit hash of it: two subjects sharing one only wait for each
 * other), in ascending order, released at commit. On SQLite the transaction alone is
 * enough: nothing else runs on its one connection meanwhile.
 */
function underLocks<T>(db: Kysely<Database>, counters: Counter[], work: (trx: Transaction<Database>) => Promise<T>) {
  return db.transaction().execute(async (trx) => {
    if (trx.getExecutor().adapter instanceof PostgresAdapter) {
      const keys = [...new Set(counters.map((counter) => lockKeyOf(counter.subject)))].sort((a, b) => a - b);
      for (const key of keys) await sql`select pg_advisory_xact_lock(${LOCK_NAMESPACE}, ${key})`.execute(trx);
    }
    return work(trx);
  });
}

function lockKeyOf(subject: string): number {
  return createHash("sha256").update(subject).digest().readInt32BE(0);
}
