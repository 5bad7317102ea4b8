import { join } from "node:path";
import type { FastifyInstance, FastifyRequest } from "fastify";
import { pino } from "pino";
import { buildApp } from "../api/app.js";
import { ArtifactRetention } from "../engine/artifactRetention.js";
import { ArtifactService, DEFAULT_ARTIFACT_MAX_BYTES } from "../engine/artifacts.js";
import { type DeploymentServices, deploymentTaskKind } from "../engine/deployments.js";
import { TaskEngine } from "../engine/engine.js";
import { EphemeralEnvironmentSweeper } from "../engine/ephemeralEnvironments.js";
import { FeedTriggerPoller } from "../engine/feedTriggers.js";
import { MasterKeyRotation } from "../engine/masterKeyRotation.js";
import { defaultRetentionSettings, RunbookRetention } from "../engine/runbookRetention.js";
import { defaultSchedulerSettings, RunbookScheduler } from "../engine/runbookSchedules.js";
import { runbookTaskKind } from "../engine/runbooks.js";
import { ScheduledTriggerRunner } from "../engine/scheduledTriggers.js";
import { defaultTargetHealthSettings, TargetHealthMonitor, type TargetHealthSettings } from "../engine/targetHealth.js";
import type { TaskKind } from "../engine/types.js";
import type { StatsdTarget } from "../events/statsd.js";
import { PackageFeed } from "../feeds/packages.js";
import { coloursOf } from "../runtimes/colours.js";
import { prepareWorkRoot, resolveLocalUser } from "../runtimes/localUser.js";
import { generateApiKey } from "../security/apiKeys.js";
import { loadOrCreateMasterKey } from "../security/masterKey.js";
import { OidcClient, type OidcSettings } from "../security/oidc.js";
import { defaultOutboundPolicy, type OutboundPolicy } from "../security/outboundGuard.js";
import { SecretBox } from "../security/secretBox.js";
import { type ApiKeyIdentity, countApiKeys, insertApiKey } from "../store/apiKeys.js";
import { directoryContent, largeObjectContent } from "../store/artifactContent.js";
import { appendAuditEvent } from "../store/audit.js";
import type { StoreContext } from "../store/common.js";
import { openStore, type Store } from "../store/db.js";
import { targetsWithRouters } from "../store/deployments.js";
import { findForeignKey } from "../store/masterKeyRotation.js";
import { sshConnectionSettings } from "../store/targets.js";
import { reconcileHosts, reconcileLiveColours } from "../traffic/reconcile.js";
import { defaultTrafficSettings, hasRoutes, lazyRouter, type TrafficSettings } from "../traffic/routers.js";
import { AgentHub } from "../transports/agent.js";
import { LocalTransport } from "../transports/local.js";
import { targetResolver } from "../transports/registry.js";
import {
  defaultSshKeepalive,
  defaultSshTimeouts,
  SshConnections,
  type SshKeepalive,
  type SshTimeouts,
} from "../transports/ssh.js";
import { FERRY_VERSION } from "../version.js";
import { createObservability } from "./observability.js";
import { urlForLog } from "./urlForLog.js";

export interface ServerOptions {
  port: number;
  host: string;
  dataDir: string;
  databaseUrl?: string | undefined;
  adminApiKey?: string | undefined;
  logLevel: string;
  /** Task lease (ms); shorter in tests so a killed server's tasks are interrupted sooner. */
  leaseMs?: number | undefined;
  /** Where the one-time admin key notice goes (stderr by default). */
  announce?: (text: string) => void;
  /** What switches blue/green traffic; default: the builtin proxy with its state in <data-dir>/proxy on 127.0.0.1:8000. */
  traffic?: TrafficSettings | undefined;
  /** FERRY_STATSD: where deployment events go as StatsD counters. */
  statsd?: StatsdTarget | undefined;
  /** FERRY_OUTBOUND_ALLOW: feed, webhook and templated http-step URLs allowed beyond the default; default none (docs/security.md). */
  outbound?: OutboundPolicy | undefined;
  /** FERRY_TRUSTED_PROXIES: the reverse proxies whose X-Forwarded-* headers are believed; default none. */
  trustedProxies?: readonly string[] | undefined;
  /** FERRY_REQUESTS_PER_ADDRESS: requests of one client address at once (default 8). */
  requestsPerAddress?: number | undefined;
  /** FERRY_OIDC_*: optional OIDC sign-in; its calls to the provider go through the outbound guard. */
  oidc?: OidcSettings | undefined;
  /** FERRY_RUN_AS: the account local steps run as (default nobody when the server is root). */
  runAs?: string | undefined;
  /** FERRY_RUN_AS_UIDS: the uids tasks' local work runs as, one each (when the server is root and runAs is unset). */
  runAsUids?: string | undefined;
  /** DOCKER_HOST (dockerSocketOf): the socket of this host's Docker engine; default /var/run/docker.sock. */
  dockerSocket?: string | undefined;
  /** FERRY_WORK_DIR: where tasks keep working files (default: one in the system's temporary directory). */
  workDir?: string | undefined;
  /** FERRY_TARGET_HEALTH_*: how often targets are checked and how long they may take to answer. */
  targetHealth?: Partial<TargetHealthSettings> | undefined;
  /** How often expired ephemeral environments are looked for (default 60 s; tests shorten it). */
  ephemeralSweepMs?: number | undefined;
  /** FERRY_AGENT_TIMEOUT_SECONDS (ms here): an agent not heard from for this long is marked lost; default 45 s. */
  agentTimeoutMs?: number | undefined;
  /** FERRY_SSH_KEEPALIVE_INTERVAL_SECONDS (ms here) and FERRY_SSH_KEEPALIVE_COUNT_MAX: when a silent ssh target's connection is closed; default 10 s × 3. */
  sshKeepalive?: SshKeepalive | undefined;
  /** FERRY_SSH_CONNECT_TIMEOUT_SECONDS and FERRY_SSH_OPERATION_TIMEOUT_SECONDS (ms here); default 15 s and 30 s. */
  sshTimeouts?: SshTimeouts | undefined;
  /** FERRY_SCHEDULE_GRACE_SECONDS (ms here): a schedule's firing later than this is reported missed; default 60 s. */
  scheduleGraceMs?: number | undefined;
  /** How often each node looks for due schedules (ms); default 1 s. */
  schedulePollMs?: number | undefined;
  /** Between two sweeps of runbook run retention (ms); default an hour (it also runs after each run). */
  retentionIntervalMs?: number | undefined;
  /** FERRY_ARTIFACT_MAX_BYTES: the most bytes one artifact may have; default 10 GiB. */
  artifactMaxBytes?: number | undefined;
  /** FERRY_PACKAGE_MAX_BYTES: the most bytes one package archive may have; default 2 GiB. */
  packageMaxBytes?: number | undefined;
  /** FERRY_PACKAGE_KEEP_VERSIONS: versions kept per package; default 20. */
  packageKeepVersions?: number | undefined;
  /** Between two sweeps of artifact retention (ms; jittered); default an hour. */
  artifactRetentionIntervalMs?: number | undefined;
  /**
   * `ferry run` (ADR 0046): no HTTP listener (requests are answered through app.inject) and
   * no background work — no schedules, triggers, health checks, retention or start-up
   * reconciliation — only the task engine running the tasks it is given.
   */
  embedded?: boolean | undefined;
}

/** An agent not heard from for this long is marked lost (FERRY_AGENT_TIMEOUT_SECONDS). */
const DEFAULT_AGENT_TIMEOUT_MS = 45_000;

export interface RunningServer {
  app: FastifyInstance;
  store: Store;
  context: StoreContext;
  engine: TaskEngine;
  deployments: DeploymentServices;
  agents: AgentHub;
  /** Fires runbook schedules (ADR 0036). */
  scheduler: RunbookScheduler;
  /** Deletes runbook runs past their retention; onTaskDeleted adds what removes a task's own files. */
  retention: RunbookRetention;
  /** Artifact retention: a sweep on demand, and what run retention calls before it deletes tasks. */
  artifactRetention: ArtifactRetention;
  /** Tears down ephemeral environments past their TTL (ADR 0045); a sweep on demand. */
  ephemeralEnvironments: EphemeralEnvironmentSweeper;
  url: string;
  /** Settles when the live colours of an earlier run run again (start-up reconciliation, in the background). */
  reconciled: Promise<void>;
  close(): Promise<void>;
}

/** Opens the store, bootstraps the first admin key, and listens. */
export async function startServer(options: ServerOptions): Promise<RunningServer> {
  const logger = pino({
    level: options.logLevel,
    redact: { paths: ["req.headers.authorization", "req.headers.cookie"], censor: "[redacted]" },
    // Fastify's request fields, with the URL's query values left out (an API key sent as
    // ?api_key=, an OIDC authorization code): urlForLog.
    serializers: {
      req: (request: FastifyRequest) => ({
        method: request.method,
        url: urlForLog(request.url),
        host: request.host,
        remoteAddress: request.ip,
        remotePort: request.socket?.remotePort,
      }),
    },
  });
  // Before anything else: a FERRY_RUN_AS that names no user stops the start, named.
  const localUser = resolveLocalUser(options.runAs, undefined, options.runAsUids);
  if (localUser.kind === "user" && localUser.uid === 0) {
    logger.warn("FERRY_RUN_AS names root: local steps run with every right on this host, the data directory included");
  }
  const masterKey = await loadOrCreateMasterKey(options.dataDir);
  // The data directory is 0700 (loadOrCreateMasterKey): a local user must not reach it, so
  // task work happens elsewhere.
  const workRoot =
    localUser.kind === "user" || localUser.kind === "perTask"
      ? await prepareWorkRoot(options.dataDir, options.workDir)
      : join(options.dataDir, "work");
  const store = await openStore({ databaseUrl: options.databaseUrl, dataDir: options.dataDir });
  const context: StoreContext = { db: store.db, secrets: new SecretBox(masterKey) };
  // A rotation a crash interrupted is finished before anything reads a secret (ADR 0046).
  const masterKeyRotation = new MasterKeyRotation(context, options.dataDir);
  try {
    const resumed = await masterKeyRotation.resume();
    if (resumed) logger.warn({ from: resumed.from, to: resumed.to }, "finished an interrupted master key rotation");
    // A database restored without its master.key: said once, here, instead of on each use.
    const foreign = await findForeignKey(context);
    if (foreign) {
      throw new Error(
        `the database's secrets (${foreign.where}) were encrypted with master key ${foreign.keyId}, but ${join(options.dataDir, "master.key")} is key ${context.secrets.keyId}: restore the master.key that was backed up with this database (docs/security.md#master-key)`,
      );
    }
  } catch (error) {
    await store.close();
    throw error;
  }
  await bootstrapAdminKey(context, options);

  const traffic = options.traffic ?? defaultTrafficSettings(options.dataDir);
  const router = lazyRouter(traffic, (message) => logger.info({ router: traffic.driver }, message));
  const hostTransport = new LocalTransport(workRoot, localUser, options.dockerSocket);
  let engine: TaskEngine | undefined;
  // One SSH connection per target, opened on first use; each reads the target's settings (its key) from the store.
  const sshConnections = new SshConnections(
    (targetId) => sshConnectionSettings(context, targetId),
    undefined,
    options.sshKeepalive ?? defaultSshKeepalive,
    options.sshTimeouts ?? defaultSshTimeouts,
  );
  // Agents poll this server for their calls; the hub holds them, in this process.
  const agents = new AgentHub({
    context,
    timeoutMs: options.agentTimeoutMs ?? DEFAULT_AGENT_TIMEOUT_MS,
    log: (message) => logger.info(message),
  });
  await agents.start();
  const targetHealth = { ...defaultTargetHealthSettings, ...options.targetHealth };
  const resolveTarget = targetResolver({
    local: hostTransport,
    router,
    ssh: sshConnections,
    agents,
    log: (message) => logger.info({ router: "host" }, message),
  });
  // Several nodes share a PostgreSQL store, and each must serve every artifact: large objects
  // there; one node on SQLite keeps them as files in its data directory (ADR 0037).
  const artifacts = new ArtifactService({
    context,
    content: store.pgPool
      ? largeObjectContent(store.pgPool)
      : directoryContent(store.db, join(options.dataDir, "artifacts")),
    maxBytes: options.artifactMaxBytes ?? DEFAULT_ARTIFACT_MAX_BYTES,
  });
  // The package feed keeps its archives like artifacts (ADR 0044): the same large objects on
  // PostgreSQL, a directory of its own beside the artifacts' on SQLite.
  const packages = new PackageFeed({
    context,
    content:
      store.dialect === "postgres"
        ? artifacts.content
        : directoryContent(store.db, join(options.dataDir, "packages"), "pkg"),
    spoolDirectory: join(options.dataDir, "packages", ".spool"),
    maxBytes: options.packageMaxBytes,
    keepVersions: options.packageKeepVersions,
  });
  const deployments: DeploymentServices = {
    target: resolveTarget,
    artifacts,
    packages,
    targetProbeTimeoutMs: targetHealth.timeoutMs,
    outbound: options.outbound,
    context,
    workRoot,
    localUser,
    enqueue: (input) => {
      if (!engine) throw new Error("the task engine is not running");
      return engine.enqueue(input);
    },
  };
  const kinds = [deploymentTaskKind(deployments) as TaskKind, runbookTaskKind(deployments) as TaskKind];
  const observability = createObservability({
    store,
    context,
    logger,
    version: FERRY_VERSION,
    taskKinds: kinds.map((kind) => kind.kind),
    statsd: options.statsd,
    outbound: options.outbound,
  });
  // A scrape never starts a proxy: it reads the router only once a deployment connected it.
  observability.metrics.registerProxyStats(async () => (await router.connected())?.traffic());
  // ferry_agent_connections: the agents whose long polls this node holds.
  observability.metrics.registerAgentConnections(() => agents.connectedCount);
  const retention = new RunbookRetention({
    intervalMs: options.retentionIntervalMs ?? defaultRetentionSettings.intervalMs,
    db: store.db,
    logger,
  });
  const artifactRetention = new ArtifactRetention({
    db: store.db,
    content: artifacts.content,
    logger,
    intervalMs: options.artifactRetentionIntervalMs,
  });
  // A run past its retention loses its artifacts (bytes and rows) before its task row goes.
  retention.onTaskDeleted(async (taskIds) => {
    await artifactRetention.removeTaskArtifacts(taskIds);
  });
  engine = new TaskEngine({
    db: store.db,
    dialect: store.dialect,
    kinds,
    logger,
    observers: [...observability.observers, artifactRetention, retention],
    ...(options.leaseMs !== undefined && { leaseMs: options.leaseMs }),
  });
  const app = await buildApp({
    store,
    context,
    logger,
    version: FERRY_VERSION,
    engine,
    deployments,
    metrics: observability.metrics,
    outbound: options.outbound,
    trustedProxies: options.trustedProxies,
    requestsPerAddress: options.requestsPerAddress,
    artifactRetention,
    masterKeyRotation,
    oidc: options.oidc ? new OidcClient(options.oidc, options.outbound ?? defaultOutboundPolicy) : undefined,
    agents,
    sshTimeouts: sshConnections.timeouts,
  });
  const embedded = options.embedded === true;
  try {
    if (embedded) await app.ready();
    else await app.listen({ port: options.port, host: options.host });
  } catch (error) {
    await store.close();
    throw error;
  }
  await engine.start();
  const healthMonitor = new TargetHealthMonitor({ ...targetHealth, db: store.db, target: resolveTarget, logger });
  if (!embedded) healthMonitor.start();
  // After the engine: a firing queues a task. Firings missed while no server ran are reported on its first poll.
  const scheduler = new RunbookScheduler({
    graceMs: options.scheduleGraceMs ?? defaultSchedulerSettings.graceMs,
    pollMs: options.schedulePollMs ?? defaultSchedulerSettings.pollMs,
    services: deployments,
    logger,
  });
  if (!embedded) scheduler.start();
  if (!embedded) retention.start();
  const triggerPoller = new FeedTriggerPoller(deployments, logger);
  const scheduledTriggers = new ScheduledTriggerRunner(deployments, logger);
  if (!embedded) {
    triggerPoller.start();
    scheduledTriggers.start();
    deployments.triggersChanged = () => {
      triggerPoller.triggersChanged();
      scheduledTriggers.triggersChanged();
    };
  }
  if (!embedded) artifactRetention.start();
  const ephemeralEnvironments = new EphemeralEnvironmentSweeper(
    { context, target: resolveTarget },
    logger,
    options.ephemeralSweepMs,
  );
  if (!embedded) ephemeralEnvironments.start();
  // Traffic from an earlier run comes back (the builtin proxy is started if it is not
  // running) without holding up readiness: the API answers while this runs. A live colour
  // started again is waited for until it passes its health check (ADR 0072); closing the
  // server ends those waits.
  const reconciling = new AbortController();
  const reconciledHere =
    !embedded && hasRoutes(traffic)
      ? (async () => {
          const runtimes = [hostTransport.runtime("docker"), hostTransport.runtime("process")].map(coloursOf);
          const lines = await reconcileLiveColours(await router.get(), runtimes, {
            transport: hostTransport,
            signal: reconciling.signal,
          });
          for (const line of lines) logger.warn(line);
          logger.info("reconciled the live colours of this host");
        })().catch((error: unknown) => logger.error({ err: error }, "could not reconcile the live colours"))
      : Promise.resolve();
  // Every remote host with a router of its own, each on its own: one that cannot be reached
  // is reported and skipped (its router keeps serving what it served; nothing here changes it).
  const resolve = deployments.target;
  const reconciledElsewhere =
    !embedded && resolve
      ? targetsWithRouters(store.db)
          .then(async (infos) => {
            if (infos.length === 0) return;
            await reconcileHosts(
              infos.map((info) => resolve(info)),
              (target, line) => logger.warn({ target }, line),
              reconciling.signal,
            );
            logger.info({ hosts: infos.length }, "reconciled the live colours of remote hosts");
          })
          .catch((error: unknown) =>
            logger.error({ err: error }, "could not reconcile the live colours of remote hosts"),
          )
      : Promise.resolve();
  const reconciled = Promise.all([reconciledHere, reconciledElsewhere]).then(() => undefined);
  const address = embedded ? null : app.server.address();
  const port = typeof address === "object" && address ? address.port : options.port;
  const url = embedded
    ? "embedded:"
    : `http://${options.host.includes(":") ? `[${options.host}]` : options.host}:${port}`;
  logger.info(
    { url, database: store.dialect, dataDir: options.dataDir, startupMs: Math.round(process.uptime() * 1000) },
    "ferry server ready",
  );
  return {
    app,
    store,
    context,
    url,
    engine,
    deployments,
    agents,
    scheduler,
    retention,
    artifactRetention,
    ephemeralEnvironments,
    reconciled,
    close: async () => {
      reconciling.abort();
      await reconciled;
      await scheduler.stop();
      await retention.stop();
      await healthMonitor.stop();
      await triggerPoller.stop();
      await scheduledTriggers.stop();
      await artifactRetention.stop();
      await ephemeralEnvironments.stop();
      await engine.stop();
      await observability.close();
      // Held polls end first, or closing would wait for each to run out.
      agents.close();
      await app.close();
      await sshConnections.close();
      await router.close();
      await store.close();
    },
  };
}

/**
 * On first start (no key at all) creates the admin key: FERRY_ADMIN_API_KEY when set,
 * otherwise a random one printed once here and never again (only its hash is stored).
 */
async function bootstrapAdminKey(context: StoreContext, options: ServerOptions): Promise<void> {
  if ((await countApiKeys(context)) > 0) return;
  const announce = options.announce ?? ((text: string) => process.stderr.write(text));
  if (options.adminApiKey) {
    await auditKeyCreated(
      context,
      await insertApiKey(context, options.adminApiKey, { name: "admin (FERRY_ADMIN_API_KEY)", role: "admin" }),
    );
    announce("ferry: created the admin API key from FERRY_ADMIN_API_KEY\n");
    return;
  }
  const key = generateApiKey();
  await auditKeyCreated(context, await insertApiKey(context, key, { name: "admin (first start)", role: "admin" }));
  announce(
    [
      "",
      "ferry: this is a new install. Its admin API key (shown this once, stored only as a hash):",
      "",
      `    ${key}`,
      "",
      "Use it with: export FERRY_API_KEY=<key>   or   printf %s <key> | ferry login --api-key-stdin",
      "",
      "",
    ].join("\n"),
  );
}

/** The first entry of a new install's audit log: the server created the admin key. */
async function auditKeyCreated(context: StoreContext, key: ApiKeyIdentity): Promise<void> {
  await appendAuditEvent(context, {
    actor: { id: null, name: "server" },
    source: "server",
    action: "api-key.create",
    resource: { type: "api-key", id: key.id, name: key.name },
    diff: { role: { from: null, to: key.role } },
  });
}
