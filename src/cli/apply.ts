import { readdir, readFile, stat, writeFile } from "node:fs/promises";
import { dirname, join, resolve } from "node:path";
import type { Command } from "commander";
import type { ConfigRequest, ConfigResult } from "../api/configAsCode.js";
import type { FerryFile } from "../config/ferryFile.js";
import { keyFileSecret } from "../config/secretNames.js";
import { InputError } from "../domain/errors.js";
import { describeFieldChange } from "../domain/fieldDiff.js";
import { UsageError } from "./errors.js";
import { printJson, writeError, writeOutput } from "./output.js";
import { type CliContext, collect } from "./resourceGroup.js";

/**
 * `ferry apply -f ferry.yml` and `ferry plan -f ferry.yml`: the files are checked here first
 * (an invalid one exits 2 with one `file:line:column pointer: detail` line per problem,
 * before anything is sent), then sent with the secrets they refer to to the server, which
 * applies all of them in one transaction, or only plans (ADR 0040).
 *
 * `secretSource` is the process environment, passed in by main.ts (the one place that reads
 * it): ferry.yml names the variables its secrets come from, so they cannot be parsed up front
 * with the rest of the environment.
 */

type ChangeList = ConfigResult["changes"];

const CONFIG_TIMEOUT_MS = 10 * 60_000;
type Change = ChangeList[number];

export interface FileOptions {
  file?: string[];
  updateSecrets?: boolean;
  prune?: boolean;
  json?: boolean;
}

export function addApplyCommand(
  program: Command,
  context: CliContext,
  secretSource: Readonly<Record<string, string | undefined>>,
): void {
  program
    .command("apply")
    .description(
      "create, update (and with --prune delete) what ferry.yml files describe, all or nothing (docs/ferry-yml.md)",
    )
    .option("-f, --file <path>", "a ferry.yml, or a directory of them (repeat for several; default ferry.yml)", collect)
    .option("--update-secrets", "also overwrite stored secrets from their environment variables (rotation)")
    .option("--prune", "also delete the runbooks of each project that its file does not list")
    .option("--json", "print the changes as JSON (an array)")
    .action(async (options: FileOptions) => {
      const result = await sendFiles(context, secretSource, options, "apply");
      if (options.json) printJson(result.changes);
      else writeOutput(`${[...result.changes.map(describeChangeLine), summary(result.changes)].join("\n")}\n`);
      warn(result.changes);
    });
}

/** `ferry export --project P`: the project as a ferry.yml that plans to no change (ADR 0040). */
export function addExportCommand(program: Command, context: CliContext): void {
  program
    .command("export")
    .description("write a project back as a ferry.yml (secrets as valueFrom references) that `plan -f` finds unchanged")
    .requiredOption("--project <ref>", "project id or slug")
    .option("-o, --output <path>", "write the file here instead of standard output")
    .action(async (options: { project: string; output?: string }) => {
      const { exportProject } = await import("../config/export.js");
      const client = await context.client();
      const text = await exportProject(client, options.project);
      if (options.output === undefined) {
        writeOutput(text);
        return;
      }
      await writeFile(options.output, text, { mode: 0o644 });
      writeError(`wrote ${options.output}\n`);
    });
}

/** `ferry plan -f …`: what apply would change, field by field, changing nothing. */
export async function planFiles(
  context: CliContext,
  secretSource: Readonly<Record<string, string | undefined>>,
  options: FileOptions,
): Promise<void> {
  const result = await sendFiles(context, secretSource, options, "plan");
  if (options.json) printJson(result.changes);
  else writeOutput(formatPlan(result.changes));
  warn(result.changes);
}

async function sendFiles(
  context: CliContext,
  secretSource: Readonly<Record<string, string | undefined>>,
  options: FileOptions,
  action: "plan" | "apply",
): Promise<ConfigResult> {
  // Loaded here, not at start: only plan and apply need the YAML parser.
  const { parseFerryFile } = await import("../config/ferryFile.js");
  const paths = await expandPaths(options.file?.length ? options.file : ["ferry.yml"]);
  const files: ConfigRequest["files"] = [];
  const secrets: Record<string, string> = {};
  const problems: InputError[] = [];
  for (const path of paths) {
    const text = await readText(path);
    let config: FerryFile;
    try {
      config = parseFerryFile(text, path);
    } catch (error) {
      if (!(error instanceof InputError)) throw error;
      problems.push(error);
      continue;
    }
    files.push({ name: path, text });
    Object.assign(secrets, await secretsOf(config, path, secretSource));
  }
  // Every file's problems at once (exit 2), before anything is sent.
  const [first, ...others] = problems;
  if (first && others.length === 0) throw first;
  if (first) throw new InputError(problems.map((problem) => problem.message).join("\n"));
  const client = await context.client();
  const body: ConfigRequest = {
    files,
    secrets,
    updateSecrets: options.updateSecrets ?? false,
    prune: options.prune ?? false,
  };
  // The server applies every file before it answers: allow it far longer than one request.
  return client.request<ConfigResult>("POST", `/api/v1/config/${action}`, body, CONFIG_TIMEOUT_MS);
}

/** A directory stands for its *.yml and *.yaml files, in name order. */
async function expandPaths(paths: readonly string[]): Promise<string[]> {
  const expanded: string[] = [];
  for (const path of paths) {
    const info = await stat(path).catch(() => undefined);
    if (!info) throw new UsageError(`there is no file ${path}; pass the project's file with -f <path>`);
    if (!info.isDirectory()) {
      expanded.push(path);
      continue;
    }
    const names = (await readdir(path)).filter((name) => /\.ya?ml$/.test(name)).sort();
    if (names.length === 0) throw new UsageError(`directory ${path} has no .yml or .yaml file`);
    expanded.push(...names.map((name) => join(path, name)));
  }
  return expanded;
}

/**
 * The secrets a file refers to that this process can give: environment variables by name
 * (an empty one counts as not set), key files by `file:<ferry.yml>:<path>` (the path relative
 * to the ferry.yml, as docker-compose's are). Only what the file names is sent.
 */
export async function secretsOf(
  config: FerryFile,
  fileName: string,
  secretSource: Readonly<Record<string, string | undefined>>,
): Promise<Record<string, string>> {
  const names = [
    ...[...(config.variables ?? []), ...(config.variableSets ?? []).flatMap((set) => set.variables)].flatMap(
      (variable) => (variable.valueFrom && "env" in variable.valueFrom ? [variable.valueFrom.env] : []),
    ),
    ...config.feeds.flatMap((feed) => (feed.passwordFrom ? [feed.passwordFrom.env] : [])),
    ...config.targets.flatMap((target) => [
      ...(target.ssh && "env" in target.ssh.privateKeyFrom ? [target.ssh.privateKeyFrom.env] : []),
      ...(target.ssh?.passphraseFrom ? [target.ssh.passphraseFrom.env] : []),
    ]),
    ...(config.webhooks ?? []).map((webhook) => webhook.secretFrom.env),
    ...(config.runbooks ?? []).flatMap((runbook) =>
      (runbook.schedules ?? []).flatMap((schedule) =>
        Object.values(schedule.parametersFrom ?? {}).map((reference) => reference.env),
      ),
    ),
  ];
  const secrets: Record<string, string> = {};
  for (const name of names) {
    const value = secretSource[name];
    if (value !== undefined && value !== "") secrets[name] = value;
  }
  // Files are read here, next to the ferry.yml, and travel in the body like the others.
  for (const variable of config.variables ?? []) {
    const from = variable.valueFrom;
    if (!from || !("file" in from)) continue;
    const value = await readFile(resolve(dirname(fileName), from.file), "utf8").catch(() => undefined);
    if (value !== undefined) secrets[keyFileSecret(fileName, from.file)] = value;
  }
  // Template files of steps (ADR 0051) travel the same way: the server captures their text into the process.
  const steps = [...(config.steps ?? []), ...(config.runbooks ?? []).flatMap((runbook) => runbook.steps ?? [])];
  for (const file of steps.flatMap((step) => step.files ?? [])) {
    if (file.content !== undefined || file.package !== undefined) continue;
    const text = await readFile(resolve(dirname(fileName), file.file), "utf8").catch(() => undefined);
    if (text !== undefined && text !== "") secrets[keyFileSecret(fileName, file.file)] = text;
  }
  for (const target of config.targets) {
    const from = target.ssh?.privateKeyFrom;
    if (!from || !("file" in from)) continue;
    const key = await readFile(resolve(dirname(fileName), from.file), "utf8").catch(() => undefined);
    if (key !== undefined) secrets[keyFileSecret(fileName, from.file)] = key;
  }
  return secrets;
}

export async function readText(path: string): Promise<string> {
  try {
    return await readFile(path, "utf8");
  } catch (error) {
    const code = (error as NodeJS.ErrnoException).code;
    if (code === "ENOENT") throw new UsageError(`there is no file ${path}; pass the project's file with -f <path>`);
    throw new UsageError(`cannot read ${path}: ${(error as Error).message}`);
  }
}

function warn(changes: ChangeList): void {
  for (const change of changes) {
    if (change.warning) writeError(`ferry: warning: ${change.resource} ${change.name}: ${change.warning}\n`);
  }
}

/** "created environment dev", "updated lifecycle hello (phases)". */
function describeChangeLine(change: Change): string {
  return `${change.action} ${change.resource} ${change.name}${change.detail ? ` (${change.detail})` : ""}`;
}

const PLAN_VERBS: Record<Change["action"], string> = {
  created: "+ create",
  updated: "~ update",
  deleted: "- delete",
  unchanged: "  unchanged",
  skipped: "! skip",
};

/** The plan for people: each change with its fields, unchanged things left out, then a count. */
function formatPlan(changes: ChangeList): string {
  const lines: string[] = [];
  for (const change of changes) {
    if (change.action === "unchanged") continue;
    lines.push(
      `${PLAN_VERBS[change.action]} ${change.resource} ${change.name}${change.detail ? ` (${change.detail})` : ""}`,
    );
    for (const field of change.fields ?? []) lines.push(`    ${describeFieldChange(field)}`);
  }
  const count = (action: Change["action"]) => changes.filter((change) => change.action === action).length;
  const total = count("created") + count("updated") + count("deleted");
  lines.push(
    total === 0
      ? `No changes: the server matches the file (${count("unchanged")} unchanged).`
      : `Plan: ${count("created")} to create, ${count("updated")} to update, ${count("deleted")} to delete, ${count("unchanged")} unchanged.`,
  );
  return `${lines.join("\n")}\n`;
}

function summary(changes: ChangeList): string {
  const count = (action: Change["action"]) => changes.filter((change) => change.action === action).length;
  const changed = count("created") + count("updated") + count("deleted");
  const parts = [
    `${count("created")} created`,
    `${count("updated")} updated`,
    `${count("deleted")} deleted`,
    `${count("unchanged")} unchanged`,
    ...(count("skipped") > 0 ? [`${count("skipped")} skipped`] : []),
  ];
  return `${changed === 0 ? "no changes" : "applied"}: ${parts.join(", ")}`;
}
