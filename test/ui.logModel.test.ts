import { describe, expect, it } from "vitest";
import type { TaskLogLine } from "../src/domain/tasks.js";
import { parseAnsi } from "../web/src/lib/ansi.js";
import { LogModel } from "../web/src/lib/logModel.js";

/*
 * The dashboard's log model without a browser: how ANSI codes become styled runs, and how
 * the engine's step lines ("▶ name", "✔ name (…)", "✖ name failed …") become foldable steps.
 */

const ESC = "\u001b";
let counter = 0;
function line(text: string, step: string | null, level: TaskLogLine["level"] = "info"): TaskLogLine {
  counter += 1;
  return { line: counter, at: new Date(Date.UTC(2026, 0, 1, 0, 0, counter)).toISOString(), level, step, text };
}

describe("ANSI colours in log lines", () => {
  it("turns SGR codes into runs with classes and drops other escape sequences", () => {
    expect(parseAnsi(`plain ${ESC}[1;31mbold red${ESC}[0m and ${ESC}[32mgreen${ESC}[39m back`)).toEqual([
      { text: "plain ", classes: "" },
      { text: "bold red", classes: "ansi-bold ansi-fg-red" },
      { text: " and ", classes: "" },
      { text: "green", classes: "ansi-fg-green" },
      { text: " back", classes: "" },
    ]);
    expect(parseAnsi(`${ESC}]0;window title${String.fromCharCode(7)}${ESC}[2Kdone`)).toEqual([
      { text: "done", classes: "" },
    ]);
  });

  it("gives 256-colour and true-colour codes their colour value", () => {
    expect(parseAnsi(`${ESC}[38;5;196mred${ESC}[48;2;0;0;255mon blue`)).toEqual([
      { text: "red", classes: "", color: "rgb(255, 0, 0)" },
      { text: "on blue", classes: "", color: "rgb(255, 0, 0)", background: "rgb(0, 0, 255)" },
    ]);
  });

  it("leaves a line without escapes as one run", () => {
    expect(parseAnsi("[info] 100% done")).toEqual([{ text: "[info] 100% done", classes: "" }]);
  });
});

describe("steps of a task's log", () => {
  const model = new LogModel();
  for (const each of [
    line("Deploying shop 1.0.0 to dev", null),
    line("▶ migrate", "migrate", "step"),
    line("applying 3 migrations", "migrate"),
    line("✔ migrate (1.2 s)", "migrate", "step"),
    line("▶ web on web-1", "web on web-1", "step"),
    line("starting colour blue", "web on web-1"),
    line("▶ health check", "health check", "step"),
    line("GET /healthz 200", "health check"),
    line("✖ health check failed after 30 s", "health check", "step"),
    line("✖ web on web-1 failed after 31 s", "web on web-1", "step"),
    line("task failed", null, "error"),
  ]) {
    model.append(each);
  }

  it("finds each step run, nested ones inside their parent, with its outcome and times", () => {
    expect(
      model.steps.map(({ name, outcome, parent, startLine, endLine }) => ({
        name,
        outcome,
        parent,
        startLine,
        endLine,
      })),
    ).toEqual([
      { name: "migrate", outcome: "succeeded", parent: undefined, startLine: 1, endLine: 3 },
      { name: "web on web-1", outcome: "failed", parent: undefined, startLine: 4, endLine: 9 },
      { name: "health check", outcome: "failed", parent: 1, startLine: 6, endLine: 8 },
    ]);
    expect(Date.parse(model.steps[0]?.endedAt ?? "") - Date.parse(model.steps[0]?.startedAt ?? "")).toBe(2000);
  });

  it("folds a step to its header, and a parent folds its children too", () => {
    const all = model.rows(new Set());
    expect(all).toHaveLength(11);
    expect(all.filter((row) => row.kind === "step").map((row) => model.lines[row.line]?.text)).toEqual([
      "▶ migrate",
      "▶ web on web-1",
      "▶ health check",
    ]);
    const migrateFolded = model.rows(new Set([0]));
    expect(migrateFolded.map((row) => model.lines[row.line]?.text)).not.toContain("applying 3 migrations");
    expect(migrateFolded.map((row) => model.lines[row.line]?.text)).toContain("▶ migrate");
    const webFolded = model.rows(new Set([1])).map((row) => model.lines[row.line]?.text);
    expect(webFolded).toEqual([
      "Deploying shop 1.0.0 to dev",
      "▶ migrate",
      "applying 3 migrations",
      "✔ migrate (1.2 s)",
      "▶ web on web-1",
      "task failed",
    ]);
  });

  it("searches the text as shown, without escape codes, and case-insensitively", () => {
    const colourful = new LogModel();
    colourful.append(line(`${ESC}[31mERROR${ESC}[0m: disk full`, null));
    colourful.append(line("all good", null));
    const rows = colourful.rows(new Set());
    expect(colourful.search(rows, "error: disk")).toEqual([0]);
    expect(colourful.search(rows, "[31m")).toEqual([]);
  });
});

describe("a log that keeps growing", () => {
  it("answers the unfolded rows and matching lines as lines come, the same as worked out from scratch", () => {
    const model = new LogModel();
    const traffic = /^switched route /;
    const arrivals: TaskLogLine[][] = [
      [line("task starts", null), line("▶ web", "web", "step"), line("starting colour blue", "web")],
      [line("switched route app to colour blue", "web"), line("▶ inner", "inner", "step")],
      [line("✔ inner (0.1 s)", "inner", "step"), line("switched route app to colour green", "web")],
      [line("✔ web (1.2 s)", "web", "step"), line("task ends", null)],
    ];
    for (const batch of arrivals) {
      for (const each of batch) model.append(each);
      // A fold of a step that does not exist takes the path that builds the rows anew.
      expect(model.rows(new Set())).toEqual(model.rows(new Set([99])));
      expect(model.matching(traffic)).toEqual(model.lines.filter((each) => traffic.test(each.text)));
    }
    expect(model.rows(new Set()).filter((row) => row.kind === "step")).toEqual([
      { kind: "step", line: 1, step: 0 },
      { kind: "step", line: 4, step: 1 },
    ]);
    expect(model.matching(traffic).map((each) => each.text)).toEqual([
      "switched route app to colour blue",
      "switched route app to colour green",
    ]);
  });
});
