import { setTimeout as sleep } from "node:timers/promises";
import type { TaskFinishedEvent, TaskObserver, TaskStartedEvent } from "../engine/observers.js";
import type { Store } from "../store/db.js";
import { activeTaskCounts, deploymentCounts, lockCounts } from "../store/metrics.js";
import { targetUpStates } from "../store/targetHealth.js";
import type { UpstreamTraffic } from "../traffic/router.js";
import { type MetricFamily, renderExposition } from "./exposition.js";
import { CounterVec, HistogramVec } from "./instruments.js";

/** Request counts per route and upstream from the traffic router, with durations when the driver measures them. */
type ProxyTrafficSource = () => Promise<readonly UpstreamTraffic[] | undefined>;

const TASK_DURATION_BOUNDS = [0.1, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600, 1800, 3600];
const QUEUE_WAIT_BOUNDS = [0.01, 0.05, 0.1, 0.5, 1, 5, 10, 30, 60, 300, 900, 3600];
const ACTIVE_STATES = ["queued", "running", "waiting"] as const;
const ENDED_STATES = new Set(["succeeded", "failed", "cancelled", "interrupted"]);
const PROXY_STATS_TIMEOUT_MS = 2000;
const PROCESS_START_SECONDS = Math.round(Date.now() / 1000 - process.uptime());

export interface ServerMetricsOptions {
  store: Store;
  version: string;
  /** Task kinds the engine runs: their queue gauges are written (as 0) even when idle. */
  taskKinds: readonly string[];
}

/**
 * Everything GET /metrics shows. Task durations and queue waits are observed in this
 * process (as a TaskObserver of the engine); queue depth, locks and deployment counts
 * are read from the database at scrape time; proxy figures come from the registered
 * traffic source.
 */
export class ServerMetrics implements TaskObserver {
  private readonly taskDuration = new HistogramVec(
    "ferry_task_duration_seconds",
    "Run time of tasks this server node ran, from start to end, by kind and outcome.",
    ["kind", "outcome"],
    TASK_DURATION_BOUNDS,
  );
  private readonly queueWait = new HistogramVec(
    "ferry_task_queue_wait_seconds",
    "Time tasks this node started spent queued, by kind: waiting for a free runner or for a lock another task held.",
    ["kind"],
    QUEUE_WAIT_BOUNDS,
  );
  private readonly webhookDeliveries = new CounterVec(
    "ferry_webhook_deliveries_total",
    "Deployment webhook deliveries by this node, by outcome (delivered, or failed after every retry).",
    ["outcome"],
  );
  private proxyTraffic: ProxyTrafficSource | undefined;
  /** Agents connected to this node now; 0 until the agent transport registers its count. */
  private agentConnections: () => number = () => 0;

  constructor(private readonly options: ServerMetricsOptions) {}

  taskStarted(event: TaskStartedEvent): void {
    const waited = (Date.parse(event.startedAt) - Date.parse(event.createdAt)) / 1000;
    this.queueWait.observe({ kind: event.kind }, Math.max(0, waited));
  }

  taskFinished(event: TaskFinishedEvent): void {
    this.taskDuration.observe({ kind: event.kind, outcome: event.outcome }, event.durationSeconds);
  }

  countWebhookDelivery(outcome: "delivered" | "failed"): void {
    this.webhookDeliveries.inc({ outcome });
  }

  /**
   * Where proxy request counts come from (the server's traffic router); replaces an earlier
   * source. It answers undefined when there is nothing to report (no router connected yet,
   * or a driver that cannot count); a source that throws or takes over 2 s shows as ferry_proxy_up 0.
   */
  registerProxyStats(source: ProxyTrafficSource): void {
    this.proxyTraffic = source;
  }

  /**
   * Where the number of `ferry agent` processes connected to this node comes from (the agent
   * transport's long polls); replaces an earlier source. Until one registers, 0.
   */
  registerAgentConnections(source: () => number): void {
    this.agentConnections = source;
  }

  /** The exposition document, read fresh from the database and the in-process figures. */
  async render(): Promise<string> {
    const families: MetricFamily[] = [
      {
        name: "ferry_info",
        help: "Always 1; the labels say which Ferry version runs on which database.",
        type: "gauge",
        samples: [{ labels: { version: this.options.version, database: this.options.store.dialect }, value: 1 }],
      },
      ...processFamilies(),
      ...(await this.taskFamilies()),
      this.taskDuration.collect(),
      this.queueWait.collect(),
      ...(await this.deploymentFamilies()),
      ...(await this.targetFamilies()),
      ...this.poolFamilies(),
      this.webhookDeliveries.collect(),
      ...(await this.proxyFamilies()),
    ];
    return renderExposition(families);
  }

  private async taskFamilies(): Promise<MetricFamily[]> {
    const db = this.options.store.db;
    const [counts, locks] = await Promise.all([activeTaskCounts(db), lockCounts(db)]);
    const kinds = [...new Set([...this.options.taskKinds, ...counts.map((row) => row.kind)])].sort();
    const now = Date.now();
    return [
      {
        name: "ferry_tasks",
        help: "Tasks queued, running or waiting (for an approval or a decision) now, by kind; all nodes.",
        type: "gauge",
        samples: kinds.flatMap((kind) =>
          ACTIVE_STATES.map((state) => ({
            labels: { kind, state },
            value: counts.find((row) => row.kind === kind && row.state === state)?.count ?? 0,
          })),
        ),
      },
      {
        name: "ferry_task_oldest_queued_age_seconds",
        help: "How long the oldest queued task of each kind has waited to start; 0 when none is queued.",
        type: "gauge",
        samples: kinds.map((kind) => {
          const oldest = counts.find((row) => row.kind === kind && row.state === "queued")?.oldestCreatedAt;
          return { labels: { kind }, value: oldest ? Math.max(0, (now - Date.parse(oldest)) / 1000) : 0 };
        }),
      },
      {
        name: "ferry_task_locks_held",
        help: "Locks (project/environment and target) held by running tasks now.",
        type: "gauge",
        samples: [{ labels: {}, value: locks.held }],
      },
      {
        name: "ferry_tasks_waiting_for_lock",
        help: "Queued tasks that want a lock another task holds now (deployments to the same environment or target).",
        type: "gauge",
        samples: [{ labels: {}, value: locks.waiting }],
      },
    ];
  }

  private async deploymentFamilies(): Promise<MetricFamily[]> {
    const rows = await deploymentCounts(this.options.store.db);
    return [
      {
        name: "ferry_deployments_total",
        help: "Deployments that ended, by project slug, environment slug and outcome (succeeded, failed, cancelled, interrupted); all nodes.",
        type: "counter",
        samples: rows
          .filter((row) => ENDED_STATES.has(row.state))
          .map((row) => ({
            labels: { project: row.project, environment: row.environment, outcome: row.state },
            value: row.count,
          })),
      },
      {
        name: "ferry_deployments_active",
        help: "Deployments not ended yet, by project slug, environment slug and state (queued, running, waiting).",
        type: "gauge",
        samples: rows
          .filter((row) => !ENDED_STATES.has(row.state))
          .map((row) => ({
            labels: { project: row.project, environment: row.environment, state: row.state },
            value: row.count,
          })),
      },
    ];
  }

  private async targetFamilies(): Promise<MetricFamily[]> {
    const states = await targetUpStates(this.options.store.db);
    return [
      {
        name: "ferry_target_up",
        help: "1 when the target's last health check found it up (reachable, its engine and router answering), 0 when down; targets not checked yet are left out.",
        type: "gauge",
        samples: states.map((state) => ({ labels: { target: state.target }, value: state.up ? 1 : 0 })),
      },
      {
        name: "ferry_agent_connections",
        help: "ferry agent processes connected to this server node now (their long polls).",
        type: "gauge",
        samples: [{ labels: {}, value: this.agentConnections() }],
      },
    ];
  }

  private poolFamilies(): MetricFamily[] {
    const usage = this.options.store.poolUsage();
    const gauge = (name: string, help: string, value: number | undefined): MetricFamily[] =>
      value === undefined ? [] : [{ name, help, type: "gauge", samples: [{ labels: {}, value }] }];
    return [
      ...gauge("ferry_db_pool_connections", "Database connections open now (SQLite: its one connection).", usage.open),
      ...gauge("ferry_db_pool_max_connections", "Most database connections the pool opens.", usage.max),
      ...gauge("ferry_db_pool_idle_connections", "Open database connections not in use (PostgreSQL only).", usage.idle),
      ...gauge(
        "ferry_db_pool_waiting_requests",
        "Queries waiting for a free database connection (PostgreSQL only).",
        usage.waiting,
      ),
    ];
  }

  private async proxyFamilies(): Promise<MetricFamily[]> {
    if (!this.proxyTraffic) return [];
    // A router that is down or slow must not take the rest of /metrics with it.
    const traffic = await Promise.race([
      this.proxyTraffic().catch(() => null),
      sleep(PROXY_STATS_TIMEOUT_MS, null, { ref: false }),
    ]);
    const up: MetricFamily = {
      name: "ferry_proxy_up",
      help: "1 when the traffic router answered for its request counts at this scrape, 0 when it failed or timed out.",
      type: "gauge",
      samples: [{ labels: {}, value: traffic === null ? 0 : 1 }],
    };
    if (traffic === null) return [up];
    if (traffic === undefined) return [];
    const labels = (entry: UpstreamTraffic) => ({ route: entry.route, upstream: entry.upstream });
    const families: MetricFamily[] = [
      up,
      {
        name: "ferry_proxy_requests_total",
        help: "Requests the traffic router passed to an upstream (answered or failed), by route and upstream, since the router started.",
        type: "counter",
        samples: traffic.map((entry) => ({ labels: labels(entry), value: entry.served + entry.failed })),
      },
      {
        name: "ferry_proxy_request_failures_total",
        help: "Requests the traffic router could not get an answer for from the upstream, by route and upstream.",
        type: "counter",
        samples: traffic.map((entry) => ({ labels: labels(entry), value: entry.failed })),
      },
    ];
    const timed = traffic.flatMap((entry) => (entry.duration ? [{ labels: labels(entry), ...entry.duration }] : []));
    if (timed.length > 0) {
      families.push({
        name: "ferry_proxy_request_duration_seconds",
        help: "Time from a request reaching the traffic router to the end of its upstream's answer (or of the failure), by route and upstream.",
        type: "histogram",
        samples: timed,
      });
    }
    return families;
  }
}

/** The process_* metrics Prometheus client libraries write, which dashboards expect. */
function processFamilies(): MetricFamily[] {
  const cpu = process.cpuUsage();
  return [
    {
      name: "process_cpu_seconds_total",
      help: "User and system CPU time the server process used.",
      type: "counter",
      samples: [{ labels: {}, value: (cpu.user + cpu.system) / 1e6 }],
    },
    {
      name: "process_resident_memory_bytes",
      help: "Resident memory of the server process.",
      type: "gauge",
      samples: [{ labels: {}, value: process.memoryUsage.rss() }],
    },
    {
      name: "process_start_time_seconds",
      help: "When the server process started, in seconds since the Unix epoch.",
      type: "gauge",
      samples: [{ labels: {}, value: PROCESS_START_SECONDS }],
    },
  ];
}
