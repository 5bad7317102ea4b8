import type { Readable } from "node:stream";
import { pipeline } from "node:stream/promises";
import { escapeControlCharacters, escapeJsonControlCharacters } from "../domain/text.js";

/*
 * Everything the CLI prints goes through this file. What it prints is mostly the server's
 * text (names, descriptions, script output in task logs, error details), which may hold
 * control characters that a terminal would act on (recolour, move the cursor, overwrite a
 * line, set the window title) instead of showing. They are printed as visible escapes
 * (`\x1b`, `\u202e`, src/domain/text.ts) whether or not standard output is a terminal: a
 * log redirected to a file is attacked the same way when `cat` or `less -R` shows it.
 */

/** Writes text for people to standard output: its newlines and tabs stay, other control characters are escaped. */
export function writeOutput(text: string): void {
  process.stdout.write(escapeControlCharacters(text, true));
}

/** The same for standard error (messages, warnings, a failure's details). */
export function writeError(text: string): void {
  process.stderr.write(escapeControlCharacters(text, true));
}

/**
 * Writes JSON for scripts (`--json`). JSON.stringify escapes C0 controls; the few it
 * leaves raw (DEL, C1, bidirectional overrides) are escaped too, which parses to the same value.
 */
export function printJson(value: unknown): void {
  process.stdout.write(`${escapeJsonControlCharacters(JSON.stringify(value, null, 2))}\n`);
}

/**
 * Copies bytes to standard output as they are (`ferry artifact get ID -o -`): a file's
 * content the user asked for, as `cat` prints it, never text of the server's to show, so it
 * is not escaped. Paced by standard output (a slow pipe slows the download).
 */
export async function writeBytes(source: Readable): Promise<void> {
  await pipeline(source, process.stdout, { end: false });
}

export type Column<T> = [header: string, cell: (row: T) => string];

/** Writes a plain, aligned table for people; each cell is one line. */
export function printTable<T>(rows: readonly T[], columns: readonly Column<T>[]): void {
  if (rows.length === 0) {
    process.stdout.write("(none)\n");
    return;
  }
  const cells = rows.map((row) => columns.map(([, cell]) => oneLine(cell(row))));
  const widths = columns.map(([header], index) =>
    Math.max(header.length, ...cells.map((line) => line[index]?.length ?? 0)),
  );
  const format = (line: string[]) =>
    line
      .map((cell, index) => cell.padEnd(widths[index] ?? 0))
      .join("  ")
      .trimEnd();
  process.stdout.write(
    `${[format(columns.map(([header]) => header.toUpperCase())), ...cells.map(format)].join("\n")}\n`,
  );
}

/**
 * Writes one resource as "field: value" lines. A value of several lines (a description's
 * paragraphs) continues under itself, indented, so no line of it can pass for another field.
 */
export function printFields(fields: readonly [string, string][]): void {
  const width = Math.max(...fields.map(([label]) => label.length));
  const continuation = `\n${" ".repeat(width + 2)}`;
  const lines = fields.map(
    ([label, value]) =>
      `${`${label}:`.padEnd(width + 1)} ${escapeControlCharacters(value, true).split("\n").join(continuation)}`,
  );
  process.stdout.write(`${lines.join("\n")}\n`);
}

/** A table cell: white space runs (newlines among them) become one space, control characters visible escapes. */
function oneLine(value: string): string {
  return escapeControlCharacters(value.replace(/\s+/g, " "));
}

export function list(values: readonly string[]): string {
  return values.length === 0 ? "-" : values.join(", ");
}
