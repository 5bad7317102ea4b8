import { rm, writeFile } from "node:fs/promises";
import { join } from "node:path";
import { type Command, InvalidArgumentError } from "commander";
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

interface ProxyOptions {
  listen?: ListenAddress;
  adminSocket?: string;
  adminPort?: number;
  stateDir: string;
}

/** How long in-flight requests may take to finish after SIGTERM. */
const SHUTDOWN_GRACE_MS = 10_000;

export function addProxyCommand(program: Command): void {
  program
    .command("proxy")
    .description("run the Ferry proxy: the data plane that sends each route's traffic to its live colour")
    .option("--listen <host:port>", "address for traffic (default: 127.0.0.1:8000)", parseListen)
    .option("--admin-socket <path>", "unix socket of the admin API (default: <state-dir>/admin.sock)")
    .option("--admin-port <port>", "serve the admin API on 127.0.0.1:<port> instead of a unix socket", parsePort)
    .option("--state-dir <dir>", "directory for the routes and the admin token", ".ferry-proxy")
    .action(async (options: ProxyOptions) => {
      if (options.adminSocket !== undefined && options.adminPort !== undefined) {
        throw new UsageError("give --admin-socket or --admin-port, not both");
      }
      // The proxy's modules load only for `ferry proxy`, keeping every other command quick.
      const { FerryProxy } = await import("../traffic/proxy.js");
      const { startProxyAdmin } = await import("../traffic/proxyAdmin.js");
      const { readOrCreateAdminToken } = await import("../traffic/proxyState.js");
      const proxy = await FerryProxy.open(options.stateDir);
      const { token, path: tokenPath } = await readOrCreateAdminToken(options.stateDir);
      const admin = await startProxyAdmin(
        proxy,
        options.adminPort !== undefined
          ? { port: options.adminPort }
          : { socketPath: options.adminSocket ?? join(options.stateDir, "admin.sock") },
        token,
      );
      const listen = options.listen ?? { host: "127.0.0.1", port: 8000 };
      const traffic = await proxy.listen(listen.host, listen.port);
      // Who serves this state dir: for `kill $(cat proxy.pid)` and tools that stop it.
      const pidFile = join(options.stateDir, "proxy.pid");
      await writeFile(pidFile, `${process.pid}\n`, { mode: 0o600 });
      process.stdout.write(
        `ferry proxy: traffic on http://${traffic.host}:${traffic.port}; admin API on ${admin.address} ` +
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
}
