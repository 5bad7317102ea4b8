import type { FastifyBaseLogger } from "fastify";
import type { TaskObserver } from "../engine/observers.js";
import { DeploymentEvents } from "../events/deploymentEvents.js";
import type { StatsdTarget } from "../events/statsd.js";
import { TaskAudit } from "../events/taskAudit.js";
import type { WebhookDeliveryOptions } from "../events/webhookDelivery.js";
import { ServerMetrics } from "../observability/serverMetrics.js";
import type { OutboundPolicy } from "../security/outboundGuard.js";
import type { StoreContext } from "../store/common.js";
import type { Store } from "../store/db.js";

export interface ObservabilityOptions {
  store: Store;
  context: StoreContext;
  logger: FastifyBaseLogger;
  version: string;
  /** The kinds the engine runs (their queue gauges show 0 when idle). */
  taskKinds: readonly string[];
  /** FERRY_STATSD. */
  statsd?: StatsdTarget | undefined;
  /** Shorter in tests. */
  webhookDelivery?: Partial<WebhookDeliveryOptions>;
  /** FERRY_OUTBOUND_ALLOW: the webhook URLs the server may call beyond the default. */
  outbound?: OutboundPolicy | undefined;
}

export interface Observability {
  /** For buildApp({ metrics }): serves GET /metrics. registerProxyStats() connects the traffic router. */
  metrics: ServerMetrics;
  /** For new TaskEngine({ observers }). */
  observers: readonly TaskObserver[];
  /** After the engine stopped: lets webhook deliveries in flight end (a few seconds at most). */
  close(): Promise<void>;
}

/** Metrics and deployment events (webhooks, StatsD), observing the task engine. */
export function createObservability(options: ObservabilityOptions): Observability {
  const metrics = new ServerMetrics({ store: options.store, version: options.version, taskKinds: options.taskKinds });
  const events = new DeploymentEvents({
    context: options.context,
    logger: options.logger,
    version: options.version,
    statsd: options.statsd,
    webhookDelivery: options.webhookDelivery,
    outbound: options.outbound,
    onWebhookDelivery: (outcome) => metrics.countWebhookDelivery(outcome),
  });
  // Every task's start and end goes to the audit log too.
  const audit = new TaskAudit(options.context, options.logger);
  return {
    metrics,
    observers: [metrics, events, audit],
    close: async () => {
      await events.close();
      await audit.close();
    },
  };
}
