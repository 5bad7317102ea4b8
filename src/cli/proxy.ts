import { readFile, rm, writeFile } from "node:fs/promises";
import { homedir } from "node:os";
import { join } from "node:path";
import { type Command, InvalidArgumentError } from "commander";
import type { ProxyAdminClient as ProxyAdminClientType } from "../traffic/proxyClient.js";
import { UsageError } from "./errors.js";
import { parsePort } from "./server.js";

interface ListenAddress {
  host: string;
  port: number;
}

/** "127.0.0.1:8000", "0.0.0.0:80", ":8000" (loopback) or "8000". */
function parseListen(value: string): ListenAddress {
  const colon = value.lastIndexOf(":");
  const host = colon === -1 ? "127.0.0.1" : value.slice(0, colon).replace(/^\[(.*)\]$/, "$1") || "127.0.0.1";
  const portText = colon === -1 ? value : value.slice(colon + 1);
  if (!/^\d+$/.test(portText)) throw new InvalidArgumentError("expected HOST:PORT, such as 127.0.0.1:8000");
  return { host, port: parsePort(portText) };
}

/** How many worker processes serve traffic: 1 (one process, the default) to 64. */
function parseWorkers(value: string): number {
  const count = Number(value);
  if (!/^\d+$/.test(value) || count < 1 || count > 64) {
    throw new InvalidArgumentError(
      "--workers is how many processes serve traffic: a whole number from 1 (one process) to 64, such as the host's core count",
    );
  }
  return count;
}

interface ProxyOptions {
  listen?: ListenAddress;
  workers: number;
  adminSocket?: string;
  adminPort?: number;
  stateDir: string;
  detach?: boolean;
  existing?: boolean;
  json?: boolean;
}

/** "~/x" is the account's home (the ferry server passes its default state dir so on a remote host). */
function expandHome(path: string): string {
  return path === "~" || path.startsWith("~/") ? join(homedir(), path.slice(1)) : path;
}

/** How long in-flight requests may take to finish after SIGTERM. */
const SHUTDOWN_GRACE_MS = 10_000;

export function addProxyCommand(program: Command): void {
  const proxyCommand = program
    .command("proxy")
    // `ferry proxy pause <route> --state-dir …`: the subcommand's options are its own.
    .enablePositionalOptions()
    .description("run the Ferry proxy: the data plane that sends each route's traffic to its live colour")
    .option("--listen <host:port>", "address for traffic (default: 127.0.0.1:8000)", parseListen)
    .option("--admin-socket <path>", "unix socket of the admin API (default: <state-dir>/admin.sock)")
    .option("--admin-port <port>", "serve the admin API on 127.0.0.1:<port> instead of a unix socket", parsePort)
    .option("--state-dir <dir>", "directory for the routes and the admin token", ".ferry-proxy")
    .option(
      "--workers <n>",
      "processes serving traffic (1–64): with more than 1, a primary keeps the admin API and routes and N workers share the listening socket",
      parseWorkers,
      1,
    )
    .option(
      "--detach",
      "make sure a proxy serves this state dir, in the background (started, in a session of its own, when none answers), then exit",
    )
    .option("--existing", "with --detach: start none, only report one that answers or that left routes")
    .option("--json", "with --detach: print where its admin API answers, and its token, as JSON (for the Ferry server)")
    .action(async (options: ProxyOptions) => {
      if (options.adminSocket !== undefined && options.adminPort !== undefined) {
        throw new UsageError("give --admin-socket or --admin-port, not both");
      }
      options.stateDir = expandHome(options.stateDir);
      if (options.detach) return detach(options);
      if (options.existing || options.json) throw new UsageError("--existing and --json go with --detach");
      // The proxy's modules load only for `ferry proxy`, keeping every other command quick.
      const { startProxyAdmin } = await import("../traffic/proxyAdmin.js");
      const { readOrCreateAdminToken } = await import("../traffic/proxyState.js");
      const log = (line: string) => process.stdout.write(`${line}\n`);
      // One process serves traffic itself; with workers, this one is their primary (ADR 0055).
      const proxy =
        options.workers > 1
          ? await (await import("../traffic/proxyWorkers.js")).ProxyPrimary.open(options.stateDir, options.workers, log)
          : await (await import("../traffic/proxy.js")).FerryProxy.open(options.stateDir);
      // Traffic first: whoever waits for the admin API to answer (the server starting its proxy)
      // then knows requests are accepted too. A port in use ends the process with the error.
      const listen = options.listen ?? { host: "127.0.0.1", port: 8000 };
      const traffic = await proxy.listen(listen.host, listen.port);
      const { token, path: tokenPath } = await readOrCreateAdminToken(options.stateDir);
      const admin = await startProxyAdmin(
        proxy,
        options.adminPort !== undefined
          ? { port: options.adminPort }
          : { socketPath: options.adminSocket ?? join(options.stateDir, "admin.sock") },
        token,
      ).catch(async (error: unknown) => {
        await proxy.close(0);
        throw error;
      });
      // Who serves this state dir: for `kill $(cat proxy.pid)` and tools that stop it.
      const pidFile = join(options.stateDir, "proxy.pid");
      await writeFile(pidFile, `${process.pid}\n`, { mode: 0o600 });
      process.stdout.write(
        `ferry proxy: traffic on http://${traffic.host}:${traffic.port}` +
          `${options.workers > 1 ? ` (${options.workers} workers)` : ""}; admin API on ${admin.address} ` +
          `(token in ${tokenPath}); ${proxy.listRoutes().length} route(s) loaded\n`,
      );
      let stopping = false;
      const stop = (signal: NodeJS.Signals) => {
        if (stopping) return;
        stopping = true;
        process.stdout.write(`ferry proxy: ${signal}: finishing in-flight requests (up to ${SHUTDOWN_GRACE_MS} ms)\n`);
        // Traffic first (stop accepting, let requests finish), the admin API last.
        proxy
          .close(SHUTDOWN_GRACE_MS)
          .then(async ({ cutOff }) => {
            await admin.close();
            await rm(pidFile, { force: true });
            process.stdout.write(`ferry proxy: stopped (${cutOff} request(s) cut off)\n`);
            process.exit(0);
          })
          .catch((error: unknown) => {
            process.stderr.write(`ferry proxy: shutdown failed: ${(error as Error).message}\n`);
            process.exit(1);
          });
      };
      process.on("SIGTERM", stop);
      process.on("SIGINT", stop);
    });
  addModeCommands(proxyCommand);
}

interface ModeOptions {
  stateDir: string;
  adminPort?: number;
  page?: string;
  timeout?: number;
}

/** 1–600 seconds. */
function parseTimeout(value: string): number {
  const seconds = Number(value);
  if (!Number.isFinite(seconds) || seconds < 1 || seconds > 600) {
    throw new InvalidArgumentError("--timeout is how long a request may be held: 1 to 600 seconds");
  }
  return seconds;
}

/**
 * `ferry proxy maintenance|pause|resume <route>`: one call of the admin API of the proxy
 * serving this state dir (its socket, or --admin-port), with the token found there.
 */
function addModeCommands(proxyCommand: Command): void {
  const withAddress = (command: Command) =>
    command
      .option("--state-dir <dir>", "the proxy's state directory (the server's: <data-dir>/proxy)", ".ferry-proxy")
      .option(
        "--admin-port <port>",
        "its admin API answers on 127.0.0.1:<port> instead of the state dir's socket",
        parsePort,
      );
  const call = async (route: string, options: ModeOptions, mode: Parameters<ProxyAdminClientType["setMode"]>[1]) => {
    const stateDir = expandHome(options.stateDir);
    const { ProxyAdminClient } = await import("../traffic/proxyClient.js");
    const { readAdminToken } = await import("../traffic/proxyState.js");
    const token = await readAdminToken(stateDir).catch(() => {
      throw new UsageError(
        `no proxy token in ${stateDir}: is this the state dir of a running ferry proxy (--state-dir)?`,
      );
    });
    const client = new ProxyAdminClient(
      options.adminPort !== undefined
        ? { url: `http://127.0.0.1:${options.adminPort}` }
        : { socketPath: join(stateDir, "admin.sock") },
      token,
    );
    try {
      return (await client.setMode(route, mode)).route;
    } finally {
      await client.close();
    }
  };
  withAddress(
    proxyCommand
      .command("maintenance <route>")
      .description("answer every request of a route with 503 and a maintenance page, until `ferry proxy resume`")
      .option("--page <file>", "an HTML file to serve (at most 32 KiB); default: a short problem document"),
  ).action(async (route: string, options: ModeOptions) => {
    const page = options.page === undefined ? undefined : await readFile(options.page, "utf8");
    await call(route, options, { mode: "maintenance", ...(page !== undefined && { page }) });
    process.stdout.write(`route ${route}: in maintenance (503)${options.page ? ` with ${options.page}` : ""}\n`);
  });
  withAddress(
    proxyCommand
      .command("pause <route>")
      .description("hold a route's requests (while something is swapped) until `ferry proxy resume` or the timeout")
      .option("--timeout <seconds>", "how long a request may be held before it gets a 503 (1–600)", parseTimeout, 30),
  ).action(async (route: string, options: ModeOptions) => {
    const timeoutSeconds = options.timeout ?? 30;
    await call(route, options, { mode: "paused", timeoutSeconds });
    process.stdout.write(`route ${route}: paused; requests are held for up to ${timeoutSeconds} s\n`);
  });
  withAddress(
    proxyCommand
      .command("resume <route>")
      .description("serve a route in maintenance or paused again; held requests go on"),
  ).action(async (route: string, options: ModeOptions) => {
    await call(route, options, null);
    process.stdout.write(`route ${route}: serving\n`);
  });
}

/**
 * `ferry proxy --detach`: what the Ferry server runs on a remote target's host (through its
 * transport) to reach that host's proxy. A running one is reused; otherwise one is started
 * in a session of its own, so that it outlives this command, the SSH session that ran it
 * and the server. With --json the admin API's address and bearer token are printed: the
 * server reads them from this process's output, never from a command line.
 */
async function detach(options: ProxyOptions): Promise<void> {
  if (options.adminSocket !== undefined)
    throw new UsageError("--detach serves the admin API on --admin-port or the state dir's socket");
  const { connectOrStartProxy, proxyInUse } = await import("../traffic/builtin.js");
  const { readAdminToken } = await import("../traffic/proxyState.js");
  const listen = options.listen ?? { host: "127.0.0.1", port: 8000 };
  const settings = {
    stateDir: options.stateDir,
    listen: `${listen.host.includes(":") ? `[${listen.host}]` : listen.host}:${listen.port}`,
    adminPort: options.adminPort,
    workers: options.workers,
  };
  const print = (text: string) => process.stdout.write(`${text}\n`);
  if (options.existing && !(await proxyInUse(settings))) {
    print(options.json ? JSON.stringify({ running: false }) : `ferry proxy: none serves ${options.stateDir}`);
    return;
  }
  const { router, started } = await connectOrStartProxy(settings);
  await router.close();
  const admin =
    options.adminPort !== undefined
      ? `http://127.0.0.1:${options.adminPort}`
      : `unix:${join(options.stateDir, "admin.sock")}`;
  if (options.json) {
    print(JSON.stringify({ running: true, started, admin, token: await readAdminToken(options.stateDir) }));
  } else {
    print(
      `ferry proxy: ${started ? "started" : "already running"}; admin API on ${admin}, state in ${options.stateDir}`,
    );
  }
}
