import { Command, CommanderError } from "commander";
import { type FerryEnvironment, readEnvironment } from "../config/env.js";
import { FerryError } from "../domain/errors.js";
import { escapeControlCharacters } from "../domain/text.js";
import { FERRY_VERSION } from "../version.js";
import { addAdminCommands } from "./admin.js";
import { addAgentCommand, addAgentTokenCommands } from "./agent.js";
import { addApplyCommand, addExportCommand } from "./apply.js";
import { addArtifactCommands } from "./artifacts.js";
import { addDemoCommand } from "./demo.js";
import { addDeploymentCommands } from "./deployments.js";
import { addEnvironmentCommands } from "./environments.js";
import { EXIT_FAILED, EXIT_OK, EXIT_USAGE, OperationError, UsageError } from "./errors.js";
import { addFeedCommands } from "./feeds.js";
import { addHostRouterCommands } from "./hostRouters.js";
import { addLifecycleCommands } from "./lifecycles.js";
import { addLoginCommand } from "./login.js";
import { writeError } from "./output.js";
import { addPackageCommands } from "./packages.js";
import { addProcessesCommand } from "./processes.js";
import { addProjectCommands } from "./projects.js";
import { addProxyCommand } from "./proxy.js";
import { addReleaseCommands } from "./releases.js";
import type { CliContext } from "./resourceGroup.js";
import { addRoleCommands } from "./roles.js";
import { addRunCommand } from "./run.js";
import { addFreezeCommands, addRunbookCommands } from "./runbooks.js";
import { addServerCommand } from "./server.js";
import { clientFor } from "./settings.js";
import { addSuperviseCommand } from "./supervise.js";
import { addTargetCommands } from "./targets.js";
import { addTaskCommands } from "./tasks.js";
import { addTeamCommands } from "./teams.js";
import { addScheduledTriggerCommands, addTriggerCommands } from "./triggers.js";
import { addApiKeyCommands } from "./users.js";
import { addVariableSetCommands } from "./variableSets.js";
import { addVariableCommands, addVariablePreviewCommand } from "./variables.js";

export function buildProgram(): Command {
  let parsed: FerryEnvironment | undefined;
  const environment = () => {
    parsed ??= readEnvironment(process.env);
    return parsed;
  };
  const context: CliContext = { client: () => clientFor(environment()) };
  const program = new Command("ferry")
    .description("Ferry: release management, zero-downtime deployments and runbooks")
    .version(FERRY_VERSION)
    .showHelpAfterError("(run with --help for usage)")
    .exitOverride();
  addServerCommand(program, environment);
  addDemoCommand(program, environment);
  addLoginCommand(program, environment);
  addProxyCommand(program);
  addAgentCommand(program, environment);
  addSuperviseCommand(program);
  addProcessesCommand(program, environment);
  addHostRouterCommands(program);
  addEnvironmentCommands(program, context);
  addLifecycleCommands(program, context);
  addProjectCommands(program, context);
  addTargetCommands(program, context);
  addAgentTokenCommands(program, context);
  addFeedCommands(program, context);
  addTriggerCommands(program, context);
  addScheduledTriggerCommands(program, context);
  addVariableCommands(program, context);
  addVariablePreviewCommand(program, context);
  addVariableSetCommands(program, context);
  addApplyCommand(program, context, process.env);
  addExportCommand(program, context);
  // Program options count only before a subcommand, so `release create --version V` is
  // the release's version, not the program's --version.
  program.enablePositionalOptions();
  addReleaseCommands(program, context);
  addRunbookCommands(program, context);
  addFreezeCommands(program, context);
  addDeploymentCommands(program, context, process.env);
  addRunCommand(program, environment, process.env);
  addTaskCommands(program, context);
  addArtifactCommands(program, context);
  addPackageCommands(program, context);
  addAdminCommands(program, context);
  addApiKeyCommands(program, context);
  addRoleCommands(program, context);
  addTeamCommands(program, context);
  // Subcommands exit through the same path as the program (codes 0/1/2 below).
  const override = (command: Command) => {
    command.exitOverride();
    for (const child of command.commands) override(child);
  };
  override(program);
  return program;
}

/** Runs the CLI and returns its exit code: 0 success, 1 operation failed, 2 usage error. */
export async function runCli(argv: string[]): Promise<number> {
  try {
    const program = buildProgram();
    refuseUnknownCommand(program, argv);
    await program.parseAsync(argv, { from: "user" });
    return EXIT_OK;
  } catch (error) {
    return reportError(error);
  }
}

/**
 * The words before the first option name commands, down to one that takes arguments or has
 * no subcommands. Commander answers --help before it looks for the command, so `ferry deploi
 * --help` printed the top-level help and exited 0: a script with a typo went on as if it had
 * worked. A word that names no command is a usage error, --help or not.
 */
function refuseUnknownCommand(program: Command, argv: readonly string[]): void {
  let command = program;
  for (const word of argv) {
    if (word.startsWith("-") || command.commands.length === 0 || command.registeredArguments.length > 0) return;
    const next = command.commands.find((child) => child.name() === word || child.aliases().includes(word));
    if (next) {
      command = next;
      continue;
    }
    // Commander's own `help [command]`.
    if (word === "help") return;
    const names = command.commands.map((child) => child.name());
    const similar = names.find((name) => editDistance(name, word) <= Math.max(1, Math.floor(name.length / 3)));
    const path = commandPath(command);
    throw new UsageError(
      `unknown command '${word}'${similar ? ` (did you mean '${path} ${similar}'?)` : ""}; run '${path} --help' to list the commands`,
    );
  }
}

/** "ferry env": the words that call a command. */
function commandPath(command: Command): string {
  const names: string[] = [];
  for (let current: Command | null = command; current; current = current.parent) names.unshift(current.name());
  return names.join(" ");
}

/** Levenshtein distance: the fewest one-letter insertions, deletions and changes from one word to the other. */
function editDistance(from: string, to: string): number {
  let previous = Array.from({ length: to.length + 1 }, (_, index) => index);
  for (const [row, letter] of [...from].entries()) {
    const current = [row + 1];
    for (const [column, other] of [...to].entries()) {
      current.push(
        Math.min(
          (previous[column + 1] ?? 0) + 1,
          (current[column] ?? 0) + 1,
          (previous[column] ?? 0) + (letter === other ? 0 : 1),
        ),
      );
    }
    previous = current;
  }
  return previous[to.length] ?? 0;
}

function reportError(error: unknown): number {
  if (error instanceof CommanderError) {
    // Help asked for (--help, --version) exits 0; help shown because a command was missing, 2.
    // Commander has already printed the message.
    return error.exitCode === 0 ? EXIT_OK : EXIT_USAGE;
  }
  if (error instanceof UsageError) {
    writeError(`ferry: ${error.message}\n`);
    return EXIT_USAGE;
  }
  if (error instanceof OperationError) {
    // A detail is one line of the report, whatever the server's text in it holds.
    writeError(
      `ferry: ${error.message}\n${error.details.map((line) => `  ${escapeControlCharacters(line)}\n`).join("")}`,
    );
    return EXIT_FAILED;
  }
  if (error instanceof FerryError) {
    writeError(`ferry: ${error.message}\n`);
    return error.code === "invalid-input" ? EXIT_USAGE : EXIT_FAILED;
  }
  const code = (error as NodeJS.ErrnoException).code;
  if (code === "EADDRINUSE" || code === "EACCES") {
    writeError(
      `ferry: cannot listen: ${(error as Error).message}; choose a free port (this command's --port, --listen or --admin-port)\n`,
    );
    return EXIT_FAILED;
  }
  writeError(`ferry: ${(error as Error).message ?? String(error)}\n`);
  return EXIT_FAILED;
}
