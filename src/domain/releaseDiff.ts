import { type FieldChange, fieldChanges, sameJson } from "./fieldDiff.js";
import type { Step } from "./process.js";

/**
 * What changed between two releases of a project (issue 16 part 5): images with their
 * digests, the process's steps field by field, the variables, the notes. A sensitive
 * variable is compared by its value (opened by the caller) but reported only as changed:
 * no value of it, old or new, is in the result.
 */

export interface ReleaseSide {
  version: string;
  notes: string;
  images: readonly { name: string; repository: string; tag: string; digest: string }[];
  steps: readonly Step[];
  /** Scopes by slug; a sensitive value opened, for comparison only. */
  variables: readonly {
    name: string;
    sensitive: boolean;
    value: string;
    scope: { environments: string[]; roles: string[]; targets: string[] };
    /** The variable set the value came from (ADR 0047); absent: the project's own. */
    set?: string | undefined;
  }[];
}

type Change = "added" | "removed" | "changed";

interface ImageChange {
  name: string;
  change: Change;
  from?: { repository: string; tag: string; digest: string };
  to?: { repository: string; tag: string; digest: string };
}

interface StepChange {
  name: string;
  change: Change;
  /** For a changed step: each field that differs (config.script, roles…). */
  fields?: FieldChange[];
  /** The step's kind (the new one when it changed). */
  kind: string;
}

interface VariableChange {
  name: string;
  scope: { environments: string[]; roles: string[]; targets: string[] };
  /** The variable set of the value; absent: the project's own. */
  set?: string;
  change: Change;
  sensitive: boolean;
  /** Left out for a sensitive value (either side), and on the side that does not exist. */
  from?: string;
  to?: string;
  /** "sensitive: false → true" and the like. */
  note?: string;
}

export interface ReleaseDiff {
  from: string;
  to: string;
  images: ImageChange[];
  steps: StepChange[];
  variables: VariableChange[];
  notes: { from: string; to: string } | null;
}

export function diffReleases(from: ReleaseSide, to: ReleaseSide): ReleaseDiff {
  return {
    from: from.version,
    to: to.version,
    images: diffImages(from.images, to.images),
    steps: diffSteps(from.steps, to.steps),
    variables: diffVariables(from.variables, to.variables),
    notes: from.notes === to.notes ? null : { from: from.notes, to: to.notes },
  };
}

function diffImages(from: ReleaseSide["images"], to: ReleaseSide["images"]): ImageChange[] {
  const pinned = (image: ReleaseSide["images"][number]) => ({
    repository: image.repository,
    tag: image.tag,
    digest: image.digest,
  });
  const names = unique([...from.map((image) => image.name), ...to.map((image) => image.name)]);
  return names.flatMap((name): ImageChange[] => {
    const before = from.find((image) => image.name === name);
    const after = to.find((image) => image.name === name);
    if (!before && after) return [{ name, change: "added", to: pinned(after) }];
    if (before && !after) return [{ name, change: "removed", from: pinned(before) }];
    if (before && after && !sameJson(pinned(before), pinned(after))) {
      return [{ name, change: "changed", from: pinned(before), to: pinned(after) }];
    }
    return [];
  });
}

function diffSteps(from: readonly Step[], to: readonly Step[]): StepChange[] {
  const names = unique([...from.map((step) => step.name), ...to.map((step) => step.name)]);
  const changes = names.flatMap((name): StepChange[] => {
    const before = from.find((step) => step.name === name);
    const after = to.find((step) => step.name === name);
    if (!before && after) return [{ name, change: "added", kind: after.kind }];
    if (before && !after) return [{ name, change: "removed", kind: before.kind }];
    if (!before || !after) return [];
    const fields = fieldChanges(before, after);
    return fields.length > 0 ? [{ name, change: "changed", kind: after.kind, fields }] : [];
  });
  // The order of the steps is part of the process: a move shows as a change of position.
  const order = (steps: readonly Step[]) => steps.map((step) => step.name).filter((name) => names.includes(name));
  const kept = (steps: readonly Step[], other: readonly Step[]) =>
    order(steps).filter((name) => other.some((step) => step.name === name));
  const before = kept(from, to);
  const after = kept(to, from);
  for (const [index, name] of after.entries()) {
    if (before[index] === name || changes.some((change) => change.name === name && change.change !== "changed")) {
      continue;
    }
    const step = to.find((item) => item.name === name);
    const move: FieldChange = { field: "position", from: before.indexOf(name) + 1, to: index + 1 };
    const existing = changes.find((change) => change.name === name);
    if (existing) existing.fields = [...(existing.fields ?? []), move];
    else changes.push({ name, change: "changed", kind: step?.kind ?? "", fields: [move] });
  }
  return changes;
}

function scopeKey(scope: VariableChange["scope"]): string {
  const part = (values: readonly string[]) => [...values].sort().join(",");
  return `e=${part(scope.environments)};r=${part(scope.roles)};t=${part(scope.targets)}`;
}

function diffVariables(from: ReleaseSide["variables"], to: ReleaseSide["variables"]): VariableChange[] {
  // A set's value is another value than the project's of the same name and scope.
  const key = (variable: ReleaseSide["variables"][number]) =>
    `${variable.name}|${scopeKey(variable.scope)}|${variable.set ?? ""}`;
  const keys = unique([...from.map(key), ...to.map(key)]);
  const changes = keys.flatMap((wanted): VariableChange[] => {
    const before = from.find((variable) => key(variable) === wanted);
    const after = to.find((variable) => key(variable) === wanted);
    const either = after ?? before;
    if (!either) return [];
    const base = { name: either.name, scope: either.scope, ...(either.set !== undefined && { set: either.set }) };
    if (!before && after) {
      return [{ ...base, change: "added", sensitive: after.sensitive, ...(!after.sensitive && { to: after.value }) }];
    }
    if (before && !after) {
      return [
        { ...base, change: "removed", sensitive: before.sensitive, ...(!before.sensitive && { from: before.value }) },
      ];
    }
    if (!before || !after) return [];
    if (before.sensitive === after.sensitive && before.value === after.value) return [];
    const sensitive = before.sensitive || after.sensitive;
    return [
      {
        ...base,
        change: "changed",
        sensitive,
        ...(!sensitive && { from: before.value, to: after.value }),
        ...(before.sensitive !== after.sensitive && { note: `sensitive: ${before.sensitive} → ${after.sensitive}` }),
      },
    ];
  });
  return changes.sort(
    (a, b) =>
      a.name.localeCompare(b.name) ||
      scopeKey(a.scope).localeCompare(scopeKey(b.scope)) ||
      (a.set ?? "").localeCompare(b.set ?? ""),
  );
}

function unique(values: readonly string[]): string[] {
  return [...new Set(values)];
}
