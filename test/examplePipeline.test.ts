import { readFileSync } from "node:fs";
import { join } from "node:path";
import { validateWorkflow } from "@action-validator/core";
import { describe, expect, it } from "vitest";

const EXAMPLE = join(import.meta.dirname, "..", "examples", "pipeline");
const read = (path: string) => readFileSync(join(EXAMPLE, path), "utf8");

/** The `ferry …` commands a file runs, with the shell's variables as they are written. */
function ferryCommands(text: string): string[] {
  return [...text.matchAll(/(?:^|['"\s])(?:\$ferry|ferry) ((?:release wait|promote)[^'\n]*)/gm)].map((match) =>
    (match[1] ?? "")
      .replace(/\s+--timeout\s+\S+/, "")
      .replace(/"\$project"/g, "pipeline-app")
      .replace(/\$\{?VERSION\}?|\$version/g, "VERSION")
      .replace(/"/g, "")
      .trim(),
  );
}

describe("examples/pipeline: the CI files", () => {
  it("the GitHub Actions workflow is valid by GitHub's own workflow schema (action-validator)", () => {
    const state = validateWorkflow(read(".github/workflows/pipeline.yml"));
    expect(state.errors).toEqual([]);
    // The validator does refuse what GitHub would refuse.
    const broken = validateWorkflow("on: push\njobs:\n  deliver:\n    runs-on: self-hosted\n    stepz: []\n");
    expect(broken.errors.length).toBeGreaterThan(0);
  });

  it("the Jenkinsfile and the workflow run the same ferry stages as pipeline.sh", () => {
    // Jenkins's declarative linter runs only inside a Jenkins controller (no package-registry
    // validator exists), so the Jenkinsfile is held to pipeline.sh's commands instead.
    const script = ferryCommands(read("pipeline.sh"));
    expect(script).toEqual([
      "release wait VERSION --project pipeline-app --env dev",
      "promote --project pipeline-app --to prod --wait",
    ]);
    expect(ferryCommands(read("Jenkinsfile"))).toEqual(script);
    expect(ferryCommands(read(".github/workflows/pipeline.yml"))).toEqual(script);
  });
});
