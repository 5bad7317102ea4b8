import { describe, expect, it } from "vitest";
import { processSchema } from "./process.js";
import { rollingBatches, windowSize } from "./rolling.js";

describe("rolling windows", () => {
  it("takes a count as given, at most every target", () => {
    expect(windowSize(2, 8)).toBe(2);
    expect(windowSize(20, 8)).toBe(8);
    expect(windowSize(1, 1)).toBe(1);
  });

  it("rounds a percentage up, never to an empty window", () => {
    expect(windowSize("25%", 8)).toBe(2);
    expect(windowSize("25%", 10)).toBe(3);
    expect(windowSize("1%", 3)).toBe(1);
    expect(windowSize("100%", 20)).toBe(20);
    expect(windowSize("50%", 0)).toBe(0);
  });

  it("cuts the targets into batches in their order", () => {
    expect(rollingBatches(["a", "b", "c", "d", "e"], 2)).toEqual([["a", "b"], ["c", "d"], ["e"]]);
    expect(rollingBatches(["a", "b", "c", "d", "e", "f", "g", "h"], "25%")).toEqual([
      ["a", "b"],
      ["c", "d"],
      ["e", "f"],
      ["g", "h"],
    ]);
    expect(rollingBatches(["a", "b", "c"], "100%")).toEqual([["a", "b", "c"]]);
    expect(rollingBatches([], "100%")).toEqual([]);
  });
});

describe("the rolling field of a step", () => {
  const step = (rolling: unknown, roles = ["web"]) =>
    processSchema.safeParse({ steps: [{ name: "deploy", kind: "script", roles, rolling, config: {} }] });

  it("accepts a count or a percentage, with a pause that defaults to 0", () => {
    const parsed = step({ window: "25%" });
    expect(parsed.success).toBe(true);
    expect(parsed.data?.steps[0]?.rolling).toEqual({ window: "25%", pauseSeconds: 0 });
    expect(step({ window: 3, pauseSeconds: 10 }).success).toBe(true);
  });

  it("refuses a window that is no count or percentage, naming the field and what to write", () => {
    for (const window of ["0%", "101%", "25", "a quarter", 0, -1, 1.5]) {
      const parsed = step({ window });
      expect(parsed.success, String(window)).toBe(false);
      const issue = parsed.error?.issues[0];
      expect(issue?.path.slice(-2)).toEqual(["rolling", "window"]);
    }
    const text = step({ window: "a quarter" }).error?.issues[0]?.message;
    expect(text).toContain('("25%")');
  });

  it("refuses unknown fields, a negative or huge pause, and a rolling step without roles", () => {
    expect(step({ window: 2, batch: 3 }).success).toBe(false);
    expect(step({ window: 2, pauseSeconds: -1 }).error?.issues[0]?.path.slice(-1)).toEqual(["pauseSeconds"]);
    expect(step({ window: 2, pauseSeconds: 4000 }).success).toBe(false);
    const noRoles = step({ window: 2 }, []);
    expect(noRoles.error?.issues[0]?.path.slice(-1)).toEqual(["rolling"]);
    expect(noRoles.error?.issues[0]?.message).toContain("give it roles");
  });
});
