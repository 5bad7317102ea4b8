import { z } from "zod";
import type { DeploymentKind } from "./deployments.js";

/*
 * The four DORA figures computed from Ferry's own deployment records, per project and
 * environment, over a window [from, to). Definitions (docs/dora.md):
 *
 *  - A deployment "ran" when it ended succeeded, failed or interrupted; cancelled ones are
 *    left out of every figure. A "change" is a deployment that ran and is not a rollback.
 *  - A change failed when it did not succeed (failed, interrupted: a failed bake fails the
 *    deployment) or when the next deployment that ran in the same project and
 *    environment is a rollback.
 *  - Deployment frequency: changes that succeeded in the window, per day.
 *  - Lead time: for each release whose first successful change deployment to the
 *    environment ended in the window, that end minus the release's creation.
 *  - Change failure rate: failed changes / changes, among changes that ended in the window.
 *  - Time to restore: a failure opens an incident at its end unless one is open; the next
 *    deployment that succeeds and is not itself a failed change (a rollback, a fix)
 *    restores it. Counted for incidents that began in the window.
 *
 * A deployment belongs to the window by the time it ended. Everything before the window
 * is still read: it says which deployment came first, and whether an incident was open.
 */

type DeploymentOutcome = "succeeded" | "failed" | "cancelled" | "interrupted";

/** One ended deployment, as the DORA figures need it. */
export interface DeploymentRecord {
  readonly id: string;
  /** Project and environment slugs: one series per pair. */
  readonly project: string;
  readonly environment: string;
  readonly releaseId: string;
  /** ISO-8601 UTC. */
  readonly releaseCreatedAt: string;
  readonly finishedAt: string;
  readonly outcome: DeploymentOutcome;
  readonly kind: DeploymentKind;
}

const secondsStatistics = {
  medianSeconds: z.number().nullable().describe("null when there is nothing to measure"),
  meanSeconds: z.number().nullable(),
};

const doraSeriesSchema = z.object({
  project: z.string().describe("project slug"),
  environment: z.string().describe("environment slug"),
  deploymentFrequency: z.object({
    deployments: z.number().int().describe("successful deployments that were not rollbacks, in the window"),
    perDay: z.number(),
  }),
  leadTime: z.object({
    releases: z.number().int().describe("releases that first went live in the environment in the window"),
    ...secondsStatistics,
  }),
  changeFailureRate: z.object({
    changes: z.number().int(),
    failures: z.number().int(),
    rate: z.number().nullable().describe("failures / changes; null without changes"),
  }),
  timeToRestore: z.object({
    incidents: z.number().int().describe("incidents that began in the window"),
    restored: z.number().int(),
    ...secondsStatistics,
  }),
});
type DoraSeries = z.infer<typeof doraSeriesSchema>;

export const doraReportSchema = z.object({
  from: z.string(),
  to: z.string(),
  series: z.array(doraSeriesSchema),
});
type DoraReport = z.infer<typeof doraReportSchema>;

export interface DoraWindow {
  readonly from: Date;
  readonly to: Date;
}

/**
 * The figures of every (project, environment) series in `records`, in the order each
 * series first appears; `include` adds a series even when it has no records.
 */
export function computeDora(
  records: readonly DeploymentRecord[],
  window: DoraWindow,
  include: readonly { project: string; environment: string }[] = [],
): DoraReport {
  const series = new Map<string, DeploymentRecord[]>();
  const key = (project: string, environment: string) => JSON.stringify([project, environment]);
  for (const record of records) {
    const list = series.get(key(record.project, record.environment)) ?? [];
    list.push(record);
    series.set(key(record.project, record.environment), list);
  }
  for (const { project, environment } of include) {
    if (!series.has(key(project, environment))) series.set(key(project, environment), []);
  }
  return {
    from: window.from.toISOString(),
    to: window.to.toISOString(),
    series: [...series.entries()].map(([name, list]) => {
      const [project, environment] = JSON.parse(name) as [string, string];
      return seriesFigures(project, environment, list, window);
    }),
  };
}

function seriesFigures(
  project: string,
  environment: string,
  records: readonly DeploymentRecord[],
  window: DoraWindow,
): DoraSeries {
  const from = window.from.getTime();
  const to = window.to.getTime();
  const inWindow = (iso: string) => {
    const time = Date.parse(iso);
    return time >= from && time < to;
  };
  const ran = records
    .filter((record) => record.outcome !== "cancelled")
    .sort((a, b) => Date.parse(a.finishedAt) - Date.parse(b.finishedAt) || a.id.localeCompare(b.id));
  const isChange = (record: DeploymentRecord) => record.kind !== "rollback";
  const failedChange = ran.map(
    (record, index) => isChange(record) && (record.outcome !== "succeeded" || ran[index + 1]?.kind === "rollback"),
  );

  const successfulChanges = ran.filter((record) => isChange(record) && record.outcome === "succeeded");
  const deployments = successfulChanges.filter((record) => inWindow(record.finishedAt)).length;

  const firstLive = new Map<string, DeploymentRecord>();
  for (const record of successfulChanges) if (!firstLive.has(record.releaseId)) firstLive.set(record.releaseId, record);
  const leadTimes = [...firstLive.values()]
    .filter((record) => inWindow(record.finishedAt))
    .map((record) => secondsBetween(record.releaseCreatedAt, record.finishedAt));

  const changesInWindow = ran.flatMap((record, index) =>
    isChange(record) && inWindow(record.finishedAt) ? [failedChange[index] === true] : [],
  );
  const failures = changesInWindow.filter(Boolean).length;

  const incidents: { start: string; end?: string }[] = [];
  let open: { start: string; end?: string } | undefined;
  ran.forEach((record, index) => {
    if (failedChange[index]) {
      if (!open) {
        open = { start: record.finishedAt };
        incidents.push(open);
      }
    } else if (record.outcome === "succeeded" && open) {
      open.end = record.finishedAt;
      open = undefined;
    }
  });
  const counted = incidents.filter((incident) => inWindow(incident.start));
  const restoreTimes = counted.flatMap((incident) =>
    incident.end === undefined ? [] : [secondsBetween(incident.start, incident.end)],
  );

  return {
    project,
    environment,
    deploymentFrequency: { deployments, perDay: deployments / ((to - from) / 86_400_000) },
    leadTime: { releases: leadTimes.length, ...statistics(leadTimes) },
    changeFailureRate: {
      changes: changesInWindow.length,
      failures,
      rate: changesInWindow.length === 0 ? null : failures / changesInWindow.length,
    },
    timeToRestore: { incidents: counted.length, restored: restoreTimes.length, ...statistics(restoreTimes) },
  };
}

function secondsBetween(start: string, end: string): number {
  return (Date.parse(end) - Date.parse(start)) / 1000;
}

function statistics(values: readonly number[]): { medianSeconds: number | null; meanSeconds: number | null } {
  if (values.length === 0) return { medianSeconds: null, meanSeconds: null };
  const sorted = [...values].sort((a, b) => a - b);
  const middle = Math.floor(sorted.length / 2);
  const median =
    sorted.length % 2 === 1 ? (sorted[middle] ?? 0) : ((sorted[middle - 1] ?? 0) + (sorted[middle] ?? 0)) / 2;
  return { medianSeconds: median, meanSeconds: sorted.reduce((sum, value) => sum + value, 0) / sorted.length };
}
