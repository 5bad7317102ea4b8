import { describe, expect, it } from "vitest";
import { archiveEntryProblem, packageVersionSchema, versionsPastRetention } from "./packages.js";

describe("archive entries of a package (ADR 0044)", () => {
  it("accepts files, directories and links that stay inside", () => {
    expect(archiveEntryProblem({ path: "./", type: "directory" })).toBeUndefined();
    expect(archiveEntryProblem({ path: "app/server.js", type: "file" })).toBeUndefined();
    expect(
      archiveEntryProblem({ path: "app/lib/entry.js", type: "symlink", linkTarget: "../server.js" }),
    ).toBeUndefined();
    expect(archiveEntryProblem({ path: "app/a/b/c", type: "symlink", linkTarget: "../../x/./y" })).toBeUndefined();
    expect(archiveEntryProblem({ path: "app/hard", type: "hardlink", linkTarget: "app/server.js" })).toBeUndefined();
  });

  it("refuses each way out: '..', absolute and Windows paths, links out, special files", () => {
    expect(archiveEntryProblem({ path: "../x", type: "file" })).toContain("'..' segment");
    expect(archiveEntryProblem({ path: "a/../../x", type: "file" })).toContain("'..' segment");
    expect(archiveEntryProblem({ path: "/etc/passwd", type: "file" })).toContain("absolute path");
    expect(archiveEntryProblem({ path: "C:\\evil", type: "file" })).toContain("Windows path");
    expect(archiveEntryProblem({ path: "a/link", type: "symlink", linkTarget: "/etc/shadow" })).toContain(
      "absolute path",
    );
    expect(archiveEntryProblem({ path: "a/link", type: "symlink", linkTarget: "../../etc" })).toContain(
      "outside the package",
    );
    // From the top directory one step up is already out.
    expect(archiveEntryProblem({ path: "link", type: "symlink", linkTarget: ".." })).toContain("outside the package");
    expect(archiveEntryProblem({ path: "a/hard", type: "hardlink", linkTarget: "../x" })).toContain(
      "outside the package",
    );
    expect(archiveEntryProblem({ path: "a/link", type: "symlink", linkTarget: "" })).toContain("no target");
    expect(archiveEntryProblem({ path: "dev/null", type: "other" })).toContain("device, FIFO");
  });

  it("takes release-like versions only", () => {
    expect(packageVersionSchema.safeParse("1.4.2+build_7-rc").success).toBe(true);
    for (const bad of ["", "-1", ".1", "1/2", "1 2", "a".repeat(101)]) {
      expect(packageVersionSchema.safeParse(bad).success, bad).toBe(false);
    }
  });

  it("retention removes past the newest N, never a version a deployed release pins", () => {
    const versions = ["v5", "v4", "v3", "v2", "v1"].map((id) => ({ id }));
    expect(versionsPastRetention(versions, 3, new Set()).map((v) => v.id)).toEqual(["v2", "v1"]);
    expect(versionsPastRetention(versions, 3, new Set(["v1"])).map((v) => v.id)).toEqual(["v2"]);
    expect(versionsPastRetention(versions, 10, new Set())).toEqual([]);
  });
});
