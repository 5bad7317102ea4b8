import { Command, CommanderError } from "commander";
import type { FerryEnvironment } from "../config/env.js";
import { FerryError } from "../domain/errors.js";
import { escapeControlCharacters } from "../domain/text.js";
import { FERRY_VERSION } from "../version.js";
import { EXIT_FAILED, EXIT_OK, EXIT_USAGE, OperationError, UsageError } from "./errors.js";
import { writeError } from "./output.js";
import type { CliContext } from "./resourceGroup.js";
import { clientFor } from "./settings.js";

/** What a command group's module is handed when it adds its commands. */
interface CommandWiring {
  program: Command;
  context: CliContext;
  environment: () => FerryEnvironment;
}

/**
 * One module's top-level commands. The module is imported only when one of its commands runs
 * (or the full help is shown): every module brings its own imports (the server, the store,
 * YAML, HTTP clients…), and loading all of them made each `ferry` call, `--version` included,
 * take ~0.4 s of CPU before it did anything.
 */
interface CommandGroup {
  /** The top-level command names the module adds (src/cli/main.test.ts checks them). */
  names: readonly string[];
  /**
   * Added after `enablePositionalOptions()`, as the commands whose own options share names
   * with the program's (`release create --version V`): a command copies this setting from the
   * program when it is created, so each group sees it as it always has.
   */
  positionalOptions: boolean;
  add(wiring: CommandWiring): Promise<void>;
}

/** Every top-level command, in the order `ferry --help` lists them. */
const commandGroups: readonly CommandGroup[] = [
  group(["server"], false, async ({ program, environment }) =>
    (await import("./server.js")).addServerCommand(program, environment),
  ),
  group(["demo"], false, async ({ program, environment }) =>
    (await import("./demo.js")).addDemoCommand(program, environment),
  ),
  group(["login"], false, async ({ program, environment }) =>
    (await import("./login.js")).addLoginCommand(program, environment),
  ),
  group(["proxy"], false, async ({ program }) => (await import("./proxy.js")).addProxyCommand(program)),
  group(["agent"], false, async ({ program, environment }) =>
    (await import("./agent.js")).addAgentCommand(program, environment),
  ),
  group(["supervise"], false, async ({ program }) => (await import("./supervise.js")).addSuperviseCommand(program)),
  group(["processes"], false, async ({ program, environment }) =>
    (await import("./processes.js")).addProcessesCommand(program, environment),
  ),
  group(["nginx-router", "haproxy-router"], false, async ({ program }) =>
    (await import("./hostRouters.js")).addHostRouterCommands(program),
  ),
  group(["env"], false, async ({ program, context }) =>
    (await import("./environments.js")).addEnvironmentCommands(program, context),
  ),
  group(["lifecycle"], false, async ({ program, context }) =>
    (await import("./lifecycles.js")).addLifecycleCommands(program, context),
  ),
  group(["project"], false, async ({ program, context }) =>
    (await import("./projects.js")).addProjectCommands(program, context),
  ),
  group(["target"], false, async ({ program, context }) =>
    (await import("./targets.js")).addTargetCommands(program, context),
  ),
  group(["route"], false, async ({ program, context }) =>
    (await import("./routes.js")).addRouteCommands(program, context),
  ),
  group(["agent-token"], false, async ({ program, context }) =>
    (await import("./agent.js")).addAgentTokenCommands(program, context),
  ),
  group(["feed"], false, async ({ program, context }) =>
    (await import("./feeds.js")).addFeedCommands(program, context),
  ),
  group(["trigger"], false, async ({ program, context }) =>
    (await import("./triggers.js")).addTriggerCommands(program, context),
  ),
  group(["scheduled-trigger"], false, async ({ program, context }) =>
    (await import("./triggers.js")).addScheduledTriggerCommands(program, context),
  ),
  group(["var"], false, async ({ program, context }) =>
    (await import("./variables.js")).addVariableCommands(program, context),
  ),
  group(["vars"], false, async ({ program, context }) =>
    (await import("./variables.js")).addVariablePreviewCommand(program, context),
  ),
  group(["varset"], false, async ({ program, context }) =>
    (await import("./variableSets.js")).addVariableSetCommands(program, context),
  ),
  group(["apply"], false, async ({ program, context }) =>
    (await import("./apply.js")).addApplyCommand(program, context, process.env),
  ),
  group(["export"], false, async ({ program, context }) =>
    (await import("./apply.js")).addExportCommand(program, context),
  ),
  group(["release"], true, async ({ program, context }) =>
    (await import("./releases.js")).addReleaseCommands(program, context),
  ),
  group(["runbook"], true, async ({ program, context }) =>
    (await import("./runbooks.js")).addRunbookCommands(program, context),
  ),
  group(["freeze"], true, async ({ program, context }) =>
    (await import("./runbooks.js")).addFreezeCommands(program, context),
  ),
  group(["deploy", "promote", "rollback", "plan"], true, async ({ program, context }) =>
    (await import("./deployments.js")).addDeploymentCommands(program, context, process.env),
  ),
  group(["run"], true, async ({ program, environment }) =>
    (await import("./run.js")).addRunCommand(program, environment, process.env),
  ),
  group(["task"], true, async ({ program, context }) => (await import("./tasks.js")).addTaskCommands(program, context)),
  group(["artifact"], true, async ({ program, context }) =>
    (await import("./artifacts.js")).addArtifactCommands(program, context),
  ),
  group(["package"], true, async ({ program, context }) =>
    (await import("./packages.js")).addPackageCommands(program, context),
  ),
  group(["admin"], true, async ({ program, context }) =>
    (await import("./admin.js")).addAdminCommands(program, context),
  ),
  group(["api-key"], true, async ({ program, context }) =>
    (await import("./users.js")).addApiKeyCommands(program, context),
  ),
  group(["role"], true, async ({ program, context }) => (await import("./roles.js")).addRoleCommands(program, context)),
  group(["team"], true, async ({ program, context }) => (await import("./teams.js")).addTeamCommands(program, context)),
];

function group(names: readonly string[], positionalOptions: boolean, add: CommandGroup["add"]): CommandGroup {
  return { names, positionalOptions, add };
}

/** The names of every top-level command, in help order (for src/cli/main.test.ts). */
export const topLevelCommandNames: readonly string[] = commandGroups.flatMap((entry) => entry.names);

/**
 * The groups a command line needs: the one naming its first word (`ferry help WORD`: WORD's),
 * none for `--version` alone, and every group otherwise — the program's help, a missing or
 * mistyped command (whose message suggests the nearest name), an option before the command.
 */
function groupsFor(argv: readonly string[]): readonly CommandGroup[] {
  const [first, second] = argv;
  if (argv.length === 1 && (first === "--version" || first === "-V")) return [];
  const word = first === "help" ? second : first;
  const named = commandGroups.find((entry) => word !== undefined && entry.names.includes(word));
  return named ? [named] : commandGroups;
}

/**
 * The program with the commands `argv` needs (all of them when `argv` is not given); the
 * help of each command is the same whichever way it was built.
 */
export async function buildProgram(argv?: readonly string[]): Promise<Command> {
  let parsed: FerryEnvironment | undefined;
  const groups = argv === undefined ? commandGroups : groupsFor(argv);
  // Read by every command's action (never by --version): zod and the settings' parsers load here.
  const { readEnvironment } = groups.length > 0 ? await import("../config/env.js") : { readEnvironment: undefined };
  const environment = () => {
    if (!readEnvironment) throw new Error("the environment is read by commands only");
    parsed ??= readEnvironment(process.env);
    return parsed;
  };
  const context: CliContext = { client: () => clientFor(environment()) };
  const program = new Command("ferry")
    .description("Ferry: release management, zero-downtime deployments and runbooks")
    .version(FERRY_VERSION)
    .showHelpAfterError("(run with --help for usage)")
    .exitOverride();
  for (const entry of groups) {
    // Program options count only before a subcommand, so `release create --version V` is
    // the release's version, not the program's --version (see CommandGroup.positionalOptions).
    program.enablePositionalOptions(entry.positionalOptions);
    await entry.add({ program, context, environment });
  }
  program.enablePositionalOptions();
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
    const program = await buildProgram(argv);
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
