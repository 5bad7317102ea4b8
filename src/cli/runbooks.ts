import type { Command } from "commander";
import type { Freeze } from "../domain/freezes.js";
import type { Runbook, RunbookRunCreated, RunbookRunSummary } from "../domain/runbooks.js";
import type { Task, TaskLogLine } from "../domain/tasks.js";
import { segment } from "./client.js";
import { OperationError, UsageError } from "./errors.js";
import { list, printFields, printJson, printTable, writeOutput } from "./output.js";
import { parseImageChoice, parsePackageChoice } from "./releases.js";
import type { CliContext } from "./resourceGroup.js";
import { addRunbookAuthoringCommands, parseParameter } from "./runbookSchedules.js";
import { followTaskLog, formatLogLine } from "./wait.js";

/* ferry runbook … and ferry freeze … (docs/runbooks.md). */

const projectPath = (project: string, rest: string) => `/api/v1/projects/${segment(project)}/${rest}`;
const repeat = (value: string, previous: string[] = []) => [...previous, value];

const FAILURE_LOG_LINES = 20;

export function addRunbookCommands(program: Command, context: CliContext): void {
  const group = program
    .command("runbook")
    .description("a project's operations processes: create, publish, run, schedule, retention");
  addRunbookAuthoringCommands(group, context);

  group
    .command("list")
    .description("list a project's runbooks")
    .requiredOption("--project <ref>", "project id or slug")
    .option("--json", "print JSON")
    .action(async (options: { project: string; json?: boolean }) => {
      const client = await context.client();
      const runbooks = await client.get<Runbook[]>(projectPath(options.project, "runbooks"));
      if (options.json) return printJson(runbooks);
      printTable(runbooks, [
        ["SLUG", (runbook) => runbook.slug],
        ["NAME", (runbook) => runbook.name],
        ["PUBLISHED", (runbook) => (runbook.published ? `v${runbook.published.version}` : "never")],
        ["DRAFT", (runbook) => (runbook.draftChanged ? "changed" : "as published")],
        ["ENVIRONMENTS", (runbook) => (runbook.environments.length ? runbook.environments.join(",") : "any")],
      ]);
    });

  group
    .command("show")
    .description("show a runbook: its draft, parameters and published version")
    .requiredOption("--project <ref>", "project id or slug")
    .requiredOption("--runbook <ref>", "runbook slug or id")
    .option("--json", "print JSON")
    .action(async (options: { project: string; runbook: string; json?: boolean }) => {
      const client = await context.client();
      const runbook = await client.get<Runbook>(projectPath(options.project, `runbooks/${segment(options.runbook)}`));
      if (options.json) return printJson(runbook);
      printFields([
        ["Runbook", `${runbook.name} (${runbook.slug})`],
        [
          "Published",
          runbook.published ? `version ${runbook.published.version} by ${runbook.published.publishedBy}` : "never",
        ],
        ["Draft", runbook.draftChanged ? "changed since published" : "as published"],
        ...(runbook.published && runbook.published.images.length + runbook.published.packages.length > 0
          ? ([
              [
                "Pinned",
                list([
                  ...runbook.published.images.map((image) => `image ${image.name} ${image.tag} (${image.digest})`),
                  ...runbook.published.packages.map((item) => `package ${item.name} ${item.version}`),
                ]),
              ],
            ] as [string, string][])
          : []),
        ["Environments", runbook.environments.length ? list(runbook.environments) : "any"],
        ["Steps", list(runbook.process.steps.map((step) => `${step.name} (${step.kind})`))],
        [
          "Parameters",
          list(
            runbook.parameters.map(
              (parameter) =>
                `${parameter.name}: ${parameter.type}${parameter.required ? "" : ", optional"}${parameter.sensitive ? ", sensitive" : ""}`,
            ),
          ),
        ],
      ]);
    });

  group
    .command("runs")
    .description("list a runbook's runs, newest first")
    .requiredOption("--project <ref>", "project id or slug")
    .requiredOption("--runbook <ref>", "runbook slug or id")
    .option("--json", "print JSON")
    .action(async (options: { project: string; runbook: string; json?: boolean }) => {
      const client = await context.client();
      const runs = await client.get<RunbookRunSummary[]>(
        projectPath(options.project, `runbooks/${segment(options.runbook)}/runs`),
      );
      if (options.json) return printJson(runs);
      printTable(runs, [
        ["TASK", (run) => run.taskId],
        ["ENVIRONMENT", (run) => run.environment],
        ["VERSION", (run) => (run.version === null ? "draft" : `v${run.version}`)],
        ["STATE", (run) => run.state],
        ["BY", (run) => run.createdBy],
        ["AT", (run) => run.createdAt],
        ["CAUSE", (run) => run.cause ?? "-"],
      ]);
    });

  group
    .command("publish")
    .description(
      "publish a runbook's draft: runs use it from now on, with its images and packages pinned at the versions chosen now",
    )
    .requiredOption("--project <ref>", "project id or slug")
    .requiredOption("--runbook <ref>", "runbook slug or id")
    .option(
      "--image <name=tag>",
      "the tag of one of the runbook's images (repeat; others: latest matching)",
      parseImageChoice,
    )
    .option(
      "--package <name=version>",
      "the version of one of the runbook's packages (repeat; others: the newest pushed)",
      parsePackageChoice,
    )
    .option("--json", "print JSON")
    .action(
      async (options: {
        project: string;
        runbook: string;
        image?: Record<string, string>;
        package?: Record<string, string>;
        json?: boolean;
      }) => {
        const client = await context.client();
        const runbook = await client.request<Runbook>(
          "POST",
          projectPath(options.project, `runbooks/${segment(options.runbook)}/publish`),
          {
            ...(options.image !== undefined && { images: options.image }),
            ...(options.package !== undefined && { packages: options.package }),
          },
        );
        if (options.json) return printJson(runbook);
        writeOutput(`published ${runbook.slug} as version ${runbook.published?.version}\n`);
      },
    );

  group
    .command("run")
    .description("run a runbook in an environment (its published version unless --draft)")
    .requiredOption("--project <ref>", "project id or slug")
    .requiredOption("--runbook <ref>", "runbook slug or id")
    .requiredOption("--env <ref>", "environment slug or id")
    .option("--param <name=value>", "a parameter's value (repeat)", repeat)
    .option("--target <ref>", "run only on this target of the environment (repeat)", repeat)
    .option("--draft", "run the draft instead of the published version (needs editRunbooks)")
    .option("--guided-failure", "a failing step waits for 'ferry task retry|skip|abort' instead of failing")
    .option("--override-freeze <reason>", "run although a deployment freeze is in effect (needs overrideFreezes)")
    .option("--wait", "follow the run's log until it ends; exit 1 unless it succeeded")
    .option("--json", "print JSON (with --wait: one object at the end, with the state and error)")
    .action(
      async (options: {
        project: string;
        runbook: string;
        env: string;
        param?: string[];
        target?: string[];
        draft?: boolean;
        guidedFailure?: boolean;
        overrideFreeze?: string;
        wait?: boolean;
        json?: boolean;
      }) => {
        const parameters = Object.fromEntries((options.param ?? []).map(parseParameter));
        const client = await context.client();
        const run = await client.request<RunbookRunCreated>(
          "POST",
          projectPath(options.project, `runbooks/${segment(options.runbook)}/runs`),
          {
            environment: options.env,
            parameters,
            draft: options.draft === true,
            guidedFailure: options.guidedFailure === true,
            ...(options.target && { targets: options.target }),
            ...(options.overrideFreeze !== undefined && { freezeOverride: options.overrideFreeze }),
          },
        );
        const what = `${run.project}/${run.runbook}${run.version === null ? " (draft)" : ` v${run.version}`} in ${run.environment}`;
        if (!options.wait) {
          if (options.json) printJson(run);
          else
            writeOutput(`queued ${what} as task ${run.taskId} (follow it: ferry task logs ${run.taskId} --follow)\n`);
          return;
        }
        if (!options.json) writeOutput(`${what}: following task ${run.taskId}\n`);
        const lastLines: TaskLogLine[] = [];
        await followTaskLog(client, run.taskId, (line) => {
          lastLines.push(line);
          if (lastLines.length > FAILURE_LOG_LINES) lastLines.shift();
          if (!options.json) writeOutput(`${formatLogLine(line)}\n`);
        });
        const task = await client.get<Task>(`/api/v1/tasks/${segment(run.taskId)}`);
        if (options.json) printJson({ ...run, state: task.state, error: task.error });
        else if (task.state === "succeeded") writeOutput(`${what}: succeeded\n`);
        if (task.state !== "succeeded") {
          throw new OperationError(`the runbook run did not succeed (${task.state})`, [
            `${what}: ${task.state}${task.error ? `: ${task.error}` : ""}`,
            `last ${lastLines.length} log lines of task ${run.taskId}:`,
            ...lastLines.map((line) => `  ${formatLogLine(line)}`),
          ]);
        }
      },
    );
}

export function addFreezeCommands(program: Command, context: CliContext): void {
  const group = program.command("freeze").description("deployment freezes: windows that refuse deployments");

  group
    .command("list")
    .description("list a project's deployment freezes")
    .requiredOption("--project <ref>", "project id or slug")
    .option("--json", "print JSON")
    .action(async (options: { project: string; json?: boolean }) => {
      const client = await context.client();
      const freezes = await client.get<Freeze[]>(projectPath(options.project, "freezes"));
      if (options.json) return printJson(freezes);
      printTable(freezes, [
        ["NAME", (freeze) => freeze.name],
        ["ENVIRONMENTS", (freeze) => freeze.environments.join(",")],
        [
          "WINDOW",
          (freeze) =>
            freeze.window.kind === "once"
              ? `${freeze.window.from} → ${freeze.window.until}`
              : `${freeze.window.days.join(",")} ${freeze.window.at} for ${freeze.window.durationMinutes} min (${freeze.timeZone})`,
        ],
        ["RUNBOOKS", (freeze) => (freeze.runbooks ? "refused" : "allowed")],
      ]);
    });

  group
    .command("create")
    .description("create a freeze: --from/--until once, or --days/--at/--minutes weekly")
    .requiredOption("--project <ref>", "project id or slug")
    .requiredOption("--name <name>", "the name refusals show")
    .requiredOption("--env <ref>", "an environment it covers (repeat)", repeat)
    .option("--from <time>", "one-off: start (ISO 8601 with offset, e.g. 2026-12-24T00:00:00Z)")
    .option("--until <time>", "one-off: end")
    .option("--days <days>", "weekly: days it starts on, e.g. fri or sat,sun")
    .option("--at <HH:MM>", "weekly: local start time")
    .option("--minutes <n>", "weekly: how long each window lasts", Number)
    .option("--time-zone <zone>", "IANA time zone of --days/--at (default UTC)")
    .option("--description <text>", "shown in refusals")
    .option("--runbooks", "refuse runbook runs too")
    .option("--json", "print JSON")
    .action(
      async (options: {
        project: string;
        name: string;
        env: string[];
        from?: string;
        until?: string;
        days?: string;
        at?: string;
        minutes?: number;
        timeZone?: string;
        description?: string;
        runbooks?: boolean;
        json?: boolean;
      }) => {
        const weekly = options.days !== undefined || options.at !== undefined || options.minutes !== undefined;
        if (weekly === (options.from !== undefined || options.until !== undefined)) {
          throw new UsageError("give either --from and --until (one-off) or --days, --at and --minutes (weekly)");
        }
        const window = weekly
          ? {
              kind: "weekly",
              days: (options.days ?? "").split(",").filter(Boolean),
              at: options.at,
              durationMinutes: options.minutes,
            }
          : { kind: "once", from: options.from, until: options.until };
        const client = await context.client();
        const freeze = await client.request<Freeze>("POST", projectPath(options.project, "freezes"), {
          name: options.name,
          environments: options.env,
          window,
          ...(options.timeZone !== undefined && { timeZone: options.timeZone }),
          ...(options.description !== undefined && { description: options.description }),
          runbooks: options.runbooks === true,
        });
        if (options.json) return printJson(freeze);
        writeOutput(`created freeze '${freeze.name}' on ${freeze.environments.join(", ")}\n`);
      },
    );

  group
    .command("delete")
    .description("delete a freeze")
    .requiredOption("--project <ref>", "project id or slug")
    .requiredOption("--name <ref>", "freeze name or id")
    .action(async (options: { project: string; name: string }) => {
      const client = await context.client();
      await client.request("DELETE", projectPath(options.project, `freezes/${segment(options.name)}`));
      writeOutput(`deleted freeze '${options.name}'\n`);
    });
}
