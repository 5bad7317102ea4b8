import { readFile } from "node:fs/promises";
import { type Command, InvalidArgumentError } from "commander";
import type { Target, TargetRouter } from "../domain/targets.js";
import { addAgentCredentialCommands } from "./agent.js";
import { segment } from "./client.js";
import { UsageError } from "./errors.js";
import { list } from "./output.js";
import {
  addResourceGroup,
  type CliContext,
  collect,
  pick,
  type ResourceGroupSpec,
  sendAndPrint,
} from "./resourceGroup.js";
import { readSecretFromStdin } from "./stdin.js";
import { addTrustCommand } from "./targetTrust.js";

/** --router-workers: a whole number (the server says when it is out of range, naming the field). */
function parseRouterWorkers(value: string): number {
  if (!/^\d+$/.test(value)) {
    throw new InvalidArgumentError("--router-workers is how many processes serve traffic: a whole number from 1 to 64");
  }
  return Number(value);
}

/** What `target show` prints of the host's router, per driver. */
function routerLines(router: TargetRouter): [string, string][] {
  switch (router.driver) {
    case "builtin":
      return [
        [
          "router",
          `builtin on ${router.listen} (admin API on 127.0.0.1:${router.adminPort}${router.workers !== undefined && router.workers > 1 ? `, ${router.workers} workers` : ""})`,
        ],
        ["router state", router.stateDir ?? "~/.local/state/ferry/proxy of the account work runs as"],
        ["router command", router.command],
      ];
    case "nginx":
      return [
        ["router", `nginx on ${router.listen} (client keep-alive ${router.clientKeepalive ? "on" : "off"})`],
        ["router config", `${router.config} (Ferry's files in ${router.sitesDir}, pid file ${router.pidFile})`],
        ["router command", `${router.command} (nginx: ${router.binary})`],
      ];
    case "haproxy":
      return [
        ["router", `haproxy on ${router.listen} (runtime API switches, no reloads)`],
        ["router state", `${router.stateDir} (haproxy.cfg, runtime API socket, access log)`],
        ["router command", `${router.command} (haproxy: ${router.binary})`],
      ];
    default: {
      const unknown: never = router;
      return unknown;
    }
  }
}

/** "deploy@10.0.0.5:2222" for a table: where the target is reached, never its key. */
function reachedAt(target: Target): string {
  if (!target.ssh) return "";
  const { user, host, port, jumpHost } = target.ssh;
  const address = (h: string, p: number) => `${h.includes(":") ? `[${h}]` : h}${p === 22 ? "" : `:${p}`}`;
  return `${user}@${address(host, port)}${jumpHost ? ` via ${jumpHost.user}@${address(jumpHost.host, jumpHost.port)}` : ""}`;
}

/** "1.2 GiB" for a table: the free disk space a health check found. */
function formatBytes(bytes: number): string {
  const units = ["B", "KiB", "MiB", "GiB", "TiB"];
  let value = bytes;
  let unit = 0;
  while (value >= 1024 && unit < units.length - 1) {
    value /= 1024;
    unit += 1;
  }
  return `${unit === 0 ? value : value.toFixed(1)} ${units[unit]}`;
}

/** The health field of `ferry target list`: the state, and since when a down target was last up. */
function healthSummary(target: Target): string {
  const { health } = target;
  if (health.state !== "down") return health.state;
  return health.lastUpAt ? `down (last up ${health.lastUpAt})` : "down";
}

function healthFields(target: Target): [string, string][] {
  const { health } = target;
  if (health.state === "unknown") return [["health", "unknown (not checked yet)"]];
  return [
    ["health", health.state],
    ["checked at", health.checkedAt ?? "-"],
    ["reachable", health.reachable ? "yes" : "no"],
    ["docker", health.dockerVersion ?? "-"],
    ["disk free", health.diskFreeBytes === null ? "-" : formatBytes(health.diskFreeBytes)],
    ["router", health.router ?? "none in use"],
    ["last up", health.lastUpAt ?? "never"],
    ...(health.error ? ([["health error", health.error]] as [string, string][]) : []),
  ];
}

const spec: ResourceGroupSpec<Target> = {
  group: "target",
  description: "deployment targets: hosts in environments, with roles",
  noun: "target",
  collectionPath: () => "/api/v1/targets",
  columns: [
    ["slug", (target) => target.slug],
    ["name", (target) => target.name],
    ["environments", (target) => list(target.environments)],
    ["roles", (target) => list(target.roles)],
    ["transport", (target) => target.transport],
    ["runtimes", (target) => list(target.runtimes)],
    ["ssh", (target) => reachedAt(target)],
    ["router", (target) => (target.router ? `${target.router.driver} ${target.router.listen}` : "")],
    ["agent", (target) => target.agent?.state ?? ""],
    ["health", healthSummary],
  ],
  fields: (target) => [
    ["id", target.id],
    ["slug", target.slug],
    ["name", target.name],
    ["environments", list(target.environments)],
    ["roles", list(target.roles)],
    ["transport", target.transport],
    ["runtimes", list(target.runtimes)],
    ...(target.ssh
      ? ([
          ["ssh", reachedAt(target)],
          ["host key", target.ssh.hostKey ?? "not trusted yet: run ferry target trust"],
          ...(target.ssh.jumpHost
            ? [["jump host key", target.ssh.jumpHost.hostKey ?? "not trusted yet: run ferry target trust"]]
            : []),
          ["private key", target.ssh.privateKey],
          ["passphrase", target.ssh.passphrase ?? "none"],
        ] as [string, string][])
      : []),
    ...(target.router ? routerLines(target.router) : []),
    ...(target.agent
      ? ([
          ["agent", `${target.agent.state}${target.agent.since ? ` since ${target.agent.since}` : ""}`],
          ["credential", target.agent.rotationPending ? "set (a rotated one waits for the agent)" : "set"],
        ] as [string, string][])
      : []),
    ...healthFields(target),
  ],
};

const fieldOptions = {
  name: "name",
  slug: "slug",
  env: "environments",
  role: "roles",
  transport: "transport",
  runtime: "runtimes",
};

function withTargetOptions(command: Command): Command {
  return command
    .option("--role <role>", "a role (repeat for several)", collect)
    .option(
      "--transport <kind>",
      "how Ferry reaches it: local (this server's host) or ssh (agent targets are made by enrolling: ferry agent-token create)",
    )
    .option("--runtime <kind>", "docker or process (repeat for both)", collect)
    .option("--slug <slug>")
    .option("--ssh-host <host>", "ssh: the host's name or address")
    .option("--ssh-port <port>", "ssh: its SSH port (default 22)", parsePort)
    .option("--ssh-user <user>", "ssh: the account work runs as on the host")
    .option("--ssh-key-file <path>", "ssh: a file holding the private key (never the key itself on the command line)")
    .option("--ssh-passphrase-stdin", "ssh: read the key's passphrase from standard input")
    .option("--ssh-jump-host <user@host[:port]>", "ssh: reach the host through this one (as ssh -J)")
    .option("--ssh-host-key <fingerprint>", "ssh: trust this host key (SHA256:…) instead of running ferry target trust")
    .option(
      "--router <driver>",
      "the host's traffic router for blue/green: builtin (ferry proxy, started there by Ferry), nginx (the host's nginx) or haproxy (a HAProxy Ferry starts there)",
    )
    .option("--router-listen <address:port>", "router: where it takes traffic on the host (default 0.0.0.0:80)")
    .option(
      "--router-admin-port <port>",
      "router: its admin API's port on the host's 127.0.0.1 (default 7999)",
      parsePort,
    )
    .option(
      "--router-state-dir <path>",
      "router: its state directory on the host (builtin: default ~/.local/state/ferry/proxy; haproxy: required)",
    )
    .option("--router-command <path>", "router: the ferry program on the host (default ferry)")
    .option(
      "--router-workers <n>",
      "builtin router: processes serving traffic when Ferry starts the proxy (default 1)",
      parseRouterWorkers,
    )
    .option("--router-config <path>", "nginx router: the host's main nginx.conf, which includes the sites dir")
    .option("--router-sites-dir <path>", "nginx router: the directory Ferry owns on the host (included inside http {})")
    .option("--router-pid-file <path>", "nginx router: the pid file the main config names")
    .option("--router-binary <path>", "nginx / haproxy router: the program on the host (default nginx / haproxy)")
    .option("--router-client-keepalive", "nginx router: keep idle client connections open (see docs/targets.md)")
    .option("--json", "print JSON");
}

function parsePort(value: string): number {
  if (!/^\d{1,5}$/.test(value)) throw new InvalidArgumentError("expected a port number (1-65535)");
  return Number(value);
}

/** "deploy@bastion.example.com:2222" → { user, host, port }. */
function parseJumpHost(value: string): { user: string; host: string; port?: number } {
  const match = /^([^@\s]+)@(\[[^\]]+\]|[^:\s]+)(?::(\d{1,5}))?$/.exec(value);
  if (!match) throw new UsageError(`--ssh-jump-host takes user@host or user@host:port, not '${value}'`);
  return {
    user: match[1] ?? "",
    host: (match[2] ?? "").replace(/^\[|\]$/g, ""),
    ...(match[3] !== undefined && { port: Number(match[3]) }),
  };
}

/**
 * The ssh object of a create or update body from the --ssh-* options; undefined when none
 * was given. The key is read from a file and the passphrase from standard input, so neither
 * ever sits in the command line (ps, shell history).
 */
async function sshBody(options: Record<string, unknown>): Promise<Record<string, unknown> | undefined> {
  const body: Record<string, unknown> = {};
  if (options.sshHost !== undefined) body.host = options.sshHost;
  if (options.sshPort !== undefined) body.port = options.sshPort;
  if (options.sshUser !== undefined) body.user = options.sshUser;
  if (options.sshJumpHost !== undefined) body.jumpHost = parseJumpHost(String(options.sshJumpHost));
  if (options.sshHostKey !== undefined) body.hostKey = options.sshHostKey;
  if (options.sshKeyFile !== undefined) {
    const path = String(options.sshKeyFile);
    body.privateKey = await readFile(path, "utf8").catch((error: NodeJS.ErrnoException) => {
      throw new UsageError(`cannot read the private key file ${path} (${error.code ?? error.message})`);
    });
  }
  if (options.sshPassphraseStdin) body.passphrase = await readSecretFromStdin("key's passphrase");
  return Object.keys(body).length > 0 ? body : undefined;
}

/**
 * The router object of a body from the --router* options; undefined when none was given.
 * An update replaces the router as a whole, so --router names the driver each time.
 */
function routerBody(options: Record<string, unknown>): Record<string, unknown> | undefined {
  const details = {
    ...(options.routerListen !== undefined && { listen: options.routerListen }),
    ...(options.routerAdminPort !== undefined && { adminPort: options.routerAdminPort }),
    ...(options.routerStateDir !== undefined && { stateDir: options.routerStateDir }),
    ...(options.routerCommand !== undefined && { command: options.routerCommand }),
    ...(options.routerWorkers !== undefined && { workers: options.routerWorkers }),
    ...(options.routerConfig !== undefined && { config: options.routerConfig }),
    ...(options.routerSitesDir !== undefined && { sitesDir: options.routerSitesDir }),
    ...(options.routerPidFile !== undefined && { pidFile: options.routerPidFile }),
    ...(options.routerBinary !== undefined && { binary: options.routerBinary }),
    ...(options.routerClientKeepalive !== undefined && { clientKeepalive: true }),
  };
  if (options.router === undefined) {
    if (Object.keys(details).length > 0) {
      throw new UsageError("give --router builtin, nginx or haproxy with the --router-* options");
    }
    return undefined;
  }
  return { driver: options.router, ...details };
}

export function addTargetCommands(program: Command, context: CliContext): void {
  const group = addResourceGroup(program, context, spec);
  withTargetOptions(
    group
      .command("create")
      .description("register a target")
      .argument("<name>")
      .requiredOption("--env <ref>", "an environment it belongs to (repeat for several)", collect),
  ).action(async (name: string, options: Record<string, unknown>) => {
    const ssh = await sshBody(options);
    const router = routerBody(options);
    await sendAndPrint(
      context,
      spec,
      "POST",
      spec.collectionPath(options),
      { name, ...pick(options, fieldOptions), ...(ssh && { ssh }), ...(router && { router }) },
      options,
    );
  });
  withTargetOptions(
    group
      .command("update")
      .description("change a target; list options replace the whole list")
      .argument("<ref>", "id or slug")
      .option("--name <name>")
      .option("--env <ref>", "an environment it belongs to (repeat for several)", collect)
      .option("--no-router", "the host has no traffic router any more"),
  ).action(async (reference: string, options: Record<string, unknown>) => {
    const ssh = await sshBody(options);
    // --no-router sets options.router to false; declared first, it makes the default true (nothing given).
    const router =
      options.router === false
        ? null
        : routerBody({ ...options, router: options.router === true ? undefined : options.router });
    await sendAndPrint(
      context,
      spec,
      "PATCH",
      `${spec.collectionPath(options)}/${segment(reference)}`,
      { ...pick(options, fieldOptions), ...(ssh && { ssh }), ...(router !== undefined && { router }) },
      options,
    );
  });
  addTrustCommand(group, context);
  addAgentCredentialCommands(group, context);
}
