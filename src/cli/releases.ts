import { setTimeout as sleep } from "node:timers/promises";
import { type Command, InvalidArgumentError } from "commander";
import { describeFieldChange } from "../domain/fieldDiff.js";
import type { ProjectProgression } from "../domain/projectProgression.js";
import type { ReleaseDiff } from "../domain/releaseDiff.js";
import type { Release } from "../domain/releases.js";
import { segment } from "./client.js";
import { OperationError } from "./errors.js";
import { type Column, list, printFields, printJson, printTable, writeOutput } from "./output.js";
import type { CliContext } from "./resourceGroup.js";
import {
  type DeploymentCreated,
  failUnlessSucceeded,
  queuedLine,
  type WaitOptions,
  waitForDeployments,
} from "./wait.js";

type CreatedRelease = Release & { deployments: DeploymentCreated[] };

interface CreateOptions extends WaitOptions {
  project: string;
  version?: string;
  notes?: string;
  image?: Record<string, string>;
  package?: Record<string, string>;
  deployTo?: string;
}

const columns: Column<Release>[] = [
  ["version", (release) => release.version],
  ["created", (release) => release.createdAt],
  ["by", (release) => release.createdBy],
  ["steps", (release) => list(release.steps.map((step) => step.name))],
  ["notes", (release) => release.notes],
];

function releaseFields(release: Release): [string, string][] {
  return [
    ["id", release.id],
    ["project", release.project],
    ["version", release.version],
    ["notes", release.notes || "-"],
    ["steps", list(release.steps.map((step) => `${step.name} (${step.kind})`))],
    ...(release.packages.length > 0
      ? [
          [
            "packages",
            list(release.packages.map((item) => `${item.name} ${item.version} (sha256 ${item.sha256})`)),
          ] as [string, string],
        ]
      : []),
    ["created by", release.createdBy],
    ["created at", release.createdAt],
  ];
}

const releasesPath = (project: string) => `/api/v1/projects/${segment(project)}/releases`;

export function addReleaseCommands(program: Command, context: CliContext): void {
  const group = program.command("release").description("releases: a frozen process and variables, ready to deploy");

  group
    .command("create")
    .description(
      "create a release (auto-deploy phases deploy it at once); --wait follows every deployment it started and exits 1 unless all succeed",
    )
    .requiredOption("--project <ref>", "project id or slug")
    .option("--version <version>", "release version (default: the project's next version)")
    .option("--notes <text>", "release notes")
    .option(
      "--image <name=tag>",
      "the tag of one of the project's images (repeat; others: latest matching)",
      parseImageChoice,
    )
    .option(
      "--package <name=version>",
      "the version of one of the project's packages (repeat; others: the newest pushed)",
      parsePackageChoice,
    )
    .option("--deploy-to <env>", "also deploy it to this environment (unless an auto-deploy already does)")
    .option("--wait", "follow the deployments' logs until they end")
    .option("--json", "print JSON (with --wait: the release, each deployment with its state and error)")
    .action(async (options: CreateOptions) => {
      const client = await context.client();
      const release = await client.request<CreatedRelease>("POST", releasesPath(options.project), {
        ...(options.version !== undefined && { version: options.version }),
        ...(options.notes !== undefined && { notes: options.notes }),
        ...(options.image !== undefined && { images: options.image }),
        ...(options.package !== undefined && { packages: options.package }),
      });
      const deployments = [...release.deployments];
      const target = options.deployTo;
      // An auto-deploy names the environment by slug; deploying there again would only queue a repeat.
      if (target !== undefined && !deployments.some((deployment) => deployment.environment === target)) {
        deployments.push(
          await client.request<DeploymentCreated>("POST", `/api/v1/projects/${segment(options.project)}/deployments`, {
            release: release.version,
            environment: target,
          }),
        );
      }
      const json = options.json === true;
      if (!json) {
        printFields(releaseFields(release));
        for (const deployment of deployments) writeOutput(`${queuedLine(deployment)}\n`);
      }
      if (!options.wait) {
        if (json) printJson({ ...release, deployments });
        return;
      }
      if (deployments.length === 0 && !json) {
        writeOutput("no deployment was started, so there is nothing to wait for\n");
      }
      const waited = await waitForDeployments(client, deployments, json);
      if (json) printJson({ ...release, deployments: waited.map(({ outcome }) => outcome) });
      failUnlessSucceeded(waited);
    });

  group
    .command("wait")
    .description(
      "wait until a release exists and has a deployment to an environment (a feed trigger's, an auto-deploy's or a person's), follow it, exit 1 unless it succeeded",
    )
    .requiredOption("--project <ref>", "project id or slug")
    .argument("<version>", "release version")
    .requiredOption("--env <env>", "environment slug")
    .option("--timeout <seconds>", "give up after this many seconds without such a deployment", parseTimeout, 600)
    .option("--json", "print JSON (one object at the end, with the state and error)")
    .action(async (version: string, options: { project: string; env: string; timeout: number; json?: boolean }) => {
      const client = await context.client();
      const deployment = await awaitDeployment(
        (path) => client.get<ProjectProgression>(path),
        options.project,
        version,
        options.env,
        options.timeout,
      );
      const json = options.json === true;
      const waited = await waitForDeployments(client, [deployment], json);
      if (json) printJson(waited[0]?.outcome);
      else if (waited[0]?.outcome.state === "succeeded") {
        writeOutput(`${deployment.project} ${deployment.release} → ${deployment.environment}: succeeded\n`);
      }
      failUnlessSucceeded(waited);
    });

  group
    .command("list")
    .description("list a project's releases, newest first")
    .requiredOption("--project <ref>", "project id or slug")
    .option("--json", "print JSON (an array)")
    .action(async (options: { project: string; json?: boolean }) => {
      const client = await context.client();
      const releases = await client.getAll<Release>(releasesPath(options.project));
      if (options.json) printJson(releases);
      else printTable(releases, columns);
    });

  group
    .command("show")
    .description("show one release")
    .requiredOption("--project <ref>", "project id or slug")
    .argument("<version>", "release version or id")
    .option("--json", "print JSON")
    .action(async (version: string, options: { project: string; json?: boolean }) => {
      const client = await context.client();
      const release = await client.get<Release>(`${releasesPath(options.project)}/${segment(version)}`);
      if (options.json) printJson(release);
      else printFields(releaseFields(release));
    });

  group
    .command("diff")
    .description(
      "what changed from release A to release B (or to B from the release before it): images with digests, steps field by field, variables (sensitive ones only as changed), notes",
    )
    .requiredOption("--project <ref>", "project id or slug")
    .argument("<from>", "the older release: version or id (alone: the newer one, compared with the release before it)")
    .argument("[to]", "the newer release: version or id")
    .option("--json", "print JSON")
    .action(async (first: string, second: string | undefined, options: { project: string; json?: boolean }) => {
      const client = await context.client();
      // `ferry release diff 1.4.0`: what 1.4.0 changed from the release made before it.
      const query = new URLSearchParams(second === undefined ? { to: first } : { from: first, to: second });
      const diff = await client.get<ReleaseDiff & { project: string }>(
        `/api/v1/projects/${segment(options.project)}/release-diff?${query}`,
      );
      if (options.json) printJson(diff);
      else writeOutput(formatReleaseDiff(diff));
    });

  group
    .command("update-variables")
    .description("re-snapshot a release's variables from the project (its process and images never change)")
    .requiredOption("--project <ref>", "project id or slug")
    .argument("<version>", "release version or id")
    .option("--json", "print JSON")
    .action(async (version: string, options: { project: string; json?: boolean }) => {
      const client = await context.client();
      const release = await client.request<Release>(
        "POST",
        `${releasesPath(options.project)}/${segment(version)}/variables-snapshot`,
      );
      if (options.json) printJson(release);
      else printFields(releaseFields(release));
    });
}

/** Parses a repeated `--image web=1.4.2` into { web: "1.4.2" }. */
export function parseImageChoice(value: string, previous: Record<string, string> = {}): Record<string, string> {
  const match = /^([a-z0-9][a-z0-9-]*)=(\S+)$/.exec(value);
  if (!match?.[1] || !match[2]) throw new InvalidArgumentError("use name=tag, e.g. web=1.4.2");
  return { ...previous, [match[1]]: match[2] };
}

export function parsePackageChoice(value: string, previous: Record<string, string> = {}): Record<string, string> {
  const match = /^([a-z0-9][a-z0-9-]*)=(\S+)$/.exec(value);
  if (!match?.[1] || !match[2]) throw new InvalidArgumentError("use name=version, e.g. web-app=1.4.2");
  return { ...previous, [match[1]]: match[2] };
}

const MARKS = { added: "+", removed: "-", changed: "~" } as const;

/** "environments prod; roles web", or nothing for an unscoped variable. */
function scopeLabel(scope: ReleaseDiff["variables"][number]["scope"]): string {
  const parts = (["environments", "roles", "targets"] as const)
    .filter((kind) => scope[kind].length > 0)
    .map((kind) => `${kind} ${scope[kind].join(",")}`);
  return parts.length > 0 ? ` [${parts.join("; ")}]` : "";
}

/** The diff for people, one section per part; an unchanged part says so. */
function formatReleaseDiff(diff: ReleaseDiff & { project: string }): string {
  const pinned = (image?: { repository: string; tag: string; digest: string }) =>
    image ? `${image.repository}:${image.tag}@${image.digest}` : "";
  const quoted = (value: string | undefined) => JSON.stringify(value ?? "");
  const lines = [`Release diff of ${diff.project}: ${diff.from} → ${diff.to}`, "", "Images:"];
  if (diff.images.length === 0) lines.push("  (unchanged)");
  for (const image of diff.images) {
    const what =
      image.change === "changed"
        ? `${pinned(image.from)} → ${pinned(image.to)}`
        : pinned(image.change === "added" ? image.to : image.from);
    lines.push(`  ${MARKS[image.change]} ${image.name}  ${what}`);
  }
  lines.push("", "Steps:");
  if (diff.steps.length === 0) lines.push("  (unchanged)");
  for (const step of diff.steps) {
    lines.push(`  ${MARKS[step.change]} ${step.name} (${step.kind})`);
    for (const field of step.fields ?? []) lines.push(`      ${describeFieldChange(field)}`);
  }
  lines.push("", "Variables:");
  if (diff.variables.length === 0) lines.push("  (unchanged)");
  for (const variable of diff.variables) {
    const label = `  ${MARKS[variable.change]} ${variable.name}${scopeLabel(variable.scope)}`;
    const note = variable.note ? ` (${variable.note})` : "";
    if (variable.sensitive) {
      lines.push(
        `${label}: ${variable.change === "changed" ? "changed" : variable.change} (sensitive, not shown)${note}`,
      );
    } else if (variable.change === "changed") {
      lines.push(`${label}: ${quoted(variable.from)} → ${quoted(variable.to)}${note}`);
    } else {
      lines.push(`${label}: ${quoted(variable.change === "added" ? variable.to : variable.from)}`);
    }
  }
  lines.push("", "Notes:");
  lines.push(diff.notes ? `  ${quoted(diff.notes.from)} → ${quoted(diff.notes.to)}` : "  (unchanged)");
  return `${lines.join("\n")}\n`;
}

function parseTimeout(value: string): number {
  const seconds = Number(value);
  if (!Number.isInteger(seconds) || seconds < 1 || seconds > 86_400) {
    throw new InvalidArgumentError("use whole seconds from 1 to 86400, e.g. --timeout 600");
  }
  return seconds;
}

const WAIT_POLL_MS = 2000;

/**
 * The newest deployment of `version` to `environment`, once there is one: a pipeline pushes an
 * image and waits here for what the feed trigger creates, so a release that does not exist yet
 * is waited for, not an error.
 */
async function awaitDeployment(
  get: (path: string) => Promise<ProjectProgression>,
  project: string,
  version: string,
  environment: string,
  timeoutSeconds: number,
): Promise<DeploymentCreated> {
  const deadline = Date.now() + timeoutSeconds * 1000;
  let seen: "nothing" | "release" = "nothing";
  for (;;) {
    // A release that does not exist yet is not in the list (the project must exist: 404 otherwise).
    const progression = await get(
      `/api/v1/projects/${segment(project)}/progression?release=${encodeURIComponent(version)}`,
    );
    const release = progression.releases.find((candidate) => candidate.version === version);
    if (release) {
      seen = "release";
      const there = release.environments.find((candidate) => candidate.environment === environment);
      if (!there && !progression.environments.some((candidate) => candidate.environment.slug === environment)) {
        throw new OperationError(`project ${project}'s lifecycle has no environment ${environment}`, [
          `its environments: ${progression.environments.map((candidate) => candidate.environment.slug).join(", ")}`,
        ]);
      }
      if (there?.deployment) {
        return {
          deploymentId: there.deployment.deploymentId,
          taskId: there.deployment.taskId,
          project: progression.project.slug,
          release: version,
          environment,
        };
      }
    }
    if (Date.now() >= deadline) {
      throw new OperationError(
        seen === "nothing"
          ? `release ${version} of ${project} did not appear within ${timeoutSeconds} s`
          : `release ${version} of ${project} was not deployed to ${environment} within ${timeoutSeconds} s`,
        [
          seen === "nothing"
            ? `is the feed trigger there and not paused? ferry trigger list --project ${project}`
            : `deploy it: ferry deploy --project ${project} --release ${version} --env ${environment}`,
        ],
      );
    }
    await sleep(WAIT_POLL_MS);
  }
}
