import { type Command, InvalidArgumentError } from "commander";
import type { FerryEnvironment } from "../config/env.js";
import type { RunningServer } from "../server/start.js";
import { isPostgresUrl } from "../store/databaseUrl.js";
import { parseNonNegativeInteger } from "./resourceGroup.js";

export function parsePort(value: string): number {
  const port = parseNonNegativeInteger(value);
  if (port > 65535) throw new InvalidArgumentError("a port is at most 65535");
  return port;
}

function parseDatabaseUrl(value: string): string {
  if (!isPostgresUrl(value)) {
    throw new InvalidArgumentError(
      "use postgres://user:password@host:port/database (leave --db out for the embedded SQLite store)",
    );
  }
  return value;
}

/** Stops the server cleanly on SIGTERM/SIGINT: in-flight requests finish, the store closes. */
export function stopOnSignals(server: RunningServer): void {
  let stopping = false;
  const stop = (signal: NodeJS.Signals) => {
    if (stopping) return;
    stopping = true;
    server.app.log.info({ signal }, "shutting down");
    server.close().then(
      () => process.exit(0),
      (error: unknown) => {
        server.app.log.error({ err: error }, "shutdown failed");
        process.exit(1);
      },
    );
  };
  process.on("SIGTERM", stop);
  process.on("SIGINT", stop);
}

export function addServerCommand(program: Command, environment: () => FerryEnvironment): void {
  program
    .command("server")
    .description("run the Ferry server (API, task engine)")
    .option("--port <port>", "port to listen on", parsePort, 8080)
    .option("--host <host>", "address to listen on", "127.0.0.1")
    .option("--data-dir <dir>", "data directory (SQLite file, master key)", ".ferry")
    .option(
      "--db <url>",
      "PostgreSQL URL (default: FERRY_DATABASE_URL, else SQLite in the data directory; prefer the variable: argv is visible in ps)",
      parseDatabaseUrl,
    )
    .action(async (options: { port: number; host: string; dataDir: string; db?: string }) => {
      const env = environment();
      // The server's modules load only for `ferry server`, keeping every other command quick.
      const { startServer } = await import("../server/start.js");
      const { trafficSettingsFromEnvironment } = await import("../traffic/routers.js");
      const { oidcSettingsFromEnvironment } = await import("../security/oidc.js");
      const { dockerSocketOf } = await import("../runtimes/docker.js");
      const server = await startServer({
        // Checked before anything starts, like OIDC: a tcp:// DOCKER_HOST stops here, named.
        dockerSocket: dockerSocketOf(env.DOCKER_HOST),
        // Checked before anything starts: a wrong FERRY_OIDC_* setting stops here, named.
        oidc: oidcSettingsFromEnvironment(env),
        traffic: trafficSettingsFromEnvironment(env, options.dataDir),
        outbound: env.FERRY_OUTBOUND_ALLOW,
        trustedProxies: env.FERRY_TRUSTED_PROXIES,
        requestsPerAddress: env.FERRY_REQUESTS_PER_ADDRESS,
        statsd: env.FERRY_STATSD,
        port: options.port,
        host: options.host,
        dataDir: options.dataDir,
        databaseUrl: options.db ?? env.FERRY_DATABASE_URL,
        adminApiKey: env.FERRY_ADMIN_API_KEY,
        logLevel: env.FERRY_LOG_LEVEL,
        leaseMs: env.FERRY_TASK_LEASE_SECONDS * 1000,
        targetHealth: {
          intervalMs: env.FERRY_TARGET_HEALTH_INTERVAL_SECONDS * 1000,
          timeoutMs: env.FERRY_TARGET_HEALTH_TIMEOUT_SECONDS * 1000,
        },
        runAs: env.FERRY_RUN_AS,
        runAsUids: env.FERRY_RUN_AS_UIDS,
        workDir: env.FERRY_WORK_DIR,
        agentTimeoutMs: env.FERRY_AGENT_TIMEOUT_SECONDS * 1000,
        sshKeepalive: {
          intervalMs: env.FERRY_SSH_KEEPALIVE_INTERVAL_SECONDS * 1000,
          countMax: env.FERRY_SSH_KEEPALIVE_COUNT_MAX,
        },
        sshTimeouts: {
          connectMs: env.FERRY_SSH_CONNECT_TIMEOUT_SECONDS * 1000,
          operationMs: env.FERRY_SSH_OPERATION_TIMEOUT_SECONDS * 1000,
        },
        scheduleGraceMs: env.FERRY_SCHEDULE_GRACE_SECONDS * 1000,
        artifactMaxBytes: env.FERRY_ARTIFACT_MAX_BYTES,
        packageMaxBytes: env.FERRY_PACKAGE_MAX_BYTES,
        packageKeepVersions: env.FERRY_PACKAGE_KEEP_VERSIONS,
      });
      stopOnSignals(server);
    });
}
