import { describe, expect, it } from "vitest";
import { InputError } from "./errors.js";
import { MASKED, resolveParameters, runbookParameterSchema, shownParameters } from "./runbooks.js";

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
});
