import { setImmediate as nextTurn } from "node:timers/promises";
import { InputError } from "../domain/errors.js";
import { linearPatternProblem } from "../domain/linearPattern.js";
import type { ProjectImage } from "../domain/process.js";
import { type LatestTagPicker, latestTagPicker } from "../domain/versionRules.js";

export interface LatestTagOptions {
  /** Longest the rule is matched before other requests get the event loop (ms). */
  sliceMs: number;
  /** Longest the rule may take over all the tags (ms); an ordinary rule takes milliseconds for 100,000 tags. */
  budgetMs: number;
}

const defaultOptions: LatestTagOptions = { sliceMs: 10, budgetMs: 5_000 };

/**
 * The latest of a feed's tags that the image's version rule admits, matched in slices
 * with a turn of the event loop between them. RE2 matches each tag in time proportional
 * to it, but times the size of the pattern: a short rule such as `.*a[ab]{100}` takes
 * about 0.6 ms per 128-character tag, seconds over a feed of 10,000 such tags. Health
 * checks and other requests are answered meanwhile, and a rule that takes longer than the
 * budget fails the release instead of holding a core.
 */
export async function pickLatestTag(
  image: ProjectImage,
  tags: readonly string[],
  options: LatestTagOptions = defaultOptions,
): Promise<string | undefined> {
  let picker: LatestTagPicker;
  try {
    picker = latestTagPicker(image.version);
  } catch (error) {
    // A rule saved before patterns ran on RE2 still loads (ADR 0073); using it fails here,
    // where a tag is picked by it, saying what to change. (Compiled again only on this path.)
    const problem = image.version.kind === "regex" ? linearPatternProblem(image.version.pattern) : undefined;
    if (!(error instanceof InputError) || image.version.kind !== "regex" || problem === undefined) throw error;
    throw new InputError(`the version rule of image '${image.name}' cannot pick a tag: ${problem}`, [
      {
        pointer: `/images/${image.name}`,
        detail: `the version rule's pattern ${JSON.stringify(image.version.pattern)} was saved before patterns ran on RE2: ${problem}; rewrite the image's version rule where it is defined (the project's process or the runbook), or name the tag: images: { ${image.name}: TAG }`,
      },
    ]);
  }
  const started = performance.now();
  let sliceStarted = started;
  for (const [index, tag] of tags.entries()) {
    picker.consider(tag);
    const now = performance.now();
    if (now - sliceStarted < options.sliceMs) continue;
    if (now - started > options.budgetMs) {
      throw new InputError(
        `the version rule of image '${image.name}' took longer than ${options.budgetMs / 1000} s to match ${index + 1} of the ${tags.length} tags of ${image.repository}: write a simpler pattern`,
        [{ pointer: `/images/${image.name}`, detail: "simplify the image's version rule in the project's process" }],
      );
    }
    await nextTurn();
    sliceStarted = performance.now();
  }
  return picker.latest;
}
