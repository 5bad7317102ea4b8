import { describe, expect, it } from "vitest";
import { InputError } from "./errors.js";
import {
  INLINE_PATTERN_STEPS,
  MASKED,
  parameterPatternChecks,
  resolveParameters,
  runbookDefinitionSchema,
  runbookParameterSchema,
  shownParameters,
  storedRunbookDefinitionSchema,
} from "./runbooks.js";

const parameters = [
  { name: "Count", type: "number", min: 1, max: 5 },
  { name: "Mode", type: "choice", choices: ["fast", "safe"], default: "safe" },
  { name: "Note", required: false },
  { name: "Force", type: "boolean", default: false },
  { name: "Password", sensitive: true, pattern: "[a-z0-9]{8,}" },
].map((parameter) => runbookParameterSchema.parse(parameter));

function issuesOf(given: Record<string, string | number | boolean>) {
  try {
    resolveParameters(parameters, given);
  } catch (error) {
    if (!(error instanceof InputError)) throw error;
    return error.issues;
  }
  throw new Error("accepted");
}

describe("resolveParameters", () => {
  it("fills in defaults and gives every value as text", () => {
    const resolved = resolveParameters(parameters, { Count: 2, Password: "abcdefgh1" });
    expect(Object.fromEntries(resolved.values)).toEqual({
      Count: "2",
      Mode: "safe",
      Note: "",
      Force: "false",
      Password: "abcdefgh1",
    });
    expect(shownParameters(resolved)).toMatchObject({ Password: MASKED, Count: "2" });
  });

  it("reports every problem at once, each at its parameter, never quoting a sensitive value", () => {
    const issues = issuesOf({ Count: "nine", Mode: "reckless", Force: "yes", Password: "SHORT", Extra: 1 });
    expect(issues.map((issue) => issue.pointer).sort()).toEqual([
      "/parameters/Count",
      "/parameters/Extra",
      "/parameters/Force",
      "/parameters/Mode",
      "/parameters/Password",
    ]);
    expect(JSON.stringify(issues)).not.toContain("SHORT");
    expect(issuesOf({ Count: 0, Password: "abcdefgh1" })[0]?.detail).toContain("below the minimum 1");
    expect(issuesOf({ Password: "abcdefgh1" })[0]).toMatchObject({ pointer: "/parameters/Count" });
  });

  it("refuses definitions that cannot work", () => {
    const problems = (value: unknown) =>
      runbookParameterSchema.safeParse(value).error?.issues.map((issue) => issue.path.join("."));
    expect(problems({ name: "Region", type: "choice" })).toEqual(["choices"]);
    expect(problems({ name: "Token", sensitive: true, default: "x" })).toEqual(["default"]);
    expect(problems({ name: "Size", type: "number", default: 9, max: 5 })).toEqual(["default"]);
    expect(problems({ name: "Name", pattern: "(" })).toEqual(["pattern"]);
    expect(problems({ name: "1bad" })).toEqual(["name"]);
  });

  it("refuses patterns RE2 cannot run, and one that would close the group it is matched in", () => {
    const detail = (pattern: string) =>
      runbookParameterSchema.safeParse({ name: "Name", pattern }).error?.issues.map((issue) => issue.message);
    expect(detail("(?=a)a")?.[0]).toMatch(/^lookahead and lookbehind/);
    expect(detail("(a)\\1")?.[0]).toMatch(/^backreferences/);
    expect(detail("a)|(b")).toHaveLength(1);
    expect(detail("[a-z]{1,1000}x{1,100}")?.[0]).toMatch(/^the pattern is too large/);
  });

  it("still loads a stored pattern RE2 cannot run, and refuses a run's value of it naming why", () => {
    const stored = storedRunbookDefinitionSchema.parse({
      parameters: [{ name: "Tag", pattern: "\\d+(?=-alpine)", default: "1-alpine" }],
    });
    expect(detailsOf(() => resolveParameters(stored.parameters, { Tag: "12-alpine" }))[0]).toMatch(
      /^parameter 'Tag' '12-alpine' cannot be checked: the runbook's pattern is not supported \(lookahead and lookbehind/,
    );
  });

  it("still loads a stored process whose image version rule RE2 cannot run (ADR 0073)", () => {
    const image = { name: "web", feed: "local", repository: "demo/app", version: { kind: "regex", pattern: "(a)\\1" } };
    const stored = storedRunbookDefinitionSchema.parse({ process: { images: [image], steps: [] } });
    expect(stored.process.images[0]?.version).toEqual(image.version);
    expect(runbookDefinitionSchema.safeParse({ process: { images: [image], steps: [] } }).success).toBe(false);
  });

  it("matches (a+)+ against 8,191 a's and a '!' on RE2 at once", () => {
    const nested = runbookParameterSchema.parse({ name: "Word", pattern: "(a+)+" });
    const started = performance.now();
    expect(detailsOf(() => resolveParameters([nested], { Word: `${"a".repeat(8191)}!` }))).toEqual([
      "parameter 'Word' 'aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa' does not match the pattern (a+)+",
    ]);
    expect(performance.now() - started).toBeLessThan(1_000);
    expect(parameterPatternChecks([nested], { Word: "a".repeat(8192) })).toEqual([]);
  });

  it("leaves checks over the event loop's budget to verdicts from elsewhere, refusing one without a verdict", () => {
    const costly = runbookParameterSchema.parse({ name: "Tag", pattern: "[ab]*[ab]{0,900}b" });
    const text = "ab".repeat(4096);
    const checks = parameterPatternChecks([costly], { Tag: text });
    expect(checks).toEqual([{ name: "Tag", pattern: "^(?:[ab]*[ab]{0,900}b)$", text }]);
    expect(1800 * text.length).toBeGreaterThan(INLINE_PATTERN_STEPS);
    expect(resolveParameters([costly], { Tag: text }, new Map([["Tag", "matched"]])).values.get("Tag")).toBe(text);
    expect(detailsOf(() => resolveParameters([costly], { Tag: text }, new Map([["Tag", "not-matched"]])))[0]).toContain(
      "does not match the pattern [ab]*[ab]{0,900}b",
    );
    expect(detailsOf(() => resolveParameters([costly], { Tag: text }))[0]).toContain(
      "could not be checked against the pattern [ab]*[ab]{0,900}b within 2 s: simplify the pattern",
    );
    expect(resolveParameters([costly], { Tag: text }, "defer-costly").values.get("Tag")).toBe(text);
  });
});

function detailsOf(resolve: () => unknown): string[] {
  try {
    resolve();
  } catch (error) {
    if (!(error instanceof InputError)) throw error;
    return error.issues.map((issue) => issue.detail);
  }
  throw new Error("accepted");
}
