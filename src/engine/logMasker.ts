/**
 * Hides sensitive values in task output before it is stored or streamed. Pure: text in,
 * text out, so the task log, SSE and error messages can all share one masker.
 */

/** What every masked run of text becomes; fixed width so the output does not tell a secret's length. */
export const MASK = "********";

/**
 * Secrets (and lines of multi-line secrets) shorter than this are not masked: masking
 * "a" or "80" would replace every such letter or number in the log and make it
 * unreadable, while a one- or two-character value protects nothing worth the cost.
 */
const MINIMUM_SECRET_LENGTH = 3;

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
  /** Patterns grouped by first character, longest first, so the first match is the longest. */
  readonly byFirstCharacter: ReadonlyMap<string, readonly string[]>;
  /** Length of the longest pattern, 0 when there is nothing to mask. */
  readonly longest: number;
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
  const patterns = [...maskingPatterns(secrets)].sort((left, right) => right.length - left.length);
  const byFirstCharacter = new Map<string, string[]>();
  for (const pattern of patterns) {
    const first = pattern.charAt(0);
    const group = byFirstCharacter.get(first);
    if (group === undefined) {
      byFirstCharacter.set(first, [pattern]);
    } else {
      group.push(pattern);
    }
  }
  return { byFirstCharacter, longest: patterns[0]?.length ?? 0 };
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
  const candidates = patterns.byFirstCharacter.get(text.charAt(position));
  if (candidates === undefined) return 0;
  const remaining = text.length - position;
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
 * The strings to hide for a set of secrets: each secret, each line of a multi-line secret
 * (a PEM key printed line by line, or with \r\n endings), and the encodings a script is
 * likely to print: base64 (also of the secret plus "\n", as `echo "$SECRET" | base64`
 * gives) and URL encoding (as in a logged URL or form body).
 */
function maskingPatterns(secrets: readonly string[]): Set<string> {
  const patterns = new Set<string>();
  const add = (pattern: string) => {
    if (pattern.length >= MINIMUM_SECRET_LENGTH) patterns.add(pattern);
  };
  for (const secret of secrets) {
    if (secret.length < MINIMUM_SECRET_LENGTH) continue;
    add(secret);
    // Trimmed, so a line printed with other indentation is still caught and a line that
    // is only short punctuation (the "  }" of a JSON key file) is not masked everywhere.
    for (const line of secret.split(/\r\n|\r|\n/)) add(line.trim());
    for (const encoded of [secret, `${secret}\n`]) {
      // Without its "=" padding the pattern also matches unpadded base64; padding left
      // visible after a mask tells nothing.
      add(Buffer.from(encoded, "utf8").toString("base64").replace(/=+$/, ""));
    }
    const urlEncoded = urlEncode(secret);
    if (urlEncoded !== undefined) {
      add(urlEncoded);
      add(urlEncoded.replaceAll("%20", "+"));
    }
  }
  return patterns;
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
