import { useQueries, useQuery } from "@tanstack/react-query";
import { type ReactNode, useMemo } from "react";
import { useSearchParams } from "react-router";
import { api, query } from "../api/client";
import { useEnvironments } from "../api/hooks";
import type { DoraReport, DoraSeries, Page, Project } from "../api/types";
import { BarChart, LineChart, type Point } from "../components/Charts";
import { DataTable } from "../components/DataTable";
import { ErrorNotice, Loading } from "../components/ErrorNotice";
import { SlugSelect } from "../components/Forms";
import { formatDuration } from "../lib/time";
import { useTitle } from "../lib/title";

const WEEK = 7 * 86_400_000;
const WINDOWS = [4, 12, 26] as const;

/**
 * DORA figures (GET /api/v1/dora) per project and environment: the window's four figures,
 * and week by week as charts (one request per week, the API's own definitions).
 */
export function InsightsPage() {
  useTitle("Insights");
  const [search, setSearch] = useSearchParams();
  const project = search.get("project") ?? "";
  const environment = search.get("env") ?? "";
  const weeks = WINDOWS.find((each) => String(each) === search.get("weeks")) ?? 12;
  const projects = useQuery({
    queryKey: ["projects"],
    queryFn: () => api<Page<Project>>("GET", `/projects${query({ limit: 500 })}`),
  });
  const environments = useEnvironments();
  // Whole weeks ending now; the clock is read once per choice, so the queries stay the same.
  // biome-ignore lint/correctness/useExhaustiveDependencies: a new window when the choice changes
  const periods = useMemo(() => {
    const end = Date.now();
    return Array.from({ length: weeks }, (_, index) => {
      const from = new Date(end - (weeks - index) * WEEK);
      const to = new Date(end - (weeks - index - 1) * WEEK);
      return { from: from.toISOString(), to: to.toISOString(), label: from.toISOString().slice(5, 10) };
    });
  }, [weeks, project, environment]);
  const filters = { project: project || undefined, environment: environment || undefined };
  const whole = useQuery({
    queryKey: ["dora", project, environment, periods[0]?.from],
    queryFn: () =>
      api<DoraReport>(
        "GET",
        `/dora${query({ ...filters, from: periods[0]?.from, to: periods[periods.length - 1]?.to })}`,
      ),
  });
  const weekly = useQueries({
    queries: periods.map((period) => ({
      queryKey: ["dora", project, environment, period.from, period.to],
      queryFn: () => api<DoraReport>("GET", `/dora${query({ ...filters, from: period.from, to: period.to })}`),
      staleTime: 60_000,
    })),
  });
  const charts = weekly.every((each) => each.data)
    ? weeklyPoints(
        periods,
        weekly.map((each) => each.data as DoraReport),
      )
    : undefined;
  const setFilter = (name: string, value: string) => {
    const next = new URLSearchParams(search);
    if (value === "") next.delete(name);
    else next.set(name, value);
    setSearch(next, { replace: true });
  };
  const series = whole.data?.series ?? [];

  return (
    <section className="page page-wide" aria-labelledby="insights-title">
      <div className="page-header">
        <h1 id="insights-title">Insights</h1>
        <p className="summary">DORA figures from Ferry's own deployment records</p>
      </div>
      <form className="filters" aria-label="Choose the figures" onSubmit={(event) => event.preventDefault()}>
        <SlugSelect
          label="Project"
          value={project}
          onChange={(slug) => setFilter("project", slug)}
          items={projects.data?.items}
          none="all projects"
        />
        <SlugSelect
          label="Environment"
          value={environment}
          onChange={(slug) => setFilter("env", slug)}
          items={environments.data?.items}
          none="every environment"
        />
        <label>
          Window
          <select value={String(weeks)} onChange={(event) => setFilter("weeks", event.target.value)}>
            {WINDOWS.map((each) => (
              <option key={each} value={each}>
                last {each} weeks
              </option>
            ))}
          </select>
        </label>
      </form>
      <ErrorNotice
        error={whole.error ?? weekly.find((each) => each.error)?.error}
        what="The figures could not be loaded"
      />
      {whole.isPending && <Loading what="the figures" />}
      {whole.data && <Figures series={series} weeks={weeks} />}
      {charts && (
        <div className="charts">
          <BarChart
            title="Deployments per week"
            points={charts.deployments}
            valueName="succeeded"
            stackedName="failed"
            counts
            format={(value) => String(Math.round(value))}
          />
          <LineChart
            title="Change failure rate per week"
            points={charts.failureRate}
            valueName="failed changes / changes"
            format={(value) => `${Math.round(value * 100)} %`}
          />
          <LineChart
            title="Lead time per week (median)"
            points={charts.leadTime}
            valueName="release created → live"
            format={(value) => formatDuration(value * 1000)}
          />
          <LineChart
            title="Time to restore per week (median)"
            points={charts.restore}
            valueName="failure → next good deployment"
            format={(value) => formatDuration(value * 1000)}
          />
        </div>
      )}
      {series.length > 0 && <SeriesTable series={series} />}
      {whole.data && series.length === 0 && (
        <p className="empty">No deployment ended in this window{project || environment ? " for this choice" : ""}.</p>
      )}
    </section>
  );
}

function Figures({ series, weeks }: { series: DoraSeries[]; weeks: number }) {
  const deployments = series.reduce((sum, each) => sum + each.deploymentFrequency.deployments, 0);
  const changes = series.reduce((sum, each) => sum + each.changeFailureRate.changes, 0);
  const failures = series.reduce((sum, each) => sum + each.changeFailureRate.failures, 0);
  const lead = weightedMedian(series.map((each) => [each.leadTime.medianSeconds, each.leadTime.releases]));
  const restore = weightedMedian(series.map((each) => [each.timeToRestore.medianSeconds, each.timeToRestore.restored]));
  return (
    <div className="figures">
      <Figure label="Deployment frequency" value={`${(deployments / (weeks * 7)).toFixed(2)} / day`}>
        {deployments} successful deployments
      </Figure>
      <Figure label="Lead time for changes" value={lead === null ? "—" : formatDuration(lead * 1000)}>
        median, release created → live
      </Figure>
      <Figure label="Change failure rate" value={changes === 0 ? "—" : `${Math.round((failures / changes) * 100)} %`}>
        {failures} of {changes} changes failed
      </Figure>
      <Figure label="Time to restore" value={restore === null ? "—" : formatDuration(restore * 1000)}>
        median, failure → next good deployment
      </Figure>
    </div>
  );
}

function Figure({ label, value, children }: { label: string; value: string; children: ReactNode }) {
  return (
    <div className="card figure">
      <div className="label">{label}</div>
      <div className="value">{value}</div>
      <div className="small muted">{children}</div>
    </div>
  );
}

function SeriesTable({ series }: { series: DoraSeries[] }) {
  return (
    <>
      <h2 id="series-title">Per project and environment</h2>
      <DataTable
        labelledBy="series-title"
        columns={[
          "Project",
          "Environment",
          "Deployments / day",
          "Lead time (median)",
          "Change failure rate",
          "Time to restore (median)",
        ]}
      >
        {series.map((each) => (
          <tr key={`${each.project} ${each.environment}`}>
            <th scope="row">{each.project}</th>
            <td>{each.environment}</td>
            <td>
              {each.deploymentFrequency.perDay.toFixed(2)}{" "}
              <span className="muted small">({each.deploymentFrequency.deployments})</span>
            </td>
            <td>{seconds(each.leadTime.medianSeconds)}</td>
            <td>
              {each.changeFailureRate.rate === null ? "—" : `${Math.round(each.changeFailureRate.rate * 100)} %`}{" "}
              <span className="muted small">
                ({each.changeFailureRate.failures}/{each.changeFailureRate.changes})
              </span>
            </td>
            <td>{seconds(each.timeToRestore.medianSeconds)}</td>
          </tr>
        ))}
      </DataTable>
    </>
  );
}

function seconds(value: number | null): string {
  return value === null ? "—" : formatDuration(value * 1000);
}

/** Several series' medians, weighted by how many each measured: one series' own median when alone. */
function weightedMedian(values: ReadonlyArray<readonly [number | null, number]>): number | null {
  let total = 0;
  let weight = 0;
  for (const [value, count] of values) {
    if (value === null || count === 0) continue;
    total += value * count;
    weight += count;
  }
  return weight === 0 ? null : total / weight;
}

function weeklyPoints(periods: { label: string }[], reports: DoraReport[]) {
  const deployments: Point[] = [];
  const failureRate: Point[] = [];
  const leadTime: Point[] = [];
  const restore: Point[] = [];
  reports.forEach((report, index) => {
    const label = periods[index]?.label ?? String(index);
    const succeeded = report.series.reduce((sum, each) => sum + each.deploymentFrequency.deployments, 0);
    const changes = report.series.reduce((sum, each) => sum + each.changeFailureRate.changes, 0);
    const failures = report.series.reduce((sum, each) => sum + each.changeFailureRate.failures, 0);
    deployments.push({ label, value: succeeded, stacked: failures });
    failureRate.push({ label, value: changes === 0 ? null : failures / changes });
    leadTime.push({
      label,
      value: weightedMedian(report.series.map((each) => [each.leadTime.medianSeconds, each.leadTime.releases])),
    });
    restore.push({
      label,
      value: weightedMedian(
        report.series.map((each) => [each.timeToRestore.medianSeconds, each.timeToRestore.restored]),
      ),
    });
  });
  return { deployments, failureRate, leadTime, restore };
}
