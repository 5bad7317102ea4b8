import { describe, expect, it } from "vitest";
import { LineSplitter } from "./lineSplitter.js";

/** The lines a splitter hands on for these chunks, as [text, cut]. */
function split(chunks: readonly string[], maxBytes?: number): [string, boolean][] {
  const lines: [string, boolean][] = [];
  const splitter = new LineSplitter((text, cut) => lines.push([text, cut]), maxBytes);
  for (const chunk of chunks) splitter.push(chunk);
  splitter.end();
  return lines;
}

describe("LineSplitter", () => {
  it("hands on lines however the chunks fall, without their line ends", () => {
    const expected: [string, boolean][] = [
      ["one", false],
      ["", false],
      ["two three", false],
      ["four", false],
    ];
    expect(split(["one\n\ntwo", " three\r\nfour"])).toEqual(expected);
    expect(split(["o", "ne\n", "\n", "two three\r", "\n", "four\n"])).toEqual(expected);
    expect(split([..."one\n\ntwo three\nfour"])).toEqual(expected);
    expect(split([])).toEqual([]);
    expect(split(["\n"])).toEqual([["", false]]);
  });

  it("cuts a long line at the byte limit, hands its start on at once and drops the rest", () => {
    const seen: [string, boolean][] = [];
    const splitter = new LineSplitter((text, cut) => seen.push([text, cut]), 10);
    splitter.push("123456");
    splitter.push("7890abc");
    // Handed on before the line ends: nothing of it waits in memory.
    expect(seen).toEqual([["1234567890", true]]);
    splitter.push("defgh".repeat(1000));
    splitter.push("ij\nnext");
    splitter.end();
    expect(seen).toEqual([
      ["1234567890", true],
      ["next", false],
    ]);
    expect(split(["1234567890\n12345678901\n"], 10)).toEqual([
      ["1234567890", false],
      ["1234567890", true],
    ]);
  });

  it("never cuts inside a character", () => {
    // "é" is 2 bytes, "😀" 4 (a surrogate pair in JavaScript).
    expect(split(["ééééé", "é\n"], 9)).toEqual([["éééé", true]]);
    expect(split(["a😀😀\n"], 8)).toEqual([["a😀", true]]);
  });

  it("takes a 48 MB line in time and memory proportional to it", () => {
    const chunk = "x".repeat(64 * 1024);
    const lines: [string, boolean][] = [];
    const splitter = new LineSplitter((text, cut) => lines.push([text, cut]));
    const started = performance.now();
    for (let index = 0; index < 768; index++) splitter.push(chunk);
    splitter.push("\nafter\n");
    splitter.end();
    expect(performance.now() - started).toBeLessThan(1_000);
    expect(lines.map(([text, cut]) => [text.length, cut])).toEqual([
      [64 * 1024, true],
      [5, false],
    ]);
  });
});
