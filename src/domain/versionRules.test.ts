import fc from "fast-check";
import { describe, expect, it } from "vitest";
import { InputError } from "./errors.js";
import { processSchema, storedProcessSchema } from "./process.js";
import {
  matches,
  nextVersion,
  pickLatest,
  storedVersionRuleSchema,
  type VersionRule,
  versionRuleSchema,
} from "./versionRules.js";

const semver = (range: string): VersionRule => ({ kind: "semver", range });
const regex = (pattern: string): VersionRule => ({ kind: "regex", pattern });

/** The tags of `candidates` that the range admits. */
const admitted = (range: string, candidates: string[]) => candidates.filter((tag) => matches(tag, semver(range)));

describe("semver rules", () => {
  const tags = ["0.9.0", "1.0.0", "1.2.0", "1.2.5", "1.3.0", "1.10.1", "2.0.0", "2.1.0", "3.0.0-rc.1", "latest", "1.2"];

  it("admits exactly the versions a range names", () => {
    expect(admitted("1.2.5", tags)).toEqual(["1.2.5"]);
    expect(admitted("=1.2.5", tags)).toEqual(["1.2.5"]);
    expect(admitted("^1.2.0", tags)).toEqual(["1.2.0", "1.2.5", "1.3.0", "1.10.1"]);
    expect(admitted("~1.2.0", tags)).toEqual(["1.2.0", "1.2.5"]);
    expect(admitted("~1", tags)).toEqual(["1.0.0", "1.2.0", "1.2.5", "1.3.0", "1.10.1"]);
    expect(admitted(">=1.3.0", tags)).toEqual(["1.3.0", "1.10.1", "2.0.0", "2.1.0"]);
    expect(admitted("<1.2.0", tags)).toEqual(["0.9.0", "1.0.0"]);
    expect(admitted(">1.2.5 <=2.0.0", tags)).toEqual(["1.3.0", "1.10.1", "2.0.0"]);
    expect(admitted(">= 1.2.0 < 1.3", tags)).toEqual(["1.2.0", "1.2.5"]);
    expect(admitted("1.x", tags)).toEqual(["1.0.0", "1.2.0", "1.2.5", "1.3.0", "1.10.1"]);
    expect(admitted("1.2.*", tags)).toEqual(["1.2.0", "1.2.5"]);
    expect(admitted("2", tags)).toEqual(["2.0.0", "2.1.0"]);
    expect(admitted("*", tags)).toEqual(["0.9.0", "1.0.0", "1.2.0", "1.2.5", "1.3.0", "1.10.1", "2.0.0", "2.1.0"]);
    expect(admitted("~1.2.0 || >=2.1.0", tags)).toEqual(["1.2.0", "1.2.5", "2.1.0"]);
    expect(admitted("1.2 - 1.3", tags)).toEqual(["1.2.0", "1.2.5", "1.3.0"]);
    expect(admitted("1.2.5 - 2.0.0", tags)).toEqual(["1.2.5", "1.3.0", "1.10.1", "2.0.0"]);
  });

  it("narrows caret ranges below 1.0.0 as npm does", () => {
    const zeros = ["0.0.3", "0.0.4", "0.2.3", "0.2.9", "0.3.0", "1.0.0"];
    expect(admitted("^0.2.3", zeros)).toEqual(["0.2.3", "0.2.9"]);
    expect(admitted("^0.0.3", zeros)).toEqual(["0.0.3"]);
    expect(admitted("^0.0", zeros)).toEqual(["0.0.3", "0.0.4"]);
    expect(admitted("^0", zeros)).toEqual(["0.0.3", "0.0.4", "0.2.3", "0.2.9", "0.3.0"]);
  });

  it("leaves prereleases out unless the range names a prerelease of the same version", () => {
    const candidates = ["1.0.0", "2.0.0-rc.1", "2.0.0-rc.2", "2.0.0", "2.1.0-beta.1"];
    expect(admitted(">=1.0.0", candidates)).toEqual(["1.0.0", "2.0.0"]);
    expect(admitted("^2.0.0-rc.2", candidates)).toEqual(["2.0.0-rc.2", "2.0.0"]);
    expect(admitted(">=2.0.0-rc.1", candidates)).toEqual(["2.0.0-rc.1", "2.0.0-rc.2", "2.0.0"]);
    expect(admitted("2.1.0-beta.1", candidates)).toEqual(["2.1.0-beta.1"]);
    expect(pickLatest(["2.0.0-rc.1", "2.0.0-rc.2", "1.9.0"], semver(">=2.0.0-rc.1"))).toBe("2.0.0-rc.2");
  });

  it("reads tags with a leading v and ignores tags that are not full versions", () => {
    expect(admitted("^1.0.0", ["v1.4.0", "1.4", "1.4.0-alpine", "1.04.0", "V1.5.0", "latest"])).toEqual(["v1.4.0"]);
  });

  it("picks the highest admitted version, by precedence rather than by text", () => {
    expect(pickLatest(tags, semver("^1.0.0"))).toBe("1.10.1");
    expect(pickLatest(tags, semver("*"))).toBe("2.1.0");
    expect(pickLatest(tags, semver(">=4"))).toBeUndefined();
    expect(pickLatest([], semver("*"))).toBeUndefined();
    // The same version spelled twice: the plain spelling wins, whatever the order.
    expect(pickLatest(["v1.2.3", "1.2.3"], semver("*"))).toBe("1.2.3");
    expect(pickLatest(["1.2.3", "v1.2.3"], semver("*"))).toBe("1.2.3");
  });

  it("orders prereleases by semver precedence", () => {
    const prereleases = ["1.0.0-alpha", "1.0.0-alpha.1", "1.0.0-alpha.beta", "1.0.0-beta.2", "1.0.0-beta.11"];
    const rule = semver(">=1.0.0-alpha <1.0.0");
    expect(pickLatest(prereleases, rule)).toBe("1.0.0-beta.11");
    expect(pickLatest(prereleases.slice(0, 3), rule)).toBe("1.0.0-alpha.beta");
    expect(pickLatest([...prereleases, "1.0.0"], semver(">=1.0.0-alpha"))).toBe("1.0.0");
  });

  it("picks the greatest of any set of stable versions for '*'", () => {
    const triple = fc.tuple(fc.nat(30), fc.nat(30), fc.nat(30));
    fc.assert(
      fc.property(fc.array(triple, { minLength: 1, maxLength: 20 }), (versions) => {
        const greatest = [...versions].sort((a, b) => b[0] - a[0] || b[1] - a[1] || b[2] - a[2])[0];
        expect(
          pickLatest(
            versions.map((version) => version.join(".")),
            semver("*"),
          ),
        ).toBe(greatest?.join("."));
      }),
    );
  });

  it("rejects ranges that do not parse, saying what is wrong", () => {
    for (const range of ["1.2.3.4", "^", "1.x.3", ">=abc", "1.0 ||", "1.2.x-beta", "~>"]) {
      expect(() => matches("1.0.0", semver(range)), range).toThrow(InputError);
    }
    const result = versionRuleSchema.safeParse(semver("^1.2.3.4"));
    expect(result.success).toBe(false);
    expect(result.error?.issues[0]?.message).toContain('"1.2.3.4" is not a version');
    expect(result.error?.issues[0]?.path).toEqual(["range"]);
  });
});

describe("regex rules", () => {
  it("matches the whole tag, not a part of it", () => {
    expect(matches("1.4-alpine", regex("\\d+\\.\\d+-alpine"))).toBe(true);
    expect(matches("1.4-alpine-slim", regex("\\d+\\.\\d+-alpine"))).toBe(false);
    expect(matches("x1.4-alpine", regex("\\d+\\.\\d+-alpine"))).toBe(false);
    expect(matches("main-2", regex("main-\\d+|release-\\d+"))).toBe(true);
    expect(matches("main-2x", regex("main-\\d+|release-\\d+"))).toBe(false);
  });

  it("takes the highest semantic version, then natural order for other tags", () => {
    expect(pickLatest(["1.9.0-alpine", "1.10.0-alpine", "1.2.0-alpine"], regex(".*-alpine"))).toBe("1.10.0-alpine");
    expect(pickLatest(["build-9", "build-10", "build-1"], regex("build-\\d+"))).toBe("build-10");
    expect(pickLatest(["latest", "1.0.0", "nightly"], regex(".*"))).toBe("1.0.0");
    expect(pickLatest(["1.0.0", "2.0.0-rc.1"], regex(".*"))).toBe("2.0.0-rc.1");
    expect(pickLatest(["main"], regex("release-.*"))).toBeUndefined();
  });

  it("rejects a pattern that is not a regular expression", () => {
    const result = versionRuleSchema.safeParse(regex("(unclosed"));
    expect(result.success).toBe(false);
    expect(result.error?.issues[0]?.message).toContain("not a valid regular expression");
  });

  it("refuses what RE2 cannot run when the rule is saved, saying what is not supported", () => {
    const problem = (pattern: string) => {
      const result = versionRuleSchema.safeParse(regex(pattern));
      expect(result.success, pattern).toBe(false);
      expect(result.error?.issues[0]?.path).toEqual(["pattern"]);
      return result.error?.issues[0]?.message;
    };
    expect(problem("(\\d+)\\.\\1")).toMatch(/^backreferences such as \\1 or \\k<name> are not supported/);
    expect(problem("(?<major>\\d+)-\\k<major>")).toMatch(/^backreferences/);
    expect(problem("\\d+(?=-alpine)")).toMatch(/^lookahead and lookbehind .* are not supported/);
    expect(problem("(?<!rc)\\d+")).toMatch(/^lookahead and lookbehind/);
    expect(problem("\\u0031\\.\\d+")).toContain("write a code point as \\x{20AC}");
    expect(problem("[a-z]{1,1000}[0-9]{1,1000}")).toMatch(/^the pattern is too large: .* at most 2000/);
    expect(() => matches("1", regex("(a)\\1"))).toThrow(/^version rule pattern: backreferences/);
  });

  it("matches a catastrophic pattern against many long tags in time proportional to them", () => {
    // With RegExp, `(((.+)+)+)+!` against one 30-character tag without '!' runs for minutes.
    const tags = Array.from({ length: 20_000 }, (_, index) => `${"a".repeat(100)}-${index}`);
    const started = performance.now();
    expect(pickLatest(tags, regex("(((.+)+)+)+!"))).toBeUndefined();
    expect(pickLatest([...tags, "build-7!"], regex("(((.+)+)+)+!"))).toBe("build-7!");
    expect(pickLatest(tags, regex("a+-\\d+"))).toBe(`${"a".repeat(100)}-19999`);
    expect(performance.now() - started).toBeLessThan(5_000);
  });

  it("keeps the meaning of ordinary patterns: anchors, alternatives, classes and flags", () => {
    expect(matches("v1.2.3", regex("^v\\d+\\.\\d+\\.\\d+$"))).toBe(true);
    expect(matches("ab", regex("a|ab"))).toBe(true);
    expect(matches("ABC-1", regex("(?i)abc-\\d"))).toBe(true);
    expect(matches("abc-1", regex("[[:upper:]]+-\\d"))).toBe(false);
    expect(matches("release_2", regex("\\w+"))).toBe(true);
    expect(matches("1.0", regex("\\d\\.\\d|"))).toBe(true);
    expect(matches("", regex("\\d\\.\\d|"))).toBe(true);
  });
});

describe("versionRuleSchema", () => {
  it("accepts both kinds and trims ranges", () => {
    expect(versionRuleSchema.parse({ kind: "semver", range: " ^1.2 " })).toEqual(semver("^1.2"));
    expect(versionRuleSchema.parse(regex("\\d+"))).toEqual(regex("\\d+"));
  });

  it("rejects unknown kinds, unknown fields and empty ranges", () => {
    expect(versionRuleSchema.safeParse({ kind: "latest" }).success).toBe(false);
    expect(versionRuleSchema.safeParse({ kind: "semver", range: "*", extra: 1 }).success).toBe(false);
    expect(versionRuleSchema.safeParse({ kind: "semver", range: "  " }).success).toBe(false);
  });

  it("refuses a pattern RE2 cannot run when saved, and reads it back when stored (ADR 0073)", () => {
    const lookahead = regex("1\\.0\\.(?!0)\\d+");
    expect(versionRuleSchema.safeParse(lookahead).error?.issues.map((issue) => issue.message)).toEqual([
      expect.stringMatching(/^lookahead and lookbehind/),
    ]);
    expect(storedVersionRuleSchema.parse(lookahead)).toEqual(lookahead);
    // Only the pattern's RE2 check is left out: the rest of the rule is checked as before.
    expect(storedVersionRuleSchema.safeParse({ kind: "semver", range: "not a range" }).success).toBe(false);
    expect(storedVersionRuleSchema.safeParse({ kind: "regex", pattern: "" }).success).toBe(false);
    // Using the rule is what fails, saying what RE2 does not support.
    expect(() => matches("1.0.1", lookahead)).toThrow(/^version rule pattern: lookahead and lookbehind/);

    const process = {
      images: [{ name: "web", feed: "local", repository: "demo/app", version: lookahead }],
      steps: [],
    };
    expect(processSchema.safeParse(process).error?.issues.map((issue) => issue.path)).toEqual([
      ["images", 0, "version", "pattern"],
    ]);
    expect(storedProcessSchema.parse(process).images[0]?.version).toEqual(lookahead);
  });
});

describe("nextVersion", () => {
  it("starts at 0 and counts up from the highest number used", () => {
    expect(nextVersion("1.0.#{n}", [])).toBe("1.0.0");
    expect(nextVersion("1.0.#{n}", ["1.0.0", "1.0.4", "1.0.2"])).toBe("1.0.5");
    expect(nextVersion("1.0.#{n}", ["1.1.9", "2.0.7", "1.0.3-beta", "1x0x8"])).toBe("1.0.0");
    expect(nextVersion("2024.#{n}-web", ["2024.9-web", "2024.10-web", "2023.50-web"])).toBe("2024.11-web");
    expect(nextVersion("#{n}", ["41", "abc"])).toBe("42");
    expect(nextVersion("1.0.#{n}", ["1.0.99999999999999999999"])).toBe("1.0.100000000000000000000");
  });

  it("needs #{n} exactly once", () => {
    expect(() => nextVersion("1.0.0", [])).toThrow(/#\{n\} exactly once/);
    expect(() => nextVersion("#{n}.#{n}", [])).toThrow(InputError);
  });
});
