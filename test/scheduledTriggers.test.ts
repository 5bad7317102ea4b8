import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { setTimeout as sleep } from "node:timers/promises";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { expectSuccess, isolatedEnv, parseJson, runFerry } from "./helpers/cli.js";
import { createPostgresDatabase, dialects } from "./helpers/databases.js";
import { startTestServer, type TestServer } from "./helpers/server.js";

interface Shown {
  lastFiredAt: string | null;
  lastOutcome: string | null;
  lastFiring: { at: string; cause: string; outcome: string } | null;
  nextFireAt: string | null;
  paused: boolean;
}

/** Scheduled triggers on a real server: every two seconds, test gets what dev runs. */
describe.each(dialects)("scheduled triggers on %s (real server, real engine)", (dialect) => {
  let test: TestServer;
  let database: Awaited<ReturnType<typeof createPostgresDatabase>> | undefined;

  const shown = async () => (await test.call<Shown>("GET", "/api/v1/projects/app/scheduled-triggers/nightly")).body;
  const nextOutcome = async (after: string | null) => {
    const deadline = Date.now() + 20_000;
    for (;;) {
      const trigger = await shown();
      if (trigger.lastFiredAt !== null && trigger.lastFiredAt !== after) return trigger;
      if (Date.now() > deadline) throw new Error(`no firing after ${after}: ${JSON.stringify(trigger)}`);
      await sleep(200);
    }
  };

  beforeAll(async () => {
    database = dialect === "postgres" ? await createPostgresDatabase() : undefined;
    test = await startTestServer(database ? { databaseUrl: database.url } : {});
    for (const name of ["dev", "test"]) await test.call("POST", "/api/v1/environments", { name });
    await test.call("POST", "/api/v1/lifecycles", {
      name: "two",
      phases: [{ environments: ["dev"] }, { environments: ["test"] }],
    });
    await test.call("POST", "/api/v1/projects", { name: "app", lifecycle: "two" });
    await test.call("PUT", "/api/v1/projects/app/process", {
      steps: [
        {
          name: "hello",
          kind: "script",
          config: { script: 'echo "hello from $RELEASE"', env: { RELEASE: "#{Ferry.Release.Number}" } },
        },
      ],
    });
  });
  afterAll(async () => {
    await test?.close();
    await database?.drop();
  });

  it("fires on its cron: nothing to deploy, then what dev runs goes to test, then nothing to do", async () => {
    const created = await test.call<Shown & { timeZone: string }>("POST", "/api/v1/projects/app/scheduled-triggers", {
      name: "nightly",
      cron: "*/2 * * * * *",
      timeZone: "Europe/Berlin",
      from: "dev",
      to: "test",
    });
    expect(created.status, JSON.stringify(created.body)).toBe(201);
    expect(created.body.timeZone).toBe("Europe/Berlin");
    const empty = await nextOutcome(null);
    expect(empty.lastOutcome).toContain("nothing to deploy");

    const release = await test.call("POST", "/api/v1/projects/app/releases", { version: "1.0.0" });
    expect(release.status).toBe(201);
    const deployed = await test.call<{ taskId: string }>("POST", "/api/v1/projects/app/deployments", {
      release: "1.0.0",
      environment: "dev",
    });
    expect((await test.waitForTask(deployed.body.taskId)).state).toBe("succeeded");

    let trigger = await nextOutcome(empty.lastFiredAt);
    while (!trigger.lastOutcome?.startsWith("deploying")) trigger = await nextOutcome(trigger.lastFiredAt);
    expect(trigger.lastOutcome).toContain("deploying 1.0.0 from dev to test");
    const taskId = /task (\S+)\)/.exec(trigger.lastOutcome ?? "")?.[1] ?? "";
    expect((await test.waitForTask(taskId)).state).toBe("succeeded");
    const log = await test.call<{ lines: { text: string }[] }>("GET", `/api/v1/tasks/${taskId}/log`);
    expect(log.body.lines.map((line) => line.text).join("\n")).toContain("hello from 1.0.0");

    // Firings while that deployment ran did not queue another: they waited for it to end.
    let after = await nextOutcome(trigger.lastFiredAt);
    while (after.lastOutcome?.includes("is queued or running")) after = await nextOutcome(after.lastFiredAt);
    expect(after.lastOutcome).toContain("test already runs 1.0.0");
    expect(after.lastFiring).toEqual({ at: after.lastFiredAt, cause: "schedule", outcome: after.lastOutcome });
    // The CLI's list prints it (it fires every two seconds, with the same outcome now).
    const home = mkdtempSync(join(tmpdir(), "ferry-scheduled-cli-"));
    try {
      const listed = await runFerry(
        ["scheduled-trigger", "list", "--project", "app"],
        isolatedEnv(home, { FERRY_URL: test.server.url, FERRY_API_KEY: test.apiKey }),
      );
      expectSuccess(listed);
      expect(listed.stdout).toContain("LAST FIRING");
      expect(listed.stdout).toMatch(/nightly .*dev → test.*\(schedule\): test already runs 1\.0\.0/);
    } finally {
      rmSync(home, { recursive: true, force: true });
    }
    const audit = await test.call<{ items: { actor: { name: string }; diff: Record<string, { to: unknown }> }[] }>(
      "GET",
      "/api/v1/audit?action=trigger.fire",
    );
    expect(audit.body.items.some((entry) => entry.actor.name === "scheduled trigger nightly")).toBe(true);
    // The firings that deployed nothing are audited too, with their cause and why.
    const ignored = await test.call<{ items: { actor: { name: string }; diff: Record<string, { to: unknown }> }[] }>(
      "GET",
      "/api/v1/audit?action=trigger.ignore&limit=200",
    );
    const reasons = ignored.body.items
      .filter((entry) => entry.actor.name === "scheduled trigger nightly")
      .map((entry) => `${String(entry.diff.cause?.to)}: ${String(entry.diff.reason?.to)}`);
    expect(reasons).toContain("schedule: nothing to deploy: dev has no successful deployment yet");
    expect(reasons).toContain("schedule: test already runs 1.0.0, what dev runs: nothing to do");
  });

  it("a paused trigger does not fire; resumed, it fires from its next time on", async () => {
    const paused = await test.call<Shown>("PATCH", "/api/v1/projects/app/scheduled-triggers/nightly", { paused: true });
    expect(paused.body.paused).toBe(true);
    expect(paused.body.nextFireAt).toBeNull();
    const before = (await shown()).lastFiredAt;
    await sleep(4_500);
    expect((await shown()).lastFiredAt).toBe(before);
    const resumed = await test.call<Shown>("PATCH", "/api/v1/projects/app/scheduled-triggers/nightly", {
      paused: false,
    });
    expect(resumed.body.nextFireAt).not.toBeNull();
    await nextOutcome(before);
  });

  it("through the CLI: ferry scheduled-trigger create, show, list and pause; it fires on its cron", async () => {
    const home = mkdtempSync(join(tmpdir(), "ferry-scheduled-cli-"));
    const env = isolatedEnv(home, { FERRY_URL: test.server.url, FERRY_API_KEY: test.apiKey });
    try {
      expect((await test.call("POST", "/api/v1/projects", { name: "cli-app", lifecycle: "two" })).status).toBe(201);
      await test.call("PUT", "/api/v1/projects/cli-app/process", {
        steps: [{ name: "hello", kind: "script", config: { script: "echo hello" } }],
      });
      expect((await test.call("POST", "/api/v1/projects/cli-app/releases", { version: "2.0.0" })).status).toBe(201);
      const deployed = await test.call<{ taskId: string }>("POST", "/api/v1/projects/cli-app/deployments", {
        release: "2.0.0",
        environment: "dev",
      });
      expect((await test.waitForTask(deployed.body.taskId)).state).toBe("succeeded");

      const created = await runFerry(
        [
          "scheduled-trigger",
          "create",
          "promote-often",
          "--project",
          "cli-app",
          "--cron",
          "*/2 * * * * *",
          "--time-zone",
          "America/New_York",
          "--from",
          "dev",
          "--to",
          "test",
          "--json",
        ],
        env,
      );
      expectSuccess(created);
      expect(parseJson<{ timeZone: string; paused: boolean }>(created)).toMatchObject({
        timeZone: "America/New_York",
        paused: false,
      });
      const show = () =>
        runFerry(["scheduled-trigger", "show", "promote-often", "--project", "cli-app", "--json"], env);
      // Firings come every two seconds: one deploys, and the later ones find test running it.
      const deadline = Date.now() + 60_000;
      let shown = parseJson<Shown>(await show());
      while (!shown.lastOutcome?.startsWith("test already runs")) {
        if (Date.now() > deadline) throw new Error(`test never got 2.0.0: ${JSON.stringify(shown)}`);
        await sleep(300);
        shown = parseJson<Shown>(await show());
      }
      expect(shown.lastOutcome).toBe("test already runs 2.0.0, what dev runs: nothing to do");
      const fired = await test.call<{ items: { actor: { name: string }; diff: Record<string, { to: unknown }> }[] }>(
        "GET",
        "/api/v1/audit?action=trigger.fire&limit=200",
      );
      const deploying = fired.body.items
        .filter((entry) => entry.actor.name === "scheduled trigger promote-often")
        .map((entry) => String(entry.diff.outcome?.to));
      expect(deploying.length, deploying.join("\n")).toBe(1);
      expect(deploying[0]).toContain("deploying 2.0.0 from dev to test");
      const taskId = /task (\S+)\)/.exec(deploying[0] ?? "")?.[1] ?? "";
      expect((await test.waitForTask(taskId)).state).toBe("succeeded");

      const listed = await runFerry(["scheduled-trigger", "list", "--project", "cli-app"], env);
      expectSuccess(listed);
      expect(listed.stdout).toMatch(/promote-often\s+\*\/2 \* \* \* \* \* \(America\/New_York\)\s+dev → test\s+false/);
      const paused = await runFerry(
        ["scheduled-trigger", "pause", "promote-often", "--project", "cli-app", "--json"],
        env,
      );
      expectSuccess(paused);
      expect(parseJson<Shown>(paused)).toMatchObject({ paused: true, nextFireAt: null });
      const bad = await runFerry(
        [
          "scheduled-trigger",
          "create",
          "x",
          "--project",
          "cli-app",
          "--cron",
          "0 2 * * *",
          "--time-zone",
          "Mars/Olympus",
          "--from",
          "dev",
          "--to",
          "test",
        ],
        env,
      );
      expect(bad.code).not.toBe(0);
      expect(bad.stderr).toContain("timeZone");
    } finally {
      rmSync(home, { recursive: true, force: true });
    }
  }, 120_000);

  it("refuses a bad cron, an unknown time zone and a trigger from an environment to itself, naming the fields", async () => {
    const answer = await test.call<{ errors: { pointer: string }[] }>(
      "POST",
      "/api/v1/projects/app/scheduled-triggers",
      {
        name: "bad",
        cron: "61 * * * *",
        timeZone: "Mars/Olympus",
        from: "dev",
        to: "test",
      },
    );
    expect(answer.status).toBe(400);
    expect(answer.body.errors.map((error) => error.pointer).sort()).toEqual(["/cron", "/timeZone"]);
    const same = await test.call<{ errors: { pointer: string }[] }>("POST", "/api/v1/projects/app/scheduled-triggers", {
      name: "same",
      cron: "0 2 * * *",
      from: "dev",
      to: "dev",
    });
    expect(same.status).toBe(400);
    expect(same.body.errors.map((error) => error.pointer)).toEqual(["/to"]);
  });
});
