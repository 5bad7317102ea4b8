import { execFileSync } from "node:child_process";
import { createHash } from "node:crypto";
import { mkdtempSync, readdirSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { gunzipSync } from "node:zlib";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { runRunbook as runPublishedRunbook } from "./helpers/runbooks.js";
import {
  type ClientContainer,
  connectionConfig,
  SEEDED_ROWS,
  type SeededDatabase,
  seedMysql,
  seedPostgres,
  startClientContainer,
} from "./helpers/seededDatabases.js";
import { startTestServer, type TestServer } from "./helpers/server.js";
import { type SshHosts, startSshHosts } from "./helpers/sshHosts.js";

/**
 * Issue 14 part 6, acceptance: a runbook backs up a real PostgreSQL database and a real
 * MariaDB database (Debian's servers, ~100k rows each), each into a gzip file with its sha256
 * and a copy in a directory on a second target — an SSH host in a network namespace, written
 * through its own transport; restore-verify restores each into a scratch database with
 * identical row counts and checksums and drops it. A corrupted backup fails it naming the
 * sha256 mismatch, a source that changed fails it naming the table and both counts, and the
 * scratch database is dropped either way. The passwords (sensitive variables) appear in no
 * log line and no command line on the machine.
 */

type Body = Record<string, unknown>;

describe("database backups and restore-verify", () => {
  let test: TestServer;
  let hosts: SshHosts;
  let postgres: SeededDatabase;
  let mysql: SeededDatabase;
  let clients: ClientContainer;
  const vault = mkdtempSync(join(tmpdir(), "ferry-vault-"));

  async function admin<T = Body>(method: string, path: string, body?: unknown): Promise<T> {
    const response = await test.call<T>(method, path, body);
    expect(response.status, `${method} ${path}: ${JSON.stringify(response.body)}`).toBeLessThan(300);
    return response.body;
  }

  /** Creates and publishes a runbook, runs it in prod and waits; watches the machine's command lines for the passwords meanwhile. */
  const runRunbook = (name: string, steps: Body[]) =>
    runPublishedRunbook(test, "shop", { name, steps, timeoutMs: 240_000, watch: [postgres.password, mysql.password] });

  const connection = connectionConfig;

  /** A restore-verify step of the file step `backup` wrote, checked against the sha256 it reported. */
  const verifyStep = (name: string, backup: string, engine: "postgres" | "mysql", config: Body, step: Body = {}) => ({
    name,
    kind: "restore-verify",
    ...step,
    config: {
      engine,
      file: `#{Ferry.Step[${backup}].Output.file}`,
      sha256: `#{Ferry.Step[${backup}].Output.sha256}`,
      ...config,
    },
  });

  /**
   * Backs up `engine`'s database, overwrites four bytes of the file, then restore-verifies it:
   * the task fails naming the sha256 mismatch before any scratch database is made.
   */
  async function runCorrupted(runbook: string, backup: string, engine: "postgres" | "mysql", config: Body) {
    const { state, log } = await runRunbook(runbook, [
      { name: backup, kind: `${engine}-backup`, config },
      {
        name: "corrupt",
        kind: "script",
        config: {
          script: 'printf "XXXX" | dd of="$1" bs=1 seek=300 conv=notrunc status=none',
          arguments: [`#{Ferry.Step[${backup}].Output.file}`],
        },
      },
      verifyStep("verify", backup, engine, config),
    ]);
    expect(state).toBe("failed");
    expect(log).toMatch(
      /step 'verify' failed: .*sha256 mismatch: the backup should be [0-9a-f]{64} but the file is [0-9a-f]{64}/,
    );
    expect(log).not.toContain("creating scratch database");
    return log;
  }

  beforeAll(async () => {
    [hosts, test, postgres, mysql, clients] = await Promise.all([
      startSshHosts(1),
      startTestServer(),
      seedPostgres(),
      seedMysql(),
      startClientContainer(),
    ]);
    await admin("POST", "/api/v1/environments", { name: "prod" });
    await admin("POST", "/api/v1/lifecycles", { name: "standard", phases: [{ environments: ["prod"] }] });
    await admin("POST", "/api/v1/projects", { name: "shop", lifecycle: "standard" });
    const host = hosts.hosts[0];
    await admin("POST", "/api/v1/targets", {
      name: "vault",
      environments: ["prod"],
      roles: ["vault"],
      transport: "ssh",
      ssh: { host: host?.address, user: "root", privateKey: hosts.privateKey, hostKey: host?.fingerprint },
    });
    await admin("POST", "/api/v1/projects/shop/variables", {
      name: "PgPassword",
      value: postgres.password,
      sensitive: true,
    });
    await admin("POST", "/api/v1/projects/shop/variables", {
      name: "MyPassword",
      value: mysql.password,
      sensitive: true,
    });
  }, 180_000);

  afterAll(async () => {
    await test?.close();
    await hosts?.close();
    await postgres?.drop();
    await mysql?.drop();
    await clients?.remove();
    rmSync(vault, { recursive: true, force: true });
  });

  it("backs up PostgreSQL and MariaDB into a file and a second target, and restore-verify finds identical tables", async () => {
    const { state, taskId, log, exposed } = await runRunbook("Backup and verify", [
      {
        name: "pg",
        kind: "postgres-backup",
        config: { ...connection(postgres, "#{PgPassword}"), copyTo: { target: "vault", directory: `${vault}/pg` } },
      },
      verifyStep("verify-pg", "pg", "postgres", connection(postgres, "#{PgPassword}")),
      {
        name: "my",
        kind: "mysql-backup",
        config: { ...connection(mysql, "#{MyPassword}"), copyTo: { target: "vault", directory: `${vault}/my` } },
      },
      verifyStep("verify-my", "my", "mysql", connection(mysql, "#{MyPassword}")),
    ]);
    expect(state, log).toBe("succeeded");

    // Every table restored with the source's rows and checksum, each engine.
    for (const [table, rows] of Object.entries(SEEDED_ROWS)) {
      expect(log).toMatch(new RegExp(`public\\.${table}: ${rows} rows, checksum [0-9a-f]{32}: identical`));
      expect(log).toMatch(new RegExp(`\\n${table}: ${rows} rows, checksum \\d+: identical`));
    }
    expect(log).toContain(`matches ${postgres.name}: 3 table(s), 100000 rows, every checksum identical`);
    expect(log).toContain(`matches ${mysql.name}: 3 table(s), 100000 rows, every checksum identical`);

    // The copies on the second target: whole dumps whose sha256 is the one the log reported.
    for (const [directory, marker] of [
      [`${vault}/pg`, "CREATE TABLE"],
      [`${vault}/my`, "CREATE TABLE"],
    ] as const) {
      const files = readdirSync(directory);
      expect(files).toHaveLength(1);
      const bytes = readFileSync(join(directory, files[0] ?? ""));
      const sha256 = createHash("sha256").update(bytes).digest("hex");
      expect(log).toContain(`sha256 ${sha256}`);
      expect(log).toContain(`copied to vault:${directory}/${files[0]} (sha256 ${sha256}, checked there)`);
      const sql = gunzipSync(bytes).toString();
      expect(sql).toContain(marker);
      expect(sql).toMatch(/orders/);
    }

    // Each dump is also the task's artifact, stored with the sha256 the step reported; its
    // bytes, downloaded from the server, are the copy's on the second target.
    const listed = await admin<unknown>("GET", `/api/v1/tasks/${taskId}/artifacts`);
    const artifacts = (Array.isArray(listed) ? listed : (listed as { items: unknown[] }).items) as {
      id: string;
      name: string;
      sha256: string;
      step: string;
    }[];
    expect(artifacts.map((artifact) => artifact.step)).toEqual(["pg", "my"]);
    for (const [artifact, directory] of [
      [artifacts[0], `${vault}/pg`],
      [artifacts[1], `${vault}/my`],
    ] as const) {
      expect(readdirSync(directory)).toEqual([artifact?.name]);
      const response = await fetch(new URL(`/api/v1/artifacts/${artifact?.id}/content`, test.server.url), {
        headers: { authorization: `Bearer ${test.apiKey}` },
      });
      expect(response.status).toBe(200);
      const downloaded = Buffer.from(await response.arrayBuffer());
      expect(createHash("sha256").update(downloaded).digest("hex")).toBe(artifact?.sha256);
      expect(downloaded.equals(readFileSync(join(directory, artifact?.name ?? "")))).toBe(true);
      expect(log).toContain(`kept as artifact ${artifact?.name} (${artifact?.id}), sha256 checked`);
    }

    // The scratch databases are gone; the passwords were never on a command line or in the log.
    expect(await postgres.databasesStartingWith("ferry_verify_")).toEqual([]);
    expect(await mysql.databasesStartingWith("ferry_verify_")).toEqual([]);
    expect(exposed).toEqual([]);
    expect(log).not.toContain(postgres.password);
    expect(log).not.toContain(mysql.password);
  }, 300_000);

  it("fails restore-verify on a corrupted backup, naming the sha256 mismatch, before restoring anything", async () => {
    await runCorrupted("Corrupted", "pg", "postgres", connection(postgres, "#{PgPassword}"));
    expect(await postgres.databasesStartingWith("ferry_verify_")).toEqual([]);
  }, 120_000);

  it("fails restore-verify on a corrupted MariaDB backup, naming the sha256 mismatch, before restoring anything", async () => {
    const log = await runCorrupted("Corrupted MariaDB", "my", "mysql", connection(mysql, "#{MyPassword}"));
    expect(await mysql.databasesStartingWith("ferry_verify_")).toEqual([]);
    expect(log).not.toContain(mysql.password);
  }, 120_000);

  it("fails restore-verify when the source changed since the backup, naming the table and both counts, and drops the scratch database", async () => {
    const { state, log } = await runRunbook("Drifted", [
      { name: "my", kind: "mysql-backup", config: connection(mysql, "#{MyPassword}") },
      {
        name: "insert",
        kind: "script",
        config: {
          script: `mariadb --protocol=tcp --host="$1" --port="$2" --user="$3" -D "$4" -e "INSERT INTO orders VALUES (999999, 1, 1.00, '2026-01-01', 'new')"`,
          arguments: [mysql.host, String(mysql.port), mysql.user, mysql.name],
          env: { MYSQL_PWD: "#{MyPassword}" },
        },
      },
      verifyStep("verify", "my", "mysql", connection(mysql, "#{MyPassword}")),
    ]);
    expect(state).toBe("failed");
    expect(log).toContain(
      `table orders: ${SEEDED_ROWS.orders + 1} rows in the source, ${SEEDED_ROWS.orders} in the restore`,
    );
    expect(log).toMatch(/dropped scratch database ferry_verify_/);
    expect(await mysql.databasesStartingWith("ferry_verify_")).toEqual([]);
    await mysql.query("DELETE FROM orders WHERE id = 999999");
  }, 120_000);

  it("runs the dump, restore and comparison inside a named container (docker exec) when told to", async () => {
    // On the SSH target, whose account (root) may use the Docker engine: a local step runs as
    // a uid of its task's own, which may not (docs/runbooks.md says so).
    const inContainer = (database: SeededDatabase, password: string) => ({
      ...connection(database, password),
      container: clients.name,
    });
    const { state, log, exposed } = await runRunbook("In a container", [
      { name: "pg", kind: "postgres-backup", roles: ["vault"], config: inContainer(postgres, "#{PgPassword}") },
      verifyStep("verify-pg", "pg", "postgres", inContainer(postgres, "#{PgPassword}"), { roles: ["vault"] }),
      { name: "my", kind: "mysql-backup", roles: ["vault"], config: inContainer(mysql, "#{MyPassword}") },
      verifyStep("verify-my", "my", "mysql", inContainer(mysql, "#{MyPassword}"), { roles: ["vault"] }),
    ]);
    expect(state, log).toBe("succeeded");
    expect(log).toContain(`(in container ${clients.name})`);
    expect(log).toContain(`matches ${postgres.name}: 3 table(s), 100000 rows, every checksum identical`);
    expect(log).toContain(`matches ${mysql.name}: 3 table(s), 100000 rows, every checksum identical`);
    expect(exposed).toEqual([]);
    // The defaults file written inside the container is gone with the script that needed it.
    expect(execFileSync("docker", ["exec", clients.name, "/bin/sh", "-c", "ls /tmp"]).toString().trim()).toBe("");
  }, 300_000);
});
