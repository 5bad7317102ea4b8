import type { Command } from "commander";
import { type FileOptions, planFiles } from "./apply.js";
import { segment } from "./client.js";
import { UsageError } from "./errors.js";
import { list, printJson, writeOutput } from "./output.js";
import { type CliContext, collect } from "./resourceGroup.js";
import { type DeploymentCreated, reportDeployment, type WaitOptions } from "./wait.js";

/** The answer of GET /api/v1/projects/:project/plan. */
interface DeploymentPlan {
  project: string;
  release: string;
  environment: string;
  steps: { name: string; kind: string; runs: boolean; reason?: string; targets: string[]; actions: string[] }[];
  variables: { name: string; value: string; sensitive: boolean }[];
}

const waitHelp = "follow the deployment's log until it ends; exit 1 unless it succeeded";
const jsonHelp = "print JSON (with --wait: one object at the end, with the state and error)";

const overrideHelp = "deploy although a deployment freeze is in effect, for this reason (needs overrideFreezes)";

interface OverrideOption {
  overrideFreeze?: string;
}

const override = (options: OverrideOption) =>
  options.overrideFreeze === undefined ? {} : { freezeOverride: options.overrideFreeze };

const projectPath = (project: string, rest: string) => `/api/v1/projects/${segment(project)}/${rest}`;

export function addDeploymentCommands(
  program: Command,
  context: CliContext,
  secretSource: Readonly<Record<string, string | undefined>>,
): void {
  /** Posts a request that queues a deployment, then prints it or waits for it. */
  const queue = async (project: string, rest: string, body: Record<string, unknown>, options: WaitOptions) => {
    const client = await context.client();
    const deployment = await client.request<DeploymentCreated>("POST", projectPath(project, rest), body);
    await reportDeployment(client, deployment, options);
  };

  program
    .command("deploy")
    .description("deploy a release to an environment (the lifecycle must allow it)")
    .requiredOption("--project <ref>", "project id or slug")
    .requiredOption("--release <version>", "release version or id")
    .requiredOption("--env <ref>", "environment slug or id")
    .option("--guided-failure", "a failing step waits for 'ferry task retry|skip|abort' instead of failing")
    .option("--override-freeze <reason>", overrideHelp)
    .option("--wait", waitHelp)
    .option("--json", jsonHelp)
    .action(
      (
        options: { project: string; release: string; env: string; guidedFailure?: boolean } & OverrideOption &
          WaitOptions,
      ) =>
        queue(
          options.project,
          "deployments",
          {
            release: options.release,
            environment: options.env,
            guidedFailure: options.guidedFailure === true,
            ...override(options),
          },
          options,
        ),
    );

  program
    .command("promote")
    .description("deploy to an environment the release the previous lifecycle phase runs")
    .requiredOption("--project <ref>", "project id or slug")
    .requiredOption("--to <env>", "environment slug or id to promote to")
    .option("--override-freeze <reason>", overrideHelp)
    .option("--wait", waitHelp)
    .option("--json", jsonHelp)
    .action((options: { project: string; to: string } & OverrideOption & WaitOptions) =>
      queue(options.project, "promotions", { to: options.to, ...override(options) }, options),
    );

  program
    .command("rollback")
    .description("redeploy an earlier release (default: the last one that succeeded there before the current)")
    .requiredOption("--project <ref>", "project id or slug")
    .requiredOption("--env <ref>", "environment slug or id")
    .option("--to <version>", "release version or id to go back to")
    .option("--override-freeze <reason>", overrideHelp)
    .option("--wait", waitHelp)
    .option("--json", jsonHelp)
    .action((options: { project: string; env: string; to?: string } & OverrideOption & WaitOptions) =>
      queue(
        options.project,
        "rollbacks",
        { environment: options.env, ...(options.to !== undefined && { to: options.to }), ...override(options) },
        options,
      ),
    );

  program
    .command("plan")
    .description(
      "show what deploying a release to an environment would do (--project --release --env), or what applying ferry.yml files would change (-f), without doing it",
    )
    .option("-f, --file <path>", "a ferry.yml or a directory of them: plan their apply (repeat for several)", collect)
    .option("--update-secrets", "with -f: plan writing stored secrets again (rotation)")
    .option("--prune", "with -f: plan deleting the runbooks each file does not list")
    .option("--project <ref>", "project id or slug")
    .option("--release <version>", "release version or id")
    .option("--env <ref>", "environment slug or id")
    .option("--json", "print JSON")
    .action(async (options: { project?: string; release?: string; env?: string } & FileOptions) => {
      if (options.file !== undefined) {
        const deploymentOptions = (["project", "release", "env"] as const).filter(
          (name) => options[name] !== undefined,
        );
        if (deploymentOptions.length > 0) {
          throw new UsageError(
            `plan -f plans applying files; --${deploymentOptions.join(", --")} plan a deployment: give one or the other`,
          );
        }
        await planFiles(context, secretSource, options);
        return;
      }
      const fileOnly = (["updateSecrets", "prune"] as const).filter((name) => options[name] !== undefined);
      if (fileOnly.length > 0) {
        throw new UsageError(
          `${fileOnly.map((name) => (name === "prune" ? "--prune" : "--update-secrets")).join(" and ")} ${fileOnly.length > 1 ? "only go" : "only goes"} with -f ferry.yml`,
        );
      }
      const missing = (["project", "release", "env"] as const).filter((name) => options[name] === undefined);
      if (missing.length > 0) {
        throw new UsageError(
          `required: --${missing.join(", --")} (to plan a deployment), or -f ferry.yml (to plan applying a file)`,
        );
      }
      const client = await context.client();
      const query = new URLSearchParams({ release: options.release ?? "", environment: options.env ?? "" });
      const plan = await client.get<DeploymentPlan>(projectPath(options.project ?? "", `plan?${query}`));
      if (options.json) printJson(plan);
      else writeOutput(formatPlan(plan));
    });
}

function formatPlan(plan: DeploymentPlan): string {
  const lines = [`Plan: ${plan.project} ${plan.release} → ${plan.environment}`, "", "Steps:"];
  if (plan.steps.length === 0) lines.push("  (none: the release's process has no steps)");
  plan.steps.forEach((step, index) => {
    const heading = `  ${index + 1}. ${step.name} (${step.kind})`;
    if (!step.runs) {
      lines.push(`${heading}: skipped${step.reason ? `, ${step.reason}` : ""}`);
      return;
    }
    lines.push(`${heading} on ${list(step.targets)}${step.reason ? ` (${step.reason})` : ""}`);
    for (const action of step.actions) lines.push(`       ${action}`);
  });
  lines.push("", "Variables:");
  if (plan.variables.length === 0) lines.push("  (none)");
  const width = Math.max(0, ...plan.variables.map((variable) => variable.name.length));
  for (const variable of plan.variables) {
    // One variable per line: a multi-line value shows its line breaks as \n.
    const value = variable.value.replace(/\r?\n/g, "\\n");
    lines.push(`  ${variable.name.padEnd(width)}  ${value}${variable.sensitive ? "  (sensitive)" : ""}`);
  }
  return `${lines.join("\n")}\n`;
}
