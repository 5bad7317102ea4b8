import { type FieldIssue, InputError, MalformedBodyError, toJsonPointer } from "../domain/errors.js";

const strictUtf8 = new TextDecoder("utf-8", { fatal: true });

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
  let value: unknown;
  try {
    value = JSON.parse(text);
  } catch (error) {
    const position = /position (\d+)/.exec(String((error as Error).message))?.[1];
    throw malformed(
      `the body is not valid JSON${position ? ` (error at character ${position})` : ""}; send a JSON object`,
    );
  }
  const issues: FieldIssue[] = [];
  findNulCharacters(value, [], issues);
  if (issues.length > 0) throw new InputError("text fields must not contain the NUL character (\\u0000)", issues);
  return value;
}

/**
 * NUL cannot be stored in PostgreSQL text nor passed in an environment variable or
 * argument, so it is refused at the door for every string, keys included.
 */
function findNulCharacters(value: unknown, path: PropertyKey[], issues: FieldIssue[]): void {
  if (typeof value === "string") {
    if (value.includes("\0")) issues.push({ pointer: toJsonPointer(path), detail: "remove the NUL character" });
  } else if (Array.isArray(value)) {
    for (const [index, item] of value.entries()) findNulCharacters(item, [...path, index], issues);
  } else if (value !== null && typeof value === "object") {
    for (const [key, item] of Object.entries(value)) {
      if (key.includes("\0"))
        issues.push({ pointer: toJsonPointer([...path, key]), detail: "remove the NUL character" });
      findNulCharacters(item, [...path, key], issues);
    }
  }
}

function malformed(message: string): MalformedBodyError {
  return new MalformedBodyError(message);
}
