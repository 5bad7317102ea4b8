import { join } from "node:path";
import SqliteDatabase from "better-sqlite3";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import type { AuditEvent } from "../src/domain/audit.js";
import {
  type CliResult,
  expectSuccess,
  type FerryServer,
  isolatedEnv,
  runFerry,
  testAdminKey,
  trackedResources,
} from "./helpers/cli.js";

const { startServerInNewHome, cleanUp } = trackedResources("ferry-audit-e2e-");

afterAll(async () => {
  await cleanUp();
});

/**
 * `ferry admin verify-audit` and `export-audit` through the real bin/ferry against a real
 * server, with the audit table edited behind the server's back in its SQLite file.
 */
describe("ferry admin verify-audit / export-audit (SQLite)", () => {
  let server: FerryServer;
  let home: string;
  const adminKey = testAdminKey();
  const cli = (args: string[]): Promise<CliResult> =>
    runFerry(args, isolatedEnv(home, { FERRY_URL: server.url, FERRY_API_KEY: adminKey }), { timeoutMs: 15_000 });

  beforeAll(async () => {
    ({ home, server } = await startServerInNewHome(adminKey));
    expectSuccess(await cli(["env", "create", "dev"]));
    expectSuccess(await cli(["env", "update", "dev", "--description", "developers' playground"]));
  });
  afterAll(async () => {
    await server?.stop();
  });

  it("exports the log as JSON lines and verifies it", async () => {
    const exported = await cli(["admin", "export-audit"]);
    expectSuccess(exported);
    const entries = exported.stdout
      .trimEnd()
      .split("\n")
      .map((line) => JSON.parse(line) as AuditEvent);
    expect(entries.map((entry) => entry.action)).toEqual([
      "api-key.create",
      "environment.create",
      "environment.update",
    ]);
    expect(entries[2]?.diff).toEqual({ description: { from: "", to: "developers' playground" } });
    const later = await cli(["admin", "export-audit", "--after", "2"]);
    expectSuccess(later);
    expect(later.stdout.trimEnd().split("\n")).toHaveLength(1);

    const verified = await cli(["admin", "verify-audit"]);
    expectSuccess(verified);
    expect(verified.stdout).toContain("audit log verified: 3 entries");
  });

  it("fails, naming the entry, once a row was edited in the database", async () => {
    const database = new SqliteDatabase(join(home, "data", "ferry.db"));
    try {
      database.pragma("busy_timeout = 5000");
      const row = database.prepare("SELECT id FROM audit_events WHERE seq = 2").get() as { id: string };
      database
        .prepare("UPDATE audit_events SET diff = ? WHERE seq = 2")
        .run('{"name":{"from":null,"to":"someone-else"}}');

      const failed = await cli(["admin", "verify-audit"]);
      expect(failed.code, failed.stderr).toBe(1);
      expect(failed.stderr).toContain(`the audit log fails verification at entry 2 (${row.id})`);
      expect(failed.stderr).toContain("edited");

      const json = await cli(["admin", "verify-audit", "--json"]);
      expect(json.code).toBe(1);
      expect(JSON.parse(json.stdout)).toMatchObject({ ok: false, checked: 1, firstBad: { seq: 2, id: row.id } });
    } finally {
      database.close();
    }
  });
});
