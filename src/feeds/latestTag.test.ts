import { describe, expect, it } from "vitest";
import { InputError } from "../domain/errors.js";
import type { ProjectImage } from "../domain/process.js";
import { pickLatestTag } from "./latestTag.js";

const image = (pattern: string): ProjectImage => ({
  name: "web",
  feed: "local",
  repository: "demo/app",
  version: { kind: "regex", pattern },
});

/** 128-character tags of a and b in a fixed pseudo-random order (the longest a registry tag may be). */
function longTags(count: number): string[] {
  let seed = 7;
  return Array.from({ length: count }, () =>
    Array.from({ length: 128 }, () => {
      seed = (seed * 1103515245 + 12345) % 2147483648;
      return seed < 1073741824 ? "a" : "b";
    }).join(""),
  );
}

describe("pickLatestTag", () => {
  it("refuses a stored rule RE2 cannot run, naming the image and what to change (ADR 0073)", async () => {
    const picked = pickLatestTag(image("(\\d+)\\.\\1"), ["1.1", "2.2"]);
    await expect(picked).rejects.toThrow(
      /^the version rule of image 'web' cannot pick a tag: backreferences such as \\1 or \\k<name> are not supported/,
    );
    const error = await picked.catch((caught: unknown) => caught);
    expect(error).toBeInstanceOf(InputError);
    expect((error as InputError).issues).toEqual([
      {
        pointer: "/images/web",
        detail: expect.stringMatching(
          /^the version rule's pattern "\(\\\\d\+\)\\\\.\\\\1" was saved before patterns ran on RE2: backreferences .*; rewrite the image's version rule where it is defined \(the project's process or the runbook\), or name the tag: images: \{ web: TAG \}$/,
        ),
      },
    ]);
  });

  it("picks as pickLatest does, over 100,000 tags", async () => {
    const tags = Array.from({ length: 100_000 }, (_, index) => `1.${index % 1000}.${Math.floor(index / 1000)}`);
    expect(await pickLatestTag(image("1\\.\\d+\\.\\d+"), tags)).toBe("1.999.99");
    expect(await pickLatestTag({ ...image(""), version: { kind: "semver", range: "~1.5" } }, tags)).toBe("1.5.99");
  });

  it("answers other work between slices of a slow rule, and gives up at its budget", async () => {
    // RE2 simulates ~100 threads per character for this rule: about 0.6 ms per tag, 6 s for all.
    const tags = longTags(10_000);
    let worstDelayMs = 0;
    let expected = performance.now() + 10;
    const timer = setInterval(() => {
      worstDelayMs = Math.max(worstDelayMs, performance.now() - expected);
      expected = performance.now() + 10;
    }, 10);
    const started = performance.now();
    try {
      const picking = pickLatestTag(image(".*a[ab]{100}"), tags, { sliceMs: 10, budgetMs: 1_000 });
      await expect(picking).rejects.toThrow(InputError);
      await expect(picking).rejects.toThrow(
        /^the version rule of image 'web' took longer than 1 s to match \d+ of the 10000 tags of demo\/app: write a simpler pattern$/,
      );
    } finally {
      clearInterval(timer);
    }
    expect(performance.now() - started).toBeLessThan(2_500);
    expect(worstDelayMs).toBeLessThan(250);
  });
});
