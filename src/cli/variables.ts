import type { Command } from "commander";
import type { Variable } from "../domain/variables.js";
import { segment } from "./client.js";
import { UsageError } from "./errors.js";
import { list, printJson, writeOutput } from "./output.js";
import { addResourceGroup, type CliContext, collect, type ResourceGroupSpec, sendAndPrint } from "./resourceGroup.js";
import { readSecretFromStdin } from "./stdin.js";

/** What the `var` groups show of a variable, whoever owns it. */
interface ScopedVariable {
  id: string;
  name: string;
  value: string;
  sensitive: boolean;
  scope: { environments: string[]; roles: string[]; targets: string[] };
}

/**
 * The `var` command group of an owner of scoped variables (`ferry var` for a project's,
 * `ferry varset var` for a set's): the same columns and fields, the owner's named second.
 */
export function scopedVariableSpec<T extends ScopedVariable>(
  owner: Pick<ResourceGroupSpec<T>, "description" | "collectionPath" | "commonOptions"> & {
    field: [string, (variable: T) => string];
  },
): ResourceGroupSpec<T> {
  const shownValue = (variable: T) => (variable.sensitive ? "(sensitive: set)" : variable.value);
  return {
    group: "var",
    description: owner.description,
    noun: "variable",
    collectionPath: owner.collectionPath,
    ...(owner.commonOptions && { commonOptions: owner.commonOptions }),
    columns: [
      ["id", (variable) => variable.id],
      ["name", (variable) => variable.name],
      ["value", shownValue],
      ["environments", (variable) => list(variable.scope.environments)],
      ["roles", (variable) => list(variable.scope.roles)],
      ["targets", (variable) => list(variable.scope.targets)],
    ],
    fields: (variable) => [
      ["id", variable.id],
      [owner.field[0], owner.field[1](variable)],
      ["name", variable.name],
      ["value", shownValue(variable)],
      ["sensitive", String(variable.sensitive)],
      ["environments", list(variable.scope.environments)],
      ["roles", list(variable.scope.roles)],
      ["targets", list(variable.scope.targets)],
    ],
  };
}

const spec = scopedVariableSpec<Variable>({
  description: "project variables (sensitive ones are write-only)",
  collectionPath: (options) => `/api/v1/projects/${segment(String(options.project))}/variables`,
  commonOptions: (command) => command.requiredOption("--project <ref>", "project id or slug"),
  field: ["project", (variable) => variable.project],
});

function withScopeOptions(command: Command): Command {
  return command
    .option("--env <ref>", "scope to an environment (repeat for several)", collect)
    .option("--role <role>", "scope to a target role (repeat for several)", collect)
    .option("--target <ref>", "scope to a target (repeat for several)", collect)
    .option("--value-stdin", "read the value from standard input")
    .option("--json", "print JSON");
}

/** Sensitive values must not travel in argv, where `ps` and shell history would show them. */
async function valueFrom(value: string | undefined, options: Record<string, unknown>): Promise<string | undefined> {
  if (options.valueStdin) {
    if (value !== undefined) throw new UsageError("give the value as an argument or with --value-stdin, not both");
    return readSecretFromStdin("value");
  }
  if (value !== undefined && options.sensitive === true) {
    throw new UsageError("pass a sensitive value with --value-stdin so it does not appear in process lists");
  }
  return value;
}

function scopeFrom(options: Record<string, unknown>, replaceOnly: boolean): Record<string, unknown> | undefined {
  const given = options.env !== undefined || options.role !== undefined || options.target !== undefined;
  if (replaceOnly && !given && !options.unscoped) return undefined;
  return {
    environments: (options.env as string[] | undefined) ?? [],
    roles: (options.role as string[] | undefined) ?? [],
    targets: (options.target as string[] | undefined) ?? [],
  };
}

export function addVariableCommands(program: Command, context: CliContext): void {
  addScopedVariableCommands(addResourceGroup(program, context, spec), context, spec, {
    owner: "project",
    require: (command) => command.requiredOption("--project <ref>", "project id or slug"),
  });
}

/**
 * `create` and `update` of scoped variables, for a project's (`ferry var`) and a variable
 * set's (`ferry varset var`): the same fields, scopes and care for sensitive values.
 */
export function addScopedVariableCommands<T extends { sensitive: boolean }>(
  group: Command,
  context: CliContext,
  spec: ResourceGroupSpec<T>,
  owner: { owner: string; require: (command: Command) => Command },
): void {
  withScopeOptions(
    owner
      .require(group.command("create").description(`add a variable to a ${owner.owner}`))
      .argument("<name>")
      .argument("[value]", "the value (use --value-stdin for sensitive values)")
      .option("--sensitive", "encrypt the value; the API never shows it again"),
  ).action(async (name: string, value: string | undefined, options: Record<string, unknown>) => {
    const resolved = await valueFrom(value, options);
    if (resolved === undefined) throw new UsageError("give a value, or pipe it in with --value-stdin");
    await sendAndPrint(
      context,
      spec,
      "POST",
      spec.collectionPath(options),
      { name, value: resolved, sensitive: options.sensitive === true, scope: scopeFrom(options, false) },
      options,
    );
  });
  withScopeOptions(
    owner
      .require(group.command("update").description("change a variable; scope options replace the whole scope"))
      .argument("<ref>", "variable id (or name, when only one variable has it)")
      .option("--name <name>")
      .option("--value <value>", "new value (use --value-stdin for sensitive values)")
      .option("--sensitive", "make the variable sensitive")
      .option("--no-sensitive", "make the variable non-sensitive (needs the new value)")
      .option("--unscoped", "remove all scope"),
  ).action(async (reference: string, options: Record<string, unknown>) => {
    if (options.value !== undefined && options.sensitive !== false) {
      const client = await context.client();
      const current = await client.get<T>(`${spec.collectionPath(options)}/${segment(reference)}`);
      if (current.sensitive) {
        throw new UsageError(
          "this variable is sensitive: pass its new value with --value-stdin, not in the command line",
        );
      }
    }
    const value = await valueFrom(options.value as string | undefined, options);
    const scope = scopeFrom(options, true);
    const body: Record<string, unknown> = {
      ...(options.name !== undefined && { name: options.name }),
      ...(value !== undefined && { value }),
      ...(options.sensitive !== undefined && { sensitive: options.sensitive }),
      ...(scope && { scope }),
    };
    await sendAndPrint(context, spec, "PATCH", `${spec.collectionPath(options)}/${segment(reference)}`, body, options);
  });
}

/** The answer of GET /api/v1/projects/:project/variable-preview (src/engine/variablePreview.ts). */
interface PreviewCandidate {
  value: string;
  sensitive: boolean;
  scope: Variable["scope"];
  rank: string;
  /** The variable set the value comes from; null: the project's own. */
  set?: string | null;
  verdict: string;
  reason: string;
}
interface VariablePreview {
  project: string;
  environment: string;
  target: string | null;
  step: string | null;
  release: string | null;
  variables: {
    name: string;
    value: string;
    sensitive: boolean;
    rank: string;
    scope: Variable["scope"] | null;
    set?: string | null;
    candidates: PreviewCandidate[];
  }[];
  ambiguous: { name: string; message: string; candidates: PreviewCandidate[] }[];
}

/**
 * `ferry vars show`: the variables a step would see, before any release or deployment
 * (issue 16 part 3). `ferry var …` manages the stored variables; `vars` previews their effect.
 */
export function addVariablePreviewCommand(program: Command, context: CliContext): void {
  program
    .command("vars")
    .description("preview variables: their effective values in an environment (ferry var manages them)")
    .command("show")
    .description(
      "each variable's effective value for an environment (and target, step), sensitive ones masked, and the scope that won",
    )
    .requiredOption("--project <ref>", "project id or slug")
    .requiredOption("--env <ref>", "environment slug or id")
    .option("--target <ref>", "a target of the environment: what steps on it see")
    .option("--step <name>", "a step of the project's process")
    .option("--release <version>", "what deploying this release would give (its snapshot), not the variables now")
    .option("--explain <name>", "list every value of this variable and why it won or lost")
    .option("--json", "print JSON")
    .action(
      async (options: {
        project: string;
        env: string;
        target?: string;
        step?: string;
        release?: string;
        explain?: string;
        json?: boolean;
      }) => {
        const client = await context.client();
        const query = new URLSearchParams({
          environment: options.env,
          ...(options.target !== undefined && { target: options.target }),
          ...(options.step !== undefined && { step: options.step }),
          ...(options.release !== undefined && { release: options.release }),
        });
        const preview = await client.get<VariablePreview>(
          `/api/v1/projects/${segment(options.project)}/variable-preview?${query}`,
        );
        if (options.explain !== undefined) {
          const name = options.explain;
          const variable = preview.variables.find((item) => item.name === name);
          const ambiguous = preview.ambiguous.find((item) => item.name === name);
          if (!variable && !ambiguous) {
            throw new UsageError(
              `no variable '${name}' here; run 'ferry vars show' without --explain to list the ones there are`,
            );
          }
          if (options.json) printJson(variable ?? ambiguous);
          else writeOutput(formatExplanation(preview, name, variable, ambiguous));
          return;
        }
        if (options.json) printJson(preview);
        else writeOutput(formatPreview(preview));
      },
    );
}

function where(preview: VariablePreview): string {
  return [
    `in ${preview.environment}`,
    ...(preview.target ? [`on target ${preview.target}`] : []),
    ...(preview.step ? [`for step ${preview.step}`] : []),
    ...(preview.release ? [`of release ${preview.release}`] : []),
  ].join(" ");
}

/** "environments prod; roles web", or "unscoped". */
function describeScope(scope: Variable["scope"] | null): string {
  if (scope === null) return "";
  const parts = (["environments", "roles", "targets"] as const)
    .filter((kind) => scope[kind].length > 0)
    .map((kind) => `${kind} ${scope[kind].join(",")}`);
  return parts.length > 0 ? parts.join("; ") : "unscoped";
}

/** " in set common" for a variable set's value; nothing for the project's own. */
function inSet(set: string | null | undefined): string {
  return set ? ` in set ${set}` : "";
}

/** One line per value: a multi-line value shows its line breaks as \n. */
function oneLine(value: string): string {
  return value.replace(/\r?\n/g, "\\n");
}

function formatPreview(preview: VariablePreview): string {
  const rows = preview.variables.map((variable) => [
    variable.name,
    `${oneLine(variable.value)}${variable.sensitive ? " (sensitive)" : ""}`,
    variable.rank === "system" ? "system" : `${variable.rank}: ${describeScope(variable.scope)}${inSet(variable.set)}`,
  ]);
  const header = ["NAME", "VALUE", "WON BY"];
  const widths = header.map((title, index) => Math.max(title.length, ...rows.map((row) => row[index]?.length ?? 0)));
  const format = (row: string[]) =>
    row
      .map((cell, index) => cell.padEnd(widths[index] ?? 0))
      .join("  ")
      .trimEnd();
  const lines = [`Variables of ${preview.project} ${where(preview)}:`, format(header), ...rows.map(format)];
  for (const ambiguous of preview.ambiguous) lines.push(`ambiguous: ${ambiguous.message}`);
  return `${lines.join("\n")}\n`;
}

function formatExplanation(
  preview: VariablePreview,
  name: string,
  variable: VariablePreview["variables"][number] | undefined,
  ambiguous: VariablePreview["ambiguous"][number] | undefined,
): string {
  const lines = [
    variable
      ? `${name} ${where(preview)} = ${oneLine(variable.value)}${variable.sensitive ? " (sensitive)" : ""} (${variable.rank === "system" ? "a system variable" : `won by its ${variable.rank} scope`})`
      : `${name} ${where(preview)}: ${ambiguous?.message ?? ""}`,
  ];
  const candidates = variable?.candidates ?? ambiguous?.candidates ?? [];
  if (candidates.length > 0) lines.push("Candidates:");
  const scopeOf = (candidate: PreviewCandidate) => `${describeScope(candidate.scope)}${inSet(candidate.set)}`;
  // At least two spaces after the longest scope ("environments prod in set defaults"), so the columns never run together.
  const scopeWidth = Math.max(30, ...candidates.map((candidate) => scopeOf(candidate).length + 1));
  for (const candidate of candidates) {
    lines.push(
      `  ${candidate.verdict.padEnd(14)} ${scopeOf(candidate).padEnd(scopeWidth)} ${oneLine(candidate.value)}${candidate.sensitive ? " (sensitive)" : ""}`,
      `  ${"".padEnd(14)} ${candidate.reason}`,
    );
  }
  return `${lines.join("\n")}\n`;
}
