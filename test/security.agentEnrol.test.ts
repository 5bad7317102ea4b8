import { chmodSync, existsSync, mkdtempSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { setTimeout as sleep } from "node:timers/promises";
import pg from "pg";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { createPostgresDatabase } from "./helpers/databases.js";
import { startTestServer, type TestServer } from "./helpers/server.js";

/**
 * Found in review: enrolment made the agent's target as a *local* target, committed, and
 * made it an agent target in a second transaction. In between, the target served its
 * environments with the enrolling host's roles as the server's own host: a deployment then
 * ran its steps on the Ferry server itself (and had the second transaction failed, the target
 * would have stayed so). A real server on PostgreSQL, where another session holding a lock on
 * `agents` keeps an enrolment in that window for as long as the test needs.
 */
describe("an agent's enrolment is never a local target", { timeout: 120_000 }, () => {
  let test: TestServer;
  let database: { url: string; drop(): Promise<void> };
  const directory = mkdtempSync(join(tmpdir(), "ferry-enrol-window-"));
  const marker = join(directory, "ran-on-the-server");

  beforeAll(async () => {
    // Steps on the server's host run as per-task accounts: the marker must be writable by them.
    chmodSync(directory, 0o777);
    database = await createPostgresDatabase();
    test = await startTestServer({ databaseUrl: database.url });
    await test.call("POST", "/api/v1/environments", { name: "dev" });
    await test.call("POST", "/api/v1/lifecycles", {
      name: "auto",
      phases: [{ environments: ["dev"], autoDeploy: true }],
    });
    await test.call("POST", "/api/v1/projects", { name: "web", lifecycle: "auto" });
    await test.call("PUT", "/api/v1/projects/web/process", {
      steps: [{ name: "mark", kind: "script", roles: ["edge"], config: { script: `echo ran >> ${marker}` } }],
    });
  });

  afterAll(async () => {
    await test?.close();
    await database?.drop();
    rmSync(directory, { recursive: true, force: true });
  });

  it("runs no step on the server's host while an enrolment is under way", async () => {
    const token = (await test.call<{ token: string }>("POST", "/api/v1/agent-tokens", {})).body.token;
    const locker = new pg.Client({ connectionString: database.url });
    await locker.connect();
    try {
      // Reads of agents go on; writing a credential row waits for this session.
      await locker.query("BEGIN");
      await locker.query("LOCK TABLE agents IN EXCLUSIVE MODE");
      const enrolment = fetch(new URL("/api/v1/agent/enrol", test.server.url), {
        method: "POST",
        headers: { "content-type": "application/json" },
        body: JSON.stringify({ token, name: "edge-1", environments: ["dev"], roles: ["edge"] }),
      });
      const waiting = async () =>
        Number(
          (await locker.query<{ count: string }>("SELECT count(*) FROM pg_locks WHERE NOT granted")).rows[0]?.count,
        );
      for (let tries = 0; tries < 400 && (await waiting()) === 0; tries++) await sleep(25);
      expect(await waiting()).toBeGreaterThan(0);

      // Meanwhile: the target is not there as a local one, and a deployment runs nothing here.
      const seen = await test.call<{ transport?: string }>("GET", "/api/v1/targets/edge-1");
      expect(seen.body.transport).not.toBe("local");
      const created = await test.call<{ deployments: { taskId: string }[] }>("POST", "/api/v1/projects/web/releases", {
        version: "1.0.0",
      });
      const taskId = created.body.deployments[0]?.taskId ?? "";
      await test.waitForTask(taskId, 60_000);
      expect(existsSync(marker) ? readFileSync(marker, "utf8") : "").toBe("");

      await locker.query("COMMIT");
      const answer = await enrolment;
      expect(answer.status).toBe(201);
      const target = await test.call<{ transport: string }>("GET", "/api/v1/targets/edge-1");
      expect(target.body.transport).toBe("agent");
    } finally {
      await locker.query("ROLLBACK").catch(() => undefined);
      await locker.end();
    }
  });

  it("refuses a second rotation while the first waits, which would lock the agent out", async () => {
    const token = (await test.call<{ token: string }>("POST", "/api/v1/agent-tokens", {})).body.token;
    const enrolled = await fetch(new URL("/api/v1/agent/enrol", test.server.url), {
      method: "POST",
      headers: { "content-type": "application/json" },
      body: JSON.stringify({ token, name: "rotated", environments: ["dev"] }),
    });
    const { credential: first } = (await enrolled.json()) as { credential: string };
    const poll = (credential: string, leaving = true) =>
      fetch(new URL("/api/v1/agent/poll", test.server.url), {
        method: "POST",
        headers: { "content-type": "application/json", authorization: `Bearer ${credential}` },
        body: JSON.stringify({ running: [], interrupted: [], leaving }),
      });
    expect((await test.call("POST", "/api/v1/targets/rotated/agent/rotate")).status).toBe(200);
    // The agent's poll carries the new credential (answered at once); ferry agent saves it in place of the old one.
    const carried = (await (await poll(first, false)).json()) as { credential?: string };
    const second = carried.credential ?? "";
    expect(second).toMatch(/^ferry_agent_/);

    // Before the agent's next request, an administrator rotates again: refused, saying why.
    const again = await test.call<{ detail: string }>("POST", "/api/v1/targets/rotated/agent/rotate");
    expect(again.status).toBe(409);
    expect(again.body.detail).toContain("waits for its agent to use it");
    // So the credential the agent now holds works, and replaces the old one.
    expect((await poll(second)).status).toBe(200);
    expect((await poll(first)).status).toBe(401);
    // And once it did, rotating works again.
    expect((await test.call("POST", "/api/v1/targets/rotated/agent/rotate")).status).toBe(200);
  });
});
