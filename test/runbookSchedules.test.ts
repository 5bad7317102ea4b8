import { existsSync } from "node:fs";
import { join } from "node:path";
import { setTimeout as sleep } from "node:timers/promises";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { RunbookScheduler } from "../src/engine/runbookSchedules.js";
import { callExpecting } from "./helpers/api.js";
import { createPostgresDatabase, dialects } from "./helpers/databases.js";
import { startTestServer, type TestServer } from "./helpers/server.js";

/**
 * Issue 14, parts 3 and 7, through a real server (HTTP, task engine, scheduler, local script
 * steps) on SQLite and PostgreSQL: schedules checked field by field, firing the published
 * version (a draft edit changes nothing until published), pause, freezes and parameters that
 * stopped being valid refusing a firing with an audit entry, a firing claimed once by
 * several schedulers on one database, missed firings reported and caught up once, and the
 * retention of runs keeping the newest successful one.
 */

type Body = Record<string, unknown>;
interface RunSummary {
  runId: string;
  taskId: string;
  environment: string;
  version: number | null;
  state: string;
  createdBy: string;
  cause: string | null;
  scheduledFor: string | null;
}
interface AuditEntry {
  action: string;
  actor: { name: string };
  resource: { name: string | null };
  diff: Record<string, { from: unknown; to: unknown }>;
}

/** Polls until `check` returns a value (not undefined), or fails naming `what`. */
async function eventually<T>(what: string, check: () => Promise<T | undefined>, timeoutMs = 30_000): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const value = await check();
    if (value !== undefined) return value;
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await sleep(200);
  }
}

const SECRET = "schedule-token-never-shown-7731";

// The two dialects run side by side (each on its own server and database; the tests of one
// dialect still run in order): the file waits mostly on its schedules' clocks, not the CPU.
describe.each(dialects)("runbook schedules and retention (%s)", { concurrent: true }, (dialect) => {
  let test: TestServer;
  let databaseUrl: string | undefined;
  let dropDatabase: (() => Promise<void>) | undefined;
  const keys: Record<string, string> = {};

  function admin<T = Body>(method: string, path: string, body?: unknown, status?: number): Promise<T> {
    return callExpecting<T>(test, method, path, body, status);
  }

  async function as(user: string, method: string, path: string, body?: unknown) {
    const response = await fetch(new URL(path, test.server.url), {
      method,
      headers: {
        authorization: `Bearer ${keys[user]}`,
        ...(body !== undefined && { "content-type": "application/json" }),
      },
      ...(body !== undefined && { body: JSON.stringify(body) }),
    });
    const text = await response.text();
    return { status: response.status, body: (text ? JSON.parse(text) : undefined) as Body };
  }

  const runsOf = (runbook: string) =>
    admin<RunSummary[]>("GET", `/api/v1/projects/shop/runbooks/${runbook}/runs?limit=500`);

  async function logOf(taskId: string): Promise<string> {
    const page = await admin<{ lines: { text: string }[] }>("GET", `/api/v1/tasks/${taskId}/log`);
    return page.lines.map((line) => line.text).join("\n");
  }

  async function auditEntries(action: string): Promise<AuditEntry[]> {
    const page = await admin<{ items: AuditEntry[] }>("GET", `/api/v1/audit?action=${action}&limit=500`);
    return page.items;
  }

  async function auditText(): Promise<string> {
    const response = await fetch(new URL("/api/v1/audit/export", test.server.url), {
      headers: { authorization: `Bearer ${test.apiKey}` },
    });
    return response.text();
  }

  /** The runs a schedule queued, oldest first, once at least `count` exist. */
  async function scheduledRuns(runbook: string, schedule: string, count: number, timeoutMs = 30_000) {
    return eventually(
      `${count} runs of schedule ${schedule}`,
      async () => {
        const runs = (await runsOf(runbook)).filter((run) => run.cause?.endsWith(`schedule ${schedule}`)).reverse();
        return runs.length >= count ? runs : undefined;
      },
      timeoutMs,
    );
  }

  const say = (text: string) => ({
    steps: [
      {
        name: "say",
        kind: "script",
        config: { script: `echo "${text} $1 token=$TOKEN"`, arguments: ["#{Label}"], env: { TOKEN: "#{Token}" } },
      },
    ],
  });

  beforeAll(async () => {
    if (dialect === "postgres") {
      const database = await createPostgresDatabase();
      databaseUrl = database.url;
      dropDatabase = database.drop;
    }
    test = await startTestServer({ ...(databaseUrl && { databaseUrl }) });
    for (const name of ["staging", "prod", "dev"]) await admin("POST", "/api/v1/environments", { name });
    await admin("POST", "/api/v1/lifecycles", { name: "standard", phases: [{ environments: ["staging", "prod"] }] });
    await admin("POST", "/api/v1/projects", { name: "shop", lifecycle: "standard" });
    await admin(
      "POST",
      "/api/v1/projects/shop/runbooks",
      {
        name: "Report",
        environments: ["staging", "prod"],
        // Scheduled firings of this file come every second or two: they may overlap themselves.
        overlapItself: true,
        overlapDeployments: true,
        parameters: [
          { name: "Label", type: "string", pattern: "[a-z]+" },
          { name: "Token", type: "string", sensitive: true, required: false },
        ],
        process: say("version one"),
      },
      201,
    );
    await admin("POST", "/api/v1/projects/shop/runbooks/report/publish");
    for (const [user, role] of [
      ["casey", "runbook-consumer"],
      ["erin", "project-editor"],
    ] as const) {
      await admin("POST", "/api/v1/users", { username: user, password: `${user}-long-password` });
      await admin("POST", "/api/v1/teams", {
        name: `${user} team`,
        members: [user],
        roles: [{ role, projects: ["shop"] }],
      });
      keys[user] = String((await admin("POST", "/api/v1/api-keys", { name: `${user} key`, user })).key);
    }
  }, 90_000);

  // Closing waits for the runs the schedules queued; on a loaded CI machine that took over the
  // default 60 s once.
  afterAll(async () => {
    await test?.close();
    await dropDatabase?.();
  }, 180_000);

  it.sequential("refuses a schedule that cannot work, naming each field, and needs editRunbooks and runRunbooks", async () => {
    const path = "/api/v1/projects/shop/runbooks/report/schedules";
    const bad = await test.call<{ errors?: { pointer: string; detail: string }[]; detail: string }>("POST", path, {
      name: "broken",
      environment: "staging",
      cron: "61 * * * *",
      timeZone: "Mars/Olympus",
      missed: "always",
    });
    expect(bad.status).toBe(400);
    const pointers = bad.body.errors?.map((issue) => issue.pointer) ?? [];
    expect(pointers).toEqual(expect.arrayContaining(["/cron", "/timeZone", "/missed"]));
    expect(JSON.stringify(bad.body)).toContain("minute");

    // Parameters are checked against the published version before anything is stored.
    const parameters = await test.call<Body>("POST", path, {
      name: "bad-label",
      environment: "staging",
      cron: "0 3 * * *",
      parameters: { Label: "UPPER", Unknown: "x" },
    });
    expect(parameters.status).toBe(400);
    expect(JSON.stringify(parameters.body)).toContain("/parameters/Label");
    expect(JSON.stringify(parameters.body)).toContain("/parameters/Unknown");

    const environment = await test.call<Body>("POST", path, {
      name: "in-dev",
      environment: "dev",
      cron: "0 3 * * *",
      parameters: { Label: "ok" },
    });
    expect(environment.status).toBe(400);
    expect(JSON.stringify(environment.body)).toContain("/environment");

    const target = await test.call<Body>("POST", path, {
      name: "on-target",
      environment: "staging",
      cron: "0 3 * * *",
      parameters: { Label: "ok" },
      targets: ["nowhere"],
    });
    expect(target.status).toBe(400);
    expect(JSON.stringify(target.body)).toContain("/targets/0");

    const good = { name: "nightly", environment: "staging", cron: "0 3 * * *", parameters: { Label: "ok" } };
    const consumer = await as("casey", "POST", path, good);
    expect(consumer.status).toBe(403);
    expect(String(consumer.body.detail)).toContain("editRunbooks");
    const editor = await as("erin", "POST", path, good);
    expect(editor.status).toBe(403);
    expect(String(editor.body.detail)).toContain("runRunbooks");

    const created = await admin<Body>("POST", path, { ...good, timeZone: "Europe/Berlin" }, 201);
    expect(created).toMatchObject({ name: "nightly", environment: "staging", missed: "skip", paused: false });
    // 03:00 in Berlin is 01:00 or 02:00 UTC.
    expect(String(created.nextRunAt)).toMatch(/T0[12]:00:00\.000Z$/);
    const duplicate = await test.call<Body>("POST", path, good);
    expect(duplicate.status).toBe(409);
    await admin("DELETE", `${path}/nightly`, undefined, 204);
  });

  it.sequential("fires the published version on time, twice; a draft edit changes nothing until published; pausing stops it", async () => {
    const path = "/api/v1/projects/shop/runbooks/report/schedules";
    const created = await admin<Body>(
      "POST",
      path,
      {
        name: "every-2s",
        environment: "staging",
        cron: "*/2 * * * * *",
        parameters: { Label: "scheduled", Token: SECRET },
      },
      201,
    );
    expect(created.parameters).toEqual({ Label: "scheduled", Token: "********" });

    const firstTwo = (await scheduledRuns("report", "every-2s", 2)).slice(0, 2);
    for (const run of firstTwo) {
      expect(run).toMatchObject({ cause: "schedule every-2s", version: 1, createdBy: "schedule every-2s" });
      // Each run is for its own firing, on an even second.
      expect(new Date(String(run.scheduledFor)).getUTCSeconds() % 2).toBe(0);
      const task = await test.waitForTask(run.taskId);
      expect(task.state).toBe("succeeded");
      const log = await logOf(run.taskId);
      expect(log).toContain("version one scheduled token=");
      expect(log).toContain("Queued by schedule every-2s, for the firing due");
      expect(log).not.toContain(SECRET);
    }
    expect(firstTwo[0]?.scheduledFor).not.toBe(firstTwo[1]?.scheduledFor);

    // A draft edit: scheduled runs keep running version 1.
    await admin("PATCH", "/api/v1/projects/shop/runbooks/report", { process: say("version two") });
    const editedAt = Date.now();
    const afterEdit = await eventually("a firing after the draft edit", async () => {
      const runs = await scheduledRuns("report", "every-2s", 1);
      return runs.find((run) => Date.parse(String(run.scheduledFor)) > editedAt - 500 && run.state === "succeeded");
    });
    expect(afterEdit.version).toBe(1);
    expect(await logOf(afterEdit.taskId)).toContain("version one scheduled");

    // Published: the next firings run version 2.
    await admin("POST", "/api/v1/projects/shop/runbooks/report/publish");
    const afterPublish = await eventually("a firing of version 2", async () =>
      (await scheduledRuns("report", "every-2s", 1)).find((run) => run.version === 2),
    );
    await test.waitForTask(afterPublish.taskId);
    expect(await logOf(afterPublish.taskId)).toContain("version two scheduled");

    const paused = await admin<Body>("POST", `${path}/every-2s/pause`);
    expect(paused).toMatchObject({ paused: true, nextRunAt: null });
    // A firing claimed just before the pause may still be queueing: count after it settled.
    await sleep(1_500);
    const countAtPause = (await runsOf("report")).length;
    await sleep(5_000);
    expect((await runsOf("report")).length).toBe(countAtPause);

    const fired = (await auditEntries("runbook.schedule.fire")).filter((entry) =>
      entry.resource.name?.endsWith("/every-2s"),
    );
    expect(fired.length).toBeGreaterThanOrEqual(3);
    expect(fired[0]?.actor.name).toBe("schedule every-2s");
    expect(fired[0]?.diff.cause?.to).toBe("schedule every-2s");
    expect(fired[0]?.diff.scheduleCreatedBy?.to).toBeTruthy();
    expect(await auditText()).not.toContain(SECRET);
    expect(JSON.stringify(await admin("GET", `${path}/every-2s`))).not.toContain(SECRET);
  }, 90_000);

  it.sequential("audits a firing a freeze refuses, naming the freeze, and one whose parameters stopped being valid", async () => {
    const path = "/api/v1/projects/shop/runbooks/report/schedules";
    await admin("POST", "/api/v1/projects/shop/freezes", {
      name: "Quiet week",
      environments: ["prod"],
      window: { kind: "once", from: "2020-01-01T00:00:00Z", until: "2099-01-01T00:00:00Z" },
      runbooks: true,
    });
    await admin(
      "POST",
      path,
      { name: "frozen", environment: "prod", cron: "* * * * * *", parameters: { Label: "x" } },
      201,
    );
    const refused = await eventually("a refused firing", async () => {
      const schedule = await admin<{ lastFiring: { error: string | null } | null }>("GET", `${path}/frozen`);
      return schedule.lastFiring?.error ? schedule.lastFiring : undefined;
    });
    expect(refused.error).toContain("deployment freeze 'Quiet week' is in effect");
    await admin("POST", `${path}/frozen/pause`);
    const entries = (await auditEntries("runbook.schedule.refused")).filter((entry) =>
      entry.resource.name?.endsWith("/frozen"),
    );
    expect(String(entries[0]?.diff.reason?.to)).toContain("Quiet week");
    expect((await runsOf("report")).filter((run) => run.cause === "schedule frozen")).toEqual([]);
    await admin("DELETE", "/api/v1/projects/shop/freezes/Quiet%20week", undefined, 204);

    // A new published version takes numbers only: the schedule's "x" is refused at the firing, named.
    await admin("PATCH", "/api/v1/projects/shop/runbooks/report", {
      parameters: [
        { name: "Label", type: "string", pattern: "[0-9]+" },
        { name: "Token", type: "string", sensitive: true, required: false },
      ],
    });
    await admin("POST", "/api/v1/projects/shop/runbooks/report/publish");
    await admin("POST", `${path}/frozen/resume`);
    const invalid = await eventually("a firing refused for its parameters", async () => {
      const schedule = await admin<{ lastFiring: { error: string | null } | null }>("GET", `${path}/frozen`);
      return schedule.lastFiring?.error?.includes("parameters") ? schedule.lastFiring : undefined;
    });
    expect(invalid.error).toContain("(Label)");
    await admin("DELETE", `${path}/frozen`, undefined, 204);
    // Back to letters for the tests that follow.
    await admin("PATCH", "/api/v1/projects/shop/runbooks/report", {
      parameters: [
        { name: "Label", type: "string", pattern: "[a-z]+" },
        { name: "Token", type: "string", sensitive: true, required: false },
      ],
    });
    await admin("POST", "/api/v1/projects/shop/runbooks/report/publish");
  }, 60_000);

  it.sequential("queues a firing once when several schedulers on one database see it due, and reports missed firings", async () => {
    const path = "/api/v1/projects/shop/runbooks/report/schedules";
    // Once a year, at a time no real clock reaches during the test: the schedulers are given it.
    await admin(
      "POST",
      path,
      { name: "yearly", environment: "staging", cron: "0 0 1 1 *", parameters: { Label: "y" } },
      201,
    );
    await admin(
      "POST",
      path,
      {
        name: "yearly-catch-up",
        environment: "staging",
        cron: "0 0 1 1 *",
        parameters: { Label: "c" },
        missed: "runOnce",
      },
      201,
    );
    const schedule = await admin<{ nextRunAt: string }>("GET", `${path}/yearly`);
    const due = new Date(schedule.nextRunAt);
    const schedulers = [1, 2, 3].map(
      () =>
        new RunbookScheduler({
          graceMs: 60_000,
          pollMs: 1_000,
          services: test.server.deployments,
          logger: test.server.app.log,
        }),
    );
    // Three schedulers (as on three nodes) see both schedules due at once, on time.
    await Promise.all(schedulers.map((scheduler) => scheduler.tick(new Date(due.getTime() + 1_000))));
    const yearly = await scheduledRuns("report", "yearly", 1).catch(async (error: unknown) => {
      throw new Error(`${String(error)}: ${JSON.stringify(await admin("GET", `${path}/yearly`))}`);
    });
    expect(yearly.map((run) => run.scheduledFor)).toEqual([due.toISOString()]);
    const caughtUpOnTime = await scheduledRuns("report", "yearly-catch-up", 1);
    expect(caughtUpOnTime).toHaveLength(1);

    // The next year's firing is seen only ten years late: nine more were missed on the way.
    const nextDue = new Date((await admin<{ nextRunAt: string }>("GET", `${path}/yearly`)).nextRunAt);
    expect(nextDue.getUTCFullYear()).toBe(due.getUTCFullYear() + 1);
    const late = new Date(Date.UTC(due.getUTCFullYear() + 10, 5, 1));
    await Promise.all(schedulers.map((scheduler) => scheduler.tick(late)));
    const missed = (await auditEntries("runbook.schedule.missed")).filter((entry) =>
      entry.resource.name?.includes("/yearly"),
    );
    expect(
      missed.map((entry) => [entry.resource.name, entry.diff.missedFirings?.to, entry.diff.policy?.to]).sort(),
    ).toEqual([
      ["shop/report/yearly", 10, "skip"],
      ["shop/report/yearly-catch-up", 10, "runOnce"],
    ]);
    // skip: nothing more; runOnce: one catch-up run, for the last missed firing.
    await sleep(500);
    expect(await scheduledRuns("report", "yearly", 1)).toHaveLength(1);
    const catchUp = await scheduledRuns("report", "yearly-catch-up", 2);
    expect(catchUp).toHaveLength(2);
    expect(catchUp[1]?.cause).toBe("missed firings of schedule yearly-catch-up");
    expect(catchUp[1]?.scheduledFor).toBe(new Date(Date.UTC(due.getUTCFullYear() + 10, 0, 1)).toISOString());
    for (const run of [...yearly, ...catchUp]) await test.waitForTask(run.taskId);
    for (const name of ["yearly", "yearly-catch-up"]) await admin("DELETE", `${path}/${name}`, undefined, 204);
  }, 60_000);

  // Several server nodes share a PostgreSQL database only; with SQLite there is one node (docs/DESIGN).
  (dialect === "postgres" ? it.sequential : it.sequential.skip)(
    "fires once per firing with two server nodes polling one PostgreSQL database",
    async () => {
      // The second node has the first one's master key, as docs/security.md requires.
      const second = await startTestServer({ databaseUrl: String(databaseUrl), masterKeyOf: test.dataDir });
      try {
        const path = "/api/v1/projects/shop/runbooks/report/schedules";
        await admin(
          "POST",
          path,
          { name: "two-nodes", environment: "staging", cron: "* * * * * *", parameters: { Label: "n" } },
          201,
        );
        await scheduledRuns("report", "two-nodes", 6);
        await admin("POST", `${path}/two-nodes/pause`);
        await sleep(1_500);
        const runs = await scheduledRuns("report", "two-nodes", 6);
        const firings = runs.map((run) => run.scheduledFor);
        expect(new Set(firings).size).toBe(firings.length);
        for (const run of runs) await test.waitForTask(run.taskId);
        await admin("DELETE", `${path}/two-nodes`, undefined, 204);
      } finally {
        await second.close();
      }
    },
    60_000,
  );

  it.sequential("deletes runs past the retention with their logs, after a run ends, but never the newest successful one", async () => {
    await admin(
      "POST",
      "/api/v1/projects/shop/runbooks",
      {
        name: "Flaky",
        parameters: [{ name: "Fail", type: "boolean", default: false }],
        process: {
          steps: [
            {
              name: "try",
              kind: "script",
              config: {
                // Each try attaches a report, which goes with the run when retention deletes it.
                script: [
                  'echo "trying"',
                  'echo "report of this try" > report.txt',
                  "echo \"##ferry[artifact path='report.txt']\"",
                  'test "$1" = false',
                ].join("\n"),
                arguments: ["#{Fail}"],
              },
            },
          ],
        },
      },
      201,
    );
    await admin("POST", "/api/v1/projects/shop/runbooks/flaky/publish");
    const runOnce = async (fail: boolean) => {
      const created = await admin<{ taskId: string }>(
        "POST",
        "/api/v1/projects/shop/runbooks/flaky/runs",
        { environment: "staging", parameters: { Fail: fail } },
        201,
      );
      await test.waitForTask(created.taskId);
      return created.taskId;
    };
    const good = await runOnce(false);
    const failedFirst = await runOnce(true);
    const failedSecond = await runOnce(true);
    const prodRun = await admin<{ taskId: string }>(
      "POST",
      "/api/v1/projects/shop/runbooks/flaky/runs",
      { environment: "prod", parameters: { Fail: true } },
      201,
    );
    await test.waitForTask(prodRun.taskId);

    const artifactsBefore = await test.server.store.db
      .selectFrom("artifacts")
      .select(["id", "location"])
      .where("task_id", "in", [failedFirst, failedSecond])
      .execute();
    expect(artifactsBefore).toHaveLength(2);

    const retention = await admin<Body>("PUT", "/api/v1/projects/shop/runbooks/flaky/retention", {
      policies: [{ environment: "staging", keepRuns: 1 }],
    });
    expect(retention).toEqual({ policies: [{ environment: "staging", keepRuns: 1, keepDays: null }] });
    const refused = await test.call<Body>("PUT", "/api/v1/projects/shop/runbooks/flaky/retention", {
      policies: [{ environment: "nowhere", keepRuns: 1 }, { environment: "*" }],
    });
    expect(refused.status).toBe(400);
    expect(JSON.stringify(refused.body)).toContain("/policies/1/keepRuns");

    // The next run's end applies the retention: the newest run and the newest successful one stay.
    const newest = await runOnce(true);
    await eventually("the old failed runs to be deleted", async () => {
      const ids = (await runsOf("flaky")).map((run) => run.taskId);
      return ids.includes(failedFirst) || ids.includes(failedSecond) ? undefined : ids;
    });
    const left = (await runsOf("flaky")).map((run) => run.taskId).sort();
    expect(left).toEqual([good, newest, prodRun.taskId].sort());
    for (const taskId of [failedFirst, failedSecond]) {
      expect((await test.call("GET", `/api/v1/tasks/${taskId}`)).status).toBe(404);
      expect((await test.call("GET", `/api/v1/tasks/${taskId}/log`)).status).toBe(404);
    }
    // Their artifacts went first: not listed, not served, and their bytes gone.
    for (const artifact of artifactsBefore) {
      expect((await test.call("GET", `/api/v1/artifacts/${artifact.id}`)).status).toBe(404);
      const gone = await fetch(new URL(`/api/v1/artifacts/${artifact.id}/content`, test.server.url), {
        headers: { authorization: `Bearer ${test.apiKey}` },
      });
      expect(gone.status).toBe(404);
      await gone.body?.cancel();
    }
    const rows = await test.server.store.db
      .selectFrom("artifacts")
      .select("id")
      .where("task_id", "in", [failedFirst, failedSecond])
      .execute();
    expect(rows).toEqual([]);
    if (dialect === "sqlite") {
      for (const artifact of artifactsBefore) {
        expect(existsSync(join(test.dataDir, "artifacts", artifact.location)), artifact.location).toBe(false);
      }
    }
    // The kept runs keep theirs.
    const kept = await admin<{ id: string }[]>("GET", `/api/v1/tasks/${good}/artifacts`);
    expect(kept).toHaveLength(1);
    const content = await fetch(new URL(`/api/v1/artifacts/${kept[0]?.id}/content`, test.server.url), {
      headers: { authorization: `Bearer ${test.apiKey}` },
    });
    expect(await content.text()).toBe("report of this try\n");
    // Another environment has no policy of its own and there is no '*': its run stays.
    expect(await logOf(prodRun.taskId)).toContain("trying");
  }, 60_000);
});
