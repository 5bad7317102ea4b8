import { describe, expect, it } from "vitest";
import { InputError, MalformedBodyError } from "../domain/errors.js";
import { MAX_JSON_DEPTH, parseJsonBody } from "./json.js";

const parse = (text: string) => parseJsonBody(Buffer.from(text, "utf8"));
const nested = (depth: number, inner = "") => `${"[".repeat(depth)}${inner}${"]".repeat(depth)}`;

describe("parseJsonBody", () => {
  it(`takes ${MAX_JSON_DEPTH} levels of nesting and refuses one more, saying what to send`, () => {
    expect(parse(nested(MAX_JSON_DEPTH, "1"))).toBeDefined();
    expect(parse(`{"a":${nested(MAX_JSON_DEPTH - 1)}}`)).toBeDefined();
    expect(() => parse(nested(MAX_JSON_DEPTH + 1))).toThrow(MalformedBodyError);
    expect(() => parse(`{"a":${nested(MAX_JSON_DEPTH)}}`)).toThrow(
      `the body nests arrays and objects more than ${MAX_JSON_DEPTH} levels deep (at character ${MAX_JSON_DEPTH + 4}); send a flatter JSON document`,
    );
  });

  it("refuses 4,000 and 500,000 levels as a bad body, not a stack overflow", () => {
    for (const depth of [4_000, 500_000]) {
      expect(() => parse(nested(depth))).toThrow(/more than 64 levels deep/);
      // Unclosed, as an attacker need not close them.
      expect(() => parse("[".repeat(depth))).toThrow(/more than 64 levels deep/);
      expect(() => parse(`{"a":`.repeat(depth))).toThrow(/more than 64 levels deep/);
    }
  });

  it("does not count brackets inside strings, escaped quotes included", () => {
    const text = JSON.stringify({ text: "[".repeat(1000), quoted: `\\"${"{".repeat(1000)}`, after: [[1]] });
    expect(parse(text)).toEqual(JSON.parse(text));
  });

  it("finds NUL in deep values and in keys, at their pointers, in document order", () => {
    const body = { a: [{ "b\u0000": "x" }, "y\u0000"], c: nestedValue(MAX_JSON_DEPTH - 2, "z\u0000") };
    let caught: unknown;
    try {
      parse(JSON.stringify(body));
    } catch (error) {
      caught = error;
    }
    expect(caught).toBeInstanceOf(InputError);
    expect((caught as InputError).issues.map((issue) => issue.pointer)).toEqual([
      "/a/0/b\u0000",
      "/a/1",
      `/c${"/0".repeat(MAX_JSON_DEPTH - 2)}`,
    ]);
  });

  it("still refuses what is not JSON, empty or not UTF-8", () => {
    expect(() => parse("[1,")).toThrow(/not valid JSON/);
    expect(() => parse("  ")).toThrow(/empty/);
    expect(() => parseJsonBody(Buffer.from([0x7b, 0xff, 0x7d]))).toThrow(/not valid UTF-8/);
  });
});

function nestedValue(depth: number, inner: unknown): unknown {
  let value = inner;
  for (let level = 0; level < depth; level++) value = [value];
  return value;
}
