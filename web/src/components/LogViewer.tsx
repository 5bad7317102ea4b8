import { useVirtualizer } from "@tanstack/react-virtual";
import { type KeyboardEvent, type ReactNode, useEffect, useId, useMemo, useRef, useState } from "react";
import { parseAnsi } from "../lib/ansi";
import type { LogModel, LogRow } from "../lib/logModel";
import type { StreamStatus } from "../lib/useTaskLog";

const ROW_HEIGHT = 20;

export interface LogViewerHandle {
  /** Unfolds the step run and scrolls to its first line. */
  showStep(step: number): void;
}

/**
 * The log: only the rows in view are in the page (a fixed row height lets the virtualiser
 * place 50,000 of them without measuring), folded steps, search with next / previous, and
 * "follow": while the view is at the end it stays there as lines arrive.
 */
export function LogViewer({
  model,
  version,
  status,
  folded,
  onFold,
  handle,
}: {
  model: LogModel;
  version: number;
  status: StreamStatus;
  folded: ReadonlySet<number>;
  onFold(step: number, fold: boolean): void;
  handle?: { current: LogViewerHandle | undefined };
}) {
  const scroller = useRef<HTMLDivElement>(null);
  const [query, setQuery] = useState("");
  const [current, setCurrent] = useState(0);
  const [follow, setFollow] = useState(true);
  const searchId = useId();

  // biome-ignore lint/correctness/useExhaustiveDependencies: `version` says the model's lines changed
  const rows = useMemo(() => model.rows(folded), [model, version, folded]);
  // biome-ignore lint/correctness/useExhaustiveDependencies: `version` says the model's lines changed
  const matches = useMemo(() => model.search(rows, query), [model, rows, query, version]);

  const virtualizer = useVirtualizer({
    count: rows.length,
    getScrollElement: () => scroller.current,
    estimateSize: () => ROW_HEIGHT,
    overscan: 30,
  });

  // New lines: stay at the end while following.
  useEffect(() => {
    if (follow && rows.length > 0 && query === "") virtualizer.scrollToIndex(rows.length - 1, { align: "end" });
  }, [rows.length, follow, query, virtualizer]);

  const goTo = (position: number) => {
    if (matches.length === 0) return;
    const next = (position + matches.length) % matches.length;
    setCurrent(next);
    setFollow(false);
    virtualizer.scrollToIndex(matches[next] ?? 0, { align: "center" });
  };

  if (handle) {
    handle.current = {
      showStep(step) {
        onFold(step, false);
        const start = model.steps[step]?.startLine;
        setFollow(false);
        requestAnimationFrame(() => {
          const index = model
            .rows(new Set([...folded].filter((each) => each !== step)))
            .findIndex((row) => row.line === start);
          if (index >= 0) virtualizer.scrollToIndex(index, { align: "start" });
        });
      },
    };
  }

  // Following stops when the reader scrolls up, and starts again at the end. Lines arriving
  // only make the log longer (scrollTop stays), and following only scrolls down: neither
  // turns it off, however fast lines come.
  const lastTop = useRef(0);
  const onScroll = () => {
    const element = scroller.current;
    if (!element) return;
    const top = element.scrollTop;
    const atEnd = top + element.clientHeight >= element.scrollHeight - ROW_HEIGHT * 2;
    if (top < lastTop.current - 1 && follow && !atEnd) setFollow(false);
    else if (atEnd && !follow && query === "") setFollow(true);
    lastTop.current = top;
  };

  const onSearchKey = (event: KeyboardEvent<HTMLInputElement>) => {
    if (event.key === "Enter") {
      event.preventDefault();
      goTo(event.shiftKey ? current - 1 : current + 1);
    } else if (event.key === "Escape") {
      setQuery("");
    }
  };

  const currentRow = matches[current];
  const count = model.lines.length;
  return (
    <section aria-label="Task log" className="log-section">
      <div className="log-toolbar">
        <label htmlFor={searchId} className="visually-hidden">
          Search the log
        </label>
        <input
          id={searchId}
          type="search"
          placeholder="Search the log (Enter: next, Shift+Enter: previous)"
          value={query}
          onChange={(event) => {
            setQuery(event.target.value);
            setCurrent(0);
            const first = model.search(rows, event.target.value)[0];
            if (first !== undefined) {
              setFollow(false);
              virtualizer.scrollToIndex(first, { align: "center" });
            }
          }}
          onKeyDown={onSearchKey}
        />
        <span className="small" role="status" aria-live="polite">
          {query === "" ? "" : matches.length === 0 ? "no match" : `${current + 1} of ${matches.length}`}
        </span>
        <button
          type="button"
          className="button button-small"
          onClick={() => goTo(current - 1)}
          disabled={matches.length === 0}
        >
          Previous
        </button>
        <button
          type="button"
          className="button button-small"
          onClick={() => goTo(current + 1)}
          disabled={matches.length === 0}
        >
          Next
        </button>
        <label className="inline small">
          <input type="checkbox" checked={follow} onChange={(event) => setFollow(event.target.checked)} /> Follow
        </label>
        <span className="small muted log-count">
          {count} line{count === 1 ? "" : "s"} · <StreamWords status={status} />
        </span>
      </div>
      {/* biome-ignore lint/a11y/noNoninteractiveTabindex: the log scrolls by keyboard too */}
      <div ref={scroller} className="log" tabIndex={0} onScroll={onScroll} aria-label="Log lines" role="log">
        <div
          className="log-rows"
          style={{ height: virtualizer.getTotalSize(), width: `calc(${model.widest}ch + 12rem)` }}
        >
          {virtualizer.getVirtualItems().map((item) => {
            const row = rows[item.index];
            if (!row) return null;
            return (
              <LogRowView
                key={item.key}
                row={row}
                model={model}
                top={item.start}
                query={query}
                current={item.index === currentRow}
                folded={row.kind === "step" && folded.has(row.step)}
                onFold={onFold}
              />
            );
          })}
        </div>
      </div>
    </section>
  );
}

function StreamWords({ status }: { status: StreamStatus }) {
  switch (status) {
    case "connecting":
      return <>connecting…</>;
    case "streaming":
      return <>streaming live</>;
    case "reconnecting":
      return <>reconnecting…</>;
    case "ended":
      return <>complete</>;
    default: {
      const unknown: never = status;
      return <>{String(unknown)}</>;
    }
  }
}

function LogRowView({
  row,
  model,
  top,
  query,
  current,
  folded,
  onFold,
}: {
  row: LogRow;
  model: LogModel;
  top: number;
  query: string;
  current: boolean;
  folded: boolean;
  onFold(step: number, fold: boolean): void;
}) {
  const line = model.lines[row.line];
  if (!line) return null;
  const time = line.at.slice(11, 23);
  const text = <Highlighted text={line.text} query={query} />;
  return (
    <div
      className={`log-row level-${line.level}${current ? " current" : ""}`}
      style={{ transform: `translateY(${top}px)` }}
      data-line={line.line}
    >
      <span className="log-number">{line.line}</span>
      <span className="log-time" title={line.at}>
        {time}
      </span>
      {row.kind === "step" ? (
        <button
          type="button"
          className="log-step-toggle"
          aria-expanded={!folded}
          onClick={() => onFold(row.step, !folded)}
          title={folded ? "Show this step's lines" : "Hide this step's lines"}
        >
          <span aria-hidden="true">{folded ? "▸ " : "▾ "}</span>
          {text}
        </button>
      ) : (
        <span className="log-text">{text}</span>
      )}
    </div>
  );
}

/** The line's text with its ANSI colours, and the search term marked. */
function Highlighted({ text, query }: { text: string; query: string }) {
  const runs = parseAnsi(text);
  return (
    <>
      {runs.map((run, index) => (
        <span
          // biome-ignore lint/suspicious/noArrayIndexKey: the runs of a line never move
          key={index}
          className={run.classes || undefined}
          style={run.color || run.background ? { color: run.color, backgroundColor: run.background } : undefined}
        >
          {mark(run.text, query)}
        </span>
      ))}
    </>
  );
}

function mark(text: string, query: string): ReactNode {
  if (query === "") return text;
  const lower = text.toLowerCase();
  const wanted = query.toLowerCase();
  const parts: ReactNode[] = [];
  let from = 0;
  for (let at = lower.indexOf(wanted); at >= 0; at = lower.indexOf(wanted, at + wanted.length)) {
    if (at > from) parts.push(text.slice(from, at));
    parts.push(<mark key={at}>{text.slice(at, at + wanted.length)}</mark>);
    from = at + wanted.length;
  }
  if (parts.length === 0) return text;
  if (from < text.length) parts.push(text.slice(from));
  return parts;
}
