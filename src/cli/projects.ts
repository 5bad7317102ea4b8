import type { Command } from "commander";
import type { Project } from "../domain/projects.js";
import { segment } from "./client.js";
import { addResourceGroup, type CliContext, pick, type ResourceGroupSpec, sendAndPrint } from "./resourceGroup.js";

const spec: ResourceGroupSpec<Project> = {
  group: "project",
  description: "projects: one deployable application each",
  noun: "project",
  collectionPath: () => "/api/v1/projects",
  columns: [
    ["slug", (project) => project.slug],
    ["name", (project) => project.name],
    ["lifecycle", (project) => project.lifecycle],
    ["description", (project) => project.description],
  ],
  fields: (project) => [
    ["id", project.id],
    ["slug", project.slug],
    ["name", project.name],
    ["lifecycle", project.lifecycle],
    ["description", project.description || "-"],
  ],
};

const fieldOptions = { name: "name", slug: "slug", description: "description", lifecycle: "lifecycle" };

export function addProjectCommands(program: Command, context: CliContext): void {
  const group = addResourceGroup(program, context, spec);
  group
    .command("create")
    .description("create a project")
    .argument("<name>")
    .requiredOption("--lifecycle <ref>", "lifecycle id or slug")
    .option("--slug <slug>")
    .option("--description <text>")
    .option("--json", "print JSON")
    .action((name: string, options: Record<string, unknown>) =>
      sendAndPrint(
        context,
        spec,
        "POST",
        spec.collectionPath(options),
        { name, ...pick(options, fieldOptions) },
        options,
      ),
    );
  group
    .command("update")
    .description("change a project")
    .argument("<ref>", "id or slug")
    .option("--name <name>")
    .option("--lifecycle <ref>", "lifecycle id or slug")
    .option("--slug <slug>")
    .option("--description <text>")
    .option("--json", "print JSON")
    .action((reference: string, options: Record<string, unknown>) =>
      sendAndPrint(
        context,
        spec,
        "PATCH",
        `${spec.collectionPath(options)}/${segment(reference)}`,
        pick(options, fieldOptions),
        options,
      ),
    );
}
