import { InvalidArgumentError } from "commander";
import { describe, expect, it } from "vitest";
import { parsePhase } from "./lifecycles.js";

describe("--phase syntax", () => {
  it("reads environments, an optional name and flags", () => {
    expect(parsePhase("dev+auto")).toEqual([{ environments: ["dev"], autoDeploy: true, optional: false }]);
    expect(parsePhase("Production=prod-eu,prod-us+optional", [])).toEqual([
      { name: "Production", environments: ["prod-eu", "prod-us"], autoDeploy: false, optional: true },
    ]);
  });

  it("appends to the phases given before, in order", () => {
    const phases = parsePhase("test", parsePhase("dev"));
    expect(phases.map((phase) => phase.environments)).toEqual([["dev"], ["test"]]);
  });

  it("rejects malformed specs", () => {
    expect(() => parsePhase("dev+sometimes")).toThrow(InvalidArgumentError);
    expect(() => parsePhase("dev,,test")).toThrow(InvalidArgumentError);
    expect(() => parsePhase("=")).toThrow(InvalidArgumentError);
  });
});

describe("--phase flags for failed steps and approvals", () => {
  it("reads +accept-skipped and +separate-approver", () => {
    expect(parsePhase("Prod=prod+separate-approver+accept-skipped")).toEqual([
      {
        name: "Prod",
        environments: ["prod"],
        autoDeploy: false,
        optional: false,
        acceptSkippedSteps: true,
        separateApprover: true,
      },
    ]);
  });
});
