import { describe, expect, it } from "vitest";
import type { DeploymentKind } from "./deployments.js";
import { computeDora, type DeploymentRecord } from "./dora.js";

/** Hours after 2026-01-01T00:00Z as an ISO time (negative: before). */
const at = (hours: number) => new Date(Date.UTC(2026, 0, 1) + hours * 3_600_000).toISOString();

const releases: Record<string, number> = { r1: -4, r2: 24, r3: 48, r4: 96, r5: 168 };

function record(
  id: string,
  release: string,
  kind: DeploymentKind,
  outcome: DeploymentRecord["outcome"],
  finishedHour: number,
  environment = "prod",
): DeploymentRecord {
  return {
    id,
    project: "shop",
    environment,
    releaseId: release,
    releaseCreatedAt: at(releases[release] ?? 0),
    finishedAt: at(finishedHour),
    outcome,
    kind,
  };
}

/**
 * shop/prod, window 2026-01-01 … 2026-01-11 (10 days). Worked out by hand:
 *
 *  d0  r1 deploy   ok     Dec 31 22:00  before the window: r1's first time live
 *  d1  r1 deploy   ok     Jan 1 01:00   change, ok (next is d2, not a rollback); r1 was live before: no lead time
 *  d2  r2 promote  ok     Jan 2 02:00   change, FAILED (next is the rollback d3); lead 2 h; incident A opens
 *  d3  r1 rollback ok     Jan 2 03:00   not a change; restores A after 1 h
 *  d4  r3 deploy   failed Jan 3 04:00   change, FAILED; incident B opens
 *  d5  r3 deploy   cancelled            left out of everything
 *  d6  r3 deploy   ok     Jan 3 10:00   change, ok; lead 10 h; restores B after 6 h
 *  d7  r4 auto     ok     Jan 5 12:00   change, ok (next d8 is no rollback); lead 12 h
 *  d8  r5 deploy   interrupted Jan 8 01:00  change, FAILED; incident C opens
 *  d9  r5 deploy   failed Jan 8 02:00   change, FAILED; C is still open
 *  d10 r4 rollback ok     Jan 8 03:00   restores C after 2 h
 *  d11 r5 deploy   ok     Jan 10 00:00  change, FAILED (next is the rollback d12); lead 48 h; incident D opens
 *  d12 r4 rollback failed Jan 10 01:00  not a change, restores nothing
 *  d13 r4 rollback ok     Jan 11 06:00  after the window: restores D after 30 h (D began in the window)
 *  d14 r5 deploy   ok     Jan 12 00:00  after the window
 *
 *  frequency: d1 d2 d6 d7 d11 = 5 in 10 days = 0.5 a day
 *  lead time: 2 h, 10 h, 12 h, 48 h → median 11 h = 39600 s, mean 18 h = 64800 s
 *  change failure rate: changes d1 d2 d4 d6 d7 d8 d9 d11 = 8, failed d2 d4 d8 d9 d11 = 5 → 0.625
 *  time to restore: A 1 h, B 6 h, C 2 h, D 30 h → median 4 h = 14400 s, mean 9.75 h = 35100 s
 */
const history: DeploymentRecord[] = [
  record("d0", "r1", "deploy", "succeeded", -2),
  record("d1", "r1", "deploy", "succeeded", 1),
  record("d2", "r2", "promote", "succeeded", 26),
  record("d3", "r1", "rollback", "succeeded", 27),
  record("d4", "r3", "deploy", "failed", 52),
  record("d5", "r3", "deploy", "cancelled", 53),
  record("d6", "r3", "deploy", "succeeded", 58),
  record("d7", "r4", "auto", "succeeded", 108),
  record("d8", "r5", "deploy", "interrupted", 169),
  record("d9", "r5", "deploy", "failed", 170),
  record("d10", "r4", "rollback", "succeeded", 171),
  record("d11", "r5", "deploy", "succeeded", 216),
  record("d12", "r4", "rollback", "failed", 217),
  record("d13", "r4", "rollback", "succeeded", 246),
  record("d14", "r5", "deploy", "succeeded", 264),
];

const window = { from: new Date(at(0)), to: new Date(at(240)) };

describe("DORA figures", () => {
  it("match the hand-computed figures of a seeded history", () => {
    const report = computeDora(history, window);
    expect(report.from).toBe("2026-01-01T00:00:00.000Z");
    expect(report.to).toBe("2026-01-11T00:00:00.000Z");
    expect(report.series).toEqual([
      {
        project: "shop",
        environment: "prod",
        deploymentFrequency: { deployments: 5, perDay: 0.5 },
        leadTime: { releases: 4, medianSeconds: 39_600, meanSeconds: 64_800 },
        changeFailureRate: { changes: 8, failures: 5, rate: 0.625 },
        timeToRestore: { incidents: 4, restored: 4, medianSeconds: 14_400, meanSeconds: 35_100 },
      },
    ]);
  });

  it("does not depend on the order of the records", () => {
    const shuffled = [...history].reverse();
    expect(computeDora(shuffled, window)).toEqual(computeDora(history, window));
  });

  it("counts a narrower window from the same history", () => {
    // Jan 8: d8 and d9 failed; incident C (opened by d8) restored by d10 after 2 h.
    const [series] = computeDora(history, { from: new Date(at(168)), to: new Date(at(192)) }).series;
    expect(series).toEqual({
      project: "shop",
      environment: "prod",
      deploymentFrequency: { deployments: 0, perDay: 0 },
      leadTime: { releases: 0, medianSeconds: null, meanSeconds: null },
      changeFailureRate: { changes: 2, failures: 2, rate: 1 },
      timeToRestore: { incidents: 1, restored: 1, medianSeconds: 7200, meanSeconds: 7200 },
    });
  });

  it("leaves an incident not restored yet out of the restore times", () => {
    const untilNow = history.filter((entry) => entry.id !== "d13" && entry.id !== "d14");
    const [series] = computeDora(untilNow, { from: new Date(at(216)), to: new Date(at(240)) }).series;
    expect(series?.timeToRestore).toEqual({ incidents: 1, restored: 0, medianSeconds: null, meanSeconds: null });
    // d11 is a failed change: a rollback (that failed) came next.
    expect(series?.changeFailureRate).toEqual({ changes: 1, failures: 1, rate: 1 });
  });

  it("does not count an incident that began before the window, and a window-long rate without changes is null", () => {
    const [series] = computeDora(history, { from: new Date(at(170.5)), to: new Date(at(200)) }).series;
    expect(series?.timeToRestore.incidents).toBe(0);
    expect(series?.changeFailureRate).toEqual({ changes: 0, failures: 0, rate: null });
  });

  it("keeps each project and environment apart, and adds a requested series without deployments", () => {
    const staging = [record("s1", "r2", "deploy", "succeeded", 25, "staging")];
    const report = computeDora([...staging, ...history], window, [
      { project: "shop", environment: "prod" },
      { project: "shop", environment: "dev" },
    ]);
    expect(report.series.map((series) => [series.environment, series.deploymentFrequency.deployments])).toEqual([
      ["staging", 1],
      ["prod", 5],
      ["dev", 0],
    ]);
    // r2 created Jan 2 00:00, live in staging at 01:00: its own lead time there.
    expect(report.series[0]?.leadTime).toEqual({ releases: 1, medianSeconds: 3600, meanSeconds: 3600 });
  });
});
