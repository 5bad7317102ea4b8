import type { Command } from "commander";
import type { Variable } from "../domain/variables.js";
import { segment } from "./client.js";
import { UsageError } from "./errors.js";
import { list } from "./output.js";
import { addResourceGroup, type CliContext, collect, type ResourceGroupSpec, sendAndPrint } from "./resourceGroup.js";
import { readSecretFromStdin } from "./stdin.js";

const spec: ResourceGroupSpec<Variable> = {
  group: "var",
  description: "project variables (sensitive ones are write-only)",
  noun: "variable",
  collectionPath: (options) => `/api/v1/projects/${segment(String(options.project))}/variables`,
  commonOptions: (command) => command.requiredOption("--project <ref>", "project id or slug"),
  columns: [
    ["id", (variable) => variable.id],
    ["name", (variable) => variable.name],
    ["value", (variable) => (variable.sensitive ? "(sensitive: set)" : variable.value)],
    ["environments", (variable) => list(variable.scope.environments)],
    ["roles", (variable) => list(variable.scope.roles)],
    ["targets", (variable) => list(variable.scope.targets)],
  ],
  fields: (variable) => [
    ["id", variable.id],
    ["project", variable.project],
    ["name", variable.name],
    ["value", variable.sensitive ? "(sensitive: set)" : variable.value],
    ["sensitive", String(variable.sensitive)],
    ["environments", list(variable.scope.environments)],
    ["roles", list(variable.scope.roles)],
    ["targets", list(variable.scope.targets)],
  ],
};

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
  const group = addResourceGroup(program, context, spec);
  withScopeOptions(
    group
      .command("create")
      .description("add a variable to a project")
      .requiredOption("--project <ref>", "project id or slug")
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
    group
      .command("update")
      .description("change a variable; scope options replace the whole scope")
      .requiredOption("--project <ref>", "project id or slug")
      .argument("<ref>", "variable id (or name, when only one variable has it)")
      .option("--name <name>")
      .option("--value <value>", "new value (use --value-stdin for sensitive values)")
      .option("--sensitive", "make the variable sensitive")
      .option("--no-sensitive", "make the variable non-sensitive (needs the new value)")
      .option("--unscoped", "remove all scope"),
  ).action(async (reference: string, options: Record<string, unknown>) => {
    if (options.value !== undefined && options.sensitive !== false) {
      const client = await context.client();
      const current = await client.get<Variable>(`${spec.collectionPath(options)}/${segment(reference)}`);
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
