import { describe, expect, it } from "vitest";
import { InputError } from "./errors.js";
import { compileLinearPattern, linearPatternProblem, MAX_PATTERN_PROGRAM_SIZE } from "./linearPattern.js";

describe("compileLinearPattern", () => {
  it("gives the answers RegExp gives for patterns that need no backtracking", () => {
    const cases: [pattern: string, same: RegExp, text: string][] = [
      ["^version \\d+\\.\\d+\\.\\d+\\n$", /^version \d+\.\d+\.\d+\n$/, "version 1.0.2\n"],
      ["^version \\d+$", /^version \d+$/, "version 1\nmore"],
      ["(?i)ready", /ready/i, "READY"],
      ["(?<name>ok)|fine", /(?<name>ok)|fine/, "all fine"],
      ["[^\\]]+\\]", /[^\]]+\]/, "[x]"],
      ["\\x{263a}", /\u263a/, "smile ☺"],
      ["\\bword\\b", /\bword\b/, "a wordy text"],
      ["a{2,3}", /a{2,3}/, "caab"],
    ];
    for (const [pattern, same, text] of cases) {
      expect(compileLinearPattern(pattern).test(text), pattern).toBe(same.test(text));
    }
  });

  it("matches a catastrophic backtracking pattern in time proportional to the text", () => {
    const text = `${"a".repeat(1024 * 1024)}!`;
    const started = performance.now();
    expect(compileLinearPattern("^(a+)+$").test(text)).toBe(false);
    expect(performance.now() - started).toBeLessThan(1_000);
  });

  it("names what RE2 does not support and what to write instead", () => {
    expect(linearPatternProblem("(a)\\1")).toBe(
      "backreferences such as \\1 or \\k<name> are not supported: patterns run on RE2, which matches in time proportional to the text; match the repeated text itself instead",
    );
    expect(linearPatternProblem("foo(?!bar)")).toBe(
      "lookahead and lookbehind ((?=…), (?!…), (?<=…), (?<!…)) are not supported: patterns run on RE2, which matches in time proportional to the text; match the surrounding text instead",
    );
    expect(linearPatternProblem("(?<=a)b")).toMatch(/^lookahead and lookbehind/);
    expect(linearPatternProblem("\\u00e9")).toBe(
      "\\u escapes are not RE2 syntax: write a code point as \\x{20AC}; see https://github.com/google/re2/wiki/Syntax",
    );
    expect(linearPatternProblem("(unclosed")).toBe(
      "not a valid regular expression (RE2 syntax): missing closing ): `(unclosed`; see https://github.com/google/re2/wiki/Syntax",
    );
    expect(linearPatternProblem("\\d+")).toBeUndefined();
    expect(() => compileLinearPattern("a**")).toThrow(InputError);
  });

  it(`refuses patterns whose repetitions expand past ${MAX_PATTERN_PROGRAM_SIZE} steps, before compiling the largest`, () => {
    expect(linearPatternProblem("[a-z]{1,900}")).toBeUndefined();
    expect(linearPatternProblem("[a-z]{1,1000}x{1,100}")).toMatch(
      new RegExp(
        `^the pattern is too large: its repetitions expand to about \\d+ steps, at most ${MAX_PATTERN_PROGRAM_SIZE} are allowed`,
      ),
    );
    // 999 characters that RE2 would compile to 222,000 instructions (most of a second).
    const huge = ".{0,1000}".repeat(111);
    const started = performance.now();
    expect(linearPatternProblem(huge)).toMatch(/^the pattern is too large/);
    expect(performance.now() - started).toBeLessThan(100);
  });
});
