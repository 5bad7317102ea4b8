/**
 * Field-level differences between two values as the API shows them, for `ferry plan` and
 * `ferry release diff`: one entry per leaf that differs, addressed by a path such as
 * `steps[Say hello].config.env.GREETING`. Lists of named things (steps, images, phases) are
 * matched by name, so a step that moved is not reported as every field of two steps; other
 * lists compare as a whole.
 *
 * A field that holds a secret (`password`, `privateKey`, `passphrase`, or a value the caller
 * marks sensitive) is reported as changed with neither side's value.
 */

export interface FieldChange {
  /** Where: `config.script`, `steps[web].roles`, `images[web]`. */
  readonly field: string;
  /** Left out when the field was added (or is a secret). */
  readonly from?: unknown;
  /** Left out when the field was removed (or is a secret). */
  readonly to?: unknown;
  /** A secret: only that it changed is said. */
  readonly sensitive?: true;
}

const SECRET_FIELDS = new Set(["password", "privateKey", "passphrase"]);

/** The leaves of `after` that differ from `before`, `before` and `after` being JSON values. */
export function fieldChanges(before: unknown, after: unknown, path = ""): FieldChange[] {
  const last = path.split(".").at(-1) ?? "";
  if (SECRET_FIELDS.has(last)) {
    return sameJson(before, after) ? [] : [{ field: path, sensitive: true }];
  }
  if (isRecord(before) && isRecord(after)) {
    const keys = [...new Set([...Object.keys(before), ...Object.keys(after)])].sort();
    return keys.flatMap((key) => fieldChanges(before[key], after[key], join(path, key)));
  }
  if (Array.isArray(before) && Array.isArray(after) && isNamedList(before) && isNamedList(after)) {
    const names = [...new Set([...before.map(nameOf), ...after.map(nameOf)])];
    return names.flatMap((name) => {
      const from = before.find((item) => nameOf(item) === name);
      const to = after.find((item) => nameOf(item) === name);
      const itemPath = `${path}[${name}]`;
      if (from === undefined) return [{ field: itemPath, to }];
      if (to === undefined) return [{ field: itemPath, from }];
      return fieldChanges(from, to, itemPath);
    });
  }
  if (sameJson(before, after)) return [];
  return [{ field: path, ...(before !== undefined && { from: before }), ...(after !== undefined && { to: after }) }];
}

/** One line per change: `field: "a" → "b"`, `field: added "b"`, `field: changed (sensitive)`. */
export function describeFieldChange(change: FieldChange): string {
  if (change.sensitive) return `${change.field}: changed (sensitive, not shown)`;
  if (change.from === undefined) return `${change.field}: added ${show(change.to)}`;
  if (change.to === undefined) return `${change.field}: removed (was ${show(change.from)})`;
  return `${change.field}: ${show(change.from)} → ${show(change.to)}`;
}

function show(value: unknown): string {
  const text = JSON.stringify(value) ?? "null";
  // One change per line: a long value (a script) is cut, its line breaks shown as \n by JSON.
  return text.length > 200 ? `${text.slice(0, 197)}...` : text;
}

function join(path: string, key: string): string {
  return path === "" ? key : `${path}.${key}`;
}

function nameOf(item: unknown): string {
  return String((item as { name: unknown }).name);
}

/** A list whose items are objects with distinct string names. */
function isNamedList(list: readonly unknown[]): boolean {
  if (list.length === 0) return true;
  const names = list.map((item) => (isRecord(item) && typeof item.name === "string" ? item.name : undefined));
  return names.every((name) => name !== undefined) && new Set(names).size === names.length;
}

function isRecord(value: unknown): value is Record<string, unknown> {
  return typeof value === "object" && value !== null && !Array.isArray(value);
}

/** Equal as JSON, whatever the order of object keys. */
export function sameJson(a: unknown, b: unknown): boolean {
  return canonicalJson(a) === canonicalJson(b);
}

/** JSON with object keys sorted, so two values compare equal whatever order their keys came in. */
export function canonicalJson(value: unknown): string {
  return (
    JSON.stringify(value, (_key, item: unknown) =>
      item && typeof item === "object" && !Array.isArray(item)
        ? Object.fromEntries(Object.entries(item).sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0)))
        : item,
    ) ?? "undefined"
  );
}
