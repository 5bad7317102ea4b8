/**
 * Hides sensitive values in task output before it is stored or streamed. Pure: text in,
 * text out, so the task log, SSE and error messages can all share one masker.
 */
import { argumentlessFilterOutputs } from "../domain/templates.js";

/** What every masked run of text becomes; fixed width so the output does not tell a secret's length. */
export const MASK = "********";

/**
 * Secrets shorter than this are not masked: masking "a" or "80" would replace every such
 * letter or number in the log and make it unreadable, while a one- or two-character value
 * protects nothing worth the cost. The same holds for each whole encoding of a secret.
 */
const MINIMUM_SECRET_LENGTH = 3;

/**
 * Lines of a multi-line secret shorter than this are not masked on their own: a PEM key's
 * or a YAML file's "---", "  }," or "Q==" would otherwise hide every such run in the log.
 */
const MINIMUM_LINE_LENGTH = 4;

/**
 * Pieces of an encoding (one line of wrapped base64, the part of a secret's base64 that
 * does not depend on the bytes around it) shorter than this are not masked: a few base64
 * or hex characters occur by chance in digests and ids.
 */
const MINIMUM_PIECE_LENGTH = 6;

/** Line widths of wrapped encodings: GNU `base64` (76), `openssl base64` (64), `xxd -p` (60 hex digits). */
const BASE64_LINE_WIDTHS = [76, 64];
const HEX_LINE_WIDTH = 60;

/**
 * Replaces every occurrence of the secrets, and of their common encodings, with MASK.
 *
 * Each position of the text is either covered by some occurrence of some pattern or not,
 * and every maximal run of covered positions becomes one MASK. Taking the union of all
 * occurrences (rather than replacing matches one after another) means overlapping secrets
 * are hidden completely, whichever starts first.
 *
 * `write` may receive a secret split across calls: it holds back the trailing characters
 * that could still begin a secret (fewer than the longest pattern) and releases them once
 * they cannot, or on `flush`. The concatenated output of any split is the same as
 * `mask` of the concatenated input.
 */
export class LogMasker {
  readonly #patterns: CompiledPatterns;
  #stream: StreamState = newStream();

  constructor(secrets: readonly string[]) {
    this.#patterns = compilePatterns(secrets);
  }

  /** Masks one chunk of a stream; may hold back a possible secret prefix until the next call. */
  write(chunk: string): string {
    if (this.#patterns.longest === 0) return chunk;
    this.#stream.pending += chunk;
    return release(this.#patterns, this.#stream, false);
  }

  /** Releases what `write` held back (end of the stream); the masker can then start a new stream. */
  flush(): string {
    if (this.#patterns.longest === 0) return "";
    const output = release(this.#patterns, this.#stream, true);
    this.#stream = newStream();
    return output;
  }

  /** Masks a complete text (one log line, an error message) without touching the stream. */
  mask(text: string): string {
    if (this.#patterns.longest === 0) return text;
    return release(this.#patterns, { ...newStream(), pending: text }, true);
  }
}

interface CompiledPatterns {
  /**
   * Patterns by a key of their first two characters (pairKey), longest first, so the first
   * match is the longest. Two characters rather than one: base64 and hex forms start with
   * letters and digits, and one character would send most positions of a log to a list.
   */
  readonly byFirstPair: ReadonlyMap<number, readonly string[]>;
  /** First characters of the patterns: a stream that ends in one of them may still begin one. */
  readonly firstCharacters: ReadonlySet<number>;
  /** Length of the longest pattern, 0 when there is nothing to mask. */
  readonly longest: number;
}

/**
 * A small integer (a V8 Smi, cheap to hash) for two UTF-16 code units. Different pairs may
 * share a key; that only adds a candidate, which `startsWith` then rejects.
 */
function pairKey(first: number, second: number): number {
  return ((first & 0x7fff) << 15) | (second & 0x7fff);
}

interface StreamState {
  /** Received text not yet released. */
  pending: string;
  /** Positions of `pending` before this index are covered by a match already found. */
  coveredUntil: number;
  /** Whether the last released character was masked, so a continuing run adds no second MASK. */
  inMask: boolean;
}

function newStream(): StreamState {
  return { pending: "", coveredUntil: 0, inMask: false };
}

function compilePatterns(secrets: readonly string[]): CompiledPatterns {
  // Every pattern has at least two characters (MINIMUM_SECRET_LENGTH), so it has a first pair.
  const patterns = [...maskingPatterns(secrets)].sort((left, right) => right.length - left.length);
  const byFirstPair = new Map<number, string[]>();
  const firstCharacters = new Set<number>();
  for (const pattern of patterns) {
    const key = pairKey(pattern.charCodeAt(0), pattern.charCodeAt(1));
    const group = byFirstPair.get(key);
    if (group === undefined) {
      byFirstPair.set(key, [pattern]);
    } else {
      group.push(pattern);
    }
    firstCharacters.add(pattern.charCodeAt(0));
  }
  return { byFirstPair, firstCharacters, longest: patterns[0]?.length ?? 0 };
}

/**
 * Releases `stream.pending` from its start up to the first position whose fate is not yet
 * known. A position is decided once the longest pattern starting there is known, which
 * needs at most the longest pattern's length of lookahead; at the end of the stream
 * (`final`), every position is.
 */
function release(patterns: CompiledPatterns, stream: StreamState, final: boolean): string {
  const text = stream.pending;
  // Never end a chunk between the two halves of a surrogate pair: a consumer encoding
  // each chunk to UTF-8 on its own would turn each half into U+FFFD.
  const end = !final && isHighSurrogate(text.charCodeAt(text.length - 1)) ? text.length - 1 : text.length;
  const pieces: string[] = [];
  let plainStart = 0;
  let position = 0;
  for (; position < end; position += 1) {
    const matched = longestMatchAt(patterns, text, position, final);
    if (matched === undefined) break;
    stream.coveredUntil = Math.max(stream.coveredUntil, position + matched);
    if (position < stream.coveredUntil) {
      if (!stream.inMask) {
        pieces.push(text.slice(plainStart, position), MASK);
        stream.inMask = true;
      }
      plainStart = position + 1;
    } else {
      stream.inMask = false;
    }
  }
  pieces.push(text.slice(plainStart, position));
  stream.pending = text.slice(position);
  stream.coveredUntil = Math.max(0, stream.coveredUntil - position);
  return pieces.join("");
}

/**
 * Length of the longest pattern at `position` (0 for none), or undefined when the text
 * ends inside a longer pattern's prefix, so more input could still make it match.
 */
function longestMatchAt(
  patterns: CompiledPatterns,
  text: string,
  position: number,
  final: boolean,
): number | undefined {
  const remaining = text.length - position;
  if (remaining < 2) {
    // One character left, shorter than any pattern: it may begin one if more text follows.
    return !final && patterns.firstCharacters.has(text.charCodeAt(position)) ? undefined : 0;
  }
  const candidates = patterns.byFirstPair.get(pairKey(text.charCodeAt(position), text.charCodeAt(position + 1)));
  if (candidates === undefined) return 0;
  for (const pattern of candidates) {
    if (pattern.length > remaining) {
      if (!final && pattern.startsWith(text.slice(position))) return undefined;
    } else if (text.startsWith(pattern, position)) {
      return pattern.length;
    }
  }
  return 0;
}

/**
 * The strings to hide for a set of secrets: each secret; each line of a multi-line secret
 * (a PEM key printed line by line, or with \r\n endings); what each template filter without
 * arguments makes of it (`#{ApiToken | ToUpper}` in a prompt or a script); and the
 * encodings a script is likely to print, of the secret and of the secret plus "\n" (what
 * `echo "$SECRET" | base64` encodes): base64 and base64url, whole and wrapped into lines,
 * hex in lower and upper case, whole and wrapped, and URL encoding. A secret inside a
 * longer base64 text (`curl -u user:secret` sends base64 of "user:secret") is caught by
 * the part of its base64 that does not depend on the bytes around it, at each of the
 * three offsets (modulo 3) where it can start.
 */
function maskingPatterns(secrets: readonly string[]): Set<string> {
  const patterns = new Set<string>();
  const add = (pattern: string, minimumLength = MINIMUM_SECRET_LENGTH) => {
    if (pattern.length >= minimumLength) patterns.add(pattern);
  };
  const addBase64 = (base64: string, minimumLength: number) => {
    add(base64, minimumLength);
    add(base64.replaceAll("+", "-").replaceAll("/", "_"), minimumLength);
  };
  for (const secret of secrets) {
    if (secret.length < MINIMUM_SECRET_LENGTH) continue;
    add(secret);
    // Trimmed, so a line printed with other indentation is still caught.
    for (const line of secret.split(/\r\n|\r|\n/)) add(line.trim(), MINIMUM_LINE_LENGTH);
    for (const output of argumentlessFilterOutputs(secret)) add(output);
    for (const encoded of [secret, `${secret}\n`]) {
      const bytes = Buffer.from(encoded, "utf8");
      // Without its "=" padding the pattern also matches unpadded base64; padding left
      // visible after a mask tells nothing.
      const base64 = bytes.toString("base64").replace(/=+$/, "");
      addBase64(base64, MINIMUM_SECRET_LENGTH);
      for (const width of BASE64_LINE_WIDTHS) {
        for (const line of wrap(base64, width)) addBase64(line, MINIMUM_PIECE_LENGTH);
      }
      const hex = bytes.toString("hex");
      for (const cased of [hex, hex.toUpperCase()]) {
        add(cased);
        for (const line of wrap(cased, HEX_LINE_WIDTH)) add(line, MINIMUM_PIECE_LENGTH);
      }
    }
    const bytes = Buffer.from(secret, "utf8");
    for (const offset of [0, 1, 2]) addBase64(innerBase64(bytes, offset), MINIMUM_PIECE_LENGTH);
    const urlEncoded = urlEncode(secret);
    if (urlEncoded !== undefined) {
      add(urlEncoded);
      add(urlEncoded.replaceAll("%20", "+"));
    }
    // What the URL parser itself makes of a secret in each part of a URL (http steps log
    // the URL they call: #{Token} in a query becomes tok%22en, not encodeURIComponent's form).
    for (const form of urlPartEncodings(secret)) add(form);
  }
  return patterns;
}

/** A secret as the WHATWG URL parser encodes it in a path, a query, a fragment and a password. */
function urlPartEncodings(secret: string): string[] {
  // The parser drops tabs and line breaks rather than encoding them: such a secret cannot
  // appear in a URL as itself, and what is left is no encoding of it.
  if (/[\t\n\r]/.test(secret)) return [];
  try {
    const withPassword = new URL("http://host/");
    withPassword.password = secret;
    return [
      new URL(`http://host/${secret}`).pathname.slice(1),
      new URL(`http://host/?${secret}`).search.slice(1),
      new URL(`http://host/#${secret}`).hash.slice(1),
      withPassword.password,
      // Only forms the parser encoded: the others are the secret itself, or it less what the
      // parser trims from the ends.
    ].filter((form) => form !== secret && form.includes("%"));
  } catch {
    return [];
  }
}

/**
 * The base64 characters that encode only `bytes`, when they start `offset` bytes (0–2)
 * into a group of three of a longer text: each base64 character holds 6 bits, so those
 * that share bits with the bytes before (at the start) or after (at the end) are left out.
 */
function innerBase64(bytes: Buffer, offset: number): string {
  const encoded = Buffer.concat([Buffer.alloc(offset), bytes]).toString("base64");
  // Characters fully inside the prefix's bits or sharing bits with it: 0, 2 or 3 of them.
  const start = [0, 2, 3][offset] ?? 0;
  // Characters whose 6 bits all lie within the prefix and the bytes.
  const end = Math.floor(((offset + bytes.length) * 8) / 6);
  return encoded.slice(start, end);
}

/** `text` cut into lines of `width` characters (the last may be shorter); none when it fits on one. */
function wrap(text: string, width: number): string[] {
  if (text.length <= width) return [];
  const lines: string[] = [];
  for (let start = 0; start < text.length; start += width) lines.push(text.slice(start, start + width));
  return lines;
}

function urlEncode(text: string): string | undefined {
  try {
    return encodeURIComponent(text);
  } catch {
    // A lone surrogate cannot be URL-encoded, so it cannot appear URL-encoded either.
    return undefined;
  }
}

function isHighSurrogate(code: number): boolean {
  return code >= 0xd800 && code <= 0xdbff;
}
