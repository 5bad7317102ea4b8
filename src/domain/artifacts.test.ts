import { describe, expect, it } from "vitest";
import {
  artifactNameProblem,
  artifactRetentionSchema,
  formatArtifactMessage,
  parseArtifactMessage,
} from "./artifacts.js";
import { runsPastRetention } from "./retention.js";

describe("artifact names", () => {
  it("takes one file name and refuses path tricks, saying what a name may be", () => {
    for (const good of ["orders.sql.gz", "logs-2026-12-03.tar.gz", "a", "x+y_1"]) {
      expect(artifactNameProblem(good)).toBeUndefined();
    }
    for (const bad of ["", "../etc/passwd", "a/b", ".hidden", "-rf", "two words", "tab\there", "é", "x".repeat(201)]) {
      expect(artifactNameProblem(bad), bad).toBeDefined();
    }
    expect(artifactNameProblem("a/b")).toContain("no '/'");
  });
});

describe("the artifact service message", () => {
  it("reads path and name, with |' and || escapes, and ignores other lines", () => {
    expect(parseArtifactMessage("##ferry[artifact path='/var/b/x.gz' name='x.gz']")).toEqual({
      path: "/var/b/x.gz",
      name: "x.gz",
    });
    expect(parseArtifactMessage("##ferry[artifact path='it|'s || here']")).toEqual({
      path: "it's | here",
      name: undefined,
    });
    expect(parseArtifactMessage("hello")).toBeUndefined();
    expect(parseArtifactMessage(" ##ferry[artifact path='x']")).toBeUndefined();
  });

  it("says why a malformed message attached nothing", () => {
    expect(parseArtifactMessage("##ferry[artifact path=x]")).toMatchObject({
      problem: expect.stringContaining("malformed"),
    });
    expect(parseArtifactMessage("##ferry[artifact name='x']")).toMatchObject({
      problem: expect.stringContaining("path"),
    });
    expect(parseArtifactMessage("##ferry[artifact path='a' size='1']")).toMatchObject({
      problem: expect.stringContaining("'size'"),
    });
    expect(parseArtifactMessage("##ferry[artifact path='a|x']")).toMatchObject({
      problem: expect.stringContaining("escape"),
    });
    expect(parseArtifactMessage("##ferry[setVariable name='a']")).toMatchObject({
      problem: expect.stringContaining("unknown"),
    });
  });

  it("formats what it parses back, whatever the path holds", () => {
    for (const path of ["/tmp/a b/it's|x.gz", "rel/plain.txt"]) {
      expect(parseArtifactMessage(formatArtifactMessage(path, "n.txt"))).toEqual({ path, name: "n.txt" });
    }
  });
});

describe("artifact retention", () => {
  const now = new Date("2026-12-03T12:00:00Z");
  const run = (taskId: string, daysAgo: number, succeeded = true) => ({
    taskId,
    finishedAt: new Date(now.getTime() - daysAgo * 86_400_000).toISOString(),
    succeeded,
  });

  it("keeps the newest runs' artifacts by count and by age", () => {
    const runs = [run("a", 1), run("b", 2), run("c", 3), run("d", 10)];
    expect(runsPastRetention(runs, { keepRuns: 2, keepDays: null }, now).sort()).toEqual(["c", "d"]);
    expect(runsPastRetention(runs, { keepRuns: null, keepDays: 5 }, now)).toEqual(["d"]);
  });

  it("never removes the artifacts of the newest run that succeeded, however old", () => {
    const runs = [run("failed-1", 1, false), run("failed-2", 2, false), run("good", 40), run("older-good", 50)];
    expect(runsPastRetention(runs, { keepRuns: 1, keepDays: 7 }, now).sort()).toEqual(["failed-2", "older-good"]);
  });

  it("refuses a policy that keeps everything, and two for one environment", () => {
    expect(artifactRetentionSchema.safeParse({ policies: [{ environment: "prod" }] }).success).toBe(false);
    expect(
      artifactRetentionSchema.safeParse({ policies: [{ keepRuns: 1 }, { environment: "*", keepDays: 2 }] }).success,
    ).toBe(false);
  });
});
