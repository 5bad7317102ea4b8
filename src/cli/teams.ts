import { type Command, InvalidArgumentError } from "commander";
import type { AssignmentInput, Team } from "../domain/access.js";
import { segment } from "./client.js";
import { OperationError } from "./errors.js";
import { list, printFields, printJson, writeError } from "./output.js";
import {
  addResourceGroup,
  type CliContext,
  collect,
  pick,
  type ResourceGroupSpec,
  sendAndPrint,
} from "./resourceGroup.js";

type Assignment = Team["roles"][number];

const spec: ResourceGroupSpec<Team> = {
  group: "team",
  description: "teams: members granted roles on projects and environments (administrators only)",
  noun: "team",
  collectionPath: () => "/api/v1/teams",
  columns: [
    ["slug", (team) => team.slug],
    ["name", (team) => team.name],
    ["members", (team) => list(team.members)],
    ["roles", (team) => (team.roles.length === 0 ? "-" : team.roles.map(describeAssignment).join("; "))],
  ],
  fields: (team) => [
    ["id", team.id],
    ["slug", team.slug],
    ["name", team.name],
    ["description", team.description || "-"],
    ["members", list(team.members)],
    ...(team.roles.length === 0
      ? [["roles", "-"] as [string, string]]
      : team.roles.map((assignment, index): [string, string] => [`role ${index + 1}`, describeAssignment(assignment)])),
  ],
};

function describeAssignment(assignment: Assignment): string {
  return `${assignment.role} [projects: ${describeScope(assignment.projects)}; environments: ${describeScope(assignment.environments)}]`;
}

function describeScope(scope: readonly string[] | null): string {
  if (scope === null) return "all";
  // Every project (or environment) it named has been deleted: it reaches nothing.
  return scope.length === 0 ? "none" : scope.join(", ");
}

/** A comma-separated list of slugs; empty or `*` means every one (undefined: the API's "left out"). */
function parseScope(value: string, noun: string): string[] | undefined {
  const text = value.trim();
  if (text === "" || text === "*") return undefined;
  const items = text.split(",").map((item) => item.trim());
  if (items.some((item) => item === "")) throw new InvalidArgumentError(`a ${noun} in the list is empty`);
  if (items.includes("*")) throw new InvalidArgumentError(`'*' means every ${noun} and cannot be mixed with names`);
  return items;
}

function assignment(role: string, projects: string[] | undefined, environments: string[] | undefined): AssignmentInput {
  return { role, ...(projects && { projects }), ...(environments && { environments }) };
}

/**
 * Collects `--grant role[:projects[:environments]]`, e.g. `deployer:*:dev,test` (the deployer
 * role on every project in dev and test). `*` or an empty part means all of them.
 */
export function parseGrant(value: string, previous: AssignmentInput[] = []): AssignmentInput[] {
  const parts = value.split(":");
  const role = parts[0]?.trim() ?? "";
  if (role === "" || parts.length > 3) {
    throw new InvalidArgumentError("use role[:projects[:environments]], e.g. 'deployer:*:dev,test' or 'viewer:shop'");
  }
  return [
    ...previous,
    assignment(role, parseScope(parts[1] ?? "", "project"), parseScope(parts[2] ?? "", "environment")),
  ];
}

const parseProjects = (value: string) => parseScope(value, "project");
const parseEnvironments = (value: string) => parseScope(value, "environment");

/**
 * An assignment as the API shows it, turned back into what PATCH takes. One whose projects
 * (or environments) were all deleted reaches nothing and is left out: sending it without the
 * list would grant the role on every one, and an empty list is refused.
 */
function toInput(shown: Assignment): AssignmentInput | undefined {
  if (shown.projects?.length === 0 || shown.environments?.length === 0) return undefined;
  return assignment(shown.role, shown.projects ?? undefined, shown.environments ?? undefined);
}

function sameScope(a: readonly string[] | undefined, b: readonly string[] | undefined): boolean {
  if (a === undefined || b === undefined) return a === b;
  return a.length === b.length && [...a].sort().join(",") === [...b].sort().join(",");
}

function printTeam(team: Team, options: { json?: boolean }): void {
  if (options.json) printJson(team);
  else printFields(spec.fields(team));
}

function teamPath(reference: string): string {
  return `${spec.collectionPath({})}/${segment(reference)}`;
}

/**
 * Reads the team, lets `change` compute new members or roles, and PATCHes them (the API
 * replaces whole lists). There is no version check, so two administrators changing the same
 * team at the same moment can lose one change; `team show` afterwards says what stuck.
 */
async function changeTeam(
  context: CliContext,
  reference: string,
  options: { json?: boolean },
  change: (team: Team) => { members: string[] } | { roles: AssignmentInput[] } | string,
): Promise<void> {
  const client = await context.client();
  const team = await client.get<Team>(teamPath(reference));
  const body = change(team);
  if (typeof body === "string") {
    // Already as asked: nothing to send. Said on stderr so --json output stays one value.
    writeError(`ferry: ${body}; nothing changed\n`);
    printTeam(team, options);
    return;
  }
  printTeam(await client.request<Team>("PATCH", teamPath(team.id), body), options);
}

export function addTeamCommands(program: Command, context: CliContext): void {
  const group = addResourceGroup(program, context, spec);
  group
    .command("create")
    .description("create a team with its members and role grants")
    .requiredOption("--name <name>", "the team's name, e.g. 'Developers'")
    .option("--member <user>", "a member's username (repeat for several)", collect)
    .option(
      "--grant <role[:projects[:environments]]>",
      "a role on comma-separated projects and environments, '*' or empty for all, e.g. deployer:*:dev,test (repeat for several)",
      parseGrant,
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
        pick(options, { name: "name", member: "members", grant: "roles", slug: "slug", description: "description" }),
        options,
      ),
    );

  group
    .command("add-member")
    .description("add a user to a team")
    .argument("<team>", "id or slug")
    .argument("<user>", "username")
    .option("--json", "print the team as JSON")
    .action((reference: string, user: string, options: { json?: boolean }) =>
      changeTeam(context, reference, options, (team) =>
        team.members.includes(user)
          ? `${user} is already a member of team ${team.slug}`
          : { members: [...team.members, user] },
      ),
    );

  group
    .command("remove-member")
    .description("take a user out of a team")
    .argument("<team>", "id or slug")
    .argument("<user>", "username")
    .option("--json", "print the team as JSON")
    .action((reference: string, user: string, options: { json?: boolean }) =>
      changeTeam(context, reference, options, (team) => {
        // A mistyped name is an error rather than a quiet success, so a script notices it.
        if (!team.members.includes(user)) {
          throw new OperationError(`${user} is not a member of team ${team.slug}`, [`members: ${list(team.members)}`]);
        }
        return { members: team.members.filter((member) => member !== user) };
      }),
    );

  group
    .command("grant")
    .description("grant a team a role on some projects and environments (left out: all of them)")
    .argument("<team>", "id or slug")
    .argument("<role>", "role slug")
    .option("--projects <slugs>", "comma-separated project slugs; '*' for all", parseProjects)
    .option("--environments <slugs>", "comma-separated environment slugs; '*' for all", parseEnvironments)
    .option("--json", "print the team as JSON")
    .action(
      (reference: string, role: string, options: { projects?: string[]; environments?: string[]; json?: boolean }) =>
        changeTeam(context, reference, options, (team) => {
          const current = team.roles.flatMap((shown) => toInput(shown) ?? []);
          const granted = current.some(
            (existing) =>
              existing.role === role &&
              sameScope(existing.projects, options.projects) &&
              sameScope(existing.environments, options.environments),
          );
          return granted
            ? `team ${team.slug} already has ${role} on that scope`
            : { roles: [...current, assignment(role, options.projects, options.environments)] };
        }),
    );

  group
    .command("revoke")
    .description("take a role away from a team: every grant of it, whatever its scope")
    .argument("<team>", "id or slug")
    .argument("<role>", "role slug")
    .option("--json", "print the team as JSON")
    .action((reference: string, role: string, options: { json?: boolean }) =>
      changeTeam(context, reference, options, (team) => {
        if (!team.roles.some((shown) => shown.role === role)) {
          throw new OperationError(`team ${team.slug} has no grant of role ${role}`, [
            `roles: ${list([...new Set(team.roles.map((shown) => shown.role))])}`,
          ]);
        }
        return {
          roles: team.roles.filter((shown) => shown.role !== role).flatMap((shown) => toInput(shown) ?? []),
        };
      }),
    );
}
