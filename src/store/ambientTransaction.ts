import { AsyncLocalStorage } from "node:async_hooks";
import type { ControlledTransaction, Kysely, Transaction } from "kysely";
import { ConflictError } from "../domain/errors.js";
import type { Database } from "./schema.js";

/**
 * One transaction around work that was written to run as many (ADR 0040): `ferry apply`
 * replays the API's own requests for a whole ferry.yml, and each store function they reach
 * opens its own transaction. Inside `inOneTransaction` every query of that async context
 * goes to one database transaction instead, and a store function's own
 * `db.transaction().execute(fn)` becomes a savepoint in it — so its rollback on error still
 * undoes exactly its own writes (a caught unique violation leaves the outer transaction
 * usable on PostgreSQL too), while the outer transaction commits or rolls back everything.
 *
 * Queries made outside that async context (the task engine, other requests) use the pool
 * as before; on SQLite they wait for the one connection, as they wait for any writer.
 */

interface Ambient {
  readonly transaction: ControlledTransaction<Database>;
  /** False once committed or rolled back: late fire-and-forget work falls back to the pool. */
  open: boolean;
  savepoints: number;
}

const ambient = new AsyncLocalStorage<Ambient>();

/** The database as every store function sees it: the ambient transaction when there is one. */
export function withAmbientTransactions(db: Kysely<Database>): Kysely<Database> {
  return new Proxy(db, {
    get(base, property) {
      const current = ambient.getStore();
      if (current?.open) {
        if (property === "transaction") return () => savepointBuilder(current);
        return bound(current.transaction, property);
      }
      return bound(base, property);
    },
  });
}

function bound(target: object, property: PropertyKey): unknown {
  const value: unknown = Reflect.get(target, property, target);
  return typeof value === "function" ? value.bind(target) : value;
}

/**
 * What `db.transaction()` gives inside the ambient transaction: a savepoint, released or
 * rolled back to. Savepoints nest (a store function called inside another's transaction
 * gets one inside that one); they must not interleave, so work inside the ambient
 * transaction runs its store functions one after another, as the requests apply replays do.
 */
function savepointBuilder(current: Ambient) {
  return {
    execute: async <T>(work: (transaction: Transaction<Database>) => Promise<T>): Promise<T> => {
      current.savepoints += 1;
      const name = `ferry_savepoint_${current.savepoints}`;
      // Savepoint names are typed per chain in Kysely; this one is used and released right here.
      const transaction = current.transaction as unknown as ControlledTransaction<Database, string[]>;
      await transaction.savepoint(name as never).execute();
      try {
        const result = await work(current.transaction);
        await transaction.releaseSavepoint(name as never).execute();
        return result;
      } catch (error) {
        await transaction.rollbackToSavepoint(name as never).execute();
        throw error;
      }
    },
  };
}

/**
 * Runs `work` with every query of its async context in one transaction, committed when
 * `commit` is true and `work` succeeds, rolled back otherwise (a dry run sees its own
 * writes and leaves nothing behind).
 */
export async function inOneTransaction<T>(
  db: Kysely<Database>,
  work: () => Promise<T>,
  options: { commit: boolean },
): Promise<T> {
  if (ambient.getStore()?.open) {
    throw new ConflictError("one transaction cannot be opened inside another; run the work on its own");
  }
  const transaction = await db.startTransaction().execute();
  const current: Ambient = { transaction, open: true, savepoints: 0 };
  let result: T;
  try {
    result = await ambient.run(current, work);
  } catch (error) {
    current.open = false;
    await transaction.rollback().execute();
    throw error;
  }
  current.open = false;
  if (options.commit) await transaction.commit().execute();
  else await transaction.rollback().execute();
  return result;
}

/** True inside `inOneTransaction`: the requests it replays are not the client's own (src/api/app.ts). */
export function inAmbientTransaction(): boolean {
  return ambient.getStore()?.open === true;
}
