import { describe, expect, it } from "vitest";
import { slugify } from "./common.js";
import { checkPhases } from "./lifecycles.js";

describe("checkPhases", () => {
  const phase = (name: string, ...environmentIds: string[]) => ({
    name,
    environmentIds,
    autoDeploy: false,
    optional: false,
  });

  it("accepts distinct phases", () => {
    expect(checkPhases([phase("Dev", "e1"), phase("Test", "e2", "e3"), phase("Prod", "e4")])).toEqual([]);
  });

  it("reports an environment in two phases and duplicate phase names", () => {
    expect(checkPhases([phase("Dev", "e1"), phase("dev", "e2", "e1")])).toEqual([
      { pointer: "/phases/1/name", detail: expect.stringContaining("already used by phase 0") },
      { pointer: "/phases/1/environments/1", detail: expect.stringContaining("already in phase 0") },
    ]);
  });
});

describe("slugify", () => {
  it("makes URL-safe slugs from names", () => {
    expect(slugify("Web API (EU)")).toBe("web-api-eu");
    expect(slugify("  Prod  ")).toBe("prod");
    expect(slugify("Café Crème")).toBe("cafe-creme");
    expect(slugify("!!!")).toBe("");
  });
});
