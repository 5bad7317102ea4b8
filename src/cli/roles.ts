import { type Command, InvalidArgumentError } from "commander";
import { type AccessRole, type Permission, permissions } from "../domain/access.js";
import { list } from "./output.js";
import { addResourceGroup, type CliContext, pick, type ResourceGroupSpec, sendAndPrint } from "./resourceGroup.js";

const spec: ResourceGroupSpec<AccessRole> = {
  group: "role",
  description: "roles: named sets of permissions that teams grant (administrators only)",
  noun: "role",
  collectionPath: () => "/api/v1/roles",
  columns: [
    ["slug", (role) => role.slug],
    ["name", (role) => role.name],
    ["permissions", (role) => list(role.permissions)],
    ["built-in", (role) => (role.builtIn ? "yes" : "-")],
    ["description", (role) => role.description],
  ],
  fields: (role) => [
    ["id", role.id],
    ["slug", role.slug],
    ["name", role.name],
    ["description", role.description || "-"],
    ["permissions", list(role.permissions)],
    ["built-in", role.builtIn ? "yes (cannot be changed or deleted)" : "no"],
  ],
};

/** Collects `--permission`, refusing a name the server does not know or one given twice. */
function parsePermission(value: string, previous: Permission[] = []): Permission[] {
  const permission = permissions.find((known) => known === value.trim());
  if (!permission) throw new InvalidArgumentError(`expected one of ${permissions.join(", ")}`);
  if (previous.includes(permission)) throw new InvalidArgumentError(`'${permission}' is given twice`);
  return [...previous, permission];
}

export function addRoleCommands(program: Command, context: CliContext): void {
  const group = addResourceGroup(program, context, spec);
  group
    .command("create")
    .description("create a role from its permissions")
    .requiredOption("--name <name>", "the role's name, e.g. 'Tester'")
    .requiredOption(
      "--permission <permission>",
      `a permission (repeat for several): ${permissions.join(", ")}`,
      parsePermission,
    )
    .option("--slug <slug>")
    .option("--description <text>")
    .option("--json", "print JSON")
    .action((options: Record<string, unknown>) =>
      sendAndPrint(
        context,
        spec,
        "POST",
        spec.collectionPath(options),
        pick(options, { name: "name", permission: "permissions", slug: "slug", description: "description" }),
        options,
      ),
    );
}
