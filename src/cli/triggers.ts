import { type Command, InvalidArgumentError } from "commander";
import type { FeedTrigger } from "../domain/feedTriggers.js";
import { segment } from "./client.js";
import { addResourceGroup, type CliContext, type ResourceGroupSpec, sendAndPrint } from "./resourceGroup.js";
import { readSecretFromStdin } from "./stdin.js";

const spec: ResourceGroupSpec<FeedTrigger> = {
  group: "trigger",
  description: "feed triggers: a pushed image tag creates a release and deploys it to the first phase",
  noun: "feed trigger",
  collectionPath: (options) => `/api/v1/projects/${segment(String(options.project))}/triggers`,
  commonOptions: (command) => command.requiredOption("--project <ref>", "project id or slug"),
  columns: [
    ["id", (trigger) => trigger.id],
    ["name", (trigger) => trigger.name],
    ["image", (trigger) => trigger.image],
    ["poll", (trigger) => (trigger.pollSeconds === null ? "notifications only" : `every ${trigger.pollSeconds} s`)],
    ["paused", (trigger) => String(trigger.paused)],
    ["last poll", (trigger) => trigger.lastPolledAt ?? "-"],
    ["error", (trigger) => trigger.lastError ?? "-"],
  ],
  fields: (trigger) => [
    ["id", trigger.id],
    ["project", trigger.project],
    ["name", trigger.name],
    ["image", trigger.image],
    ["versionFromTag", trigger.versionFromTag ?? "(the tag)"],
    ["poll", trigger.pollSeconds === null ? "notifications only" : `every ${trigger.pollSeconds} s`],
    ["paused", String(trigger.paused)],
    ["hook", `POST ${trigger.hookPath} with Authorization: Bearer <secret>`],
    ["secret", trigger.secret],
    ["last poll", trigger.lastPolledAt ?? "-"],
    ["last error", trigger.lastError ?? "-"],
  ],
};

/** --poll-seconds: 10 to 86400, or "off" (notifications only; commander would turn a null into ""). */
function pollSeconds(value: string): number | "off" {
  if (value === "off") return value;
  if (!/^\d{1,5}$/.test(value) || Number(value) < 10 || Number(value) > 86_400) {
    throw new InvalidArgumentError("write seconds between polls (10 to 86400), or off for notifications only");
  }
  return Number(value);
}

function bodyOf(options: Record<string, unknown>): Record<string, unknown> {
  return {
    ...(options.name !== undefined && { name: options.name }),
    ...(options.image !== undefined && { image: options.image }),
    ...(options.versionFromTag !== undefined && { versionFromTag: options.versionFromTag }),
    ...(options.pollSeconds !== undefined && {
      pollSeconds: options.pollSeconds === "off" ? null : options.pollSeconds,
    }),
  };
}

export function addTriggerCommands(program: Command, context: CliContext): void {
  const group = addResourceGroup(program, context, spec);
  group
    .command("create")
    .description("watch one of the project's images; the secret is read from standard input")
    .argument("<name>")
    .requiredOption("--project <ref>", "project id or slug")
    .requiredOption("--image <name>", "the name of the project's image to watch")
    .option(
      "--version-from-tag <pattern>",
      "RE2 pattern whose first group is the release version, e.g. ^(\\d+\\.\\d+\\.\\d+)-beta$",
    )
    .option("--poll-seconds <seconds>", "seconds between polls of the registry, or off (default 300)", pollSeconds)
    .option("--json", "print JSON")
    .action(async (name: string, options: Record<string, unknown>) =>
      sendAndPrint(
        context,
        spec,
        "POST",
        spec.collectionPath(options),
        { ...bodyOf(options), name, secret: await readSecretFromStdin("trigger secret") },
        options,
      ),
    );
  group
    .command("update")
    .description("change a feed trigger")
    .argument("<ref>", "id or name")
    .requiredOption("--project <ref>", "project id or slug")
    .option("--name <name>")
    .option("--image <name>")
    .option("--version-from-tag <pattern>")
    .option("--poll-seconds <seconds>", "seconds between polls, or off", pollSeconds)
    .option("--secret-stdin", "read a new secret from standard input")
    .option("--json", "print JSON")
    .action(async (reference: string, options: Record<string, unknown>) =>
      sendAndPrint(
        context,
        spec,
        "PATCH",
        `${spec.collectionPath(options)}/${segment(reference)}`,
        { ...bodyOf(options), ...(options.secretStdin ? { secret: await readSecretFromStdin("trigger secret") } : {}) },
        options,
      ),
    );
  for (const [command, paused] of [
    ["pause", true],
    ["resume", false],
  ] as const) {
    group
      .command(command)
      .description(paused ? "stop acting on notifications and polls" : "act on notifications and polls again")
      .argument("<ref>", "id or name")
      .requiredOption("--project <ref>", "project id or slug")
      .option("--json", "print JSON")
      .action(async (reference: string, options: Record<string, unknown>) =>
        sendAndPrint(
          context,
          spec,
          "PATCH",
          `${spec.collectionPath(options)}/${segment(reference)}`,
          { paused },
          options,
        ),
      );
  }
}
