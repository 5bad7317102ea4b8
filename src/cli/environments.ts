import { type Command, InvalidArgumentError } from "commander";
import type { Environment } from "../domain/environments.js";
import { segment } from "./client.js";
import {
  addResourceGroup,
  type CliContext,
  parseNonNegativeInteger,
  pick,
  type ResourceGroupSpec,
  sendAndPrint,
} from "./resourceGroup.js";

const spec: ResourceGroupSpec<Environment> = {
  group: "env",
  description: "environments (dev, test, prod …), in order",
  noun: "environment",
  collectionPath: () => "/api/v1/environments",
  columns: [
    ["#", (environment) => String(environment.position)],
    ["slug", (environment) => environment.slug],
    ["name", (environment) => environment.name],
    ["description", (environment) => environment.description],
    ["unavailable targets", (environment) => environment.unavailableTargets],
    ["ephemeral", (environment) => describeEphemeral(environment)],
  ],
  fields: (environment) => [
    ["id", environment.id],
    ["slug", environment.slug],
    ["name", environment.name],
    ["position", String(environment.position)],
    ["description", environment.description || "-"],
    ["unavailable targets", environment.unavailableTargets],
    ["ephemeral", describeEphemeral(environment)],
  ],
};

/** "no", "yes (until deleted)" or "yes (ttl 120 min after the last deployment)". */
function describeEphemeral(environment: Environment): string {
  if (!environment.ephemeral) return "no";
  return environment.ttlMinutes === null
    ? "yes (until deleted)"
    : `yes (ttl ${environment.ttlMinutes} min after the last deployment)`;
}

const fieldOptions = {
  name: "name",
  slug: "slug",
  description: "description",
  position: "position",
  unavailableTargets: "unavailableTargets",
  ephemeral: "ephemeral",
  ttlMinutes: "ttlMinutes",
};

/** A TTL in minutes (1 to a year), or "none" to have no automatic tear-down. */
function parseTtl(value: string): number | null {
  if (value === "none") return null;
  if (!/^[0-9]+$/.test(value) || Number(value) < 1 || Number(value) > 525_600) {
    throw new InvalidArgumentError("give the minutes after the last deployment (1 to 525600), or none");
  }
  return Number(value);
}
const EPHEMERAL_HELP =
  "short-lived (e.g. per branch): outside the lifecycle it takes any release; 'ferry env delete' or its TTL tears down what is deployed there (ADR 0045, 0069)";
const TTL_HELP =
  "tear an ephemeral environment down this many minutes after its last deployment (none: only on delete)";

/** Checked by the server too; here so a typo is a usage error (exit 2) before anything is sent. */
function parsePolicy(value: string): string {
  if (value !== "fail" && value !== "skip") {
    throw new InvalidArgumentError("write fail (a deployment fails) or skip (it leaves the target out and goes on)");
  }
  return value;
}
const POLICY_HELP = "when a target cannot be reached: fail the deployment (default) or skip the target";

export function addEnvironmentCommands(program: Command, context: CliContext): void {
  const group = addResourceGroup(program, context, spec);
  group
    .command("create")
    .description("create an environment (appended to the order unless --position)")
    .argument("<name>")
    .option("--slug <slug>")
    .option("--description <text>")
    .option("--position <n>", "0-based place in the order", parseNonNegativeInteger)
    .option("--unavailable-targets <policy>", POLICY_HELP, parsePolicy)
    .option("--ephemeral", EPHEMERAL_HELP)
    .option("--ttl-minutes <minutes>", TTL_HELP, parseTtl)
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
    .description(
      "change an environment's name, slug, description, place in the order or policy for unavailable targets",
    )
    .argument("<ref>", "id or slug")
    .option("--name <name>")
    .option("--slug <slug>")
    .option("--description <text>")
    .option("--position <n>", "0-based place in the order", parseNonNegativeInteger)
    .option("--unavailable-targets <policy>", POLICY_HELP, parsePolicy)
    .option("--ephemeral", EPHEMERAL_HELP)
    .option("--no-ephemeral", "keep it: no longer torn down on delete or by a TTL")
    .option("--ttl-minutes <minutes>", TTL_HELP, parseTtl)
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
