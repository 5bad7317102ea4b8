import { type Command, InvalidArgumentError } from "commander";
import type { FeedTrigger } from "../domain/feedTriggers.js";
import type { ScheduledTrigger } from "../domain/scheduledTriggers.js";
import { segment } from "./client.js";
import { addResourceGroup, type CliContext, type ResourceGroupSpec, sendAndPrint } from "./resourceGroup.js";
import { readSecretFromStdin } from "./stdin.js";

/** A trigger's last firing on one line: when, why, what it did. */
function lastFiringText(firing: FeedTrigger["lastFiring"] | ScheduledTrigger["lastFiring"]): string {
  return firing === null ? "-" : `${firing.at} (${firing.cause}): ${firing.outcome}`;
}

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
    ["last firing", (trigger) => lastFiringText(trigger.lastFiring)],
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
    ["last firing", lastFiringText(trigger.lastFiring)],
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
  addPauseAndResume(group, context, spec, {
    pause: "stop acting on notifications and polls",
    resume: "act on notifications and polls again",
  });
}

/** `pause` and `resume` of one trigger: a PATCH of its `paused`. */
function addPauseAndResume<T>(
  group: Command,
  context: CliContext,
  spec: ResourceGroupSpec<T>,
  descriptions: { pause: string; resume: string },
): void {
  for (const [command, paused] of [
    ["pause", true],
    ["resume", false],
  ] as const) {
    group
      .command(command)
      .description(descriptions[command])
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

const scheduledSpec: ResourceGroupSpec<ScheduledTrigger> = {
  group: "scheduled-trigger",
  description: "scheduled triggers: on a cron expression, deploy what one environment runs to another",
  noun: "scheduled trigger",
  collectionPath: (options) => `/api/v1/projects/${segment(String(options.project))}/scheduled-triggers`,
  commonOptions: (command) => command.requiredOption("--project <ref>", "project id or slug"),
  columns: [
    ["id", (trigger) => trigger.id],
    ["name", (trigger) => trigger.name],
    ["cron", (trigger) => `${trigger.cron} (${trigger.timeZone})`],
    ["from → to", (trigger) => `${trigger.from} → ${trigger.to}`],
    ["paused", (trigger) => String(trigger.paused)],
    ["next", (trigger) => trigger.nextFireAt ?? "-"],
    ["last firing", (trigger) => lastFiringText(trigger.lastFiring)],
  ],
  fields: (trigger) => [
    ["id", trigger.id],
    ["project", trigger.project],
    ["name", trigger.name],
    ["cron", trigger.cron],
    ["time zone", trigger.timeZone],
    ["from", trigger.from],
    ["to", trigger.to],
    ["paused", String(trigger.paused)],
    ["next firing", trigger.nextFireAt ?? "-"],
    ["last firing", trigger.lastFiredAt ?? "-"],
    ["last outcome", trigger.lastOutcome ?? "-"],
  ],
};

export function addScheduledTriggerCommands(program: Command, context: CliContext): void {
  const group = addResourceGroup(program, context, scheduledSpec);
  const body = (options: Record<string, unknown>) => ({
    ...(options.name !== undefined && { name: options.name }),
    ...(options.cron !== undefined && { cron: options.cron }),
    ...(options.timeZone !== undefined && { timeZone: options.timeZone }),
    ...(options.from !== undefined && { from: options.from }),
    ...(options.to !== undefined && { to: options.to }),
  });
  group
    .command("create")
    .description("deploy what --from runs to --to on a cron expression")
    .argument("<name>")
    .requiredOption("--project <ref>", "project id or slug")
    .requiredOption("--cron <expression>", "five fields (minute hour day month weekday), e.g. '0 2 * * *'")
    .option("--time-zone <zone>", "IANA time zone the expression is read in (default UTC)")
    .requiredOption("--from <env>", "the environment whose latest successful release is deployed")
    .requiredOption("--to <env>", "the environment it is deployed to")
    .option("--json", "print JSON")
    .action(async (name: string, options: Record<string, unknown>) =>
      sendAndPrint(
        context,
        scheduledSpec,
        "POST",
        scheduledSpec.collectionPath(options),
        { ...body(options), name },
        options,
      ),
    );
  addPauseAndResume(group, context, scheduledSpec, {
    pause: "stop firing",
    resume: "fire again, from the next time on (missed firings are not caught up)",
  });
}
