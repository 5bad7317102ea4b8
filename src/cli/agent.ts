import { readFile } from "node:fs/promises";
import { hostname } from "node:os";
import { join, resolve } from "node:path";
import { type Command, InvalidArgumentError } from "commander";
import type { FerryEnvironment } from "../config/env.js";
import type { EnrolmentToken } from "../domain/agents.js";
import { segment } from "./client.js";
import { OperationError, UsageError } from "./errors.js";
import { list, printFields, printJson, printTable, writeError, writeOutput } from "./output.js";
import { type CliContext, parseNonNegativeInteger } from "./resourceGroup.js";

const commaList = (value: string) =>
  value
    .split(",")
    .map((item) => item.trim())
    .filter((item) => item !== "");

function parseServerUrl(value: string): string {
  let url: URL;
  try {
    url = new URL(value);
  } catch {
    throw new InvalidArgumentError("write the server's URL, e.g. https://ferry.example.com");
  }
  if (url.protocol !== "http:" && url.protocol !== "https:")
    throw new InvalidArgumentError("use an http:// or https:// URL");
  return url.href;
}

interface AgentOptions {
  server?: string;
  tokenFile?: string;
  name?: string;
  roles?: string;
  environments?: string;
  runtimes?: string;
  stateDir?: string;
  runAs?: string;
  runAsUids?: string;
  workDir?: string;
  caFile?: string;
  dockerSocket: string;
  stopGrace: number;
}

/**
 * `ferry agent`: enrols this host once (a one-time token from --token-file or
 * FERRY_AGENT_TOKEN, never a command-line value: the process list shows those), then polls
 * the server for work with its own credential, in the foreground, until SIGTERM.
 */
export function addAgentCommand(program: Command, environment: () => FerryEnvironment): void {
  program
    .command("agent")
    .description("run this host as a Ferry target that dials out to the server (docs/targets.md)")
    .option("--server <url>", "the Ferry server's URL (or FERRY_AGENT_SERVER)", parseServerUrl)
    .option("--token-file <path>", "first start: a file holding the one-time enrolment token (or FERRY_AGENT_TOKEN)")
    .option("--name <name>", "first start: the target's name (default: the host name)")
    .option("--roles <roles>", "first start: the target's roles, comma-separated")
    .option("--environments <environments>", "first start: its environments, comma-separated")
    .option("--runtimes <runtimes>", "first start: docker and/or process, comma-separated (default docker)")
    .option(
      "--state-dir <dir>",
      "where the credential and the journal live (or FERRY_AGENT_STATE_DIR; default /var/lib/ferry-agent)",
    )
    .option(
      "--run-as <user>",
      "the account steps run as (as FERRY_RUN_AS; default: a uid of its own per task when root)",
    )
    .option("--run-as-uids <first-last>", "the uids per-task accounts come from (as FERRY_RUN_AS_UIDS)")
    .option("--work-dir <dir>", "where tasks keep working files on this host (as FERRY_WORK_DIR)")
    .option("--ca-file <path>", "PEM certificates to trust for an https server (a private CA) instead of the system's")
    .option("--docker-socket <path>", "the Docker engine's socket on this host", "/var/run/docker.sock")
    .option(
      "--stop-grace <seconds>",
      "after SIGTERM, how long running steps may take before they are stopped and reported",
      parseNonNegativeInteger,
      30,
    )
    .action(async (options: AgentOptions) => {
      const env = environment();
      process.exitCode = await runAgent(options, env);
    });
}

async function runAgent(options: AgentOptions, env: FerryEnvironment): Promise<number> {
  const { AgentHost, ServerClient, enrol, readCredentialFile, saveCredentialFile } = await import(
    "../transports/agentHost.js"
  );
  const { LocalTransport } = await import("../transports/local.js");
  const { prepareWorkRoot, resolveLocalUser } = await import("../runtimes/localUser.js");
  const stateDir = resolve(options.stateDir ?? env.FERRY_AGENT_STATE_DIR ?? "/var/lib/ferry-agent");
  const log = (message: string) => writeError(`${new Date().toISOString()} ferry agent: ${message}\n`);
  let saved = await readCredentialFile(stateDir);
  const serverOption = options.server ?? env.FERRY_AGENT_SERVER ?? saved?.server;
  if (!serverOption)
    throw new UsageError("name the server: --server https://ferry.example.com (or FERRY_AGENT_SERVER)");
  const server = new URL(serverOption);
  if (saved && new URL(saved.server).origin !== server.origin) {
    throw new UsageError(
      `this host is enrolled with ${saved.server} (${join(stateDir, "agent.json")}); remove that file to enrol it with another server`,
    );
  }
  const ca =
    options.caFile === undefined
      ? undefined
      : await readFile(options.caFile, "utf8").catch(() => {
          throw new UsageError(`cannot read the CA file ${options.caFile}`);
        });
  if (!saved) {
    const token =
      options.tokenFile !== undefined
        ? (
            await readFile(options.tokenFile, "utf8").catch(() => {
              throw new UsageError(`cannot read the token file ${options.tokenFile}`);
            })
          ).trim()
        : env.FERRY_AGENT_TOKEN;
    if (!token) {
      throw new UsageError(
        "this host is not enrolled yet: give the one-time token from 'ferry agent-token create' with --token-file or FERRY_AGENT_TOKEN",
      );
    }
    if (!options.environments) throw new UsageError("first start: name the target's environments with --environments");
    const client = new ServerClient(server, undefined, { ca });
    try {
      saved = await enrol(client, stateDir, {
        token,
        name: options.name ?? hostname(),
        environments: commaList(options.environments),
        roles: commaList(options.roles ?? ""),
        runtimes: commaList(options.runtimes ?? "docker"),
      });
    } catch (error) {
      throw new OperationError(`enrolment failed: ${(error as Error).message}`);
    }
    log(`enrolled as target '${saved.targetName}'; its credential is in ${join(stateDir, "agent.json")} (0600)`);
  }
  const localUser = resolveLocalUser(
    options.runAs ?? env.FERRY_RUN_AS,
    undefined,
    options.runAsUids ?? env.FERRY_RUN_AS_UIDS,
  );
  const workRoot =
    localUser.kind === "user" || localUser.kind === "perTask"
      ? await prepareWorkRoot(stateDir, options.workDir ?? env.FERRY_WORK_DIR)
      : resolve(options.workDir ?? join(stateDir, "work"));
  const credentials = saved;
  const client = new ServerClient(server, credentials.credential, { ca });
  const host = new AgentHost({
    client,
    stateDir,
    local: new LocalTransport(workRoot, localUser),
    workRoot,
    processesRefused: localUser.kind === "refused" ? localUser.reason : undefined,
    // Its host services (`ferry processes`) keep instances where this agent's work is, as the account it chose.
    hostServiceEnv: {
      FERRY_WORK_DIR: workRoot,
      ...(localUser.kind === "server" && { FERRY_RUN_AS: "server" }),
      ...(localUser.kind === "user" && { FERRY_RUN_AS: String(localUser.uid) }),
    },
    dockerSocket: options.dockerSocket,
    stopGraceMs: options.stopGrace * 1000,
    log,
    saveCredential: (credential) => saveCredentialFile(stateDir, { ...credentials, credential }),
  });
  const stop = new AbortController();
  const onSignal = (signal: NodeJS.Signals) => {
    if (stop.signal.aborted) return;
    log(`${signal}: finishing running steps, then stopping`);
    stop.abort();
  };
  process.on("SIGTERM", onSignal);
  process.on("SIGINT", onSignal);
  log(`target '${credentials.targetName}' polling ${server.origin} for work`);
  const code = await host.run(stop.signal);
  process.off("SIGTERM", onSignal);
  process.off("SIGINT", onSignal);
  log(code === 0 ? "stopped" : `stopped (exit ${code})`);
  // A keep-alive socket or a late timer must not keep a stopped agent alive (systemd waits for the exit).
  setTimeout(() => process.exit(code), 1_000);
  return code;
}

function tokenRow(token: EnrolmentToken): [string, string][] {
  return [
    ["id", token.id],
    ["state", token.state],
    ["note", token.note],
    ["environments", token.environments === null ? "any" : list(token.environments)],
    ["roles", token.roles === null ? "any" : list(token.roles)],
    ["expires", token.expiresAt],
    ["used by", token.usedBy ?? ""],
  ];
}

/** `ferry agent-token create|list|revoke`, and `ferry target rotate-credential|revoke-credential`. */
export function addAgentTokenCommands(program: Command, context: CliContext): void {
  const group = program.command("agent-token").description("one-time tokens that enrol ferry agent hosts");
  group
    .command("create")
    .description("create a one-time enrolment token (printed once; give it to ferry agent in a file)")
    .option("--expires <minutes>", "minutes it can be used (default 60)", parseNonNegativeInteger)
    .option(
      "--env <environment>",
      "an environment the agent may join (repeat; default any)",
      (value, previous: string[] = []) => [...previous, value],
    )
    .option(
      "--role <role>",
      "a role the agent may take (repeat; default any); an agent that names none takes them all",
      (value, previous: string[] = []) => [...previous, value],
    )
    .option("--note <text>", "what it is for")
    .option("--json", "print JSON")
    .action(async (options: { expires?: number; env?: string[]; role?: string[]; note?: string; json?: boolean }) => {
      const client = await context.client();
      const created = await client.request<EnrolmentToken & { token: string }>("POST", "/api/v1/agent-tokens", {
        ...(options.expires !== undefined && { expiresInMinutes: options.expires }),
        ...(options.env && { environments: options.env }),
        ...(options.role && { roles: options.role }),
        ...(options.note !== undefined && { note: options.note }),
      });
      if (options.json) return printJson(created);
      printFields(tokenRow(created));
      writeOutput(
        `\nThe token (shown only now; single use, until ${created.expiresAt}):\n${created.token}\n\nOn the host, put it in a file only root can read and run:\n  ferry agent --server URL --token-file FILE --name NAME --environments ENV --roles ROLES`,
      );
    });
  group
    .command("list")
    .description("list enrolment tokens and their state")
    .option("--json", "print JSON")
    .action(async (options: { json?: boolean }) => {
      const client = await context.client();
      const { items } = await client.request<{ items: EnrolmentToken[] }>("GET", "/api/v1/agent-tokens");
      if (options.json) return printJson(items);
      printTable(items, [
        ["id", (token) => token.id],
        ["state", (token) => token.state],
        ["note", (token) => token.note],
        ["environments", (token) => (token.environments === null ? "any" : list(token.environments))],
        ["roles", (token) => (token.roles === null ? "any" : list(token.roles))],
        ["expires", (token) => token.expiresAt],
        ["used by", (token) => token.usedBy ?? ""],
      ]);
    });
  group
    .command("revoke")
    .description("revoke a token that was not used yet")
    .argument("<id>")
    .action(async (id: string) => {
      const client = await context.client();
      const token = await client.request<EnrolmentToken>("DELETE", `/api/v1/agent-tokens/${segment(id)}`);
      writeOutput(`enrolment token ${token.id} is ${token.state}`);
    });
}

export function addAgentCredentialCommands(targets: Command, context: CliContext): void {
  targets
    .command("rotate-credential")
    .description("give an agent target a new credential (it picks it up on its next poll)")
    .argument("<ref>", "id or slug")
    .action(async (reference: string) => {
      const client = await context.client();
      const answer = await client.request<{ target: string }>(
        "POST",
        `/api/v1/targets/${segment(reference)}/agent/rotate`,
      );
      writeOutput(
        `a new credential waits for the agent of '${answer.target}'; the old one stops working once it is used`,
      );
    });
  targets
    .command("revoke-credential")
    .description("revoke an agent target's credential: the agent is refused from its next request")
    .argument("<ref>", "id or slug")
    .action(async (reference: string) => {
      const client = await context.client();
      const answer = await client.request<{ target: string }>(
        "POST",
        `/api/v1/targets/${segment(reference)}/agent/revoke`,
      );
      writeOutput(`the agent of '${answer.target}' is revoked: enrol the host again with a new token to use it`);
    });
}
