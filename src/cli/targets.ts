import type { Command } from "commander";
import type { Target } from "../domain/targets.js";
import { segment } from "./client.js";
import { list } from "./output.js";
import {
  addResourceGroup,
  type CliContext,
  collect,
  pick,
  type ResourceGroupSpec,
  sendAndPrint,
} from "./resourceGroup.js";

const spec: ResourceGroupSpec<Target> = {
  group: "target",
  description: "deployment targets: hosts in environments, with roles",
  noun: "target",
  collectionPath: () => "/api/v1/targets",
  columns: [
    ["slug", (target) => target.slug],
    ["name", (target) => target.name],
    ["environments", (target) => list(target.environments)],
    ["roles", (target) => list(target.roles)],
    ["transport", (target) => target.transport],
    ["runtimes", (target) => list(target.runtimes)],
  ],
  fields: (target) => [
    ["id", target.id],
    ["slug", target.slug],
    ["name", target.name],
    ["environments", list(target.environments)],
    ["roles", list(target.roles)],
    ["transport", target.transport],
    ["runtimes", list(target.runtimes)],
  ],
};

const fieldOptions = {
  name: "name",
  slug: "slug",
  env: "environments",
  role: "roles",
  transport: "transport",
  runtime: "runtimes",
};

function withTargetOptions(command: Command): Command {
  return command
    .option("--role <role>", "a role (repeat for several)", collect)
    .option("--transport <kind>", "how Ferry reaches it: local")
    .option("--runtime <kind>", "docker or process (repeat for both)", collect)
    .option("--slug <slug>")
    .option("--json", "print JSON");
}

export function addTargetCommands(program: Command, context: CliContext): void {
  const group = addResourceGroup(program, context, spec);
  withTargetOptions(
    group
      .command("create")
      .description("register a target")
      .argument("<name>")
      .requiredOption("--env <ref>", "an environment it belongs to (repeat for several)", collect),
  ).action((name: string, options: Record<string, unknown>) =>
    sendAndPrint(
      context,
      spec,
      "POST",
      spec.collectionPath(options),
      { name, ...pick(options, fieldOptions) },
      options,
    ),
  );
  withTargetOptions(
    group
      .command("update")
      .description("change a target; list options replace the whole list")
      .argument("<ref>", "id or slug")
      .option("--name <name>")
      .option("--env <ref>", "an environment it belongs to (repeat for several)", collect),
  ).action((reference: string, options: Record<string, unknown>) =>
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
