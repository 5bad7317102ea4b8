import { existsSync, mkdtempSync, readdirSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { setTimeout as sleep } from "node:timers/promises";
import pg from "pg";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { callExpecting } from "./helpers/api.js";
import { isolatedEnv, runFerry } from "./helpers/cli.js";
import { createPostgresDatabase, dialects } from "./helpers/databases.js";
import { startTestServer, type TestServer } from "./helpers/server.js";

/**
 * Artifact retention (ADR 0037) through a real server, on SQLite (files in the data
 * directory) and PostgreSQL (large objects): a runbook's policy per environment removes the
 * artifacts of older runs — their bytes too — after each run, never those of the newest run
 * that succeeded; a policy is refused naming the field; run retention's hook removes a
 * task's artifacts before the task goes.
 */

type Body = Record<string, unknown>;

describe.each(dialects)("artifact retention (%s)", (dialect) => {
  let test: TestServer;
  let databaseUrl: string | undefined;
  let dropDatabase: (() => Promise<void>) | undefined;
  const temporary: string[] = [];

  function admin<T = Body>(method: string, path: string, body?: unknown, status?: number): Promise<T> {
    return callExpecting<T>(test, method, path, body, status);
  }

  /** Runs the runbook once with Outcome=pass|fail; each run attaches one file first. */
  async function runOnce(outcome: "pass" | "fail"): Promise<string> {
    const run = await admin<{ taskId: string }>(
      "POST",
      "/api/v1/projects/shop/runbooks/backup/runs",
      { environment: "dev", parameters: { Outcome: outcome } },
      201,
    );
    const task = await test.waitForTask(run.taskId, 60_000);
    expect(task.state).toBe(outcome === "pass" ? "succeeded" : "failed");
    return run.taskId;
  }

  const artifactsOf = async (taskId: string) =>
    (await admin<{ id: string; name: string }[]>("GET", `/api/v1/tasks/${taskId}/artifacts`)).map((a) => a.name);

  /** Where the bytes are: files of the data directory, or large objects. */
  async function storedCount(): Promise<number> {
    if (dialect === "sqlite") {
      const directory = join(test.dataDir, "artifacts");
      return existsSync(directory) ? readdirSync(directory).filter((name) => name.startsWith("art_")).length : 0;
    }
    const client = new pg.Client({ connectionString: databaseUrl });
    await client.connect();
    try {
      return Number((await client.query("select count(*) as n from pg_largeobject_metadata")).rows[0].n);
    } finally {
      await client.end();
    }
  }

  beforeAll(async () => {
    if (dialect === "postgres") {
      const database = await createPostgresDatabase();
      databaseUrl = database.url;
      dropDatabase = database.drop;
    }
    test = await startTestServer({ ...(databaseUrl && { databaseUrl }) });
    await admin("POST", "/api/v1/environments", { name: "dev" });
    await admin("POST", "/api/v1/lifecycles", { name: "standard", phases: [{ environments: ["dev"] }] });
    await admin("POST", "/api/v1/projects", { name: "shop", lifecycle: "standard" });
    await admin("POST", "/api/v1/projects/shop/runbooks", {
      name: "Backup",
      parameters: [{ name: "Outcome", type: "choice", choices: ["pass", "fail"] }],
      process: {
        steps: [
          {
            name: "dump",
            kind: "script",
            config: {
              script: [
                "head -c 100000 /dev/urandom > dump.bin",
                "echo \"##ferry[artifact path='dump.bin' name='dump-$1.bin']\"",
                '[ "$1" = pass ]',
              ].join("\n"),
              arguments: ["#{Outcome}"],
            },
          },
        ],
      },
    });
    await admin("POST", "/api/v1/projects/shop/runbooks/backup/publish");
  }, 90_000);

  afterAll(async () => {
    await test?.close();
    await dropDatabase?.();
    for (const directory of temporary) rmSync(directory, { recursive: true, force: true });
  });

  it("refuses a policy that keeps everything or names no environment, naming the field", async () => {
    const empty = await test.call<Body>("PUT", "/api/v1/projects/shop/runbooks/backup/artifact-retention", {
      policies: [{ environment: "dev" }],
    });
    expect(empty.status).toBe(400);
    expect(JSON.stringify(empty.body)).toContain("/policies/0/keepRuns");
    const unknown = await test.call<Body>("PUT", "/api/v1/projects/shop/runbooks/backup/artifact-retention", {
      policies: [{ environment: "nowhere", keepRuns: 1 }],
    });
    expect(unknown.status).toBe(400);
    expect(JSON.stringify(unknown.body)).toContain("/policies/0/environment");
  });

  it("keeps the newest runs' artifacts and the last successful run's, removing the rest with their bytes", async () => {
    const good = await runOnce("pass");
    const failed = [await runOnce("fail"), await runOnce("fail")];
    // A failed run's file is attached too: it is what someone wants to look at.
    expect(await artifactsOf(failed[0] as string)).toEqual(["dump-fail.bin"]);
    expect(await storedCount()).toBe(3);

    // Set through the CLI: one run's artifacts in dev (and the newest success's, always).
    const home = mkdtempSync(join(tmpdir(), "ferry-retention-cli-"));
    temporary.push(home);
    const env = isolatedEnv(home, { FERRY_URL: test.server.url, FERRY_API_KEY: test.apiKey });
    const set = await runFerry(
      ["artifact", "retention", "set", "--project", "shop", "--runbook", "backup", "--env", "dev", "--keep-runs", "1"],
      env,
    );
    expect(set.code, set.stderr).toBe(0);
    const shown = await admin<Body>("GET", "/api/v1/projects/shop/runbooks/backup/artifact-retention");
    expect(shown).toEqual({ policies: [{ environment: "dev", keepRuns: 1, keepDays: null }] });

    // Applied when the policy changed: the middle run's artifact goes, file or large object too.
    expect(await artifactsOf(good)).toEqual(["dump-pass.bin"]);
    expect(await artifactsOf(failed[0] as string)).toEqual([]);
    expect(await artifactsOf(failed[1] as string)).toEqual(["dump-fail.bin"]);
    expect(await storedCount()).toBe(2);

    // And after each run, by itself: the previous newest goes, the last success stays.
    const newest = await runOnce("fail");
    const deadline = Date.now() + 20_000;
    while ((await artifactsOf(failed[1] as string)).length > 0) {
      if (Date.now() > deadline) throw new Error("retention did not run after the run ended");
      await sleep(100);
    }
    expect(await artifactsOf(newest)).toEqual(["dump-fail.bin"]);
    expect(await artifactsOf(good)).toEqual(["dump-pass.bin"]);
    expect(await storedCount()).toBe(2);
  });

  it("removes a task's artifacts when run retention is about to delete the task", async () => {
    const taskId = await runOnce("pass");
    // Queued behind the retention this run's end started: once it is done, nothing else moves.
    await test.server.artifactRetention.sweep();
    const before = await storedCount();
    expect(await test.server.artifactRetention.removeTaskArtifacts([taskId])).toBe(1);
    expect(await artifactsOf(taskId)).toEqual([]);
    expect(await storedCount()).toBe(before - 1);
  });
});
