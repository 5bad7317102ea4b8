import { describe, expect, it } from "vitest";
import { describeFieldChange, fieldChanges } from "./fieldDiff.js";
import type { Step } from "./process.js";
import { diffReleases, type ReleaseSide } from "./releaseDiff.js";

const step = (name: string, script: string, roles: string[] = []): Step => ({
  name,
  kind: "script",
  roles,
  environments: [],
  excludeEnvironments: [],
  condition: "success",
  required: true,
  config: { script },
});

const side = (overrides: Partial<ReleaseSide>): ReleaseSide => ({
  version: "1",
  notes: "",
  images: [],
  steps: [],
  variables: [],
  ...overrides,
});

const unscoped = { environments: [], roles: [], targets: [] };

describe("diffReleases", () => {
  it("reports removed and moved steps, and a changed field by its path", () => {
    const diff = diffReleases(
      side({ steps: [step("build", "make"), step("test", "make test"), step("old", "x")] }),
      side({ version: "2", steps: [step("test", "make test", ["web"]), step("build", "make all")] }),
    );
    expect(diff.steps).toEqual([
      {
        name: "build",
        change: "changed",
        kind: "script",
        fields: [
          { field: "config.script", from: "make", to: "make all" },
          { field: "position", from: 1, to: 2 },
        ],
      },
      {
        name: "test",
        change: "changed",
        kind: "script",
        fields: [
          { field: "roles", from: [], to: ["web"] },
          { field: "position", from: 2, to: 1 },
        ],
      },
      { name: "old", change: "removed", kind: "script" },
    ]);
  });

  it("never carries a sensitive value, also when a variable stops or starts being sensitive", () => {
    const diff = diffReleases(
      side({
        variables: [
          { name: "Token", sensitive: true, value: "secret-one", scope: unscoped },
          { name: "Plain", sensitive: false, value: "visible", scope: unscoped },
          { name: "Gone", sensitive: true, value: "secret-gone", scope: unscoped },
        ],
      }),
      side({
        variables: [
          { name: "Token", sensitive: false, value: "now-plain", scope: unscoped },
          { name: "Plain", sensitive: true, value: "secret-two", scope: unscoped },
          { name: "New", sensitive: true, value: "secret-new", scope: { ...unscoped, roles: ["web"] } },
        ],
      }),
    );
    const text = JSON.stringify(diff);
    for (const secret of ["secret-one", "secret-two", "secret-gone", "secret-new", "now-plain", "visible"]) {
      expect(text).not.toContain(secret);
    }
    expect(
      diff.variables.map((variable) => `${variable.change} ${variable.name} ${variable.note ?? ""}`.trim()),
    ).toEqual([
      "removed Gone",
      "added New",
      "changed Plain sensitive: false → true",
      "changed Token sensitive: true → false",
    ]);
  });
});

describe("fieldChanges", () => {
  it("reports a secret field only as changed", () => {
    const changes = fieldChanges({ ssh: { host: "a", privateKey: "old" } }, { ssh: { host: "b", privateKey: "new" } });
    expect(changes.map(describeFieldChange)).toEqual([
      'ssh.host: "a" → "b"',
      "ssh.privateKey: changed (sensitive, not shown)",
    ]);
  });
});

describe("release diff with variable sets", () => {
  it("tells a set's value from the project's of the same name and scope", () => {
    const side = (version: string, setValue: string) => ({
      version,
      notes: "",
      images: [],
      steps: [],
      variables: [
        { name: "Level", sensitive: false, value: "project", scope: { environments: [], roles: [], targets: [] } },
        {
          name: "Level",
          sensitive: false,
          value: setValue,
          scope: { environments: [], roles: [], targets: [] },
          set: "common",
        },
      ],
    });
    expect(diffReleases(side("1", "a"), side("2", "b")).variables).toEqual([
      {
        name: "Level",
        scope: { environments: [], roles: [], targets: [] },
        set: "common",
        change: "changed",
        sensitive: false,
        from: "a",
        to: "b",
      },
    ]);
  });
});
