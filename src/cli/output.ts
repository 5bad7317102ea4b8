/** Writes JSON for scripts (`--json`). */
export function printJson(value: unknown): void {
  process.stdout.write(`${JSON.stringify(value, null, 2)}\n`);
}

export type Column<T> = [header: string, cell: (row: T) => string];

/** Writes a plain, aligned table for people. */
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

/** Writes one resource as "field: value" lines. */
export function printFields(fields: readonly [string, string][]): void {
  const width = Math.max(...fields.map(([label]) => label.length));
  process.stdout.write(`${fields.map(([label, value]) => `${`${label}:`.padEnd(width + 1)} ${value}`).join("\n")}\n`);
}

function oneLine(value: string): string {
  return value.replace(/\s+/g, " ");
}

export function list(values: readonly string[]): string {
  return values.length === 0 ? "-" : values.join(", ");
}
