import { chmodSync, existsSync, mkdirSync } from "node:fs";
import { join } from "node:path";
import SqliteDatabase from "better-sqlite3";
import { Kysely, PostgresDialect, SqliteDialect, sql } from "kysely";
import type pg from "pg";
import { withAmbientTransactions } from "./ambientTransaction.js";
import { migrateToLatest } from "./migrations.js";
import type { Database } from "./schema.js";

export type DialectName = "sqlite" | "postgres";

export interface Store {
  readonly db: Kysely<Database>;
  readonly dialect: DialectName;
  /** Cheap round trip used by /readyz. */
  ping(): Promise<void>;
  /** The connection pool now, for /metrics. */
  poolUsage(): PoolUsage;
  /** PostgreSQL's connection pool, for the large-object bytes Kysely cannot carry (ADR 0043). */
  readonly pgPool?: pg.Pool;
  close(): Promise<void>;
}

/**
 * PostgreSQL: the pool's open, idle and most connections and the queries waiting for one.
 * SQLite: its one synchronous connection (idle and waiting are not known there).
 */
interface PoolUsage {
  open: number;
  max: number;
  idle?: number;
  waiting?: number;
}

export interface OpenStoreOptions {
  /** postgres://… selects PostgreSQL; absent means SQLite in the data directory. */
  databaseUrl?: string | undefined;
  dataDir: string;
  /** Run migrations before returning (default true). */
  migrate?: boolean;
}

const SQLITE_FILE_NAME = "ferry.db";

export async function openStore(options: OpenStoreOptions): Promise<Store> {
  // pg is loaded only for PostgreSQL: an embedded (SQLite) server starts without it.
  const store = options.databaseUrl
    ? openPostgres((await import("pg")).default, options.databaseUrl)
    : openSqlite(options.dataDir);
  if (options.migrate ?? true) {
    try {
      await migrateToLatest(store.db as Kysely<unknown>);
    } catch (error) {
      await store.close();
      throw error;
    }
  }
  return store;
}

function openSqlite(dataDir: string): Store {
  mkdirSync(dataDir, { recursive: true, mode: 0o700 });
  // The data directory holds the master key and the database: owner only, also when it existed.
  chmodSync(dataDir, 0o700);
  const file = join(dataDir, SQLITE_FILE_NAME);
  const database = new SqliteDatabase(file);
  // WAL lets readers proceed while the single writer commits; busy_timeout makes a second
  // process (e.g. a CLI admin command) wait for the write lock instead of failing at once.
  database.pragma("journal_mode = WAL");
  database.pragma("synchronous = NORMAL");
  database.pragma("foreign_keys = ON");
  database.pragma("busy_timeout = 5000");
  for (const path of [file, `${file}-wal`, `${file}-shm`]) if (existsSync(path)) chmodSync(path, 0o600);
  const db = withAmbientTransactions(
    new Kysely<Database>({ dialect: new SqliteDialect({ database: withStatementCache(database) }) }),
  );
  return {
    db,
    dialect: "sqlite",
    ping: async () => {
      await sql`select 1`.execute(db);
    },
    poolUsage: () => ({ open: 1, max: 1 }),
    close: () => db.destroy(),
  };
}

/** Prepared statements kept per SQL text; Ferry's queries are a few hundred distinct texts. */
const STATEMENT_CACHE_SIZE = 1000;

/**
 * Kysely prepares every query anew, and on SQLite, whose work is synchronous on the event
 * loop, preparing was the largest part of a cheap request (a sign-in flood's refusal spent
 * more time compiling its two SELECTs than running them). Statements are kept by SQL text,
 * least recently used dropped first; SQLite re-prepares a kept statement by itself when
 * the schema changes. A statement still being iterated (a streamed query) is busy and
 * cannot run again until it ends: that query gets a fresh one.
 */
function withStatementCache(database: SqliteDatabase.Database) {
  const statements = new Map<string, SqliteDatabase.Statement>();
  return {
    close: () => database.close(),
    prepare: (text: string) => {
      const kept = statements.get(text);
      if (kept && !kept.busy) {
        statements.delete(text);
        statements.set(text, kept);
        return kept;
      }
      const statement = database.prepare(text);
      if (!kept) {
        statements.set(text, statement);
        if (statements.size > STATEMENT_CACHE_SIZE) {
          const oldest = statements.keys().next().value;
          if (oldest !== undefined) statements.delete(oldest);
        }
      }
      return statement;
    },
  };
}

function openPostgres(driver: typeof pg, url: string): Store {
  const max = 10;
  const pool = new driver.Pool({
    connectionString: url,
    max,
    connectionTimeoutMillis: 5000,
    idleTimeoutMillis: 30_000,
  });
  // An idle client losing its connection (server restart) must not crash the process;
  // the next query gets a fresh connection or a clear error.
  pool.on("error", () => {});
  const db = withAmbientTransactions(new Kysely<Database>({ dialect: new PostgresDialect({ pool }) }));
  return {
    db,
    dialect: "postgres",
    ping: async () => {
      await sql`select 1`.execute(db);
    },
    poolUsage: () => ({ open: pool.totalCount, max, idle: pool.idleCount, waiting: pool.waitingCount }),
    pgPool: pool,
    close: () => db.destroy(),
  };
}

/** True when the error is a unique-constraint violation on either dialect. */
export function isUniqueViolation(error: unknown): boolean {
  const code = (error as { code?: unknown } | null)?.code;
  return code === "SQLITE_CONSTRAINT_UNIQUE" || code === "SQLITE_CONSTRAINT_PRIMARYKEY" || code === "23505";
}
