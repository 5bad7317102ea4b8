import { InvalidArgumentError } from "commander";
import { describe, expect, it } from "vitest";
import { parseGrant } from "./teams.js";

describe("--grant syntax", () => {
  it("reads a role and its projects and environments, '*' or empty meaning all", () => {
    expect(parseGrant("deployer:*:dev,test")).toEqual([{ role: "deployer", environments: ["dev", "test"] }]);
    expect(parseGrant("viewer")).toEqual([{ role: "viewer" }]);
    expect(parseGrant("tester:shop, api")).toEqual([{ role: "tester", projects: ["shop", "api"] }]);
    expect(parseGrant("tester::prod")).toEqual([{ role: "tester", environments: ["prod"] }]);
  });

  it("appends to the grants given before", () => {
    expect(parseGrant("viewer", parseGrant("deployer::dev")).map((grant) => grant.role)).toEqual([
      "deployer",
      "viewer",
    ]);
  });

  it("rejects malformed grants", () => {
    expect(() => parseGrant("")).toThrow(InvalidArgumentError);
    expect(() => parseGrant(":shop")).toThrow(InvalidArgumentError);
    expect(() => parseGrant("deployer:shop:dev:extra")).toThrow(InvalidArgumentError);
    expect(() => parseGrant("deployer:*:dev,,test")).toThrow(InvalidArgumentError);
    expect(() => parseGrant("deployer:*,shop")).toThrow(InvalidArgumentError);
  });
});
