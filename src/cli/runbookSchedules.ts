import type { Command } from "commander";
import type { Schedule } from "../domain/runbookSchedules.js";
import { readText } from "./apply.js";
import { segment } from "./client.js";
import { UsageError } from "./errors.js";
import { printJson, printTable, writeOutput } from "./output.js";
import { type CliContext, collect } from "./resourceGroup.js";
import { addRetentionCommands } from "./retention.js";

/*
 * ferry runbook create|update -f FILE, ferry runbook schedule …, ferry runbook retention …
 * (docs/runbooks.md, ADR 0036).
 */

const runbookPath = (project: string, runbook: string, rest = "") =>
  `/api/v1/projects/${segment(project)}/runbooks/${segment(runbook)}${rest}`;
/** `k=v` into [k, v]; the value may contain '='. */
export function parseParameter(text: string): [string, string] {
  const index = text.indexOf("=");
  if (index <= 0) throw new UsageError(`--param ${text.split("=")[0]}: use --param NAME=VALUE`);
  return [text.slice(0, index), text.slice(index + 1)];
}

/** --missed: "skip" or "run-once" (runOnce accepted as the API spells it). */
function parseMissed(value: string): "skip" | "runOnce" {
  if (value === "skip") return "skip";
  if (value === "run-once" || value === "runOnce") return "runOnce";
  throw new UsageError(`--missed ${value}: use skip or run-once (what a firing missed while no server ran becomes)`);
}

function describeNext(schedule: Schedule): string {
  return schedule.paused ? "paused" : (schedule.nextRunAt ?? "never");
}

function describeLast(schedule: Schedule): string {
  const last = schedule.lastFiring;
  if (!last) return "-";
  return `${last.scheduledFor} ${last.taskId ? `task ${last.taskId}` : `refused: ${last.error ?? ""}`}`;
}

export function addRunbookAuthoringCommands(group: Command, context: CliContext): void {
  for (const mode of ["create", "update"] as const) {
    group
      .command(mode)
      .description(
        mode === "create"
          ? "create a runbook from a YAML or JSON file (a ferry.yml runbooks: entry; docs/runbooks.md)"
          : "change a runbook's draft from a file: only the fields it gives (the runbook is the file's name or slug)",
      )
      .requiredOption("--project <ref>", "project id or slug")
      .requiredOption("-f, --file <path>", "the runbook file (YAML or JSON)")
      .option("--publish", "publish the draft afterwards (runs and schedules use the published version)")
      .option("--json", "print the changes as JSON")
      .action(async (options: { project: string; file: string; publish?: boolean; json?: boolean }) => {
        const { parseRunbookFile, runbookFileFields } = await import("../config/ferryFile.js");
        const { applyRunbookFile, describeChange } = await import("../config/apply.js");
        const text = await readText(options.file);
        const runbook = parseRunbookFile(text, options.file);
        const client = await context.client();
        const changes = await applyRunbookFile(client, options.project, runbook, {
          mode,
          fields: runbookFileFields(text),
          publish: options.publish === true,
          // The sensitive schedule parameters' values the file names (parametersFrom), and nothing else.
          environment: Object.fromEntries(
            (runbook.schedules ?? []).flatMap((schedule) =>
              Object.values(schedule.parametersFrom ?? {}).map((reference) => [
                reference.env,
                process.env[reference.env],
              ]),
            ),
          ),
        });
        if (options.json) return printJson(changes);
        writeOutput(`${changes.map(describeChange).join("\n")}\n`);
      });
  }

  const schedules = group
    .command("schedule")
    .description("a runbook's schedules: cron in a time zone, per environment");

  schedules
    .command("add")
    .description("schedule a runbook's published version in an environment")
    .requiredOption("--project <ref>", "project id or slug")
    .requiredOption("--runbook <ref>", "runbook slug or id")
    .requiredOption("--name <name>", "the schedule's name (audit entries and runs say 'schedule NAME')")
    .requiredOption("--env <ref>", "the environment it runs in")
    .requiredOption(
      "--cron <expression>",
      "five fields (minute hour day month weekday, e.g. '0 3 * * *') or six with seconds first",
    )
    .option("--time-zone <zone>", "IANA time zone the expression is read in (default UTC)")
    .option("--param <name=value>", "a parameter's value (repeat); checked now and at each firing", collect)
    .option("--target <ref>", "run only on this target of the environment (repeat)", collect)
    .option("--missed <policy>", "a firing missed while no server ran: skip (default) or run-once", parseMissed)
    .option("--paused", "create it paused")
    .option("--json", "print JSON")
    .action(
      async (options: {
        project: string;
        runbook: string;
        name: string;
        env: string;
        cron: string;
        timeZone?: string;
        param?: string[];
        target?: string[];
        missed?: "skip" | "runOnce";
        paused?: boolean;
        json?: boolean;
      }) => {
        const client = await context.client();
        const schedule = await client.request<Schedule>(
          "POST",
          runbookPath(options.project, options.runbook, "/schedules"),
          {
            name: options.name,
            environment: options.env,
            cron: options.cron,
            ...(options.timeZone !== undefined && { timeZone: options.timeZone }),
            parameters: Object.fromEntries((options.param ?? []).map(parseParameter)),
            ...(options.target && { targets: options.target }),
            ...(options.missed && { missed: options.missed }),
            paused: options.paused === true,
          },
        );
        if (options.json) return printJson(schedule);
        writeOutput(
          `scheduled ${schedule.project}/${schedule.runbook} in ${schedule.environment} as '${schedule.name}' (${schedule.cron}, ${schedule.timeZone}); next: ${describeNext(schedule)}\n`,
        );
      },
    );

  schedules
    .command("list")
    .description("list a runbook's schedules with their next and last firings")
    .requiredOption("--project <ref>", "project id or slug")
    .requiredOption("--runbook <ref>", "runbook slug or id")
    .option("--json", "print JSON")
    .action(async (options: { project: string; runbook: string; json?: boolean }) => {
      const client = await context.client();
      const list = await client.get<Schedule[]>(runbookPath(options.project, options.runbook, "/schedules"));
      if (options.json) return printJson(list);
      printTable(list, [
        ["NAME", (schedule) => schedule.name],
        ["ENVIRONMENT", (schedule) => schedule.environment],
        ["CRON", (schedule) => `${schedule.cron} (${schedule.timeZone})`],
        ["MISSED", (schedule) => (schedule.missed === "runOnce" ? "run-once" : "skip")],
        ["NEXT", describeNext],
        ["LAST", describeLast],
      ]);
    });

  for (const verb of ["pause", "resume", "remove"] as const) {
    schedules
      .command(verb)
      .description(
        verb === "pause"
          ? "pause a schedule (it fires no more until resumed)"
          : verb === "resume"
            ? "resume a paused schedule (from its next time; the paused ones are not caught up)"
            : "remove a schedule",
      )
      .requiredOption("--project <ref>", "project id or slug")
      .requiredOption("--runbook <ref>", "runbook slug or id")
      .requiredOption("--name <ref>", "schedule name or id")
      .option("--json", "print JSON")
      .action(async (options: { project: string; runbook: string; name: string; json?: boolean }) => {
        const client = await context.client();
        const path = runbookPath(options.project, options.runbook, `/schedules/${segment(options.name)}`);
        if (verb === "remove") {
          await client.request("DELETE", path);
          if (options.json) return printJson({ removed: options.name });
          writeOutput(`removed schedule '${options.name}'\n`);
          return;
        }
        const schedule = await client.request<Schedule>("POST", `${path}/${verb}`);
        if (options.json) return printJson(schedule);
        writeOutput(
          `${verb === "pause" ? "paused" : "resumed"} schedule '${schedule.name}'; next: ${describeNext(schedule)}\n`,
        );
      });
  }

  addRetentionCommands(group, context, "runs");
}
