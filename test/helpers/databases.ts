import { randomBytes } from "node:crypto";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import pg from "pg";
import { SecretBox } from "../../src/security/secretBox.js";
import type { StoreContext } from "../../src/store/common.js";
import { openStore, type Store } from "../../src/store/db.js";

/**
 * PostgreSQL for tests: `.ci/run` (scripts/test-services.sh) installs and starts it and
 * creates the `ferry_test` role. Each test file gets its own fresh database.
 */
const POSTGRES_ADMIN_URL =
  process.env.FERRY_TEST_POSTGRES_URL ?? "postgres://ferry_test:ferry_test@127.0.0.1:5432/postgres";

export interface TestDatabase {
  dialect: "sqlite" | "postgres";
  store: Store;
  context: StoreContext;
  dataDir: string;
  /** postgres:// URL of the database, for the PostgreSQL case. */
  url?: string;
  dispose(): Promise<void>;
}

export async function createPostgresDatabase(): Promise<{ url: string; drop(): Promise<void> }> {
  const name = `ferry_test_${randomBytes(6).toString("hex")}`;
  const admin = new pg.Client({ connectionString: POSTGRES_ADMIN_URL });
  try {
    await admin.connect();
  } catch (error) {
    throw new Error(
      `cannot reach PostgreSQL at ${POSTGRES_ADMIN_URL.replace(/:[^:@/]*@/, ":***@")} (${(error as Error).message}); ` +
        "run scripts/test-services.sh (or .ci/run) to install and start it",
    );
  }
  await admin.query(`CREATE DATABASE ${name}`);
  await admin.end();
  const url = new URL(POSTGRES_ADMIN_URL);
  url.pathname = `/${name}`;
  return {
    url: url.toString(),
    drop: async () => {
      const client = new pg.Client({ connectionString: POSTGRES_ADMIN_URL });
      await client.connect();
      await client.query(`DROP DATABASE IF EXISTS ${name} WITH (FORCE)`);
      await client.end();
    },
  };
}

export async function openTestDatabase(dialect: "sqlite" | "postgres"): Promise<TestDatabase> {
  const dataDir = mkdtempSync(join(tmpdir(), "ferry-test-"));
  const secrets = new SecretBox(randomBytes(32));
  if (dialect === "sqlite") {
    const store = await openStore({ dataDir });
    return {
      dialect,
      store,
      dataDir,
      context: { db: store.db, secrets },
      dispose: async () => {
        await store.close();
        rmSync(dataDir, { recursive: true, force: true });
      },
    };
  }
  const database = await createPostgresDatabase();
  const store = await openStore({ dataDir, databaseUrl: database.url });
  return {
    dialect,
    store,
    dataDir,
    url: database.url,
    context: { db: store.db, secrets },
    dispose: async () => {
      await store.close();
      await database.drop();
      rmSync(dataDir, { recursive: true, force: true });
    },
  };
}

/** Both dialects, for `describe.each`: every store case runs on SQLite and on PostgreSQL. */
export const dialects = ["sqlite", "postgres"] as const;
