import { describe, expect, it } from "vitest";
import { blueGreenOptionsSchema } from "./config.js";

describe("blueGreen.switch", () => {
  it("switches target by target unless asked to switch all at once", () => {
    expect(blueGreenOptionsSchema.parse({}).switch).toBe("targetByTarget");
    expect(blueGreenOptionsSchema.parse({ switch: "allAtOnce" }).switch).toBe("allAtOnce");
  });

  it("refuses anything else, naming both choices", () => {
    const result = blueGreenOptionsSchema.safeParse({ switch: "all" });
    expect(result.success).toBe(false);
    expect(result.error?.issues[0]?.path).toEqual(["switch"]);
    expect(result.error?.issues[0]?.message).toMatch(/targetByTarget .* or allAtOnce/);
  });
});
