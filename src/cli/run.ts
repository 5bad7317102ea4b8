import type { Command } from "commander";
import { isMap, isSeq, parseDocument, YAMLSeq } from "yaml";
import type { ConfigRequest, ConfigResult } from "../api/configAsCode.js";
import type { FerryEnvironment } from "../config/env.js";
import type { FerryFile } from "../config/ferryFile.js";
import { keyFileSecret } from "../config/secretNames.js";
import { InputError } from "../domain/errors.js";
import type { DeploymentCreated } from "../engine/deploymentRequests.js";
import { parseOutboundAllow } from "../security/outboundGuard.js";
import { readText, secretsOf } from "./apply.js";
import { segment } from "./client.js";
import { OperationError, UsageError } from "./errors.js";
import { printJson, writeError, writeOutput } from "./output.js";
import { collect } from "./resourceGroup.js";
import { formatLogLine } from "./wait.js";

/**
 * `ferry run -f ferry.yml --env dev`: the project's deployment process, run on this machine
 * with no server (issue 15 part 5, ADR 0046). The server's parts run in this process on a
 * throw-away SQLite store (src/server/localRun.ts); the ferry.yml is applied to it by the
 * same apply as `ferry apply`; the log prints as `ferry task logs` prints it; the exit code
 * is `ferry deploy --wait`'s: 0 succeeded, 1 the deployment failed (or was cancelled), 2 the
 * command line or the file is wrong (nothing ran).
 */

interface RunOptions {
  file: string;
  env: string;
  version?: string;
  image?: string[];
  var?: string[];
  keep?: boolean;
  json?: boolean;
  proxyListen: string;
}

const VARIABLE_NAME = /^[A-Za-z_][A-Za-z0-9_.-]{0,199}$/;
const RELEASE_VERSION = /^[0-9A-Za-z][0-9A-Za-z.+_-]{0,99}$/;
const LISTEN = /^(\d{1,3}(?:\.\d{1,3}){3}|\[[0-9a-fA-F:]+\]|localhost):(\d{1,5})$/;

export function addRunCommand(
  program: Command,
  environment: () => FerryEnvironment,
  secretSource: Readonly<Record<string, string | undefined>>,
): void {
  program
    .command("run")
    .description(
      "run a project's deployment process on this machine with no server: a throw-away store, the log here (docs/ferry-run.md)",
    )
    .option("-f, --file <path>", "the project's ferry.yml", "ferry.yml")
    .requiredOption("--env <environment>", "the environment (a slug under the file's environments) to deploy to")
    .option("--version <version>", "the release's version (default: the project's next one)")
    .option(
      "--image <name=tag>",
      "the tag of one of the file's images (repeat; default: the newest that matches)",
      collect,
    )
    .option(
      "--var <name=value>",
      "a variable's value for this run, everywhere (repeat; not for sensitive ones)",
      collect,
    )
    .option("--keep", "leave what the run started running, and its data directory (printed), instead of removing them")
    .option("--proxy-listen <host:port>", "where the builtin proxy serves routed (blue/green) steps", "127.0.0.1:8000")
    .option("--json", "print how the deployment ended as JSON on standard output (the log goes to standard error)")
    .action(async (options: RunOptions) => {
      await runLocally(options, environment(), secretSource);
    });
}

async function runLocally(
  options: RunOptions,
  env: FerryEnvironment,
  secretSource: Readonly<Record<string, string | undefined>>,
): Promise<void> {
  const { parseFerryFile } = await import("../config/ferryFile.js");
  const text = await readText(options.file);
  // Problems of the file exit 2 with file:line:column, before anything starts.
  const config = parseFerryFile(text, options.file);
  const request = checkOptions(options, config);
  const sent = runnableText(text, request.variables);
  const secrets = await secretsOf(config, options.file, secretSource);
  // A run cannot go on without a secret (apply would skip the variable, and the step fail later).
  for (const [index, variable] of (config.variables ?? []).entries()) {
    const from = variable.valueFrom;
    if (!from) continue;
    const key = "env" in from ? from.env : keyFileSecret(options.file, from.file);
    if (secrets[key] !== undefined && secrets[key] !== "") continue;
    throw new UsageError(
      `${options.file}: variables[${index}] ${variable.name}: ${"env" in from ? `valueFrom.env: ${from.env} is not set (or empty); export it` : `valueFrom.file: ${from.file} cannot be read (or is empty)`}`,
    );
  }

  const json = options.json === true;
  const say = (line: string) => (json ? writeError(`${line}\n`) : writeOutput(`${line}\n`));
  const { followTask, startLocalRun } = await import("../server/localRun.js");
  const run = await startLocalRun({
    // A run is the developer's own process on their own machine: loopback (a local registry,
    // the app under test) is allowed besides FERRY_OUTBOUND_ALLOW (ADR 0046).
    outbound: { allow: [...env.FERRY_OUTBOUND_ALLOW.allow, ...parseOutboundAllow("127.0.0.1,::1").allow] },
    proxyListen: options.proxyListen,
    runAs: env.FERRY_RUN_AS,
    runAsUids: env.FERRY_RUN_AS_UIDS,
    workDir: env.FERRY_WORK_DIR,
    // The server's own log is for the embedded parts' warnings only: the task log is the output.
    logLevel: env.FERRY_LOG_LEVEL === "info" ? "warn" : env.FERRY_LOG_LEVEL,
  });
  const taskIds: string[] = [];
  let cancel: (() => void) | undefined;
  const onSignal = () => cancel?.();
  process.on("SIGINT", onSignal);
  process.on("SIGTERM", onSignal);
  let failure: unknown;
  try {
    const project = config.project.slug;
    const client = run.client;
    const body: ConfigRequest = { files: [{ name: options.file, text: sent }], secrets };
    const applied = await client.request<ConfigResult>("POST", "/api/v1/config/apply", body);
    const created = applied.changes.filter((change) => change.action === "created").length;
    say(`ferry run: applied ${options.file} to a throw-away store (${created} created); no server is involved`);
    const release = await client.request<{ version: string }>("POST", `/api/v1/projects/${segment(project)}/releases`, {
      ...(options.version !== undefined && { version: options.version }),
      images: request.images,
    });
    const deployment = await client.request<DeploymentCreated>(
      "POST",
      `/api/v1/projects/${segment(project)}/deployments`,
      { release: release.version, environment: options.env },
    );
    taskIds.push(deployment.taskId);
    say(`ferry run: ${project} ${release.version} → ${options.env} (task ${deployment.taskId})`);
    cancel = () => {
      say("ferry run: interrupted: cancelling the deployment (the step under way stops, then the clean-up runs)");
      void client.request("POST", `/api/v1/tasks/${segment(deployment.taskId)}/cancel`).catch(() => undefined);
    };
    const ended = await followTask(
      client,
      deployment,
      (line) => say(formatLogLine(line)),
      async () => {
        // An approval or a guided-failure decision: nobody can give it to a local run.
        say(
          "ferry run: the deployment waits for a person (an approval or a decision), which a local run cannot take: cancelling it",
        );
        await client.request("POST", `/api/v1/tasks/${segment(deployment.taskId)}/cancel`).catch(() => undefined);
      },
    );
    const outcome = {
      project,
      release: release.version,
      environment: options.env,
      taskId: deployment.taskId,
      state: ended.state,
      error: ended.error,
      ...(options.keep && { dataDir: run.dataDir }),
    };
    if (json) printJson(outcome);
    if (ended.state !== "succeeded") {
      throw new OperationError(
        `the deployment ${ended.state === "failed" ? "failed" : `ended ${ended.state}`}${ended.error ? `: ${ended.error}` : ""}`,
        [`last ${ended.lastLines.length} log lines:`, ...ended.lastLines.map((line) => `  ${formatLogLine(line)}`)],
      );
    }
    if (!json) say(`${project} ${release.version} → ${options.env}: succeeded`);
  } catch (error) {
    failure = error;
  } finally {
    process.off("SIGINT", onSignal);
    process.off("SIGTERM", onSignal);
    const notes = await run.close({ keep: options.keep === true, taskIds });
    for (const note of notes) say(`ferry run: clean-up: ${note}`);
    if (options.keep) {
      say(
        `ferry run: kept: the data directory ${run.dataDir} and what the run started (routed steps are served on ${options.proxyListen}); stop the proxy with kill $(cat ${run.dataDir}/proxy/proxy.pid)`,
      );
    }
  }
  if (failure !== undefined) throw failure;
}

/** The flags checked against the file: each refusal names the flag and what to give instead. */
function checkOptions(
  options: RunOptions,
  config: FerryFile,
): { images: Record<string, string>; variables: Map<string, string> } {
  const environments = config.environments.map((environment) => environment.slug);
  if (!environments.includes(options.env)) {
    throw new UsageError(
      `--env ${options.env}: ${options.file} has no environment '${options.env}'; choose one of ${environments.join(", ")}`,
    );
  }
  if (options.version !== undefined && !RELEASE_VERSION.test(options.version)) {
    throw new UsageError(
      `--version ${options.version}: use letters, digits, '.', '+', '_' and '-' (e.g. 1.4.2), starting with a letter or digit`,
    );
  }
  if (!LISTEN.test(options.proxyListen)) {
    throw new UsageError(`--proxy-listen ${options.proxyListen}: give HOST:PORT, e.g. 127.0.0.1:8000`);
  }
  const imageNames = (config.images ?? []).map((image) => image.name);
  const images: Record<string, string> = {};
  for (const entry of options.image ?? []) {
    const [name, tag] = splitPair(entry, "--image", "NAME=TAG, e.g. web=1.0.3-beta");
    if (!imageNames.includes(name)) {
      throw new UsageError(
        `--image ${entry}: ${options.file} has no image '${name}'${imageNames.length ? `; its images are ${imageNames.join(", ")}` : " (it lists no images)"}`,
      );
    }
    if (tag.length > 128) throw new UsageError(`--image ${name}: a tag has at most 128 characters`);
    images[name] = tag;
  }
  const variables = new Map<string, string>();
  for (const entry of options.var ?? []) {
    const [name, value] = splitPair(entry, "--var", "NAME=VALUE, e.g. Greeting=Hi");
    if (!VARIABLE_NAME.test(name) || name.toLowerCase().startsWith("ferry.")) {
      throw new UsageError(
        `--var ${name}: a variable name starts with a letter or '_' and uses letters, digits, '_', '.' and '-' (not 'Ferry.')`,
      );
    }
    const sensitive = (config.variables ?? []).find((variable) => variable.name === name && variable.sensitive);
    if (sensitive) {
      throw new UsageError(
        `--var ${name}: ${name} is sensitive, and a command line shows in the process list; give it through its valueFrom (${sensitive.valueFrom && "env" in sensitive.valueFrom ? `environment variable ${sensitive.valueFrom.env}` : "file"}) instead`,
      );
    }
    variables.set(name, value);
  }
  return { images, variables };
}

function splitPair(entry: string, flag: string, expected: string): [string, string] {
  const equals = entry.indexOf("=");
  if (equals <= 0 || equals === entry.length - 1) throw new UsageError(`${flag} ${entry}: give ${expected}`);
  return [entry.slice(0, equals), entry.slice(equals + 1)];
}

/**
 * The file as the run applies it: every lifecycle phase optional and none auto-deploying
 * (the run deploys the one environment asked for, whatever the phases before it), and each
 * --var replacing every declaration of its name with one unscoped value.
 */
function runnableText(text: string, variables: ReadonlyMap<string, string>): string {
  const document = parseDocument(text);
  const phases = document.getIn(["lifecycle", "phases"]);
  if (isSeq(phases)) {
    for (const phase of phases.items) {
      if (!isMap(phase)) continue;
      phase.set("autoDeploy", false);
      phase.set("optional", true);
    }
  }
  if (variables.size > 0) {
    const declared = document.get("variables");
    const kept = isSeq(declared)
      ? declared.items.filter((item) => !(isMap(item) && variables.has(String(item.get("name")))))
      : [];
    const list = new YAMLSeq<unknown>();
    for (const item of kept) list.items.push(item);
    for (const [name, value] of variables) list.items.push(document.createNode({ name, value }));
    document.set("variables", list);
  }
  if (document.errors.length > 0) throw new InputError(document.errors.map((error) => error.message).join("\n"));
  return document.toString();
}
