import { useQuery } from "@tanstack/react-query";
import { type FormEvent, useState } from "react";
import { useSearchParams } from "react-router";
import { api, query } from "../api/client";
import type { AuditPage as AuditAnswer, AuditEntry } from "../api/types";
import { DataTable } from "../components/DataTable";
import { ErrorNotice, Loading } from "../components/ErrorNotice";
import { RelativeTime } from "../components/RelativeTime";
import { useTitle } from "../lib/title";

const LIMIT = 50;

/**
 * The hash-chained audit log (administrators), newest page first: who did what to which
 * resource, from where, and what changed. Filters and the page are in the address.
 */
export function AuditPage() {
  useTitle("Audit log");
  const [search, setSearch] = useSearchParams();
  const resource = search.get("resource") ?? "";
  const action = search.get("action") ?? "";
  const afterParam = search.get("after");
  const filters = { resource: resource || undefined, action: action || undefined };
  const audit = useQuery({
    queryKey: ["audit", resource, action, afterParam],
    queryFn: async () => {
      // The API lists oldest first from `after`: without a chosen page, start at the newest one.
      let after = Number(afterParam ?? Number.NaN);
      if (!Number.isFinite(after)) {
        const probe = await api<AuditAnswer>("GET", `/audit${query({ ...filters, limit: 1 })}`);
        after = await newestPageStart(probe.total, filters);
      }
      const page = await api<AuditAnswer>("GET", `/audit${query({ ...filters, after, limit: LIMIT })}`);
      return { ...page, after };
    },
  });
  const [draftResource, setDraftResource] = useState(resource);
  const [draftAction, setDraftAction] = useState(action);

  const apply = (event: FormEvent) => {
    event.preventDefault();
    const next = new URLSearchParams();
    if (draftResource.trim()) next.set("resource", draftResource.trim());
    if (draftAction.trim()) next.set("action", draftAction.trim());
    setSearch(next);
  };
  const goTo = (after: number) => {
    const next = new URLSearchParams(search);
    next.set("after", String(after));
    setSearch(next);
  };
  const data = audit.data;
  const items = data ? [...data.items].reverse() : [];

  return (
    <section className="page page-wide" aria-labelledby="audit-title">
      <div className="page-header">
        <h1 id="audit-title">Audit log</h1>
        {data && (
          <p className="summary">
            {data.total} entr{data.total === 1 ? "y" : "ies"}
            {resource || action ? " match" : ""}
          </p>
        )}
      </div>
      <form className="filters" aria-label="Filter the audit log" onSubmit={apply}>
        <label>
          Resource
          <input
            value={draftResource}
            placeholder="project or project:shop"
            onChange={(event) => setDraftResource(event.target.value)}
          />
        </label>
        <label>
          Action
          <input
            value={draftAction}
            placeholder="variable.update"
            onChange={(event) => setDraftAction(event.target.value)}
          />
        </label>
        <button type="submit" className="button">
          Filter
        </button>
      </form>
      {audit.isPending && <Loading what="the audit log" />}
      <ErrorNotice error={audit.error} what="The audit log could not be loaded" />
      {data && items.length === 0 && <p className="empty">No entry.</p>}
      {items.length > 0 && (
        <DataTable labelledBy="audit-title" columns={["#", "When", "Who", "Action", "Resource", "Change"]}>
          {items.map((entry) => (
            <tr key={entry.id}>
              <td className="mono small">{entry.seq}</td>
              <td>
                <RelativeTime at={entry.at} />
              </td>
              <td>
                {entry.actor.name}
                <div className="small muted">{entry.source}</div>
              </td>
              <td className="mono">{entry.action}</td>
              <td>
                {entry.resource.type}
                {entry.resource.name && <span className="mono"> {entry.resource.name}</span>}
              </td>
              <td>
                <Diff entry={entry} />
              </td>
            </tr>
          ))}
        </DataTable>
      )}
      {data && (
        <nav className="form-actions" aria-label="Pages">
          <button
            type="button"
            className="button"
            disabled={data.next === null}
            onClick={() => data.next !== null && goTo(data.next)}
          >
            Newer
          </button>
          <button
            type="button"
            className="button"
            disabled={data.after === 0}
            onClick={() => goTo(Math.max(0, data.after - LIMIT))}
          >
            Older
          </button>
        </nav>
      )}
    </section>
  );
}

/**
 * The `after` of the newest page. Unfiltered, entries are numbered 1…total; filtered, the
 * numbers have gaps, so the page is found from the end by halving.
 */
async function newestPageStart(total: number, filters: { resource?: string; action?: string }): Promise<number> {
  if (total <= LIMIT) return 0;
  if (!filters.resource && !filters.action) return total - LIMIT;
  // The largest `after` that still leaves LIMIT entries: a binary search on seq.
  let low = 0;
  let high = (await api<AuditAnswer>("GET", `/audit${query({ limit: 1, after: 0 })}`)).total;
  while (low < high) {
    const middle = Math.ceil((low + high) / 2);
    const page = await api<AuditAnswer>("GET", `/audit${query({ ...filters, after: middle, limit: LIMIT })}`);
    if (page.items.length === LIMIT) low = middle;
    else high = middle - 1;
  }
  return low;
}

function Diff({ entry }: { entry: AuditEntry }) {
  const fields = Object.entries(entry.diff);
  if (fields.length === 0) return <span className="muted">—</span>;
  return (
    <ul className="diff">
      {fields.slice(0, 8).map(([field, change]) => (
        <li key={field}>
          <span className="mono">{field}</span>: {show(change.from)} → {show(change.to)}
        </li>
      ))}
      {fields.length > 8 && <li className="muted">and {fields.length - 8} more</li>}
    </ul>
  );
}

function show(value: unknown): string {
  if (value === undefined || value === null) return "—";
  const text = typeof value === "string" ? value : JSON.stringify(value);
  return text.length > 80 ? `${text.slice(0, 77)}…` : text;
}
