import type { FastifyBaseLogger } from "fastify";
import { FerryError } from "../domain/errors.js";
import { environmentsAcceptingSkippedSteps } from "../domain/progression.js";
import { appendAuditEvent } from "../store/audit.js";
import { findNamed } from "../store/common.js";
import { lastDeploymentSucceeded, lifecyclePhases, successfulReleases } from "../store/deployments.js";
import {
  claimDueScheduledTriggers,
  type DueScheduledTrigger,
  recordScheduledFiring,
} from "../store/scheduledTriggers.js";
import { requestDeployment } from "./deploymentRequests.js";
import type { DeploymentServices } from "./deployments.js";

/**
 * Scheduled triggers (docs/triggers.md): at each firing, the release `from` runs (its latest
 * deployment there that counts for the lifecycle) is deployed to `to`, unless `to` already
 * runs it. The lifecycle, freezes and locks apply as to any deployment; what a firing did (or
 * why it did nothing) is kept on the trigger and audited. A firing missed while no server ran
 * is reported and skipped: deploying yesterday's nightly promotion at noon is a surprise.
 */

/** A firing due longer ago than this was missed (no server was up), not late. */
const GRACE_MS = 60_000;

async function fire(services: DeploymentServices, trigger: DueScheduledTrigger, now: Date): Promise<string> {
  const { db } = services.context;
  if (now.getTime() - trigger.dueAt.getTime() > GRACE_MS) {
    return `missed the firing of ${trigger.dueAt.toISOString()} (no server was running then): skipped`;
  }
  const project = await findNamed(db, "projects", trigger.projectId);
  const from = await findNamed(db, "environments", trigger.fromEnvironmentId);
  const to = await findNamed(db, "environments", trigger.toEnvironmentId);
  const lifecycle = await lifecyclePhases(db, project.id);
  const [latest] = await successfulReleases(db, project.id, [from.id], {
    acceptSkippedSteps: environmentsAcceptingSkippedSteps(lifecycle.phases),
  });
  if (!latest) return `nothing to deploy: ${from.name} has no successful deployment yet`;
  const [current] = await successfulReleases(db, project.id, [to.id]);
  if (current?.releaseId === latest.releaseId && (await lastDeploymentSucceeded(db, project.id, to.id))) {
    return `${to.name} already runs ${latest.version}, what ${from.name} runs: nothing to do`;
  }
  try {
    const created = await requestDeployment(services, {
      project: project.id,
      release: latest.releaseId,
      environment: to.id,
      createdBy: `trigger:${trigger.name}`,
      kind: "promote",
    });
    return `deploying ${latest.version} from ${from.name} to ${to.name} (task ${created.taskId})`;
  } catch (error) {
    // The lifecycle, a freeze, a missing release: the firing is refused like a person's request.
    if (error instanceof FerryError) return `not deployed: ${error.message}`;
    throw error;
  }
}

/** Fires due scheduled triggers; several server nodes sharing a database fire each firing once. */
export class ScheduledTriggerRunner {
  private timer: NodeJS.Timeout | undefined;
  private stopped = false;
  private ticking: Promise<void> | undefined;

  constructor(
    private readonly services: DeploymentServices,
    private readonly logger: FastifyBaseLogger,
    private readonly tickMs = 1_000,
  ) {}

  start(): void {
    this.schedule();
  }

  async stop(): Promise<void> {
    this.stopped = true;
    clearTimeout(this.timer);
    await this.ticking;
  }

  private schedule(): void {
    if (this.stopped) return;
    this.timer = setTimeout(() => {
      this.ticking = this.tick()
        .catch((error: unknown) => this.logger.warn({ err: error }, "could not fire scheduled triggers"))
        .finally(() => {
          this.ticking = undefined;
          this.schedule();
        });
    }, this.tickMs);
    this.timer.unref();
  }

  private async tick(): Promise<void> {
    const now = new Date();
    const { context } = this.services;
    for (const trigger of await claimDueScheduledTriggers(context.db, now)) {
      let outcome: string;
      try {
        outcome = await fire(this.services, trigger, now);
      } catch (error) {
        outcome = `failed: ${error instanceof Error ? error.message : String(error)}`;
        this.logger.warn({ err: error, trigger: trigger.name }, "a scheduled trigger's firing failed");
      }
      await recordScheduledFiring(context.db, trigger.id, outcome);
      await appendAuditEvent(context, {
        actor: { id: null, name: `scheduled trigger ${trigger.name}` },
        source: "schedule",
        action: "trigger.fire",
        resource: { type: "project", id: trigger.projectId, name: null },
        diff: {
          trigger: { from: null, to: trigger.name },
          cause: { from: null, to: "schedule" },
          firing: { from: null, to: trigger.dueAt.toISOString() },
          outcome: { from: null, to: outcome },
        },
      }).catch((error: unknown) => this.logger.error({ err: error }, "could not audit a scheduled trigger's firing"));
    }
  }
}
