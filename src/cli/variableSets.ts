import type { Command } from "commander";
import type { ProjectVariableSets, SetVariable, VariableSet } from "../domain/variableSets.js";
import { segment } from "./client.js";
import { UsageError } from "./errors.js";
import { printJson, writeOutput } from "./output.js";
import { addResourceGroup, type CliContext, pick, type ResourceGroupSpec, sendAndPrint } from "./resourceGroup.js";
import { addScopedVariableCommands, scopedVariableSpec } from "./variables.js";

/**
 * `ferry varset`: variable sets shared by several projects (ADR 0047) — the sets, their
 * variables (`ferry varset var …`, as `ferry var …` for a project), and which sets a
 * project includes (`ferry varset include`).
 */
const setSpec: ResourceGroupSpec<VariableSet> = {
  group: "varset",
  description: "variable sets shared by several projects (changing one needs editVariableSets everywhere)",
  noun: "variable set",
  collectionPath: () => "/api/v1/variable-sets",
  columns: [
    ["slug", (set) => set.slug],
    ["name", (set) => set.name],
    ["description", (set) => set.description],
  ],
  fields: (set) => [
    ["id", set.id],
    ["slug", set.slug],
    ["name", set.name],
    ["description", set.description],
  ],
};

const variableSpec = scopedVariableSpec<SetVariable>({
  description: "the variables of a variable set (sensitive ones are write-only)",
  collectionPath: (options) => `/api/v1/variable-sets/${segment(String(options.set))}/variables`,
  commonOptions: (command) => command.requiredOption("--set <ref>", "variable set id or slug"),
  field: ["set", (variable) => variable.set],
});

const fieldOptions = { name: "name", slug: "slug", description: "description" };

export function addVariableSetCommands(program: Command, context: CliContext): void {
  const group = addResourceGroup(program, context, setSpec);
  group
    .command("create")
    .description("create a variable set")
    .argument("<name>")
    .option("--slug <slug>")
    .option("--description <text>")
    .option("--json", "print JSON")
    .action((name: string, options: Record<string, unknown>) =>
      sendAndPrint(
        context,
        setSpec,
        "POST",
        "/api/v1/variable-sets",
        { name, ...pick(options, fieldOptions) },
        options,
      ),
    );
  group
    .command("update")
    .description("rename a variable set or change its description")
    .argument("<ref>", "id or slug")
    .option("--name <name>")
    .option("--slug <slug>")
    .option("--description <text>")
    .option("--json", "print JSON")
    .action((reference: string, options: Record<string, unknown>) =>
      sendAndPrint(
        context,
        setSpec,
        "PATCH",
        `/api/v1/variable-sets/${segment(reference)}`,
        pick(options, fieldOptions),
        options,
      ),
    );
  addScopedVariableCommands(addResourceGroup(group, context, variableSpec), context, variableSpec, {
    owner: "variable set",
    require: (command) => command.requiredOption("--set <ref>", "variable set id or slug"),
  });
  group
    .command("include")
    .description(
      "set the variable sets a project includes, in precedence order (on a tie, an earlier set beats a later one; the project's own values beat them all); without sets, show them",
    )
    .requiredOption("--project <ref>", "project id or slug")
    .argument("[sets...]", "variable set slugs, first first")
    .option("--none", "include no variable set")
    .option("--json", "print JSON")
    .action(async (sets: string[], options: { project: string; none?: boolean; json?: boolean }) => {
      if (options.none && sets.length > 0) throw new UsageError("give sets or --none, not both");
      const client = await context.client();
      const path = `/api/v1/projects/${segment(options.project)}/variable-sets`;
      const result =
        sets.length > 0 || options.none
          ? await client.request<ProjectVariableSets>("PUT", path, { sets })
          : await client.get<ProjectVariableSets>(path);
      if (options.json) printJson(result);
      else
        writeOutput(
          result.sets.length > 0
            ? `${result.project} includes, first first: ${result.sets.join(", ")}\n`
            : `${result.project} includes no variable set\n`,
        );
    });
}
