import { type QueryClient, useQuery, useQueryClient } from "@tanstack/react-query";
import { useWindowVirtualizer } from "@tanstack/react-virtual";
import { type KeyboardEvent, useCallback, useLayoutEffect, useMemo, useRef, useState } from "react";
import { Link, useSearchParams } from "react-router";
import { api, query } from "../api/client";
import type { Dashboard, DashboardCell, TaskChange, TaskState } from "../api/types";
import { ErrorNotice, Loading } from "../components/ErrorNotice";
import { RelativeTime } from "../components/RelativeTime";
import { StateBadge, stateLabel } from "../components/StateBadge";
import { useTitle } from "../lib/title";
import { useTaskChanges } from "../live";

type Row = Dashboard["items"][number];
type Column = Dashboard["environments"][number];

/** The first request's size: enough rows to fill any screen, small enough to answer at once. */
const FIRST_PAGE = 50;
const PAGE = 500;
const DASHBOARD_KEY = ["dashboard"] as const;

/** The dashboard as the page holds it: every project, once `complete`. */
type DashboardData = Dashboard & { complete: boolean };

/**
 * Every project (the API pages by 500): filtering and scrolling are then instant, whatever
 * the count. On the first load the first rows are shown as soon as they come, and the rest
 * (requested together) follows: a thousand projects' cells take the server a while, and
 * the screen shows a dozen rows. A refetch replaces the whole only when it has it all.
 */
async function fetchDashboard(client: QueryClient): Promise<DashboardData> {
  const first = await api<Dashboard>("GET", `/dashboard${query({ limit: FIRST_PAGE })}`);
  if (first.items.length >= first.total) return { ...first, complete: true };
  if (client.getQueryData(DASHBOARD_KEY) === undefined) {
    client.setQueryData<DashboardData>(DASHBOARD_KEY, { ...first, complete: false });
    // The rest is asked for once those rows are on screen: on a small machine the server's
    // work for a thousand projects would otherwise compete with the first paint.
    await new Promise((resolve) => requestAnimationFrame(() => setTimeout(resolve, 0)));
  }
  const offsets: number[] = [];
  for (let offset = first.items.length; offset < first.total; offset += PAGE) offsets.push(offset);
  const pages = await Promise.all(
    offsets.map((offset) => api<Dashboard>("GET", `/dashboard${query({ limit: PAGE, offset })}`)),
  );
  const items = [...first.items, ...pages.flatMap((page) => page.items)];
  return { ...first, items, limit: items.length, complete: true };
}

/** Whether the page already shows this state of this task (then a change need not be fetched). */
function shows(data: DashboardData | undefined, change: TaskChange): boolean {
  const row = data?.items.find((each) => each.project.id === change.project);
  if (!row) return true; // not loaded yet: the page that brings it is newer than this change
  return row.environments.some((cell) => cell.latest?.taskId === change.taskId && cell.latest.state === change.state);
}

const STATE_FILTERS: Record<string, { label: string; matches: (state: TaskState) => boolean }> = {
  failed: { label: "failed", matches: (state) => state === "failed" || state === "interrupted" },
  running: { label: "running or queued", matches: (state) => state === "running" || state === "queued" },
  waiting: { label: "waiting for a decision", matches: (state) => state === "waiting" },
  succeeded: { label: "succeeded", matches: (state) => state === "succeeded" },
};

export function DashboardPage() {
  useTitle("Dashboard");
  const client = useQueryClient();
  const [search, setSearch] = useSearchParams();
  const text = search.get("q") ?? "";
  const stateFilter = search.get("state") ?? "";
  const environmentFilter = search.get("env") ?? "";
  const dashboard = useQuery({
    queryKey: DASHBOARD_KEY,
    queryFn: () => fetchDashboard(client),
    refetchInterval: 60_000,
  });

  // A changed deployment refetches only its project's row (one small request), patched into the rest.
  // The stream starts with every active task: those the page shows as they are need nothing.
  const onChanges = useCallback(
    (changes: TaskChange[], reconnected: boolean) => {
      if (reconnected) return; // every query was refetched already
      const current = client.getQueryData<DashboardData>(DASHBOARD_KEY);
      const projects = new Set(
        changes
          .filter((change) => change.kind === "deployment" && change.project && !shows(current, change))
          .map((change) => change.project),
      );
      for (const project of projects) {
        if (!project) continue;
        void api<Dashboard>("GET", `/dashboard${query({ project })}`)
          .then((answer) => {
            client.setQueryData<DashboardData>(DASHBOARD_KEY, (current) => patchRows(current, answer));
          })
          .catch(() => void client.invalidateQueries({ queryKey: DASHBOARD_KEY }));
      }
    },
    [client],
  );
  useTaskChanges(onChanges);

  const setFilter = (name: string, value: string) => {
    const next = new URLSearchParams(search);
    if (value === "") next.delete(name);
    else next.set(name, value);
    setSearch(next, { replace: true });
  };

  const data = dashboard.data;
  const columns = useMemo(
    () => (data?.environments ?? []).filter((column) => !environmentFilter || column.slug === environmentFilter),
    [data, environmentFilter],
  );
  const rows = useMemo(() => {
    if (!data) return [];
    const needle = text.trim().toLowerCase();
    const matcher = STATE_FILTERS[stateFilter];
    return data.items.filter((row) => {
      if (needle && !row.project.name.toLowerCase().includes(needle) && !row.project.slug.includes(needle)) {
        return false;
      }
      if (!matcher) return true;
      return row.environments.some(
        (cell) =>
          (!environmentFilter || cell.environment === environmentFilter) &&
          cell.latest !== null &&
          matcher.matches(cell.latest.state),
      );
    });
  }, [data, text, stateFilter, environmentFilter]);

  const counts = useMemo(() => countStates(data), [data]);

  return (
    <section className="page page-wide" aria-labelledby="dashboard-title">
      <div className="page-header">
        <h1 id="dashboard-title">Dashboard</h1>
        {data && (
          <p className="summary" aria-live="polite">
            {data.total} project{data.total === 1 ? "" : "s"} ·{" "}
            {data.complete ? (
              <>
                {counts.running} running · {counts.waiting} waiting for a decision · {counts.failed} failed
              </>
            ) : (
              <>the first {data.items.length} shown, loading the rest…</>
            )}
          </p>
        )}
      </div>
      <form className="filters" aria-label="Filter the dashboard" onSubmit={(e) => e.preventDefault()}>
        <label>
          Project
          <input
            type="search"
            placeholder="name contains…"
            value={text}
            onChange={(event) => setFilter("q", event.target.value)}
          />
        </label>
        <label>
          State
          <select value={stateFilter} onChange={(event) => setFilter("state", event.target.value)}>
            <option value="">any</option>
            {Object.entries(STATE_FILTERS).map(([value, filter]) => (
              <option key={value} value={value}>
                {filter.label}
              </option>
            ))}
          </select>
        </label>
        <label>
          Environment
          <select value={environmentFilter} onChange={(event) => setFilter("env", event.target.value)}>
            <option value="">all</option>
            {data?.environments.map((environment) => (
              <option key={environment.slug} value={environment.slug}>
                {environment.name}
              </option>
            ))}
          </select>
        </label>
      </form>
      {dashboard.isPending && <Loading what="the dashboard" />}
      <ErrorNotice error={dashboard.error} what="The dashboard could not be loaded" />
      {data && data.total === 0 && (
        <p className="empty">
          No projects yet. Create one with <code>ferry project create</code> or <code>ferry apply -f ferry.yml</code>.
        </p>
      )}
      {data && data.total > 0 && rows.length === 0 && <p className="empty">No project matches these filters.</p>}
      {data && rows.length > 0 && <Matrix rows={rows} columns={columns} />}
    </section>
  );
}

function patchRows(current: DashboardData | undefined, answer: Dashboard): DashboardData | undefined {
  if (!current) return current;
  const fresh = new Map(answer.items.map((row) => [row.project.id, row]));
  return { ...current, items: current.items.map((row) => fresh.get(row.project.id) ?? row) };
}

function countStates(data: Dashboard | undefined) {
  const counts = { running: 0, waiting: 0, failed: 0 };
  for (const row of data?.items ?? []) {
    for (const cell of row.environments) {
      const state = cell.latest?.state;
      if (state === "running" || state === "queued") counts.running++;
      else if (state === "waiting") counts.waiting++;
      else if (state === "failed" || state === "interrupted") counts.failed++;
    }
  }
  return counts;
}

const ROW_HEIGHT = 64;

/**
 * The projects × environments table. Only the rows in view (and a few around) are in the
 * page, so a thousand projects scroll as smoothly as ten. Arrow keys move between cells.
 */
function Matrix({ rows, columns }: { rows: Row[]; columns: Column[] }) {
  const tableRef = useRef<HTMLTableElement>(null);
  const [scrollMargin, setScrollMargin] = useState(0);
  // Where the table starts on the page (the filters above it may change height).
  useLayoutEffect(() => {
    const top = (tableRef.current?.getBoundingClientRect().top ?? 0) + window.scrollY;
    if (top !== scrollMargin) setScrollMargin(top);
  });
  const virtualizer = useWindowVirtualizer({
    count: rows.length,
    estimateSize: () => ROW_HEIGHT,
    overscan: 8,
    scrollMargin,
  });
  const items = virtualizer.getVirtualItems();
  const before = items.length > 0 ? (items[0]?.start ?? 0) - scrollMargin : 0;
  const after =
    items.length > 0 ? virtualizer.getTotalSize() - ((items[items.length - 1]?.end ?? 0) - scrollMargin) : 0;

  const onKeyDown = (event: KeyboardEvent<HTMLTableElement>) => {
    const moves: Record<string, [number, number]> = {
      ArrowUp: [-1, 0],
      ArrowDown: [1, 0],
      ArrowLeft: [0, -1],
      ArrowRight: [0, 1],
    };
    const move = moves[event.key];
    const from = (event.target as HTMLElement).closest<HTMLElement>("[data-cell]");
    if (!move || !from) return;
    const [row, column] = (from.dataset.cell ?? "0:0").split(":").map(Number) as [number, number];
    const targetRow = Math.min(rows.length - 1, Math.max(0, row + move[0]));
    const targetColumn = Math.min(columns.length, Math.max(0, column + move[1]));
    event.preventDefault();
    const focus = () =>
      tableRef.current?.querySelector<HTMLElement>(`[data-cell="${targetRow}:${targetColumn}"]`)?.focus();
    if (tableRef.current?.querySelector(`[data-cell="${targetRow}:${targetColumn}"]`)) focus();
    else {
      virtualizer.scrollToIndex(targetRow);
      requestAnimationFrame(() => requestAnimationFrame(focus));
    }
  };

  return (
    <div className="matrix-scroll">
      <table
        ref={tableRef}
        className="matrix"
        aria-rowcount={rows.length + 1}
        aria-describedby="matrix-help"
        onKeyDown={onKeyDown}
      >
        <caption id="matrix-help" className="visually-hidden">
          Projects by environment: each cell shows the live release, the newest deployment's state and its age. Arrow
          keys move between cells.
        </caption>
        <thead>
          <tr>
            <th scope="col">Project</th>
            {columns.map((column) => (
              <th scope="col" key={column.id}>
                {column.name}
              </th>
            ))}
          </tr>
        </thead>
        <tbody>
          {before > 0 && (
            <tr className="spacer">
              <td colSpan={columns.length + 1} style={{ height: before }} />
            </tr>
          )}
          {items.map((item) => {
            const row = rows[item.index];
            if (!row) return null;
            return (
              <tr key={row.project.id} aria-rowindex={item.index + 2} style={{ height: ROW_HEIGHT }}>
                <th scope="row">
                  <Link to={`/projects/${row.project.slug}`} data-cell={`${item.index}:0`} className="project-link">
                    {row.project.name}
                  </Link>
                  <span className="muted small"> {row.lifecycle}</span>
                </th>
                {columns.map((column, index) => (
                  <td key={column.id}>
                    <Cell
                      project={row.project}
                      column={column}
                      cell={row.environments.find((each) => each.environment === column.slug)}
                      position={`${item.index}:${index + 1}`}
                    />
                  </td>
                ))}
              </tr>
            );
          })}
          {after > 0 && (
            <tr className="spacer">
              <td colSpan={columns.length + 1} style={{ height: after }} />
            </tr>
          )}
        </tbody>
      </table>
    </div>
  );
}

function Cell({
  project,
  column,
  cell,
  position,
}: {
  project: Row["project"];
  column: Column;
  cell: DashboardCell | undefined;
  position: string;
}) {
  if (cell === undefined) {
    return (
      <span className="cell cell-none muted" data-cell={position} tabIndex={-1}>
        not in lifecycle
      </span>
    );
  }
  const { latest, live } = cell;
  if (latest === null) {
    return (
      <span className="cell cell-none muted" data-cell={position} tabIndex={-1}>
        not deployed
      </span>
    );
  }
  const at = latest.finishedAt ?? latest.startedAt ?? latest.createdAt;
  const newer = latest.deploymentId !== live?.deploymentId;
  const label = `${project.name} in ${column.name}: ${live ? `runs ${live.release}` : "nothing live"}${
    newer ? `; ${latest.release} ${stateLabel(latest.state)}` : ""
  }`;
  return (
    <Link to={`/tasks/${latest.taskId}`} className={`cell cell-${latest.state}`} data-cell={position} title={label}>
      <span className="cell-release">
        {live ? live.release : <span className="muted">nothing live</span>}
        {!cell.inLifecycle && <span className="muted small"> (not in lifecycle)</span>}
      </span>
      <span className="cell-state">
        <StateBadge state={latest.state} short />
        {newer && latest.release !== live?.release && <span className="cell-newer"> {latest.release}</span>}
      </span>
      <span className="cell-age small">
        <RelativeTime at={at} />
      </span>
    </Link>
  );
}
