import { z } from "zod";
import { InputError } from "../domain/errors.js";
import { toFieldIssues } from "../domain/validation.js";
import { parseOutboundAllow } from "../security/outboundGuard.js";
import { parseTrustedProxies } from "../security/trustedProxies.js";

/**
 * The environment variables Ferry reads, parsed once at start. Nothing else in the code
 * reads process.env: it receives these options instead.
 */
const environmentSchema = z.object({
  /** Server: admin API key to create on first start instead of a random one (for automation). */
  FERRY_ADMIN_API_KEY: z
    .string()
    .regex(/^ferry_[A-Za-z0-9_-]{16,200}$/, {
      message: "must look like ferry_ followed by at least 16 letters, digits, '_' or '-'",
    })
    .optional(),
  /**
   * Server: seconds a task's claim and locks hold without a heartbeat; a crashed server's
   * tasks are interrupted about this long after it died.
   */
  FERRY_TASK_LEASE_SECONDS: z.coerce.number().int().min(1).max(3600).default(15),
  /** Server: seconds between two health checks of a target (docs/targets.md#health). */
  FERRY_TARGET_HEALTH_INTERVAL_SECONDS: z.coerce
    .number()
    .int()
    .min(1, { message: "check targets at most every second (1) and at least once a day (86400)" })
    .max(86_400, { message: "check targets at most every second (1) and at least once a day (86400)" })
    .default(60),
  /**
   * Server: seconds a target may take to answer, for a health check and for the availability
   * probe a deployment makes before it starts; a target that does not answer in time is down.
   */
  FERRY_TARGET_HEALTH_TIMEOUT_SECONDS: z.coerce
    .number()
    .int()
    .min(1, { message: "give targets 1 to 300 seconds to answer" })
    .max(300, { message: "give targets 1 to 300 seconds to answer" })
    .default(20),
  /**
   * Server: how late a runbook schedule's firing may be and still run as on time; a firing
   * later than this (no server was up) is reported as missed, then skipped or run once.
   */
  FERRY_SCHEDULE_GRACE_SECONDS: z.coerce
    .number()
    .int()
    .min(1, { message: "give 1 to 3600 seconds" })
    .max(3600, { message: "give 1 to 3600 seconds" })
    .default(60),
  /**
   * Server: PostgreSQL URL, instead of --db, so its password stays out of the command line
   * (which `ps` shows). --db wins when both are given.
   */
  FERRY_DATABASE_URL: z
    .string()
    .regex(/^postgres(ql)?:\/\//, { message: "must be a postgres:// URL" })
    .optional(),
  /**
   * Server: what switches blue/green traffic. `builtin` (the default) is `ferry proxy`,
   * started by the server when none answers on FERRY_PROXY_STATE_DIR; `nginx` renders
   * nginx configuration (FERRY_NGINX_*); `haproxy` runs Ferry's own HAProxy and switches
   * through its runtime API (FERRY_HAPROXY_*). See docs/zero-downtime.md.
   */
  // Checked against the drivers of src/traffic/routers.ts, which name the choices.
  FERRY_ROUTER: z.string().min(1).default("builtin"),
  /** Server: state directory of the builtin proxy (admin socket and token); default <data-dir>/proxy. */
  FERRY_PROXY_STATE_DIR: z.string().min(1).optional(),
  /** Server: where the builtin proxy the server starts serves traffic (HOST:PORT). */
  FERRY_PROXY_LISTEN: z
    .string()
    .regex(/^(\[[0-9a-fA-F:]+\]|[A-Za-z0-9.-]+):\d{1,5}$/, { message: "must be HOST:PORT, such as 127.0.0.1:8000" })
    .default("127.0.0.1:8000"),
  /** Server: how many worker processes the builtin proxy the server starts serves traffic with (`ferry proxy --workers`, ADR 0055). */
  FERRY_PROXY_WORKERS: z.coerce
    .number({ message: "must be a whole number of processes, 1 to 64" })
    .int({ message: "must be a whole number of processes, 1 to 64" })
    .min(1, { message: "must be a whole number of processes, 1 to 64" })
    .max(64, { message: "must be a whole number of processes, 1 to 64 (the host's core count is a good start)" })
    .default(1),
  /** Server, nginx driver: the main nginx.conf (it includes FERRY_NGINX_SITES_DIR/*.conf inside http {}). */
  FERRY_NGINX_CONFIG: z.string().min(1).optional(),
  FERRY_NGINX_SITES_DIR: z.string().min(1).optional(),
  FERRY_NGINX_PID_FILE: z.string().min(1).optional(),
  /** Server, nginx driver: the address the rendered server blocks listen on (HOST:PORT). */
  FERRY_NGINX_LISTEN: z.string().min(1).optional(),
  FERRY_NGINX_BINARY: z.string().min(1).default("nginx"),
  /** Server, haproxy driver: the directory Ferry owns (haproxy.cfg, runtime API socket, pid, access log); default <data-dir>/haproxy. */
  FERRY_HAPROXY_STATE_DIR: z.string().min(1).optional(),
  /** Server, haproxy driver: where HAProxy's frontend listens (HOST:PORT). */
  FERRY_HAPROXY_LISTEN: z
    .string()
    .regex(/^(\[[0-9a-fA-F:]+\]|[A-Za-z0-9.-]+):\d{1,5}$/, { message: "must be HOST:PORT, such as 127.0.0.1:8000" })
    .default("127.0.0.1:8000"),
  FERRY_HAPROXY_BINARY: z.string().min(1).default("haproxy"),
  /** Server: etcd endpoint (http://127.0.0.1:2379) to publish every route switch to, under /ferry/routes/. */
  FERRY_ETCD_ENDPOINT: z.url().optional(),
  /**
   * Server: a StatsD server ("host:port", "[::1]:8125") that counts every ended deployment
   * as ferry.deployments.<project>.<environment>.<outcome> (UDP, fire and forget).
   */
  FERRY_STATSD: z
    .string()
    .regex(/^(\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9.-]+):([0-9]{1,5})$/, {
      message: "must be host:port, e.g. 127.0.0.1:8125 or [::1]:8125",
    })
    .transform((value) => {
      const separator = value.lastIndexOf(":");
      return { host: value.slice(0, separator).replace(/^\[|\]$/g, ""), port: Number(value.slice(separator + 1)) };
    })
    .refine((target) => target.port >= 1 && target.port <= 65535, { message: "the port must be 1-65535" })
    .optional(),
  /**
   * Server: the reverse proxies (addresses and ranges, "127.0.0.1,10.0.0.0/8") whose
   * X-Forwarded-For, -Proto and -Host are believed: the client address for the sign-in limit
   * and the audit log, https for the Secure cookie, the origin for the CSRF check. Unset: none.
   */
  FERRY_TRUSTED_PROXIES: z
    .string()
    .optional()
    .transform((value, context) => {
      try {
        return parseTrustedProxies(value);
      } catch (error) {
        context.issues.push({ code: "custom", message: (error as Error).message, input: value });
        return z.NEVER;
      }
    }),
  /**
   * Server: how many requests of one client address run at once; more wait in line
   * (src/api/addressQueue.ts). A browser uses at most 6 connections per host; raise it for
   * many clients behind one NAT address that each send several requests at a time.
   */
  FERRY_REQUESTS_PER_ADDRESS: z.coerce
    .number()
    .int({ message: "must be a whole number" })
    .min(1, { message: "must be at least 1" })
    .max(10_000, { message: "must be at most 10000" })
    .default(8),
  /**
   * Server: exceptions to the outbound guard, which refuses feed and webhook URLs that point
   * at loopback, link-local, metadata, unspecified or multicast addresses: comma-separated
   * addresses, ranges and host names with optional ports ("127.0.0.1:5000,10.0.0.0/8,registry.internal").
   * See docs/security.md.
   */
  FERRY_OUTBOUND_ALLOW: z
    .string()
    .optional()
    .transform((value, context) => {
      try {
        return parseOutboundAllow(value);
      } catch (error) {
        context.issues.push({ code: "custom", message: (error as Error).message, input: value });
        return z.NEVER;
      }
    }),
  /**
   * Server, optional OIDC sign-in (docs/security.md "Users and sessions"): all four of
   * ISSUER, CLIENT_ID, CLIENT_SECRET_FILE and REDIRECT_URL, or none. The client secret is
   * read from a file so it stays out of argv and environment dumps; src/security/oidc.ts
   * checks the four together.
   */
  FERRY_OIDC_ISSUER: z.string().optional(),
  FERRY_OIDC_CLIENT_ID: z.string().optional(),
  FERRY_OIDC_CLIENT_SECRET_FILE: z.string().optional(),
  FERRY_OIDC_REDIRECT_URL: z.string().optional(),
  /** Server: "1" creates a (non-admin) user at a first OIDC sign-in; otherwise only linked users may sign in. */
  FERRY_OIDC_CREATE_USERS: z.enum(["0", "1"], { message: "must be 1 (create users) or 0" }).optional(),
  /**
   * Server: the account processes of local steps (scripts on the server's own host) run as,
   * so they cannot read the data directory: a user name or uid; default `nobody` when the
   * server runs as root. `server` runs them with the server's own rights (explicitly: they
   * can then read the master key and the database). See docs/security.md.
   */
  FERRY_RUN_AS: z.string().min(1).max(64).optional(),
  /** Server: the uids tasks' local work runs as, one each (FIRST-LAST; default 2000000000-2000009999). */
  FERRY_RUN_AS_UIDS: z.string().min(1).max(40).optional(),
  /** Server: where tasks keep working files (default: a directory of the server's in the system's temporary directory). */
  FERRY_WORK_DIR: z.string().min(1).optional(),
  /** Server: the most bytes one artifact may have (default 10 GiB); a bigger one is refused and nothing of it kept. */
  FERRY_ARTIFACT_MAX_BYTES: z.coerce
    .number({ message: "must be a number of bytes, such as 10737418240" })
    .int({ message: "must be a whole number of bytes" })
    .min(1, { message: "must be at least 1 byte" })
    .max(Number.MAX_SAFE_INTEGER, { message: "must be at most 9007199254740991" })
    .optional(),
  /** Server: the most bytes one package archive may have (default 2 GiB); a bigger push is refused and nothing kept (ADR 0044). */
  FERRY_PACKAGE_MAX_BYTES: z.coerce
    .number({ message: "must be a number of bytes, such as 2147483648" })
    .int({ message: "must be a whole number of bytes" })
    .min(1, { message: "must be at least 1 byte" })
    .max(Number.MAX_SAFE_INTEGER, { message: "must be at most 9007199254740991" })
    .optional(),
  /** Server: versions kept per package (default 20); older ones go, never one a deployed release pins (ADR 0044). */
  FERRY_PACKAGE_KEEP_VERSIONS: z.coerce
    .number({ message: "must be a number of versions, such as 20" })
    .int({ message: "must be a whole number" })
    .min(1, { message: "keep at least 1 version" })
    .max(100_000, { message: "must be at most 100000" })
    .optional(),
  /**
   * Server: seconds without a word from an ssh target (or its jump host) before Ferry sends a
   * keep-alive over the connection, as OpenSSH's ServerAliveInterval (docs/targets.md).
   */
  FERRY_SSH_KEEPALIVE_INTERVAL_SECONDS: z.coerce
    .number({ message: "must be a number of seconds, such as 10" })
    .int({ message: "must be a whole number of seconds" })
    .min(1, { message: "send keep-alives at most every second (1) and at least every hour (3600)" })
    .max(3600, { message: "send keep-alives at most every second (1) and at least every hour (3600)" })
    .default(10),
  /**
   * Server: keep-alives an ssh target may leave unanswered in a row before its connection is
   * closed and what runs on it fails, as OpenSSH's ServerAliveCountMax: a cut link is noticed
   * after about INTERVAL × (COUNT_MAX + 1) seconds.
   */
  FERRY_SSH_KEEPALIVE_COUNT_MAX: z.coerce
    .number({ message: "must be a number of keep-alives, such as 3" })
    .int({ message: "must be a whole number of keep-alives" })
    .min(1, { message: "allow 1 to 100 unanswered keep-alives" })
    .max(100, { message: "allow 1 to 100 unanswered keep-alives" })
    .default(3),
  /**
   * Server: seconds connecting to an ssh target (TCP, key exchange, host key check, sign-in,
   * through its jump host too) may take before the step fails (docs/targets.md).
   */
  FERRY_SSH_CONNECT_TIMEOUT_SECONDS: z.coerce
    .number({ message: "must be a number of seconds, such as 15" })
    .int({ message: "must be a whole number of seconds" })
    .min(1, { message: "allow connecting 1 to 600 seconds" })
    .max(600, { message: "allow connecting 1 to 600 seconds" })
    .default(15),
  /**
   * Server: seconds one operation on an ssh target other than a step's process or a file's
   * upload (a directory, a file read, a kill, opening a channel) may take (docs/targets.md).
   */
  FERRY_SSH_OPERATION_TIMEOUT_SECONDS: z.coerce
    .number({ message: "must be a number of seconds, such as 30" })
    .int({ message: "must be a whole number of seconds" })
    .min(1, { message: "allow an operation 1 to 3600 seconds" })
    .max(3600, { message: "allow an operation 1 to 3600 seconds" })
    .default(30),
  /** Server: an agent not heard from for this long is marked lost and steps on it fail (docs/targets.md). */
  FERRY_AGENT_TIMEOUT_SECONDS: z.coerce.number().int().min(3).max(3600).default(45),
  /** ferry agent: its settings when not given as options (docs/targets.md). */
  FERRY_AGENT_SERVER: z.url().optional(),
  FERRY_AGENT_TOKEN: z.string().min(1).max(200).optional(),
  FERRY_AGENT_STATE_DIR: z.string().min(1).optional(),
  /**
   * Server and demo: the Docker engine of this host, as the docker CLI reads it; only a unix
   * socket (unix:///var/run/docker.sock, the default). Checked where it is used
   * (dockerSocketOf), so a CLI client with a tcp:// DOCKER_HOST for its own docker keeps working.
   */
  DOCKER_HOST: z.string().optional(),
  FERRY_LOG_LEVEL: z.enum(["fatal", "error", "warn", "info", "debug", "trace", "silent"]).default("info"),
  /** CLI: the server to talk to and the key to use (override `ferry login`). */
  FERRY_URL: z.url().optional(),
  FERRY_API_KEY: z.string().min(1).optional(),
  /** CLI: where `ferry login` keeps its settings. */
  FERRY_CONFIG: z.string().optional(),
  XDG_CONFIG_HOME: z.string().optional(),
  HOME: z.string().optional(),
});

export type FerryEnvironment = z.infer<typeof environmentSchema>;

export function readEnvironment(source: NodeJS.ProcessEnv): FerryEnvironment {
  const known = Object.fromEntries(
    Object.keys(environmentSchema.shape).map((key) => [key, source[key] === "" ? undefined : source[key]]),
  );
  const result = environmentSchema.safeParse(known);
  if (result.success) return result.data;
  const issues = toFieldIssues(result.error);
  throw new InputError(
    `environment variable ${issues.map((issue) => `${issue.pointer.slice(1)}: ${issue.detail}`).join("; ")}`,
  );
}
