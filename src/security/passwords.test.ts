import { readdirSync, readFileSync } from "node:fs";
import { describe, expect, it } from "vitest";
import { hashPassword, verifyPassword } from "./passwords.js";

/** A thread's nice value (field 19 of /proc/self/task/N/stat). */
function niceOf(task: number | string): number {
  const stat = readFileSync(`/proc/self/task/${task}/stat`, "utf8");
  // The command name may hold spaces: fields are counted after its closing parenthesis.
  return Number(stat.slice(stat.lastIndexOf(")") + 2).split(" ")[16]);
}

/** The nice values of this process's threads. */
function threadNiceValues(): number[] {
  return readdirSync("/proc/self/task").flatMap((task) => {
    try {
      return [niceOf(task)];
    } catch {
      return []; // the thread ended meanwhile
    }
  });
}

describe("password hashes", () => {
  it("verifies the right password and refuses others, also many at once", async () => {
    const stored = await hashPassword("correct horse");
    expect(stored).toMatch(/^scrypt\$32768\$8\$1\$/);
    const guesses = ["correct horse", "Correct horse", "", "correct horse ", "correct horse"];
    const verdicts = await Promise.all(guesses.map((guess) => verifyPassword(guess, stored)));
    expect(verdicts).toEqual([true, false, false, false, true]);
    expect(await verifyPassword("correct horse", "scrypt$1$2")).toBe(false);
  });

  it("hashes on a thread of lower CPU priority than the event loop's", async () => {
    const mainThread = () => niceOf(process.pid);
    const before = mainThread();
    await hashPassword("one");
    // The hash worker stays for the next hash; the event loop's thread keeps its priority.
    expect(threadNiceValues()).toContain(Math.min(19, before + 10));
    expect(mainThread()).toBe(before);
  });
});
