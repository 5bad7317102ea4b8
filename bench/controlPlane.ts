import { randomBytes } from "node:crypto";
import { mkdtempSync, rmSync } from "node:fs";
import { cpus, loadavg, tmpdir } from "node:os";
import { join } from "node:path";
import SqliteDatabase from "better-sqlite3";
import pg from "pg";
import { generateApiKey } from "../src/security/apiKeys.js";
import { startServer } from "../src/server/start.js";
import { openStore } from "../src/store/db.js";
import type { BenchmarkResult } from "./run.js";

/*
 * control-plane: how fast the read side answers with a big history. 1,000 projects ×
 * 10 environments × 1,000,000 deployments (each with its task, 100 releases per project)
 * are written straight into a fresh, migrated store with set-based SQL, on SQLite and on
 * PostgreSQL; then a real server (startServer, engine running) answers the dashboard and
 * the list endpoints and each is timed from the client: p50 / p95 / p99 over sequential
 * requests. `--deployments N` shrinks the history for a quick run; the default is 1M.
 */

export const PROJECTS = 1000;
export const ENVIRONMENTS = 10;
const DEFAULT_DEPLOYMENTS = 1_000_000;
const REQUESTS = 200;
const WARM_UP = 10;
const GOAL_MS = 50;
const SECONDS_BETWEEN_DEPLOYMENTS = 30;

export type Dialect = "sqlite" | "postgres";

interface Endpoint {
  key: string;
  figure: string;
  /** Whether the p95 ≤ 50 ms goal applies (the oversized dashboard page is shown for information). */
  goal: boolean;
  requests: number;
  path(index: number): string;
}

const project = (index: number) => `project-${String(index % PROJECTS).padStart(4, "0")}`;

const endpoints: Endpoint[] = [
  {
    key: "dashboard",
    figure: "GET /dashboard (a page: 50 projects × 10 envs)",
    goal: true,
    requests: REQUESTS,
    path: (index) => `/api/v1/dashboard?offset=${(index * 50) % PROJECTS}`,
  },
  {
    key: "dashboard_500",
    figure: "GET /dashboard?limit=500 (500 projects × 10 envs)",
    goal: false,
    requests: 50,
    path: (index) => `/api/v1/dashboard?limit=500&offset=${(index % 2) * 500}`,
  },
  {
    key: "dashboard_project",
    figure: "GET /dashboard?project=… (one project)",
    goal: true,
    requests: REQUESTS,
    path: (index) => `/api/v1/dashboard?project=${project(index * 7)}`,
  },
  {
    key: "projects",
    figure: "GET /projects (a page of 50)",
    goal: true,
    requests: REQUESTS,
    path: (index) => `/api/v1/projects?offset=${(index * 50) % PROJECTS}`,
  },
  {
    key: "project",
    figure: "GET /projects/{project}",
    goal: true,
    requests: REQUESTS,
    path: (index) => `/api/v1/projects/${project(index * 7)}`,
  },
  {
    key: "releases",
    figure: "GET /projects/{project}/releases",
    goal: true,
    requests: REQUESTS,
    path: (index) => `/api/v1/projects/${project(index * 7)}/releases`,
  },
  {
    key: "tasks",
    figure: "GET /tasks (pages 1-10 of 50)",
    goal: true,
    requests: REQUESTS,
    path: (index) => `/api/v1/tasks?offset=${(index % 10) * 50}`,
  },
  {
    key: "tasks_failed",
    figure: "GET /tasks?state=failed (~4 % of all)",
    goal: true,
    requests: REQUESTS,
    path: () => "/api/v1/tasks?state=failed",
  },
  {
    key: "tasks_succeeded",
    figure: "GET /tasks?state=succeeded (~94 % of all)",
    goal: true,
    requests: REQUESTS,
    path: () => "/api/v1/tasks?state=succeeded",
  },
];

interface Timing {
  p50: number;
  p95: number;
  p99: number;
}

interface DialectRun {
  seedSeconds: number;
  timings: Map<string, Timing>;
  /** The machine's 1-minute load average before and after the requests: other work skews the figures. */
  load: [number, number];
}

export async function controlPlane(): Promise<BenchmarkResult> {
  const deployments = deploymentsWanted();
  const shape = `${PROJECTS.toLocaleString("en")} × ${ENVIRONMENTS} × ${deployments.toLocaleString("en")}`;
  if (deployments !== DEFAULT_DEPLOYMENTS) {
    console.log(
      `control-plane: --deployments ${deployments} (not the ${DEFAULT_DEPLOYMENTS.toLocaleString("en")} of the goal)`,
    );
  }
  const result: BenchmarkResult = {
    name: "control-plane",
    rows: [],
    values: { projects: PROJECTS, environments: ENVIRONMENTS, deployments },
  };

  const sqlite = await runOn("sqlite", deployments);
  addRows(result, "sqlite", sqlite, shape);

  const adminUrl = process.env.FERRY_BENCH_POSTGRES_URL ?? process.env.FERRY_TEST_POSTGRES_URL ?? DEFAULT_POSTGRES_URL;
  const database = await createBenchDatabase(adminUrl);
  if (!database) {
    const skipped = "skipped (no PostgreSQL: set FERRY_BENCH_POSTGRES_URL)";
    result.rows.push({ figure: `seed ${shape} (PostgreSQL)`, goal: "-", measured: skipped, met: undefined });
    for (const endpoint of endpoints) {
      result.rows.push({
        figure: `${endpoint.figure} (PostgreSQL)`,
        goal: endpoint.goal ? `p95 ≤ ${GOAL_MS} ms` : "-",
        measured: skipped,
        met: undefined,
      });
    }
    result.values.postgres = "skipped";
    return result;
  }
  try {
    addRows(result, "postgres", await runOn("postgres", deployments, database.url), shape);
  } finally {
    await database.drop();
  }
  return result;
}

function addRows(result: BenchmarkResult, dialect: Dialect, run: DialectRun, shape: string): void {
  const label = dialect === "sqlite" ? "SQLite" : "PostgreSQL";
  result.rows.push({
    figure: `seed ${shape} (${label})`,
    goal: "-",
    measured: `${run.seedSeconds.toFixed(1)} s`,
    met: undefined,
  });
  result.values[`seed_s_${dialect}`] = Number(run.seedSeconds.toFixed(1));
  result.rows.push({
    figure: `1-min load average while measuring, ${cpus().length} cores (${label})`,
    goal: "-",
    measured: `${run.load[0].toFixed(1)} → ${run.load[1].toFixed(1)}`,
    met: undefined,
  });
  result.values[`load_${dialect}`] = Number(Math.max(...run.load).toFixed(1));
  for (const endpoint of endpoints) {
    const timing = run.timings.get(endpoint.key);
    if (!timing) continue;
    result.rows.push({
      figure: `${endpoint.figure} (${label})`,
      goal: endpoint.goal ? `p95 ≤ ${GOAL_MS} ms` : "-",
      measured: `p50 ${timing.p50.toFixed(1)} / p95 ${timing.p95.toFixed(1)} / p99 ${timing.p99.toFixed(1)} ms`,
      met: endpoint.goal ? timing.p95 <= GOAL_MS : undefined,
    });
    result.values[`${endpoint.key}_p50_ms_${dialect}`] = Number(timing.p50.toFixed(1));
    result.values[`${endpoint.key}_p95_ms_${dialect}`] = Number(timing.p95.toFixed(1));
    result.values[`${endpoint.key}_p99_ms_${dialect}`] = Number(timing.p99.toFixed(1));
  }
}

/** `--deployments N` (or `--deployments=N`) shrinks the history for a quick run. */
function deploymentsWanted(): number {
  const args = process.argv;
  const index = args.findIndex((argument) => argument === "--deployments" || argument.startsWith("--deployments="));
  const flag = args[index];
  if (index < 0 || flag === undefined) return DEFAULT_DEPLOYMENTS;
  const value = Number(flag.includes("=") ? flag.slice("--deployments=".length) : args[index + 1]);
  if (!Number.isInteger(value) || value < PROJECTS * ENVIRONMENTS) {
    throw new Error(`--deployments must be a whole number of at least ${PROJECTS * ENVIRONMENTS}`);
  }
  return value;
}

async function runOn(dialect: Dialect, deployments: number, databaseUrl?: string): Promise<DialectRun> {
  const dataDir = mkdtempSync(join(tmpdir(), "ferry-bench-"));
  try {
    // The schema comes from Ferry's own migrations; only the rows are written here.
    const store = await openStore({ dataDir, databaseUrl });
    await store.close();
    const started = performance.now();
    const statements = seedStatements(dialect, deployments);
    if (dialect === "sqlite") seedSqlite(join(dataDir, "ferry.db"), statements);
    else await seedPostgres(databaseUrl ?? "", statements);
    const seedSeconds = (performance.now() - started) / 1000;
    console.log(`control-plane: seeded ${dialect} in ${seedSeconds.toFixed(1)} s`);

    const apiKey = generateApiKey();
    const server = await startServer({
      port: 0,
      host: "127.0.0.1",
      dataDir,
      databaseUrl,
      adminApiKey: apiKey,
      logLevel: "silent",
      announce: () => {},
    });
    try {
      const timings = new Map<string, Timing>();
      const loadBefore = loadavg()[0] ?? 0;
      for (const endpoint of endpoints) {
        timings.set(endpoint.key, await timeEndpoint(server.url, apiKey, endpoint));
      }
      return { seedSeconds, timings, load: [loadBefore, loadavg()[0] ?? 0] };
    } finally {
      await server.close();
    }
  } finally {
    rmSync(dataDir, { recursive: true, force: true });
  }
}

async function timeEndpoint(baseUrl: string, apiKey: string, endpoint: Endpoint): Promise<Timing> {
  const headers = { authorization: `Bearer ${apiKey}` };
  const once = async (index: number) => {
    const started = performance.now();
    const response = await fetch(new URL(endpoint.path(index), baseUrl), { headers });
    const body = await response.arrayBuffer();
    const elapsed = performance.now() - started;
    if (response.status !== 200) {
      throw new Error(`${endpoint.path(index)} answered ${response.status}: ${Buffer.from(body).toString()}`);
    }
    return elapsed;
  };
  for (let index = 0; index < WARM_UP; index++) await once(index);
  const durations: number[] = [];
  for (let index = 0; index < endpoint.requests; index++) durations.push(await once(index));
  durations.sort((a, b) => a - b);
  const rank = (quantile: number) => durations[Math.max(0, Math.ceil(quantile * durations.length) - 1)] ?? Number.NaN;
  return { p50: rank(0.5), p95: rank(0.95), p99: rank(0.99) };
}

// --- Seeding ------------------------------------------------------------------------------

/** The SQL fragments that differ between the dialects; everything else is shared text. */
interface SqlDialect {
  /** A FROM item yielding n = 0 … count-1. */
  series(count: number): string;
  /** A Ferry-looking id ("task_" + 20 hex digits), unique per n and scattered, not sequential. */
  id(prefix: string, n: string): string;
  /** ISO-8601 UTC text of a Unix time in seconds, as Ferry stores timestamps. */
  timestamp(seconds: string): string;
  /** Zero-padded decimal text. */
  padded(value: string, width: number): string;
}

const sqliteSql: SqlDialect = {
  series: (count) =>
    `(WITH RECURSIVE s(n) AS (SELECT 0 UNION ALL SELECT n + 1 FROM s WHERE n + 1 < ${count}) SELECT n FROM s) AS s`,
  id: (prefix, n) => `'${prefix}_' || printf('%010x%010x', ((${n}) * 2654435761) % 1099511627776, ${n})`,
  timestamp: (seconds) => `strftime('%Y-%m-%dT%H:%M:%fZ', ${seconds}, 'unixepoch')`,
  padded: (value, width) => `printf('%0${width}d', ${value})`,
};

const postgresSql: SqlDialect = {
  series: (count) => `generate_series(0::bigint, ${count - 1}::bigint) AS s(n)`,
  id: (prefix, n) =>
    `'${prefix}_' || lpad(to_hex(((${n})::bigint * 2654435761) % 1099511627776), 10, '0') || lpad(to_hex((${n})::bigint), 10, '0')`,
  timestamp: (seconds) => `to_char(to_timestamp(${seconds}) AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.MS"Z"')`,
  padded: (value, width) => `lpad((${value})::text, ${width}, '0')`,
};

const PROCESS = JSON.stringify({
  images: [],
  steps: [
    {
      name: "deploy",
      kind: "script",
      roles: [],
      environments: [],
      excludeEnvironments: [],
      condition: "success",
      required: true,
      config: { script: "./deploy.sh" },
    },
  ],
});
const SNAPSHOT = JSON.stringify({ process: JSON.parse(PROCESS), variables: [], images: [] });

/**
 * Deployment n (0-based, also its task's sequence − 1) is release round k = n / (P·E)
 * of project p = n % P to environment e = (n / P) % E: every release of every project
 * goes through the environments in order, projects interleaved in time, one every 30 s.
 * States: ~4 % failed, 1 % cancelled, 0.5 % interrupted, the rest succeeded; in the last
 * round, 1 % of projects have a deployment running and 1 % one waiting for approval in
 * the last environment, leased by another (imaginary) node so this server leaves them be.
 */
export function seedStatements(dialect: Dialect, deployments: number): string[] {
  const d = dialect === "sqlite" ? sqliteSql : postgresSql;
  const rounds = Math.ceil(deployments / (PROJECTS * ENVIRONMENTS));
  const lastRound = Math.floor((deployments - 1) / (PROJECTS * ENVIRONMENTS));
  const start = Math.floor(Date.now() / 1000) - deployments * SECONDS_BETWEEN_DEPLOYMENTS - 3600;
  const at = (seconds: string) => d.timestamp(`${start} + ${seconds}`);
  const now = `'${new Date().toISOString()}'`;
  const lifecycleId = `'lc_bench00000000000000'`;
  const quote = (text: string) => `'${text.replaceAll("'", "''")}'`;
  return [
    `INSERT INTO environments (id, slug, name, description, position, created_at, updated_at)
     SELECT ${d.id("env", "n")}, 'env-' || ${d.padded("n", 2)}, 'Env ' || ${d.padded("n", 2)}, '', n, ${now}, ${now}
     FROM ${d.series(ENVIRONMENTS)}`,
    `INSERT INTO lifecycles (id, slug, name, description, created_at, updated_at)
     VALUES (${lifecycleId}, 'pipeline', 'Pipeline', '', ${now}, ${now})`,
    `INSERT INTO lifecycle_phases (lifecycle_id, position, name, auto_deploy, optional)
     SELECT ${lifecycleId}, n, 'Env ' || ${d.padded("n", 2)}, CASE WHEN n = 0 THEN 1 ELSE 0 END, 0
     FROM ${d.series(ENVIRONMENTS)}`,
    `INSERT INTO lifecycle_phase_environments (lifecycle_id, phase_position, environment_id, position)
     SELECT ${lifecycleId}, n, ${d.id("env", "n")}, 0 FROM ${d.series(ENVIRONMENTS)}`,
    `INSERT INTO projects (id, slug, name, description, lifecycle_id, created_at, updated_at, process, version_pattern)
     SELECT ${d.id("prj", "n")}, 'project-' || ${d.padded("n", 4)}, 'project-' || ${d.padded("n", 4)}, '',
            ${lifecycleId}, ${at("0")}, ${now}, ${quote(PROCESS)}, '1.0.#{n}'
     FROM ${d.series(PROJECTS)}`,
    // Release r = p · rounds + k, created a minute before its round starts.
    `INSERT INTO releases (id, project_id, version, notes, snapshot, created_by, created_at)
     SELECT ${d.id("rel", "n")}, ${d.id("prj", `n / ${rounds}`)}, '1.0.' || (n % ${rounds}), '', ${quote(SNAPSHOT)},
            'bench', ${at(`(n % ${rounds}) * ${PROJECTS * ENVIRONMENTS * SECONDS_BETWEEN_DEPLOYMENTS} - 60`)}
     FROM ${d.series(PROJECTS * rounds)}`,
    // task_counts (the task list's totals) follows through the triggers on tasks.
    `INSERT INTO tasks (id, sequence, kind, state, title, project_id, environment_id, payload, result, error,
                        created_by, created_at, started_at, finished_at, lease_owner, lease_expires_at,
                        cancel_requested, log_lines, log_bytes)
     SELECT ${d.id("task", "n")}, n + 1, 'deployment', state,
            'Deploy project-' || ${d.padded("p", 4)} || ' 1.0.' || k || ' to Env ' || ${d.padded("e", 2)},
            ${d.id("prj", "p")}, ${d.id("env", "e")},
            '{"deploymentId":"' || ${d.id("dep", "n")} || '","guidedFailure":false}', NULL,
            CASE state
              WHEN 'failed' THEN 'step ''deploy'' failed: the script exited with code 1'
              WHEN 'cancelled' THEN 'cancelled by a user'
              WHEN 'interrupted' THEN 'the server running this task stopped before it finished'
            END,
            'bench', ${at(`n * ${SECONDS_BETWEEN_DEPLOYMENTS}`)}, ${at(`n * ${SECONDS_BETWEEN_DEPLOYMENTS} + 1`)},
            CASE WHEN state IN ('running', 'waiting') THEN NULL
                 ELSE ${at(`n * ${SECONDS_BETWEEN_DEPLOYMENTS} + 5 + h % 20`)} END,
            CASE WHEN state IN ('running', 'waiting') THEN 'engine_another_node' END,
            CASE WHEN state IN ('running', 'waiting') THEN '2999-01-01T00:00:00.000Z' END,
            0, 12, 640
     FROM (SELECT n, p, e, k, h,
                  CASE WHEN k = ${lastRound} AND e = ${ENVIRONMENTS - 1} AND p % 100 = 0 THEN 'running'
                       WHEN k = ${lastRound} AND e = ${ENVIRONMENTS - 1} AND p % 100 = 1 THEN 'waiting'
                       WHEN h < 40 THEN 'failed'
                       WHEN h < 50 THEN 'cancelled'
                       WHEN h < 55 THEN 'interrupted'
                       ELSE 'succeeded' END AS state
           FROM (SELECT n, n % ${PROJECTS} AS p, (n / ${PROJECTS}) % ${ENVIRONMENTS} AS e,
                        n / ${PROJECTS * ENVIRONMENTS} AS k, ((n * 2654435761) % 1000003) % 1000 AS h
                 FROM ${d.series(deployments)}) AS a) AS b`,
    `INSERT INTO deployments (id, project_id, release_id, environment_id, task_id, created_at)
     SELECT ${d.id("dep", "n")}, ${d.id("prj", `n % ${PROJECTS}`)},
            ${d.id("rel", `(n % ${PROJECTS}) * ${rounds} + n / ${PROJECTS * ENVIRONMENTS}`)},
            ${d.id("env", `(n / ${PROJECTS}) % ${ENVIRONMENTS}`)}, ${d.id("task", "n")},
            ${at(`n * ${SECONDS_BETWEEN_DEPLOYMENTS}`)}
     FROM ${d.series(deployments)}`,
    // The next enqueued task continues the sequence.
    `UPDATE counters SET value = ${deployments} WHERE name = 'task'`,
  ];
}

/** Tables the bulk load writes most rows into: their secondary indexes are built after it. */
const BULK_TABLES = ["releases", "tasks", "deployments"];

/*
 * A bulk load is much faster when the secondary indexes (and, on PostgreSQL, the foreign
 * keys) are built once at the end instead of row by row. Their definitions are read from
 * the catalog the migrations wrote, dropped, and re-run unchanged after the rows are in,
 * so the benchmark measures exactly the schema Ferry creates.
 */
export function seedSqlite(file: string, statements: readonly string[]): void {
  const database = new SqliteDatabase(file);
  try {
    // A load into a throw-away file: no fsync, a big page cache. Foreign keys are off on
    // a new connection; the rows reference each other by construction.
    database.pragma("synchronous = OFF");
    database.pragma("cache_size = -1048576");
    database.pragma("temp_store = MEMORY");
    const indexes = database
      .prepare(
        `SELECT name, sql FROM sqlite_master WHERE type = 'index' AND sql IS NOT NULL
         AND tbl_name IN (${BULK_TABLES.map((table) => `'${table}'`).join(", ")})`,
      )
      .all() as { name: string; sql: string }[];
    database.transaction(() => {
      for (const index of indexes) database.exec(`DROP INDEX "${index.name}"`);
      for (const statement of statements) database.exec(statement);
      for (const index of indexes) database.exec(index.sql);
    })();
    database.pragma("wal_checkpoint(TRUNCATE)");
  } finally {
    database.close();
  }
}

export async function seedPostgres(url: string, statements: readonly string[]): Promise<void> {
  const client = new pg.Client({ connectionString: url });
  await client.connect();
  try {
    await client.query("BEGIN");
    await client.query("SET LOCAL synchronous_commit = off");
    await client.query("SET LOCAL maintenance_work_mem = '512MB'");
    const tables = BULK_TABLES.map((table) => `'${table}'`).join(", ");
    const foreignKeys = (
      await client.query<{ table: string; name: string; definition: string }>(
        `SELECT conrelid::regclass::text AS table, conname AS name, pg_get_constraintdef(oid) AS definition
         FROM pg_constraint WHERE contype = 'f' AND conrelid::regclass::text IN (${tables})`,
      )
    ).rows;
    const indexes = (
      await client.query<{ name: string; definition: string }>(
        `SELECT indexname AS name, indexdef AS definition FROM pg_indexes
         WHERE schemaname = current_schema() AND tablename IN (${tables})
         AND indexname NOT IN (SELECT conname FROM pg_constraint)`,
      )
    ).rows;
    for (const key of foreignKeys) await client.query(`ALTER TABLE ${key.table} DROP CONSTRAINT "${key.name}"`);
    for (const index of indexes) await client.query(`DROP INDEX "${index.name}"`);
    for (const statement of statements) await client.query(statement);
    for (const index of indexes) await client.query(index.definition);
    // Re-adding a foreign key checks every row at once (one join), not one lookup per row.
    for (const key of foreignKeys) {
      await client.query(`ALTER TABLE ${key.table} ADD CONSTRAINT "${key.name}" ${key.definition}`);
    }
    await client.query("COMMIT");
    // What autovacuum would have done by the time a database holds a year of history:
    // planner statistics and the visibility map (index-only scans).
    await client.query("VACUUM ANALYZE");
  } finally {
    await client.end();
  }
}

// --- PostgreSQL database ----------------------------------------------------------------

export const DEFAULT_POSTGRES_URL = "postgres://ferry_test:ferry_test@127.0.0.1:5432/postgres";

/** A fresh database for one run, through a role that may create databases; undefined when unreachable. */
export async function createBenchDatabase(
  adminUrl: string,
): Promise<{ url: string; drop(): Promise<void> } | undefined> {
  const name = `ferry_bench_${randomBytes(6).toString("hex")}`;
  const admin = new pg.Client({ connectionString: adminUrl, connectionTimeoutMillis: 3000 });
  try {
    await admin.connect();
  } catch (error) {
    console.log(`control-plane: PostgreSQL not reachable (${(error as Error).message}); skipping it`);
    return undefined;
  }
  try {
    await admin.query(`CREATE DATABASE ${name}`);
  } finally {
    await admin.end();
  }
  const url = new URL(adminUrl);
  url.pathname = `/${name}`;
  return {
    url: url.toString(),
    drop: async () => {
      const client = new pg.Client({ connectionString: adminUrl });
      await client.connect();
      await client.query(`DROP DATABASE IF EXISTS ${name} WITH (FORCE)`);
      await client.end();
    },
  };
}
