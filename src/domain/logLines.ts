/**
 * How long one task log line may be. A script may print a 48 MB line; kept whole, it costs
 * memory where it is read from the process, where it is stored and every time it is read
 * back (JSON-escaped control characters take six bytes each). So a line is kept up to this
 * size, with a mark saying it was cut, and the rest of it is dropped.
 *
 * Pure: no I/O.
 */

/** Most UTF-8 bytes of one log line, the mark included. */
export const MAX_LOG_LINE_BYTES = 64 * 1024;

/** Ends a line that was cut. */
export const LINE_CUT_MARK = "… [line cut at 64 KiB]";

const MARK_BYTES = Buffer.byteLength(LINE_CUT_MARK);

/**
 * The line as it may be stored: unchanged when it fits in MAX_LOG_LINE_BYTES, else as much
 * of its start as fits before the mark, and the mark.
 */
export function fitLogLine(text: string): string {
  // Three bytes per UTF-16 unit at most: a line this short always fits, without measuring.
  if (text.length * 3 <= MAX_LOG_LINE_BYTES || Buffer.byteLength(text) <= MAX_LOG_LINE_BYTES) return text;
  return markCut(text);
}

/** The start of a line whose rest was dropped, with the mark, within MAX_LOG_LINE_BYTES. */
export function markCut(start: string): string {
  return `${startWithin(start, MAX_LOG_LINE_BYTES - MARK_BYTES)}${LINE_CUT_MARK}`;
}

const encoder = new TextEncoder();

/** The longest start of `text` whose UTF-8 fits in `maxBytes`, never ending inside a character. */
export function startWithin(text: string, maxBytes: number): string {
  if (text.length * 3 <= maxBytes) return text;
  // Every UTF-16 unit takes at least a byte, so no more than maxBytes of them can fit; but
  // not half a surrogate pair, which would be encoded as a replacement character.
  let candidate = text.slice(0, maxBytes);
  const last = candidate.charCodeAt(candidate.length - 1);
  if (last >= 0xd800 && last <= 0xdbff) candidate = candidate.slice(0, -1);
  // encodeInto writes only whole characters and says how many UTF-16 units it read.
  const { read } = encoder.encodeInto(candidate, new Uint8Array(maxBytes));
  return candidate.slice(0, read);
}
