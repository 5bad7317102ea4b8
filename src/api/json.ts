import { type FieldIssue, InputError, MalformedBodyError, toJsonPointer } from "../domain/errors.js";

const strictUtf8 = new TextDecoder("utf-8", { fatal: true });

/**
 * Most levels of arrays and objects a body may nest. Ferry's own bodies nest fewer than
 * ten; a step's config a few more. The limit is checked on the text, before anything is
 * built from it, so a body of 500,000 '[' costs one pass over it and nothing else.
 */
export const MAX_JSON_DEPTH = 64;

/**
 * Parses a JSON request body. Invalid UTF-8 is an error (not silently replaced), and the
 * message never quotes the body: it may hold a secret the client meant to send.
 */
export function parseJsonBody(body: Buffer): unknown {
  let text: string;
  try {
    text = strictUtf8.decode(body);
  } catch {
    throw malformed("the body is not valid UTF-8; send JSON encoded as UTF-8");
  }
  if (text.trim() === "") throw malformed("the body is empty; send a JSON object");
  const tooDeepAt = depthExceededAt(text, MAX_JSON_DEPTH);
  if (tooDeepAt !== undefined) {
    throw malformed(
      `the body nests arrays and objects more than ${MAX_JSON_DEPTH} levels deep (at character ${tooDeepAt}); send a flatter JSON document`,
    );
  }
  let value: unknown;
  try {
    value = JSON.parse(text);
  } catch (error) {
    // V8 parses iteratively, so nesting cannot exhaust its stack; should another engine
    // run out of room on some body, that is still the body's fault, not a server error.
    if (error instanceof RangeError) throw malformed("the body is too complex to parse; send a smaller JSON document");
    const position = /position (\d+)/.exec(String((error as Error).message))?.[1];
    throw malformed(
      `the body is not valid JSON${position ? ` (error at character ${position})` : ""}; send a JSON object`,
    );
  }
  const issues = findNulCharacters(value);
  if (issues.length > 0) throw new InputError("text fields must not contain the NUL character (\\u0000)", issues);
  return value;
}

/**
 * Where the text first opens more than `limit` arrays and objects at once, or undefined.
 * Brackets inside strings do not count. Only a guard: a text that is not JSON passes it
 * and then fails to parse.
 */
function depthExceededAt(text: string, limit: number): number | undefined {
  let depth = 0;
  let inString = false;
  for (let index = 0; index < text.length; index++) {
    const code = text.charCodeAt(index);
    if (inString) {
      if (code === BACKSLASH) index++;
      else if (code === QUOTE) inString = false;
    } else if (code === QUOTE) {
      inString = true;
    } else if (code === OPEN_BRACKET || code === OPEN_BRACE) {
      depth++;
      if (depth > limit) return index;
    } else if (code === CLOSE_BRACKET || code === CLOSE_BRACE) {
      depth--;
    }
  }
  return undefined;
}

const QUOTE = 0x22;
const BACKSLASH = 0x5c;
const OPEN_BRACKET = 0x5b;
const CLOSE_BRACKET = 0x5d;
const OPEN_BRACE = 0x7b;
const CLOSE_BRACE = 0x7d;

/** A value still to look at, and how it was reached (its path is built only for an issue). */
interface Visit {
  value: unknown;
  key: PropertyKey;
  parent: Visit | undefined;
  keyHasNul: boolean;
}

/**
 * NUL cannot be stored in PostgreSQL text nor passed in an environment variable or
 * argument, so it is refused at the door for every string, keys included. Walked with a
 * stack of its own, not by recursion: the depth is limited above, but the walk does not
 * depend on it.
 */
function findNulCharacters(root: unknown): FieldIssue[] {
  const issues: FieldIssue[] = [];
  const pending: Visit[] = [{ value: root, key: "", parent: undefined, keyHasNul: false }];
  for (let visit = pending.pop(); visit !== undefined; visit = pending.pop()) {
    const { value } = visit;
    if (visit.keyHasNul) issues.push({ pointer: pointerOf(visit), detail: "remove the NUL character" });
    if (typeof value === "string") {
      if (value.includes("\0")) issues.push({ pointer: pointerOf(visit), detail: "remove the NUL character" });
    } else if (Array.isArray(value)) {
      // Pushed last first, so issues come out in document order.
      for (let index = value.length - 1; index >= 0; index--) {
        pending.push({ value: value[index], key: index, parent: visit, keyHasNul: false });
      }
    } else if (value !== null && typeof value === "object") {
      const entries = Object.entries(value);
      for (let index = entries.length - 1; index >= 0; index--) {
        const [key, item] = entries[index] as [string, unknown];
        pending.push({ value: item, key, parent: visit, keyHasNul: key.includes("\0") });
      }
    }
  }
  return issues;
}

function pointerOf(visit: Visit): string {
  const path: PropertyKey[] = [];
  for (let step: Visit | undefined = visit; step?.parent !== undefined; step = step.parent) path.push(step.key);
  return toJsonPointer(path.reverse());
}

function malformed(message: string): MalformedBodyError {
  return new MalformedBodyError(message);
}
