import { describe, expect, it } from "vitest";
import { autoDeployTargets, canDeploy, type ProgressionPhase } from "./progression.js";

const phases: ProgressionPhase[] = [
  { name: "Dev", environmentIds: ["dev"], autoDeploy: true, optional: false },
  { name: "Test", environmentIds: ["test", "qa"], autoDeploy: false, optional: false },
  { name: "Prod", environmentIds: ["prod"], autoDeploy: false, optional: false },
];
const names = { lifecycle: "Default", environment: (id: string) => id };

describe("lifecycle progression", () => {
  it("allows the first phase at once and later phases only after the earlier ones", () => {
    expect(canDeploy(phases, "dev", new Set(), names)).toEqual({ allowed: true });
    const refused = canDeploy(phases, "prod", new Set(["dev", "test"]), names);
    expect(refused).toEqual({
      allowed: false,
      reason: "lifecycle 'Default' requires phase 'Test' first: deploy this release to 'qa' before 'prod'",
    });
    expect(canDeploy(phases, "prod", new Set(["dev", "test", "qa"]), names)).toEqual({ allowed: true });
  });

  it("lets an optional phase be skipped", () => {
    const withOptional = phases.map((phase) => (phase.name === "Test" ? { ...phase, optional: true } : phase));
    expect(canDeploy(withOptional, "prod", new Set(["dev"]), names)).toEqual({ allowed: true });
  });

  it("refuses an environment outside the lifecycle, unless it is ephemeral: then any release may go there", () => {
    expect(canDeploy(phases, "mars", new Set(), names)).toEqual({
      allowed: false,
      reason:
        "environment 'mars' is not in lifecycle 'Default'; add it to a phase, make it ephemeral (then any release may go there) or deploy elsewhere",
    });
    expect(canDeploy(phases, "branch-a", new Set(), names, { ephemeral: true })).toEqual({ allowed: true });
    // In a phase, an ephemeral environment follows the lifecycle like any other.
    expect(canDeploy(phases, "prod", new Set(["dev"]), names, { ephemeral: true })).toMatchObject({ allowed: false });
  });

  it("names the auto-deploy environments that became reachable", () => {
    expect(autoDeployTargets(phases, new Set())).toEqual(["dev"]);
    expect(autoDeployTargets(phases, new Set(["dev"]))).toEqual([]);
    const autoTest = phases.map((phase) => (phase.name === "Test" ? { ...phase, autoDeploy: true } : phase));
    expect(autoDeployTargets(autoTest, new Set(["dev"]))).toEqual(["test", "qa"]);
    expect(autoDeployTargets(autoTest, new Set())).toEqual(["dev"]);
  });
});
