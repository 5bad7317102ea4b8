import type { Command } from "commander";
import type { Retained, Retention } from "../domain/retention.js";
import { segment } from "./client.js";
import { UsageError } from "./errors.js";
import { printJson, printTable, writeOutput } from "./output.js";
import type { CliContext } from "./resourceGroup.js";

/** A commander parser for a whole number of at least 1, naming the option when it is not. */
function positiveInteger(option: string) {
  return (value: string): number => {
    const number = Number(value);
    if (!/^[0-9]+$/.test(value) || !Number.isSafeInteger(number) || number < 1) {
      throw new UsageError(`${option} ${value}: give a whole number of 1 or more`);
    }
    return number;
  };
}

const WORDS: Record<
  Retained,
  { route: string; group: string; show: string; none: string; keepRuns: string; keepDays: string; clear: string }
> = {
  runs: {
    route: "retention",
    group: "how many runs of a runbook to keep, and for how long, per environment",
    show: "show a runbook's run retention",
    none: "no retention: every run is kept",
    keepRuns: "keep at most this many finished runs",
    keepDays: "keep finished runs at most this many days",
    clear: "remove this environment's retention (keep every run, or fall back to '*')",
  },
  artifacts: {
    route: "artifact-retention",
    group: "how long a runbook's artifacts are kept, per environment (the newest successful run's always)",
    show: "show a runbook's artifact retention",
    none: "no artifact retention: artifacts are kept as long as their runs",
    keepRuns: "keep the artifacts of at most this many finished runs",
    keepDays: "keep artifacts of finished runs at most this many days",
    clear: "remove this environment's policy (keep artifacts as long as their runs, or fall back to '*')",
  },
};

/**
 * `retention show|set` under a command group, for run retention (`ferry runbook retention`)
 * or artifact retention (`ferry artifact retention`): one policy type (src/domain/retention.ts),
 * one pair of commands, the API route and the words being what differ.
 */
export function addRetentionCommands(group: Command, context: CliContext, retained: Retained): void {
  const words = WORDS[retained];
  const path = (project: string, runbook: string) =>
    `/api/v1/projects/${segment(project)}/runbooks/${segment(runbook)}/${words.route}`;
  const retention = group.command("retention").description(words.group);

  retention
    .command("show")
    .description(words.show)
    .requiredOption("--project <ref>", "project id or slug")
    .requiredOption("--runbook <ref>", "runbook slug or id")
    .option("--json", "print JSON")
    .action(async (options: { project: string; runbook: string; json?: boolean }) => {
      const client = await context.client();
      const current = await client.get<Retention>(path(options.project, options.runbook));
      if (options.json) return printJson(current);
      if (current.policies.length === 0) return writeOutput(`${words.none}\n`);
      printTable(current.policies, [
        ["ENVIRONMENT", (policy) => (policy.environment === "*" ? "* (others)" : policy.environment)],
        ["KEEP RUNS", (policy) => (policy.keepRuns === null ? "-" : String(policy.keepRuns))],
        ["KEEP DAYS", (policy) => (policy.keepDays === null ? "-" : String(policy.keepDays))],
      ]);
    });

  retention
    .command("set")
    .description(`set one environment's policy (the newest successful run's are always kept); --clear removes it`)
    .requiredOption("--project <ref>", "project id or slug")
    .requiredOption("--runbook <ref>", "runbook slug or id")
    .option("--env <ref>", "the environment, or '*' for every environment without its own", "*")
    .option("--keep-runs <n>", words.keepRuns, positiveInteger("--keep-runs"))
    .option("--keep-days <n>", words.keepDays, positiveInteger("--keep-days"))
    .option("--clear", words.clear)
    .option("--json", "print JSON")
    .action(
      async (options: {
        project: string;
        runbook: string;
        env: string;
        keepRuns?: number;
        keepDays?: number;
        clear?: boolean;
        json?: boolean;
      }) => {
        const limits = options.keepRuns !== undefined || options.keepDays !== undefined;
        if (limits === (options.clear === true)) {
          throw new UsageError("give --keep-runs, --keep-days or both, or --clear");
        }
        const client = await context.client();
        const where = path(options.project, options.runbook);
        const current = await client.get<Retention>(where);
        const others = current.policies.filter((policy) => policy.environment !== options.env);
        const policies = options.clear
          ? others
          : [
              ...others,
              { environment: options.env, keepRuns: options.keepRuns ?? null, keepDays: options.keepDays ?? null },
            ];
        const saved = await client.request<Retention>("PUT", where, { policies });
        if (options.json) return printJson(saved);
        const what = retained === "runs" ? "runs" : "the artifacts of runs";
        writeOutput(
          options.clear
            ? `removed the ${retained === "runs" ? "retention" : "artifact retention"} of ${options.env}\n`
            : `${what} of ${options.runbook} in ${options.env}: keep ${[
                ...(options.keepRuns !== undefined ? [`the newest ${options.keepRuns}`] : []),
                ...(options.keepDays !== undefined ? [`${options.keepDays} days`] : []),
              ].join(" and at most ")} (and always the newest successful one's)\n`,
        );
      },
    );
}
