import type { RE2JS } from "re2js";
import { z } from "zod";
import { InputError } from "./errors.js";
import { compileLinearPattern, linearPatternProblem } from "./linearPattern.js";

/**
 * Version rules: which image tags of a feed a project takes, and which one is the latest.
 *
 * - `semver`: tags that are semantic versions (`1.4.2`, `v1.4.2`, `2.0.0-rc.1`) within a
 *   range written as npm writes them (`^1.2.0`, `~1.4`, `>=1.0.0 <2.0.0`, `1.x || 2.x`,
 *   `1.2.0 - 1.4`). Prerelease tags are left out unless a comparator of the range names a
 *   prerelease of the same major.minor.patch (`>=2.0.0-rc.1` admits `2.0.0-rc.2`, not
 *   `2.1.0-rc.1`): npm's rule, so a range means here what it means in package.json.
 * - `regex`: tags the pattern (RE2 syntax: no backreferences, no lookaround) matches in
 *   full; the latest is the highest semantic version among them, or, for tags that are not
 *   versions, the last in natural order (`build-10` after `build-9`). Versions rank above
 *   non-versions. RE2, not RegExp: a rule is matched against every tag of a feed, and a
 *   backtracking pattern such as `(((.+)+)+)+!` would hold the server for seconds per tag.
 *
 * Pure: no I/O. Own parser rather than the `semver` package: Docker tags are a narrower
 * language (no build metadata, an optional leading 'v'), and the whole of it is short.
 */

const NUMBER = "0|[1-9]\\d*";
const IDENTIFIER = "0|[1-9]\\d*|\\d*[A-Za-z-][0-9A-Za-z-]*";
const PRERELEASE = `(?:${IDENTIFIER})(?:\\.(?:${IDENTIFIER}))*`;
const BUILD = "[0-9A-Za-z-]+(?:\\.[0-9A-Za-z-]+)*";
const versionPattern = new RegExp(`^v?(${NUMBER})\\.(${NUMBER})\\.(${NUMBER})(?:-(${PRERELEASE}))?(?:\\+${BUILD})?$`);
const WILDCARD = "\\*|x|X";
const partialPattern = new RegExp(
  `^v?(${NUMBER}|${WILDCARD})(?:\\.(${NUMBER}|${WILDCARD})(?:\\.(${NUMBER}|${WILDCARD})(?:-(${PRERELEASE}))?(?:\\+${BUILD})?)?)?$`,
);

interface Version {
  major: number;
  minor: number;
  patch: number;
  prerelease: (string | number)[];
}

type Operator = "<" | "<=" | ">" | ">=" | "=";

interface Comparator {
  operator: Operator;
  version: Version;
}

/** Comparators that must all hold; an empty set admits every version. */
type ComparatorSet = Comparator[];

/** Sets of which one must hold (`||`). */
type Range = ComparatorSet[];

const RANGE_HINT = "write e.g. ^1.2.0, ~1.4, 1.x, >=1.0.0 <2.0.0, 1.2.0 - 1.4 or 1.x || 2.x";

/**
 * A version rule. `stored`: one read back from the database, saved perhaps before patterns
 * ran on RE2 (ADR 0073): its pattern is not checked again, so the process that holds it
 * still loads; a release that picks a tag by it fails naming the rule (feeds/latestTag.ts).
 */
function versionRuleSchemaOf(stored: boolean) {
  return z.discriminatedUnion("kind", [
    z.strictObject({
      kind: z.literal("semver"),
      range: z
        .string()
        .trim()
        .min(1, { message: `must not be empty: ${RANGE_HINT} (* for any version)` })
        .max(256)
        .superRefine((range, context) => {
          const problem = rangeProblem(range);
          if (problem) context.addIssue({ code: "custom", message: problem });
        }),
    }),
    z.strictObject({
      kind: z.literal("regex"),
      pattern: z
        .string()
        .min(1)
        .max(256)
        .superRefine((pattern, context) => {
          if (stored) return;
          const problem = linearPatternProblem(pattern);
          if (problem) context.addIssue({ code: "custom", message: problem });
        }),
    }),
  ]);
}

export const versionRuleSchema = versionRuleSchemaOf(false);
/** A rule as the store reads it back (see versionRuleSchemaOf). */
export const storedVersionRuleSchema = versionRuleSchemaOf(true);
export type VersionRule = z.infer<typeof versionRuleSchema>;

/** Whether a tag passes the rule. Throws InputError for a rule that does not parse. */
export function matches(tag: string, rule: VersionRule): boolean {
  return compileRule(rule)(tag);
}

/** The latest tag that passes the rule, or undefined when none does. */
export function pickLatest(tags: readonly string[], rule: VersionRule): string | undefined {
  const picker = latestTagPicker(rule);
  for (const tag of tags) picker.consider(tag);
  return picker.latest;
}

/** Takes tags one at a time and keeps the latest that passes, for a caller that pauses between them. */
export interface LatestTagPicker {
  consider(tag: string): void;
  readonly latest: string | undefined;
}

/**
 * A picker for the rule, compiled once for all the tags it will see. Throws InputError
 * for a rule that does not parse.
 */
export function latestTagPicker(rule: VersionRule): LatestTagPicker {
  const passes = compileRule(rule);
  let latest: string | undefined;
  return {
    consider(tag) {
      if (passes(tag) && (latest === undefined || compareTags(tag, latest) > 0)) latest = tag;
    },
    get latest() {
      return latest;
    },
  };
}

/**
 * The next release version for a pattern with one `#{n}`: n is one more than the highest n
 * among the existing versions that fit the pattern, or 0 when none does.
 * `nextVersion("1.0.#{n}", ["1.0.0", "1.0.4", "2.0.7"])` is "1.0.5".
 */
export function nextVersion(pattern: string, existing: readonly string[]): string {
  const parts = pattern.split("#{n}");
  if (parts.length !== 2) {
    throw new InputError(`version pattern "${pattern}" must contain #{n} exactly once, e.g. 1.0.#{n}`);
  }
  const [before = "", after = ""] = parts;
  let highest = -1n;
  for (const version of existing) {
    // Plain string checks, no pattern built from the user's text.
    if (version.length <= before.length + after.length) continue;
    if (!version.startsWith(before) || !version.endsWith(after)) continue;
    const digits = version.slice(before.length, version.length - after.length);
    if (/^[0-9]+$/.test(digits) && BigInt(digits) > highest) highest = BigInt(digits);
  }
  return `${before}${highest + 1n}${after}`;
}

function compileRule(rule: VersionRule): (tag: string) => boolean {
  switch (rule.kind) {
    case "semver": {
      const range = parseRange(rule.range);
      return (tag) => {
        const version = parseVersion(tag);
        return version !== undefined && satisfies(version, range);
      };
    }
    case "regex": {
      let pattern: RE2JS;
      try {
        pattern = compileLinearPattern(rule.pattern);
      } catch (error) {
        if (error instanceof InputError) throw new InputError(`version rule pattern: ${error.message}`);
        throw error;
      }
      // The whole tag, as ^(?:…)$ did with RegExp.
      return (tag) => pattern.testExact(tag);
    }
    default: {
      const unknown: never = rule;
      throw new InputError(`unknown version rule kind ${JSON.stringify((unknown as { kind: unknown }).kind)}`);
    }
  }
}

/** Total order of tags: versions by precedence, above non-versions in natural order; ties by plain string order. */
function compareTags(a: string, b: string): number {
  const versionA = parseVersion(a);
  const versionB = parseVersion(b);
  let order: number;
  if (versionA && versionB) order = compareVersions(versionA, versionB);
  else if (versionA) order = 1;
  else if (versionB) order = -1;
  else order = compareNatural(a, b);
  // Equal versions ("1.2.3" and "v1.2.3"): the plainer spelling wins.
  if (order === 0) order = a < b ? 1 : a > b ? -1 : 0;
  return order;
}

function parseVersion(text: string): Version | undefined {
  const match = versionPattern.exec(text);
  if (!match) return undefined;
  const [, major = "", minor = "", patch = "", prerelease] = match;
  const numbers = [major, minor, patch].map(Number);
  if (!numbers.every(Number.isSafeInteger)) return undefined;
  return {
    major: numbers[0] ?? 0,
    minor: numbers[1] ?? 0,
    patch: numbers[2] ?? 0,
    prerelease: parsePrerelease(prerelease),
  };
}

function parsePrerelease(text: string | undefined): (string | number)[] {
  if (!text) return [];
  return text.split(".").map((identifier) => {
    // Numeric identifiers compare as numbers; a huge one stays a string (and so ranks higher).
    const value = Number(identifier);
    return /^\d+$/.test(identifier) && Number.isSafeInteger(value) ? value : identifier;
  });
}

function compareVersions(a: Version, b: Version): number {
  return (
    Math.sign(a.major - b.major) ||
    Math.sign(a.minor - b.minor) ||
    Math.sign(a.patch - b.patch) ||
    comparePrereleases(a.prerelease, b.prerelease)
  );
}

/** Semver §11: a release ranks above its prereleases; identifiers compare one by one. */
function comparePrereleases(a: readonly (string | number)[], b: readonly (string | number)[]): number {
  if (a.length === 0 || b.length === 0) return Math.sign(b.length - a.length);
  for (let index = 0; index < Math.max(a.length, b.length); index++) {
    const left = a[index];
    const right = b[index];
    if (left === undefined) return -1;
    if (right === undefined) return 1;
    if (left === right) continue;
    if (typeof left === "number" && typeof right === "number") return Math.sign(left - right);
    if (typeof left === "number") return -1;
    if (typeof right === "number") return 1;
    return left < right ? -1 : 1;
  }
  return 0;
}

/** Runs of digits compare as numbers ("build-10" after "build-9"), the rest by code unit. */
function compareNatural(a: string, b: string): number {
  const chunksA = a.match(/\d+|\D+/g) ?? [];
  const chunksB = b.match(/\d+|\D+/g) ?? [];
  for (let index = 0; index < Math.min(chunksA.length, chunksB.length); index++) {
    const left = chunksA[index] ?? "";
    const right = chunksB[index] ?? "";
    if (left === right) continue;
    if (/^\d/.test(left) && /^\d/.test(right)) {
      const difference = BigInt(left) - BigInt(right);
      if (difference !== 0n) return difference > 0n ? 1 : -1;
      // Same number, different zero padding: fewer zeros first.
      return Math.sign(left.length - right.length);
    }
    return left < right ? -1 : 1;
  }
  return Math.sign(chunksA.length - chunksB.length);
}

function satisfies(version: Version, range: Range): boolean {
  return range.some((set) => set.every((comparator) => test(comparator, version)) && prereleaseAllowed(version, set));
}

function test({ operator, version: bound }: Comparator, version: Version): boolean {
  const order = compareVersions(version, bound);
  switch (operator) {
    case "<":
      return order < 0;
    case "<=":
      return order <= 0;
    case ">":
      return order > 0;
    case ">=":
      return order >= 0;
    case "=":
      return order === 0;
    default: {
      const unknown: never = operator;
      throw new Error(`unknown operator ${String(unknown)}`);
    }
  }
}

/** A prerelease passes only a set with a prerelease comparator of the same major.minor.patch. */
function prereleaseAllowed(version: Version, set: ComparatorSet): boolean {
  if (version.prerelease.length === 0) return true;
  return set.some(
    ({ version: bound }) =>
      bound.prerelease.length > 0 &&
      bound.major === version.major &&
      bound.minor === version.minor &&
      bound.patch === version.patch,
  );
}

function rangeProblem(text: string): string | undefined {
  try {
    parseRange(text);
    return undefined;
  } catch (error) {
    if (error instanceof InputError) return error.message;
    throw error;
  }
}

function parseRange(text: string): Range {
  return text.split("||").map((alternative) => {
    const trimmed = alternative.trim();
    if (trimmed === "") throw new InputError(`range "${text}" has an empty alternative around '||': ${RANGE_HINT}`);
    const hyphen = /^(\S+)\s+-\s+(\S+)$/.exec(trimmed);
    if (hyphen) return hyphenRange(hyphen[1] ?? "", hyphen[2] ?? "");
    // ">= 1.2" is ">=1.2": join operators to their versions, then split on spaces.
    const items = trimmed.replace(/(<=|>=|<|>|=|~>|~|\^)\s+/g, "$1").split(/\s+/);
    return items.flatMap((item) => comparators(item));
  });
}

/** A version with parts left out or wildcarded: "1", "1.x", "1.2.*", "*". */
interface PartialVersion {
  major: number | undefined;
  minor: number | undefined;
  patch: number | undefined;
  prerelease: (string | number)[];
}

function parsePartial(text: string): PartialVersion {
  const match = partialPattern.exec(text);
  if (!match) throw new InputError(`"${text}" is not a version or version pattern: ${RANGE_HINT}`);
  const [, major, minor, patch, prerelease] = match;
  const parts = [major, minor, patch].map((part) =>
    part === undefined || /^[*xX]$/.test(part) ? undefined : Number(part),
  );
  // "1.x.3": nothing fixed may follow a wildcard.
  const firstOpen = parts.indexOf(undefined);
  if (firstOpen !== -1 && parts.slice(firstOpen).some((part) => part !== undefined)) {
    throw new InputError(`"${text}" fixes a part after a wildcard: ${RANGE_HINT}`);
  }
  if (prerelease !== undefined && parts[2] === undefined) {
    throw new InputError(`"${text}" has a prerelease but no fixed patch number: ${RANGE_HINT}`);
  }
  if (!parts.every((part) => part === undefined || Number.isSafeInteger(part))) {
    throw new InputError(`"${text}" has a number too large to be a version part`);
  }
  return { major: parts[0], minor: parts[1], patch: parts[2], prerelease: parsePrerelease(prerelease) };
}

function version(major: number, minor: number, patch: number, prerelease: (string | number)[] = []): Version {
  return { major, minor, patch, prerelease };
}

/** The lowest version of the next step up: below every prerelease of it ("2.0.0-0"). */
function below(major: number, minor: number, patch: number): Comparator {
  return { operator: "<", version: version(major, minor, patch, [0]) };
}

function atLeast(major: number, minor: number, patch: number, prerelease: (string | number)[] = []): Comparator {
  return { operator: ">=", version: version(major, minor, patch, prerelease) };
}

/** Matches nothing (">*", "<*"). */
const NOTHING: Comparator[] = [below(0, 0, 0)];

function comparators(item: string): Comparator[] {
  const match = /^(<=|>=|<|>|=|~>|~|\^)?(.*)$/.exec(item);
  const operator = match?.[1] ?? "";
  const { major, minor, patch, prerelease } = parsePartial(match?.[2] ?? "");
  switch (operator) {
    case "":
    case "=":
      if (major === undefined) return [];
      if (minor === undefined) return [atLeast(major, 0, 0), below(major + 1, 0, 0)];
      if (patch === undefined) return [atLeast(major, minor, 0), below(major, minor + 1, 0)];
      return [{ operator: "=", version: version(major, minor, patch, prerelease) }];
    case "~":
    case "~>":
      if (major === undefined) return [];
      if (minor === undefined) return [atLeast(major, 0, 0), below(major + 1, 0, 0)];
      return [atLeast(major, minor, patch ?? 0, prerelease), below(major, minor + 1, 0)];
    case "^":
      if (major === undefined) return [];
      if (minor === undefined) return [atLeast(major, 0, 0), below(major + 1, 0, 0)];
      if (major > 0) return [atLeast(major, minor, patch ?? 0, prerelease), below(major + 1, 0, 0)];
      if (minor > 0 || patch === undefined) {
        return [atLeast(0, minor, patch ?? 0, prerelease), below(0, minor + 1, 0)];
      }
      return [atLeast(0, 0, patch, prerelease), below(0, 0, patch + 1)];
    case ">":
      if (major === undefined) return NOTHING;
      if (minor === undefined) return [atLeast(major + 1, 0, 0)];
      if (patch === undefined) return [atLeast(major, minor + 1, 0)];
      return [{ operator: ">", version: version(major, minor, patch, prerelease) }];
    case ">=":
      if (major === undefined) return [];
      return [atLeast(major, minor ?? 0, patch ?? 0, prerelease)];
    case "<":
      if (major === undefined) return NOTHING;
      if (minor === undefined) return [below(major, 0, 0)];
      if (patch === undefined) return [below(major, minor, 0)];
      return [{ operator: "<", version: version(major, minor, patch, prerelease) }];
    case "<=":
      if (major === undefined) return [];
      if (minor === undefined) return [below(major + 1, 0, 0)];
      if (patch === undefined) return [below(major, minor + 1, 0)];
      return [{ operator: "<=", version: version(major, minor, patch, prerelease) }];
    default:
      throw new InputError(`"${item}" has an unknown operator: ${RANGE_HINT}`);
  }
}

function hyphenRange(fromText: string, toText: string): Comparator[] {
  const from = parsePartial(fromText);
  const to = parsePartial(toText);
  const lower: Comparator[] =
    from.major === undefined ? [] : [atLeast(from.major, from.minor ?? 0, from.patch ?? 0, from.prerelease)];
  let upper: Comparator[];
  if (to.major === undefined) upper = [];
  else if (to.minor === undefined) upper = [below(to.major + 1, 0, 0)];
  else if (to.patch === undefined) upper = [below(to.major, to.minor + 1, 0)];
  else upper = [{ operator: "<=", version: version(to.major, to.minor, to.patch, to.prerelease) }];
  return [...lower, ...upper];
}
