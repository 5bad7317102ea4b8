/*
 * Characters that make a terminal (or a log viewer) do something instead of showing
 * something: C0 controls (ESC starts the sequences that move the cursor, recolour, set the
 * window title or clear the screen; CR returns to the start of the line, so what follows
 * overwrites what came before; BEL rings), DEL, C1 controls (U+0080–U+009F; U+009B is a
 * one-character CSI to some terminals) and the bidirectional overrides and isolates
 * (U+202A–U+202E, U+2066–U+2069), which make a line read differently from what it holds.
 * Names and descriptions refuse them; what the CLI prints shows them as visible escapes.
 */

/** Every such character; the two below leave out the tab, and the tab and the newline. */
const every = "\\u0000-\\u001f\\u007f-\\u009f\\u202a-\\u202e\\u2066-\\u2069";
const butTab = "\\u0000-\\u0008\\u000a-\\u001f\\u007f-\\u009f\\u202a-\\u202e\\u2066-\\u2069";
const butTabAndNewline = "\\u0000-\\u0008\\u000b-\\u001f\\u007f-\\u009f\\u202a-\\u202e\\u2066-\\u2069";

const anyOf = (ranges: string, flags = "") => new RegExp(`[${ranges}]`, flags);
const findEvery = anyOf(every);
const findButTabAndNewline = anyOf(butTabAndNewline);
const findButTab = anyOf(butTab);
const replaceButTab = anyOf(butTab, "g");
const replaceButTabAndNewline = anyOf(butTabAndNewline, "g");

/** A control character found in a text: which one and where, for an error that says what to remove. */
export interface ControlCharacter {
  /** "U+001B" */
  codePoint: string;
  /** 1-based, as people count. */
  position: number;
}

/**
 * The first control character of `text`, or undefined. With `allowLineBreaks`, a newline
 * and a tab are allowed (a description's paragraphs); a carriage return never is.
 */
export function findControlCharacter(text: string, allowLineBreaks = false): ControlCharacter | undefined {
  const match = (allowLineBreaks ? findButTabAndNewline : findEvery).exec(text);
  if (match === null) return undefined;
  const code = match[0].charCodeAt(0);
  return { codePoint: `U+${code.toString(16).toUpperCase().padStart(4, "0")}`, position: match.index + 1 };
}

/**
 * `text` with each control character replaced by a visible escape (`\x1b`, `\r`…
 * as `\x0d`, `\u202e`), so it shows what it holds and cannot act on the terminal. A tab
 * stays; a newline stays with `keepNewlines` (a multi-line description), else it is
 * escaped too, so the text stays on one line (a log line, a comment inside one).
 */
export function escapeControlCharacters(text: string, keepNewlines = false): string {
  // Most text has none: one search, no new string.
  if (!(keepNewlines ? findButTabAndNewline : findButTab).test(text)) return text;
  return text.replace(keepNewlines ? replaceButTabAndNewline : replaceButTab, (character) => {
    const code = character.charCodeAt(0);
    return code < 0x100 ? `\\x${code.toString(16).padStart(2, "0")}` : `\\u${code.toString(16).padStart(4, "0")}`;
  });
}

/** What JSON.stringify leaves as it is (it escapes C0 itself): DEL, C1 and the bidirectional controls. */
const replaceUnescapedInJson = anyOf("\\u007f-\\u009f\\u202a-\\u202e\\u2066-\\u2069", "g");

/**
 * JSON text (from JSON.stringify) with the control characters JSON.stringify leaves raw
 * written as `\u` escapes: the same JSON value, and nothing in it acts on a terminal.
 * They can only occur inside strings, where a `\u` escape means the same character.
 */
export function escapeJsonControlCharacters(json: string): string {
  return json.replace(
    replaceUnescapedInJson,
    (character) => `\\u${character.charCodeAt(0).toString(16).padStart(4, "0")}`,
  );
}
