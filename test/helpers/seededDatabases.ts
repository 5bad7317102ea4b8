import { execFile } from "node:child_process";
import { randomBytes } from "node:crypto";
import { readdirSync } from "node:fs";
import { copyFile, mkdir, mkdtemp, rm, symlink, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { basename, dirname, join } from "node:path";
import { promisify } from "node:util";
import pg from "pg";
import { createPostgresDatabase } from "./databases.js";

/**
 * Real databases with a few tables and ~100k rows, for the backup and restore-verify steps:
 * PostgreSQL (the tests' cluster, FERRY_TEST_POSTGRES_URL) and MariaDB (FERRY_TEST_MYSQL_*,
 * both started by scripts/test-services.sh). Rows are made by the servers themselves
 * (generate_series, MariaDB's sequence engine), so seeding takes a second or two.
 */

const execFileAsync = promisify(execFile);

/** How many rows each seeded table gets: ~100k in all. */
export const SEEDED_ROWS = { customers: 10_000, orders: 85_000, notes: 5_000 } as const;

export interface SeededDatabase {
  /** The database's name. */
  name: string;
  host: string;
  port: number;
  user: string;
  password: string;
  /** Runs SQL in the database; returns the rows (tab-separated text lines for MariaDB). */
  query(sql: string): Promise<string[]>;
  drop(): Promise<void>;
  /** Names of databases on the same server whose name starts with the prefix (scratch databases left behind). */
  databasesStartingWith(prefix: string): Promise<string[]>;
}

/** The connection fields of a backup or restore-verify step for this database, signing in with `password` (a template). */
export function connectionConfig(database: SeededDatabase, password: string) {
  return { database: database.name, host: database.host, port: database.port, user: database.user, password };
}

export async function seedPostgres(): Promise<SeededDatabase> {
  const database = await createPostgresDatabase();
  const url = new URL(database.url);
  const client = new pg.Client({ connectionString: database.url });
  await client.connect();
  await client.query(`
    CREATE TABLE customers (id integer PRIMARY KEY, name text NOT NULL, email text, created timestamptz NOT NULL);
    CREATE TABLE orders (id bigint PRIMARY KEY, customer integer NOT NULL REFERENCES customers, total numeric(12,2), placed date, status text);
    CREATE TABLE notes (id serial PRIMARY KEY, body text, data jsonb, picture bytea);
    INSERT INTO customers SELECT n, 'customer ' || n, CASE WHEN n % 7 = 0 THEN NULL ELSE 'c' || n || '@example.com' END,
      timestamptz '2026-01-01 00:00:00+00' + n * interval '37 minutes' FROM generate_series(1, ${SEEDED_ROWS.customers}) n;
    INSERT INTO orders SELECT n, 1 + n % ${SEEDED_ROWS.customers}, (n * 7919 % 100000) / 100.0, date '2025-01-01' + (n % 700),
      (ARRAY['new','paid','shipped','returned'])[1 + n % 4] FROM generate_series(1, ${SEEDED_ROWS.orders}) n;
    INSERT INTO notes (body, data, picture) SELECT 'note ' || n || E' — tab\\there, quote '' and newline\\n',
      jsonb_build_object('n', n, 'tags', jsonb_build_array('a', n % 3)), decode(md5(n::text), 'hex') FROM generate_series(1, ${SEEDED_ROWS.notes}) n;
  `);
  const name = url.pathname.slice(1);
  // A role of the database's own, with a password found nowhere else: tests look for it in logs and command lines.
  const user = `${name}_backup`;
  const password = `pg-${randomBytes(12).toString("hex")}`;
  await client.query(`CREATE ROLE ${user} LOGIN CREATEDB PASSWORD '${password}'`);
  await client.query(
    `GRANT SELECT ON ALL TABLES IN SCHEMA public TO ${user}; GRANT SELECT ON ALL SEQUENCES IN SCHEMA public TO ${user}`,
  );
  return {
    name,
    host: url.hostname,
    port: Number(url.port || 5432),
    user,
    password,
    async query(sql) {
      const result = await client.query({ text: sql, rowMode: "array" });
      return (result.rows as unknown[][]).map((row) => row.map(String).join("\t"));
    },
    async drop() {
      await client.end();
      await database.drop();
      const admin = new pg.Client({ connectionString: database.url.replace(/\/[^/]*$/, "/postgres") });
      await admin.connect();
      await admin.query(`DROP ROLE IF EXISTS ${user}`);
      await admin.end();
    },
    async databasesStartingWith(prefix) {
      const result = await client.query<{ datname: string }>(
        "SELECT datname FROM pg_database WHERE starts_with(datname, $1)",
        [prefix],
      );
      return result.rows.map((row) => row.datname);
    },
  };
}

const MYSQL = {
  host: process.env.FERRY_TEST_MYSQL_HOST ?? "127.0.0.1",
  port: Number(process.env.FERRY_TEST_MYSQL_PORT ?? 3306),
  user: process.env.FERRY_TEST_MYSQL_USER ?? "ferry_test",
  password: process.env.FERRY_TEST_MYSQL_PASSWORD ?? "ferry_test",
};

/** Runs SQL with Debian's `mariadb` client as the test user (the password in the test process's environment). */
async function mariadb(sql: string, database?: string): Promise<string[]> {
  try {
    const { stdout } = await execFileAsync(
      "mariadb",
      [
        "--protocol=tcp",
        `--host=${MYSQL.host}`,
        `--port=${MYSQL.port}`,
        `--user=${MYSQL.user}`,
        "-N",
        "-B",
        ...(database ? [`--database=${database}`] : []),
        "-e",
        sql,
      ],
      { env: { ...process.env, MYSQL_PWD: MYSQL.password }, maxBuffer: 64 * 1024 * 1024 },
    );
    return stdout.split("\n").filter((line) => line !== "");
  } catch (error) {
    throw new Error(
      `MariaDB at ${MYSQL.host}:${MYSQL.port} as ${MYSQL.user}: ${(error as Error).message}; run scripts/test-services.sh (or .ci/run) to install and start it`,
    );
  }
}

export async function seedMysql(): Promise<SeededDatabase> {
  const name = `ferry_test_${randomBytes(6).toString("hex")}`;
  await mariadb(`CREATE DATABASE \`${name}\``);
  await mariadb(
    `
    CREATE TABLE customers (id INT PRIMARY KEY, name VARCHAR(100) NOT NULL, email VARCHAR(200), created DATETIME NOT NULL) ENGINE=InnoDB;
    CREATE TABLE orders (id BIGINT PRIMARY KEY, customer INT NOT NULL, total DECIMAL(12,2), placed DATE, status VARCHAR(20),
      FOREIGN KEY (customer) REFERENCES customers (id)) ENGINE=InnoDB;
    CREATE TABLE notes (id INT AUTO_INCREMENT PRIMARY KEY, body TEXT, data JSON, picture VARBINARY(16)) ENGINE=InnoDB;
    INSERT INTO customers SELECT seq, CONCAT('customer ', seq), IF(seq % 7 = 0, NULL, CONCAT('c', seq, '@example.com')),
      TIMESTAMP '2026-01-01 00:00:00' + INTERVAL seq * 37 MINUTE FROM seq_1_to_${SEEDED_ROWS.customers};
    INSERT INTO orders SELECT seq, 1 + seq % ${SEEDED_ROWS.customers}, (seq * 7919 % 100000) / 100.0, DATE '2025-01-01' + INTERVAL (seq % 700) DAY,
      ELT(1 + seq % 4, 'new', 'paid', 'shipped', 'returned') FROM seq_1_to_${SEEDED_ROWS.orders};
    INSERT INTO notes (body, data, picture) SELECT CONCAT('note ', seq, ' — tab\\there, quote '' and newline\\n'),
      JSON_OBJECT('n', seq, 'tags', JSON_ARRAY('a', seq % 3)), UNHEX(MD5(seq)) FROM seq_1_to_${SEEDED_ROWS.notes};
  `,
    name,
  );
  // A user of the database's own, with a password found nowhere else: tests look for it in logs and command lines.
  const user = `${name.slice(-10)}_bk`;
  const password = `my-${randomBytes(12).toString("hex")}`;
  await mariadb(`CREATE USER '${user}'@'%' IDENTIFIED BY '${password}'; GRANT ALL PRIVILEGES ON *.* TO '${user}'@'%'`);
  return {
    name,
    host: MYSQL.host,
    port: MYSQL.port,
    user,
    password,
    query: (sql) => mariadb(sql, name),
    drop: async () => {
      await mariadb(`DROP DATABASE IF EXISTS \`${name}\``);
      await mariadb(`DROP USER IF EXISTS '${user}'@'%'`);
    },
    databasesStartingWith: async (prefix) =>
      (await mariadb("SHOW DATABASES")).filter((database) => database.startsWith(prefix)),
  };
}

/** A running container with the database clients in it (and nothing else of the host's), on the host's network. */
export interface ClientContainer {
  name: string;
  remove(): Promise<void>;
}

/** Debian's PostgreSQL clients of the newest version installed, and MariaDB's. */
function clientPrograms(): string[] {
  const versions = readdirSync("/usr/lib/postgresql")
    .filter((entry) => /^\d+$/.test(entry))
    .sort((a, b) => Number(b) - Number(a));
  const bin = `/usr/lib/postgresql/${versions[0] ?? "15"}/bin`;
  return [`${bin}/pg_dump`, `${bin}/psql`, "/usr/bin/mariadb", "/usr/bin/mariadb-dump"];
}

/**
 * Starts a container whose only programs are busybox (sh, mktemp, cat, rm, sleep) and
 * Debian's PostgreSQL and MariaDB clients with their libraries, copied from this machine
 * (no image can be pulled here): the steps' `container:` mode must run the clients inside
 * it, since the container sees the databases on the host's network (--network host).
 */
export async function startClientContainer(): Promise<ClientContainer> {
  const root = await mkdtemp(join(tmpdir(), "ferry-dbclients-"));
  const tag = `ferry-test/dbclients:${randomBytes(4).toString("hex")}`;
  const name = `ferry-dbclients-${randomBytes(4).toString("hex")}`;
  try {
    const place = async (source: string, destination = source) => {
      await mkdir(join(root, dirname(destination)), { recursive: true });
      await copyFile(source, join(root, destination));
    };
    const libraries = new Set<string>();
    for (const program of clientPrograms()) {
      await place(program, `/usr/local/bin/${basename(program)}`);
      const { stdout } = await execFileAsync("ldd", [program]);
      for (const match of stdout.matchAll(/(\/\S+\.so[.\d]*)/g)) if (match[1]) libraries.add(match[1]);
    }
    for (const library of libraries) await place(library);
    await place("/bin/busybox", "/bin/busybox");
    for (const applet of ["sh", "mktemp", "cat", "rm", "sleep"]) await symlink("busybox", join(root, "bin", applet));
    await mkdir(join(root, "etc"), { recursive: true });
    await mkdir(join(root, "tmp"), { recursive: true, mode: 0o1777 });
    await writeFile(join(root, "etc", "passwd"), "root:x:0:0:root:/root:/bin/sh\n");
    const tar = execFile("tar", ["-C", root, "-c", "."], { encoding: "buffer", maxBuffer: 512 * 1024 * 1024 });
    const imported = execFile("docker", ["import", "-", tag]);
    tar.stdout?.pipe(imported.stdin as NodeJS.WritableStream);
    await new Promise<void>((resolve, reject) => {
      imported.on("exit", (code) => (code === 0 ? resolve() : reject(new Error(`docker import exited with ${code}`))));
      imported.on("error", reject);
    });
    await execFileAsync("docker", ["run", "-d", "--network", "host", "--name", name, tag, "/bin/sleep", "3600"]);
  } finally {
    await rm(root, { recursive: true, force: true });
  }
  return {
    name,
    async remove() {
      await execFileAsync("docker", ["rm", "-f", name]).catch(() => undefined);
      await execFileAsync("docker", ["rmi", "-f", tag]).catch(() => undefined);
    },
  };
}
