import type { Command } from "commander";
import { describe, expect, it } from "vitest";
import { buildProgram, topLevelCommandNames } from "./main.js";

/** Every command below `command`, by its words ("release create"), with its help text. */
function helpTexts(command: Command, path: string[] = []): Map<string, string> {
  const texts = new Map<string, string>([[path.join(" "), command.helpInformation()]]);
  for (const child of command.commands) {
    for (const [key, text] of helpTexts(child, [...path, child.name()])) texts.set(key, text);
  }
  return texts;
}

describe("the CLI loads only the module of the command it runs", () => {
  it("lists every top-level command once, in the order of the full help", async () => {
    const full = await buildProgram();
    expect(full.commands.map((command) => command.name())).toEqual(topLevelCommandNames);
    expect(new Set(topLevelCommandNames).size).toBe(topLevelCommandNames.length);
  });

  it("gives each command, built on its own, the same help and options as in the full program", async () => {
    const full = helpTexts(await buildProgram());
    for (const name of topLevelCommandNames) {
      const alone = await buildProgram([name, "--help"]);
      expect(
        alone.commands.some((command) => command.name() === name),
        name,
      ).toBe(true);
      const command = alone.commands.find((candidate) => candidate.name() === name);
      if (!command) throw new Error(name);
      for (const [path, text] of helpTexts(command, [name])) expect(text, path).toBe(full.get(path));
    }
  });

  it("builds the whole program for its help, a missing or mistyped command, and an option first", async () => {
    const everything = topLevelCommandNames.length;
    for (const argv of [[], ["--help"], ["deploi"], ["help"], ["-h", "deploy"], ["help", "nothing"]]) {
      expect((await buildProgram(argv)).commands, argv.join(" ")).toHaveLength(everything);
    }
    expect((await buildProgram(["help", "release"])).commands.map((command) => command.name())).toEqual(["release"]);
    expect((await buildProgram(["--version"])).commands).toEqual([]);
  });
});
