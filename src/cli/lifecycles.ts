import { type Command, InvalidArgumentError } from "commander";
import type { Lifecycle, PhaseInput } from "../domain/lifecycles.js";
import { segment } from "./client.js";
import { list } from "./output.js";
import { addResourceGroup, type CliContext, pick, type ResourceGroupSpec, sendAndPrint } from "./resourceGroup.js";

const spec: ResourceGroupSpec<Lifecycle> = {
  group: "lifecycle",
  description: "lifecycles: the phases a release goes through",
  noun: "lifecycle",
  collectionPath: () => "/api/v1/lifecycles",
  columns: [
    ["slug", (lifecycle) => lifecycle.slug],
    ["name", (lifecycle) => lifecycle.name],
    ["phases", (lifecycle) => lifecycle.phases.map(describePhase).join(" → ")],
  ],
  fields: (lifecycle) => [
    ["id", lifecycle.id],
    ["slug", lifecycle.slug],
    ["name", lifecycle.name],
    ["description", lifecycle.description || "-"],
    ...lifecycle.phases.map((phase, index): [string, string] => [`phase ${index + 1}`, describePhase(phase)]),
  ],
};

function describePhase(phase: Lifecycle["phases"][number]): string {
  const flags = [
    phase.autoDeploy ? "auto-deploy" : "",
    phase.optional ? "optional" : "",
    phase.acceptSkippedSteps ? "accepts skipped steps" : "",
    phase.separateApprover ? "approver must not be the deployer" : "",
  ].filter(Boolean);
  return `${phase.name} [${list(phase.environments)}]${flags.length > 0 ? ` (${flags.join(", ")})` : ""}`;
}

/**
 * Parses `--phase [Name=]env[,env…][+auto][+optional][+accept-skipped][+separate-approver]`,
 * e.g. `dev+auto` or `Production=prod-eu,prod-us+separate-approver`.
 */
export function parsePhase(value: string, previous: Partial<PhaseInput>[] = []): Partial<PhaseInput>[] {
  const match = /^(?:([^=]+)=)?([^+=]+)((?:\+(?:auto|optional|accept-skipped|separate-approver))*)$/.exec(value.trim());
  if (!match?.[2]) {
    throw new InvalidArgumentError(`use ${phaseSyntax}, e.g. 'dev+auto' or 'Prod=prod+separate-approver'`);
  }
  const flags = match[3] ?? "";
  const environments = match[2].split(",").map((environment) => environment.trim());
  if (environments.some((environment) => environment === "")) {
    throw new InvalidArgumentError("an environment in the list is empty");
  }
  return [
    ...previous,
    {
      ...(match[1] && { name: match[1].trim() }),
      environments,
      autoDeploy: flags.includes("+auto"),
      optional: flags.includes("+optional"),
      // Only when asked for: left out, the server's default (false) applies.
      ...(flags.includes("+accept-skipped") && { acceptSkippedSteps: true }),
      ...(flags.includes("+separate-approver") && { separateApprover: true }),
    },
  ];
}

const phaseSyntax = "[Name=]env[,env…][+auto][+optional][+accept-skipped][+separate-approver]";
const phaseHelp = `a phase: ${phaseSyntax}; repeat in order`;

export function addLifecycleCommands(program: Command, context: CliContext): void {
  const group = addResourceGroup(program, context, spec);
  group
    .command("create")
    .description("create a lifecycle from its phases, in order")
    .argument("<name>")
    .requiredOption("--phase <spec>", phaseHelp, parsePhase)
    .option("--slug <slug>")
    .option("--description <text>")
    .option("--json", "print JSON")
    .action((name: string, options: Record<string, unknown>) =>
      sendAndPrint(
        context,
        spec,
        "POST",
        spec.collectionPath(options),
        { name, ...pick(options, { phase: "phases", slug: "slug", description: "description" }) },
        options,
      ),
    );
  group
    .command("update")
    .description("change a lifecycle; --phase replaces all phases")
    .argument("<ref>", "id or slug")
    .option("--name <name>")
    .option("--phase <spec>", phaseHelp, parsePhase)
    .option("--slug <slug>")
    .option("--description <text>")
    .option("--json", "print JSON")
    .action((reference: string, options: Record<string, unknown>) =>
      sendAndPrint(
        context,
        spec,
        "PATCH",
        `${spec.collectionPath(options)}/${segment(reference)}`,
        pick(options, { name: "name", phase: "phases", slug: "slug", description: "description" }),
        options,
      ),
    );
}
