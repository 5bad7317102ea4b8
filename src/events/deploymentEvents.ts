import { setTimeout as sleep } from "node:timers/promises";
import type { FastifyBaseLogger } from "fastify";
import type { DeploymentEventName } from "../domain/webhooks.js";
import type { TaskFinishedEvent, TaskObserver, TaskOutcome, TaskStartedEvent } from "../engine/observers.js";
import { defaultOutboundPolicy, type OutboundPolicy } from "../security/outboundGuard.js";
import { newId, nowIso, type StoreContext } from "../store/common.js";
import { appendLogLines } from "../store/tasks.js";
import { deploymentOfTask, webhooksForEvent } from "../store/webhooks.js";
import { StatsdClient, type StatsdTarget, statsdName } from "./statsd.js";
import { defaultWebhookDelivery, deliverWebhook, type WebhookDeliveryOptions } from "./webhookDelivery.js";

export interface DeploymentEventsOptions {
  context: StoreContext;
  logger: FastifyBaseLogger;
  version: string;
  /** FERRY_STATSD: where each ended deployment is counted. */
  statsd?: StatsdTarget | undefined;
  webhookDelivery?: Partial<WebhookDeliveryOptions>;
  /** Webhook URLs the server may call (FERRY_OUTBOUND_ALLOW); default: no exception to the deny list. */
  outbound?: OutboundPolicy | undefined;
  /** Told of each webhook delivery's end (for /metrics). */
  onWebhookDelivery?: (outcome: "delivered" | "failed") => void;
}

/** How long a started task's deployment row may take to appear (it is written just after the task's). */
const DEPLOYMENT_ROW_WAIT_MS = 5000;

/**
 * Tells the outside world about deployments: each project's webhooks (signed POSTs, see
 * docs/webhooks.md) when a deployment starts and ends, and StatsD when one ends. A task
 * observer of the engine: it never blocks or fails a deployment. Events of one deployment
 * are sent in order (its "started" before its end), retried with backoff; a delivery that
 * still fails is written to the deployment's task log with the status code only.
 */
export class DeploymentEvents implements TaskObserver {
  private readonly chains = new Map<string, Promise<void>>();
  private readonly stopping = new AbortController();
  private readonly statsd: StatsdClient | undefined;
  private readonly delivery: WebhookDeliveryOptions;

  constructor(private readonly options: DeploymentEventsOptions) {
    this.delivery = { ...defaultWebhookDelivery, ...options.webhookDelivery };
    this.statsd =
      options.statsd &&
      new StatsdClient(options.statsd, (error) => options.logger.warn({ err: error }, "sending to StatsD failed"));
  }

  taskStarted(event: TaskStartedEvent): void {
    if (event.kind === "deployment") this.inOrder(event.taskId, () => this.publish("deployment.started", event));
  }

  taskFinished(event: TaskFinishedEvent): void {
    if (event.kind !== "deployment") return;
    // Counted at once, not behind the webhooks' retries of the "started" event.
    if (this.statsd) this.inOrder(`statsd:${event.taskId}`, () => this.count(event));
    this.inOrder(event.taskId, () => this.publish(eventOf(event.outcome), event));
  }

  /** Gives deliveries in flight up to `graceMs` to end, then abandons their retries. */
  async close(graceMs = 5000): Promise<void> {
    const pending = Promise.allSettled([...this.chains.values()]);
    await Promise.race([pending, sleep(graceMs, undefined, { ref: false })]);
    this.stopping.abort();
    await pending;
    this.statsd?.close();
  }

  /** Runs `work` after earlier work of the same key (a task's events) ended, so a receiver sees them in order. */
  private inOrder(key: string, work: () => Promise<void>): void {
    const next = (this.chains.get(key) ?? Promise.resolve()).then(work).catch((error: unknown) => {
      if (!this.stopping.signal.aborted) {
        this.options.logger.error({ err: error, key }, "publishing a deployment event failed");
      }
    });
    this.chains.set(key, next);
    void next.then(() => {
      if (this.chains.get(key) === next) this.chains.delete(key);
    });
  }

  private async publish(name: DeploymentEventName, event: TaskStartedEvent | TaskFinishedEvent): Promise<void> {
    const deployment = await this.findDeployment(event.taskId);
    if (!deployment) {
      this.options.logger.warn({ taskId: event.taskId }, "no deployment is recorded for this deployment task");
      return;
    }
    const finished = "outcome" in event ? event : undefined;
    const webhooks = await webhooksForEvent(this.options.context, deployment.projectId, name);
    if (webhooks.length === 0) return;
    const id = newId("evt");
    const body = JSON.stringify({
      id,
      event: name,
      occurredAt: finished?.finishedAt ?? event.startedAt,
      deployment: {
        id: deployment.deploymentId,
        taskId: deployment.taskId,
        project: deployment.project,
        projectName: deployment.projectName,
        environment: deployment.environment,
        environmentName: deployment.environmentName,
        release: deployment.release,
        kind: deployment.kind,
        state: finished?.outcome ?? "running",
        createdBy: deployment.createdBy,
        startedAt: event.startedAt,
        finishedAt: finished?.finishedAt ?? null,
        durationSeconds: finished?.durationSeconds ?? null,
      },
    });
    await Promise.all(
      webhooks.map(async (webhook) => {
        const result = await deliverWebhook(
          webhook,
          { id, event: name, body, userAgent: `Ferry/${this.options.version}` },
          this.delivery,
          this.options.outbound ?? defaultOutboundPolicy,
          this.stopping.signal,
        );
        this.options.onWebhookDelivery?.(result.delivered ? "delivered" : "failed");
        if (result.delivered) return;
        // The origin only: a webhook URL's path or query may itself be a credential.
        const text = `webhook ${webhook.id} (${new URL(webhook.url).origin}) did not accept ${name} after ${result.attempts} attempt(s): ${result.problem}`;
        this.options.logger.warn({ taskId: event.taskId, webhook: webhook.id, problem: result.problem }, text);
        await appendLogLines(this.options.context.db, event.taskId, [
          { at: nowIso(), level: "warn", step: null, text },
        ]);
      }),
    );
  }

  /** ferry.deployments.<project>.<environment>.<outcome>:1|c and the run time as a timer. */
  private async count(event: TaskFinishedEvent): Promise<void> {
    const deployment = await this.findDeployment(event.taskId);
    if (!deployment || !this.statsd) return;
    const prefix = ["ferry", "deployments", statsdName(deployment.project), statsdName(deployment.environment)].join(
      ".",
    );
    this.statsd.send([
      `${prefix}.${event.outcome}:1|c`,
      `${prefix}.duration:${Math.round(event.durationSeconds * 1000)}|ms`,
    ]);
  }

  private async findDeployment(taskId: string) {
    const deadline = Date.now() + DEPLOYMENT_ROW_WAIT_MS;
    for (;;) {
      const deployment = await deploymentOfTask(this.options.context, taskId);
      if (deployment || Date.now() > deadline) return deployment;
      await sleep(50, undefined, { signal: this.stopping.signal });
    }
  }
}

/** A deployment that did not succeed (failed, cancelled, interrupted) is reported as failed; `state` says which. */
function eventOf(outcome: TaskOutcome): DeploymentEventName {
  switch (outcome) {
    case "succeeded":
      return "deployment.succeeded";
    case "failed":
    case "cancelled":
    case "interrupted":
      return "deployment.failed";
    default: {
      const unknown: never = outcome;
      throw new Error(`unknown task outcome ${String(unknown)}`);
    }
  }
}
