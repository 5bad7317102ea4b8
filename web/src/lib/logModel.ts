import type { TaskLogLine, TaskState } from "../api/types.js";
import { parseAnsi } from "./ansi.js";

/*
 * A task's log as the page shows it: the lines, the steps they belong to (from the engine's
 * "▶ name" / "✔ name (…)" / "✖ name failed …" lines), and the rows left when some steps are
 * folded. Lines are only ever appended; the step of each is worked out once, when it comes.
 */

export interface StepRun {
  /** Position among the task's steps (a step that runs again is a second run). */
  index: number;
  name: string;
  /** Index in `lines` of its "▶" line. */
  startLine: number;
  endLine: number | undefined;
  startedAt: string;
  endedAt: string | undefined;
  outcome: "running" | "succeeded" | "failed";
  /** The run it is nested in, if any. */
  parent: number | undefined;
}

export type LogRow = { kind: "line"; line: number } | { kind: "step"; line: number; step: number };

export class LogModel {
  readonly lines: TaskLogLine[] = [];
  readonly steps: StepRun[] = [];
  /** For each line, the step run it belongs to (-1: none). */
  readonly #owner: number[] = [];
  readonly #open: number[] = [];
  /**
   * The rows with nothing folded, kept as lines come: the page asks for them on every frame
   * while a log streams, and building them anew each time made a 200,000-line log take
   * minutes (every frame walked every line).
   */
  readonly #unfolded: LogRow[] = [];
  /** Lines matching a pattern (see `matching`), each list extended as lines come. */
  readonly #matching = new Map<RegExp, { scanned: number; found: TaskLogLine[] }>();
  /** The longest line's length in characters (the log scrolls sideways to it). */
  widest = 0;

  append(line: TaskLogLine): void {
    const index = this.lines.length;
    this.lines.push(line);
    this.widest = Math.max(this.widest, line.text.length);
    const top = this.#open[this.#open.length - 1];
    if (line.level === "step" && line.text.startsWith("▶ ")) {
      this.#unfolded.push({ kind: "step", line: index, step: this.steps.length });
      const step: StepRun = {
        index: this.steps.length,
        name: line.text.slice(2),
        startLine: index,
        endLine: undefined,
        startedAt: line.at,
        endedAt: undefined,
        outcome: "running",
        parent: top,
      };
      this.steps.push(step);
      this.#open.push(step.index);
      this.#owner.push(step.index);
      return;
    }
    const ending = line.level === "step" && /^[✔✖] /.test(line.text) ? this.#closing(line.text.slice(2)) : undefined;
    if (ending !== undefined) {
      const step = this.steps[ending];
      if (step) {
        step.endLine = index;
        step.endedAt = line.at;
        step.outcome = line.text.startsWith("✔") ? "succeeded" : "failed";
      }
      this.#open.splice(this.#open.lastIndexOf(ending), 1);
      this.#owner.push(ending);
      this.#unfolded.push({ kind: "line", line: index });
      return;
    }
    this.#owner.push(top !== undefined && this.steps[top]?.name === line.step ? top : this.#ownerByName(line.step));
    this.#unfolded.push({ kind: "line", line: index });
  }

  /** The lines whose text matches `pattern` (one RegExp object per question: it is the cache's key). */
  matching(pattern: RegExp): readonly TaskLogLine[] {
    let cached = this.#matching.get(pattern);
    if (!cached) {
      cached = { scanned: 0, found: [] };
      this.#matching.set(pattern, cached);
    }
    for (; cached.scanned < this.lines.length; cached.scanned++) {
      const line = this.lines[cached.scanned];
      if (line && pattern.test(line.text)) cached.found.push(line);
    }
    return cached.found;
  }

  /** The open run a "✔ name (…)" or "✖ name failed …" line ends (the innermost with that name). */
  #closing(text: string): number | undefined {
    for (let position = this.#open.length - 1; position >= 0; position--) {
      const index = this.#open[position] ?? -1;
      const name = this.steps[index]?.name;
      if (name !== undefined && (text === name || text.startsWith(`${name} (`) || text.startsWith(`${name} failed`))) {
        return index;
      }
    }
    return undefined;
  }

  #ownerByName(step: string | null): number {
    if (step === null) return -1;
    for (let position = this.#open.length - 1; position >= 0; position--) {
      const index = this.#open[position] ?? -1;
      if (this.steps[index]?.name === step) return index;
    }
    return -1;
  }

  /** True when the line is inside a folded step (its own "▶" line stays visible). */
  #hidden(line: number, folded: ReadonlySet<number>): boolean {
    let owner = this.#owner[line] ?? -1;
    const step = this.steps[owner];
    // A step's own "▶" line is hidden only by the steps around it.
    if (step && step.startLine === line) owner = step.parent ?? -1;
    while (owner >= 0) {
      if (folded.has(owner)) return true;
      owner = this.steps[owner]?.parent ?? -1;
    }
    return false;
  }

  /** The rows shown: every line, less those inside folded steps. Do not change the answer. */
  rows(folded: ReadonlySet<number>): readonly LogRow[] {
    if (folded.size === 0) return this.#unfolded;
    const rows: LogRow[] = [];
    for (let line = 0; line < this.lines.length; line++) {
      if (this.#hidden(line, folded)) continue;
      const owner = this.#owner[line] ?? -1;
      const step = this.steps[owner];
      if (step && step.startLine === line) rows.push({ kind: "step", line, step: owner });
      else rows.push({ kind: "line", line });
    }
    return rows;
  }

  /** The row index of each row whose text contains `needle` (ANSI codes left out), case-insensitive. */
  search(rows: readonly LogRow[], needle: string): number[] {
    const wanted = needle.toLowerCase();
    if (wanted === "") return [];
    const found: number[] = [];
    rows.forEach((row, index) => {
      if (
        plainText(this.lines[row.line]?.text ?? "")
          .toLowerCase()
          .includes(wanted)
      )
        found.push(index);
    });
    return found;
  }
}

function plainText(text: string): string {
  return parseAnsi(text)
    .map((run) => run.text)
    .join("");
}

/** How long a step run took (or has taken until `now`, still running; until the task's end, if it ended). */
export function stepDuration(step: StepRun, now: number, taskEnd: string | null, state: TaskState | undefined): number {
  const start = Date.parse(step.startedAt);
  if (step.endedAt) return Date.parse(step.endedAt) - start;
  if (taskEnd && state !== "running" && state !== "waiting") return Date.parse(taskEnd) - start;
  return now - start;
}
