import { writeFile } from "node:fs/promises";
import { join } from "node:path";
import { setTimeout as sleep } from "node:timers/promises";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import {
  apiRequest,
  type CliResult,
  expectSuccess,
  type FerryServer,
  isolatedEnv,
  parseJson,
  runFerry,
  testAdminKey,
  trackedResources,
} from "./helpers/cli.js";

/**
 * Issue 14 parts 3 and 7 end to end: the real `bin/ferry` against a real `ferry server`
 * process. A runbook created and edited with `ferry runbook create|update -f`, scheduled
 * with `ferry runbook schedule add`; the server stopped across a firing reports the missed
 * firing when it starts again and follows each schedule's setting (skip, run once); an
 * every-minute schedule fires on two minute boundaries, running the published version while
 * the draft is edited; ferry.yml declares schedules and retention.
 *
 * The every-minute schedule waits on the clock for up to two minutes. It starts first, on a
 * server process of its own, as soon as the servers are up (beforeAll), and runs while the
 * other tests do; its test then awaits it and checks what it saw. The missed-firing test runs
 * on another server process of its own that it stops and starts, so that the every-minute
 * server runs across both of its minute boundaries.
 */

const { makeTemporaryDirectory, startFerryServer, cleanUp } = trackedResources("ferry-schedules-e2e-");

const FERRY_YML = `
project:
  name: Shop
environments:
  - name: Prod
lifecycle:
  name: Standard
  phases:
    - environments: [prod]
runbooks:
  - name: Cleanup
    environments: [prod]
    publish: true
    parameters:
      - name: Days
        type: number
        default: 7
    steps:
      - name: clean
        kind: script
        config:
          script: echo cleaning
    schedules:
      - name: weekly
        environment: prod
        cron: "0 4 * * sun"
        timeZone: Europe/Berlin
        parameters: { Days: 14 }
        missed: runOnce
        paused: true
    retention:
      - environment: prod
        keepRuns: 10
        keepDays: 30
`;

const runbookFile = (version: string) => `
name: Report
description: Writes a report
environments: [prod]
parameters:
  - name: Label
    type: string
    pattern: "[a-z]+"
steps:
  - name: say
    kind: script
    config:
      script: 'echo "report ${version} for $1"'
      arguments: ["#{Label}"]
`;

/** The cron expression (with seconds) of one firing each day at `at` (UTC). */
function dailyAt(at: Date): string {
  return `${at.getUTCSeconds()} ${at.getUTCMinutes()} ${at.getUTCHours()} * * *`;
}

/** What the every-minute schedule did, as its test checks it. */
interface EveryMinuteOutcome {
  /** The runs after the first firing (before the draft edit), then after the second. */
  first: RunSummary[];
  both: RunSummary[];
}

interface RunSummary {
  taskId: string;
  version: number | null;
  cause: string | null;
  scheduledFor: string | null;
  state: string;
}

describe("runbook schedules (CLI against a ferry server process)", () => {
  let server: FerryServer;
  /** The server the missed-firing test stops and starts again. */
  let restarted: FerryServer;
  /** The server of the every-minute schedule, which fires while the other tests run. */
  let minutely: FerryServer;
  let everyMinute: Promise<EveryMinuteOutcome>;
  let home: string;
  let restartedDataDir: string;
  const adminKey = testAdminKey();
  const serverEnv = () =>
    isolatedEnv(home, {
      FERRY_ADMIN_API_KEY: adminKey,
      // A firing more than 3 s late counts as missed (60 s by default), so the test need not wait a minute.
      FERRY_SCHEDULE_GRACE_SECONDS: "3",
    });
  const cli = (args: string[], on: FerryServer = server): Promise<CliResult> =>
    runFerry(args, isolatedEnv(home, { FERRY_URL: on.url, FERRY_API_KEY: adminKey }), { timeoutMs: 30_000 });
  const runs = async (runbook: string, on: FerryServer = server) => {
    const result = await cli(["runbook", "runs", "--project", "shop", "--runbook", runbook, "--json"], on);
    expectSuccess(result);
    return parseJson<RunSummary[]>(result).reverse();
  };
  /**
   * The runs of `cause`, as the CLI lists them, once there are `count`. The wait polls the API:
   * a CLI process each second for up to two minutes took a core's share from the tests beside it.
   */
  async function waitForRuns(runbook: string, cause: string, count: number, timeoutMs: number, on = server) {
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      const response = await apiRequest(`${on.url}/api/v1/projects/shop/runbooks/${runbook}/runs`, adminKey);
      expect(response.status).toBe(200);
      const polled = (await response.json()) as RunSummary[];
      if (polled.filter((run) => run.cause === cause).length >= count) break;
      if (Date.now() > deadline) throw new Error(`no ${count} runs caused by ${cause} within ${timeoutMs} ms`);
      await sleep(1_000);
    }
    const found = (await runs(runbook, on)).filter((run) => run.cause === cause);
    expect(found.length).toBeGreaterThanOrEqual(count);
    return found;
  }

  beforeAll(async () => {
    home = await makeTemporaryDirectory();
    restartedDataDir = join(home, "restarted-data");
    [server, restarted, minutely] = await Promise.all([
      startFerryServer({ dataDir: join(home, "data"), env: serverEnv() }),
      startFerryServer({ dataDir: restartedDataDir, env: serverEnv() }),
      startFerryServer({ dataDir: join(home, "minutely-data"), env: serverEnv() }),
    ]);
    await writeFile(join(home, "ferry.yml"), FERRY_YML);
    await writeFile(join(home, "report.yml"), runbookFile("v1"));
    await writeFile(join(home, "report-v2.yml"), runbookFile("v2"));
    // Its failures are its test's: handled here so that none is reported before that test awaits it.
    everyMinute = fireEveryMinute();
    everyMinute.catch(() => {});
  }, 60_000);
  afterAll(async () => {
    await Promise.all([server?.stop(), restarted?.stop(), minutely?.stop()]);
    await cleanUp();
  });

  /**
   * The every-minute schedule on its own server: the same project and runbook as the other
   * tests make, a schedule firing each minute, a draft edit after its first firing.
   */
  async function fireEveryMinute(): Promise<EveryMinuteOutcome> {
    expectSuccess(await cli(["apply", "-f", join(home, "ferry.yml")], minutely));
    expectSuccess(
      await cli(["runbook", "create", "--project", "shop", "-f", join(home, "report.yml"), "--publish"], minutely),
    );
    const added = await cli(
      [
        "runbook",
        "schedule",
        "add",
        "--project",
        "shop",
        "--runbook",
        "report",
        "--name",
        "every-minute",
        "--env",
        "prod",
        "--cron",
        "* * * * *",
        "--param",
        "Label=minutely",
        "--json",
      ],
      minutely,
    );
    expectSuccess(added);
    const first = await waitForRuns("report", "schedule every-minute", 1, 75_000, minutely);
    // A draft edit after the first firing: the second still runs version 1.
    const updated = await cli(["runbook", "update", "--project", "shop", "-f", join(home, "report-v2.yml")], minutely);
    expectSuccess(updated);
    expect(updated.stdout).toContain("updated runbook report (process)");
    const both = await waitForRuns("report", "schedule every-minute", 2, 75_000, minutely);
    return { first, both };
  }

  it("declares schedules and retention in ferry.yml; applying again changes nothing", async () => {
    const applied = await cli(["apply", "-f", join(home, "ferry.yml"), "--json"]);
    expectSuccess(applied);
    const changes = parseJson<{ action: string; resource: string; name: string }[]>(applied);
    // Each change also names its file (and changed fields): compared here by what and how.
    expect(
      changes
        .filter((change) => ["schedule", "retention"].includes(change.resource))
        .map(({ action, resource, name }) => ({ action, resource, name })),
    ).toEqual([
      { action: "created", resource: "schedule", name: "cleanup/weekly" },
      { action: "updated", resource: "retention", name: "cleanup" },
    ]);
    const again = parseJson<{ action: string; resource: string }[]>(
      await cli(["apply", "-f", join(home, "ferry.yml"), "--json"]),
    );
    expect(again.filter((change) => change.action !== "unchanged")).toEqual([]);
    const list = await cli(["runbook", "schedule", "list", "--project", "shop", "--runbook", "cleanup"]);
    expectSuccess(list);
    expect(list.stdout).toMatch(/weekly\s+prod\s+0 4 \* \* sun \(Europe\/Berlin\)\s+run-once\s+paused/);
    const retention = await cli(["runbook", "retention", "show", "--project", "shop", "--runbook", "cleanup"]);
    expect(retention.stdout).toMatch(/prod\s+10\s+30/);
  }, 60_000);

  it("creates a runbook from a file, refusing a bad one with the field and line", async () => {
    await writeFile(join(home, "bad.yml"), "name: Bad\nparameters:\n  - name: Label\n    type: text\ncolour: red\n");
    const bad = await cli(["runbook", "create", "--project", "shop", "-f", join(home, "bad.yml")]);
    expect(bad.code).toBe(2);
    expect(bad.stderr).toContain("bad.yml is not valid (2 problems)");
    expect(bad.stderr).toContain("bad.yml:4:11 /parameters/0/type");
    expect(bad.stderr).toContain("bad.yml:5:1 /colour");
    await writeFile(join(home, "bad-step.yml"), "name: Bad\nsteps:\n  - name: x\n    kind: nosuchkind\n");
    const badStep = await cli(["runbook", "create", "--project", "shop", "-f", join(home, "bad-step.yml")]);
    expect(badStep.code).toBe(2);
    expect(badStep.stderr).toContain("bad-step.yml:4:11 /steps/0/kind");
    // Nothing was created by either.
    const list = await cli(["runbook", "list", "--project", "shop", "--json"]);
    expect(parseJson<{ slug: string }[]>(list).map((runbook) => runbook.slug)).toEqual(["cleanup"]);

    const created = await cli(["runbook", "create", "--project", "shop", "-f", join(home, "report.yml"), "--publish"]);
    expectSuccess(created);
    expect(created.stdout).toContain("created runbook report");
    expect(created.stdout).toContain("published version 1");
    const again = await cli(["runbook", "create", "--project", "shop", "-f", join(home, "report.yml")]);
    expect(again.code).toBe(1);
    expect(again.stderr).toContain("already has a runbook 'report'");
  }, 60_000);

  it.concurrent("reports a firing missed while the server was stopped, then skips it or runs it once", async () => {
    // The same project and runbook on the server this test stops and starts.
    expectSuccess(await cli(["apply", "-f", join(home, "ferry.yml")], restarted));
    expectSuccess(
      await cli(["runbook", "create", "--project", "shop", "-f", join(home, "report.yml"), "--publish"], restarted),
    );
    // A firing 15 s from now; the server is stopped before it and started after it (and the grace).
    const firing = new Date(Math.ceil((Date.now() + 15_000) / 1000) * 1000);
    for (const [name, missed] of [
      ["skipper", "skip"],
      ["catcher", "run-once"],
    ]) {
      const added = await cli(
        [
          "runbook",
          "schedule",
          "add",
          "--project",
          "shop",
          "--runbook",
          "report",
          "--name",
          String(name),
          "--env",
          "prod",
          "--cron",
          dailyAt(firing),
          "--param",
          "Label=missed",
          "--missed",
          String(missed),
        ],
        restarted,
      );
      expectSuccess(added);
      expect(added.stdout).toContain(`next: ${firing.toISOString()}`);
    }
    const badMissed = await cli(
      [
        "runbook",
        "schedule",
        "add",
        "--project",
        "shop",
        "--runbook",
        "report",
        "--name",
        "x",
        "--env",
        "prod",
        "--cron",
        "* * * * *",
        "--missed",
        "sometimes",
      ],
      restarted,
    );
    expect(badMissed.code).toBe(2);
    expect(badMissed.stderr).toContain("--missed sometimes: use skip or run-once");

    const port = restarted.port;
    await restarted.stop();
    await sleep(Math.max(0, firing.getTime() + 3_000 + 2_000 - Date.now()));
    restarted = await startFerryServer({ dataDir: restartedDataDir, env: serverEnv(), port });

    const caughtUp = await waitForRuns("report", "missed firings of schedule catcher", 1, 20_000, restarted);
    expect(caughtUp).toHaveLength(1);
    expect(caughtUp[0]?.scheduledFor).toBe(firing.toISOString());
    const log = await cli(["task", "logs", String(caughtUp[0]?.taskId), "--follow"], restarted);
    expect(log.stdout).toContain("report v1 for missed");
    expect(log.stdout).toContain("Queued by missed firings of schedule catcher");

    const logLines = restarted.stdout();
    for (const name of ["skipper", "catcher"]) {
      expect(logLines).toContain(
        `runbook schedule '${name}' of shop/report in prod missed 1 firing(s) while no server ran`,
      );
    }
    const audit = await apiRequest(`${restarted.url}/api/v1/audit?action=runbook.schedule.missed`, adminKey);
    const entries = (
      (await audit.json()) as { items: { resource: { name: string }; diff: Record<string, { to: unknown }> }[] }
    ).items;
    expect(
      entries.map((entry) => [entry.resource.name, entry.diff.missedFirings?.to, entry.diff.policy?.to]).sort(),
    ).toEqual([
      ["shop/report/catcher", 1, "runOnce"],
      ["shop/report/skipper", 1, "skip"],
    ]);
    // skip: nothing ran for it.
    expect((await runs("report", restarted)).filter((run) => run.cause?.includes("skipper"))).toEqual([]);
    for (const name of ["skipper", "catcher"]) {
      expectSuccess(
        await cli(
          ["runbook", "schedule", "remove", "--project", "shop", "--runbook", "report", "--name", name],
          restarted,
        ),
      );
    }
  }, 90_000);

  it.concurrent("fires an every-minute schedule on two minute boundaries, running the published version while the draft is edited", async () => {
    // Started in beforeAll (fireEveryMinute), on the minutely server.
    const { first, both } = await everyMinute;
    const [one, two] = both.map((run) => Date.parse(String(run.scheduledFor)));
    expect(new Date(Number(one)).getUTCSeconds()).toBe(0);
    expect(Number(two) - Number(one)).toBe(60_000);
    expect(first[0]?.scheduledFor).toBe(both[0]?.scheduledFor);
    for (const run of both) {
      expect(run.version).toBe(1);
      const log = await cli(["task", "logs", run.taskId, "--follow"], minutely);
      expect(log.stdout).toContain("report v1 for minutely");
    }
    const paused = await cli(
      ["runbook", "schedule", "pause", "--project", "shop", "--runbook", "report", "--name", "every-minute"],
      minutely,
    );
    expectSuccess(paused);
    expect(paused.stdout).toContain("paused schedule 'every-minute'; next: paused");
    const list = await cli(["runbook", "schedule", "list", "--project", "shop", "--runbook", "report"], minutely);
    expect(list.stdout).toMatch(/every-minute\s+prod\s+\* \* \* \* \* \(UTC\)\s+skip\s+paused\s+\S+ task /);
  }, 170_000);
});
