import { MalformedBodyError } from "../domain/errors.js";

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
  try {
    return JSON.parse(text);
  } catch (error) {
    const position = /position (\d+)/.exec(String((error as Error).message))?.[1];
    throw malformed(`the body is not valid JSON${position ? ` (error at byte ${position})` : ""}; send a JSON object`);
  }
}

function malformed(message: string): MalformedBodyError {
  return new MalformedBodyError(message);
}
