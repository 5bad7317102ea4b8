import { RE2JS, RE2JSSyntaxException } from "re2js";
import { InputError } from "./errors.js";

/**
 * User-supplied regular expressions (version rules, http-test `bodyMatches`) run on RE2
 * (the pure-JS port `re2js`), never on JavaScript's backtracking RegExp: `^(a+)+$` against
 * "aaa…a!" takes RE2 time proportional to the text, not exponential in it.
 *
 * Proportional to the text times the size of the compiled pattern, though: RE2 falls back
 * from its DFA to a simulation that steps every live thread of the program for each
 * character. `a[ab]{1000}[cd]` is 15 characters, compiles to ~1,000 instructions and takes
 * seconds over 1 MiB. So a pattern's program is capped, and a match over large text runs
 * off the main thread (steps/patternWorker.ts).
 *
 * Pure: no I/O.
 */

/** Most instructions a compiled pattern may have (`\d{1,5}` is ~10, `.{1,1000}` ~2,000). */
export const MAX_PATTERN_PROGRAM_SIZE = 2000;

const SYNTAX_HINT = "see https://github.com/google/re2/wiki/Syntax";
const WHY_RE2 = "patterns run on RE2, which matches in time proportional to the text";

/** What is wrong with the pattern, in words that say what to write instead; undefined when RE2 runs it. */
export function linearPatternProblem(pattern: string): string | undefined {
  try {
    compileLinearPattern(pattern);
    return undefined;
  } catch (error) {
    if (error instanceof InputError) return error.message;
    throw error;
  }
}

/** Compiles a user-supplied pattern for RE2. Throws InputError saying what is not supported. */
export function compileLinearPattern(pattern: string): RE2JS {
  // Estimated first: compiling a pattern whose repetitions expand to 200,000 instructions
  // takes the compiler most of a second, and the pattern would be refused afterwards anyway.
  const estimate = estimateProgramSize(pattern);
  if (estimate > 2 * MAX_PATTERN_PROGRAM_SIZE) throw tooLarge(estimate);
  let compiled: RE2JS;
  try {
    compiled = RE2JS.compile(pattern);
  } catch (error) {
    if (error instanceof RE2JSSyntaxException) throw new InputError(describeSyntaxError(error));
    throw new InputError(`not a valid regular expression (RE2 syntax): ${(error as Error).message}; ${SYNTAX_HINT}`);
  }
  const size = compiled.programSize();
  if (size > MAX_PATTERN_PROGRAM_SIZE) throw tooLarge(size);
  return compiled;
}

function tooLarge(size: number): InputError {
  return new InputError(
    `the pattern is too large: its repetitions expand to about ${size} steps, at most ${MAX_PATTERN_PROGRAM_SIZE} are allowed; use smaller counts in {n,m}, or * and +`,
  );
}

function describeSyntaxError(error: RE2JSSyntaxException): string {
  const kind = error.error;
  const input = error.input ?? "";
  if (kind === "invalid escape sequence" && /^\\[1-9k]/.test(input)) {
    return `backreferences such as \\1 or \\k<name> are not supported: ${WHY_RE2}; match the repeated text itself instead`;
  }
  if (
    (kind === "invalid or unsupported Perl syntax" && /^\(\?[=!]/.test(input)) ||
    (kind === "invalid named capture" && /^\(\?<[=!]/.test(input))
  ) {
    return `lookahead and lookbehind ((?=…), (?!…), (?<=…), (?<!…)) are not supported: ${WHY_RE2}; match the surrounding text instead`;
  }
  if (kind === "invalid escape sequence" && input.startsWith("\\u")) {
    return `\\u escapes are not RE2 syntax: write a code point as \\x{20AC}; ${SYNTAX_HINT}`;
  }
  return `not a valid regular expression (RE2 syntax): ${kind}: \`${input}\`; ${SYNTAX_HINT}`;
}

interface Frame {
  /** Size of the alternatives already closed by '|'. */
  finished: number;
  /** Size of the alternative being read. */
  current: number;
  /** Size of the last item, which a repetition that follows applies to. */
  last: number;
  capturing: boolean;
}

/**
 * About how many instructions RE2 compiles the pattern to, read from its text without
 * compiling: a literal, class or anchor is one, a group adds two for its capture, a
 * counted repetition copies its item. Only a cheap guard before compiling; the compiled
 * size is checked exactly afterwards. A pattern RE2 refuses gets some estimate: the
 * compiler says what is wrong with it.
 */
function estimateProgramSize(pattern: string): number {
  const root: Frame = { finished: 0, current: 0, last: 0, capturing: false };
  const frames: Frame[] = [root];
  let frame = root;
  const item = (size: number) => {
    frame.current += size;
    frame.last = size;
  };
  for (let index = 0; index < pattern.length; index++) {
    const character = pattern[index];
    if (character === "\\") {
      if (pattern[index + 1] === "Q") {
        // \Q…\E: every character literally.
        const end = pattern.indexOf("\\E", index + 2);
        const stop = end === -1 ? pattern.length : end;
        item(stop - index - 2);
        frame.last = 1;
        index = end === -1 ? pattern.length : end + 1;
      } else {
        index = endOfEscape(pattern, index);
        item(1);
      }
    } else if (character === "[") {
      index = endOfClass(pattern, index);
      item(1);
    } else if (character === "(") {
      let capturing = true;
      if (pattern[index + 1] === "?") {
        const named = pattern[index + 2] === "P" || pattern[index + 2] === "<";
        const end = named ? pattern.indexOf(">", index) : firstOf(pattern, ":)", index);
        if (end === -1) break;
        if (pattern[end] === ")") {
          // (?i): flags for the rest of the group, no item of its own.
          index = end;
          continue;
        }
        capturing = named;
        index = end;
      }
      frame = { finished: 0, current: 0, last: 0, capturing };
      frames.push(frame);
    } else if (character === ")") {
      if (frames.length === 1) continue;
      const closed = frames.pop() as Frame;
      frame = frames[frames.length - 1] as Frame;
      item(closed.finished + closed.current + (closed.capturing ? 2 : 0));
    } else if (character === "|") {
      frame.finished += frame.current + 1;
      frame.current = 0;
      frame.last = 0;
    } else if (character === "*" || character === "+" || character === "?") {
      frame.current += 1;
    } else if (character === "{") {
      const repeat = /^\{(\d+)(,(\d*))?\}/.exec(pattern.slice(index, index + 24));
      if (repeat) {
        const least = Number(repeat[1]);
        const most = repeat[2] === undefined ? least : repeat[3] === "" ? least + 1 : Number(repeat[3]);
        const copies = Math.max(least, most);
        // The item is already counted once; each further copy repeats it, each optional one adds a branch.
        frame.current += frame.last * Math.max(0, copies - 1) + Math.max(0, most - least);
        frame.last *= Math.max(1, copies);
        index += repeat[0].length - 1;
      } else {
        item(1);
      }
    } else {
      item(1);
    }
  }
  let size = 0;
  for (const open of frames) size += open.finished + open.current;
  return size;
}

/** Index of the last character of the escape starting at `start` ("\d", "\x{263a}", "\p{Greek}", "\pL"). */
function endOfEscape(pattern: string, start: number): number {
  const kind = pattern[start + 1];
  if ((kind === "x" || kind === "p" || kind === "P") && pattern[start + 2] === "{") {
    const end = pattern.indexOf("}", start + 2);
    return end === -1 ? pattern.length : end;
  }
  if (kind === "x") return start + 3;
  if (kind === "p" || kind === "P") return start + 2;
  return start + 1;
}

/** Index of the ']' that closes the class starting at `start` (a ']' first in the class is literal). */
function endOfClass(pattern: string, start: number): number {
  let index = start + 1;
  if (pattern[index] === "^") index++;
  if (pattern[index] === "]") index++;
  for (; index < pattern.length; index++) {
    const character = pattern[index];
    if (character === "\\") index = endOfEscape(pattern, index);
    else if (character === "[" && pattern[index + 1] === ":") {
      const end = pattern.indexOf(":]", index + 2);
      if (end !== -1) index = end + 1;
    } else if (character === "]") return index;
  }
  return pattern.length;
}

function firstOf(text: string, characters: string, from: number): number {
  for (let index = from; index < text.length; index++) {
    if (characters.includes(text[index] as string)) return index;
  }
  return -1;
}
