import { describe, expect, it } from "vitest";
import { runsPastRetention } from "./retention.js";
import { createScheduleSchema, cronProblem, decideFiring, nextFiring } from "./runbookSchedules.js";

describe("runbook schedules", () => {
  it("reads a cron expression in its time zone, with or without seconds", () => {
    // 03:00 in Berlin is 02:00 UTC in winter and 01:00 UTC in summer.
    expect(nextFiring("0 3 * * *", "Europe/Berlin", new Date("2026-01-10T12:00:00Z"))?.toISOString()).toBe(
      "2026-01-11T02:00:00.000Z",
    );
    expect(nextFiring("0 3 * * *", "Europe/Berlin", new Date("2026-07-10T12:00:00Z"))?.toISOString()).toBe(
      "2026-07-11T01:00:00.000Z",
    );
    expect(nextFiring("*/15 * * * * *", "UTC", new Date("2026-01-01T00:00:01Z"))?.toISOString()).toBe(
      "2026-01-01T00:00:15.000Z",
    );
  });

  it("refuses an expression or zone it cannot use, naming the field and what to write", () => {
    expect(cronProblem("61 * * * *")).toMatch(/not a cron expression: .*minute.*five fields/);
    expect(cronProblem("0 0 30 2 *")).toMatch(/never fires/);
    expect(cronProblem("* * * * * * *")).toMatch(/not a cron expression/);
    const parsed = createScheduleSchema.safeParse({
      name: "nightly",
      environment: "prod",
      cron: "every day",
      timeZone: "Mars/Olympus",
    });
    expect(parsed.success).toBe(false);
    const paths = parsed.error?.issues.map((issue) => issue.path.join("/"));
    expect(paths).toEqual(expect.arrayContaining(["cron", "timeZone"]));
  });

  const every10Minutes = { cron: "*/10 * * * *", timeZone: "UTC" };

  it("fires a firing that is due within the grace on time", () => {
    const decision = decideFiring(
      { ...every10Minutes, missed: "skip" },
      new Date("2026-01-01T10:00:00Z"),
      new Date("2026-01-01T10:00:02Z"),
      60_000,
    );
    expect(decision.onTime?.toISOString()).toBe("2026-01-01T10:00:00.000Z");
    expect(decision.missed).toBeNull();
    expect(decision.catchUp).toBe(false);
    expect(decision.next?.toISOString()).toBe("2026-01-01T10:10:00.000Z");
  });

  it("counts the firings missed while no server ran, and catches up once only with runOnce", () => {
    const due = new Date("2026-01-01T10:00:00Z");
    const now = new Date("2026-01-01T10:35:00Z");
    for (const missed of ["skip", "runOnce"] as const) {
      const decision = decideFiring({ ...every10Minutes, missed }, due, now, 60_000);
      expect(decision.onTime).toBeNull();
      expect(decision.missed).toEqual({
        count: 4,
        atLeast: false,
        first: new Date("2026-01-01T10:00:00Z"),
        last: new Date("2026-01-01T10:30:00Z"),
      });
      expect(decision.catchUp).toBe(missed === "runOnce");
      expect(decision.next?.toISOString()).toBe("2026-01-01T10:40:00.000Z");
    }
  });

  it("does not count a day of second-by-second firings one by one, and still finds the last", () => {
    const decision = decideFiring(
      { cron: "* * * * * *", timeZone: "UTC", missed: "runOnce" },
      new Date("2026-01-01T00:00:00Z"),
      new Date("2026-01-02T00:00:00.500Z"),
      60_000,
    );
    expect(decision.onTime?.toISOString()).toBe("2026-01-02T00:00:00.000Z");
    // The latest firing is on time and stands for the others, which are reported as "at least".
    expect(decision.missed).toMatchObject({ count: 1_000, atLeast: true, first: new Date("2026-01-01T00:00:00Z") });
    expect(decision.catchUp).toBe(false);
    expect(decision.next?.toISOString()).toBe("2026-01-02T00:00:01.000Z");
  });

  it("lets a firing on time stand for the missed ones before it", () => {
    const decision = decideFiring(
      { ...every10Minutes, missed: "runOnce" },
      new Date("2026-01-01T10:00:00Z"),
      new Date("2026-01-01T10:30:05Z"),
      60_000,
    );
    expect(decision.onTime?.toISOString()).toBe("2026-01-01T10:30:00.000Z");
    expect(decision.missed?.count).toBe(3);
    expect(decision.catchUp).toBe(false);
  });
});

describe("run retention", () => {
  const now = new Date("2026-03-01T00:00:00Z");
  const run = (taskId: string, daysAgo: number, succeeded: boolean) => ({
    taskId,
    finishedAt: new Date(now.getTime() - daysAgo * 86_400_000).toISOString(),
    succeeded,
  });

  it("keeps the newest runs by count and drops the older ones", () => {
    const runs = [run("a", 1, true), run("b", 2, true), run("c", 3, true), run("d", 4, false)];
    expect(runsPastRetention(runs, { keepRuns: 2, keepDays: null }, now).sort()).toEqual(["c", "d"]);
  });

  it("drops runs older than the age", () => {
    const runs = [run("a", 1, true), run("b", 10, true), run("c", 40, false)];
    expect(runsPastRetention(runs, { keepRuns: null, keepDays: 30 }, now)).toEqual(["c"]);
    expect(runsPastRetention(runs, { keepRuns: 5, keepDays: 5 }, now)).toEqual(["b", "c"]);
  });

  it("never deletes the newest successful run, however old or far down the list", () => {
    const runs = [run("f1", 1, false), run("f2", 2, false), run("ok", 90, true), run("older", 100, true)];
    expect(runsPastRetention(runs, { keepRuns: 1, keepDays: 30 }, now).sort()).toEqual(["f2", "older"]);
  });
});
