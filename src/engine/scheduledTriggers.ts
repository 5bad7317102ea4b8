import type { FastifyBaseLogger } from "fastify";
import { FerryError } from "../domain/errors.js";
import { environmentsAcceptingSkippedSteps } from "../domain/progression.js";
import { appendAuditEvent } from "../store/audit.js";
import { findNamed } from "../store/common.js";
import { lastDeploymentSucceeded, lifecyclePhases, successfulReleases } from "../store/deployments.js";
import { activeDeploymentsIn } from "../store/environments.js";
import {
  claimDueScheduledTriggers,
  type DueScheduledTrigger,
  nextScheduledFiringAt,
  recordScheduledFiring,
} from "../store/scheduledTriggers.js";
import { requestDeployment } from "./deploymentRequests.js";
import type { DeploymentServices } from "./deployments.js";
import { DueTimer } from "./dueTimer.js";

/**
 * Scheduled triggers (docs/triggers.md): at each firing, the release `from` runs (its latest
 * deployment there that counts for the lifecycle) is deployed to `to`, unless `to` already
 * runs it. The lifecycle, freezes and locks apply as to any deployment; what a firing did (or
 * why it did nothing) is kept on the trigger and audited. A firing missed while no server ran
 * is reported and skipped: deploying yesterday's nightly promotion at noon is a surprise.
 */

/** A firing due longer ago than this was missed (no server was up), not late. */
const GRACE_MS = 60_000;

/** What a firing did: a deployment queued, or why nothing was. */
interface ScheduledFiring {
  deployed: boolean;
  outcome: string;
}

const nothingDone = (outcome: string): ScheduledFiring => ({ deployed: false, outcome });

async function fire(services: DeploymentServices, trigger: DueScheduledTrigger, now: Date): Promise<ScheduledFiring> {
  const { db } = services.context;
  if (now.getTime() - trigger.dueAt.getTime() > GRACE_MS) {
    return nothingDone(`missed the firing of ${trigger.dueAt.toISOString()} (no server was running then): skipped`);
  }
  const project = await findNamed(db, "projects", trigger.projectId);
  const from = await findNamed(db, "environments", trigger.fromEnvironmentId);
  const to = await findNamed(db, "environments", trigger.toEnvironmentId);
  const lifecycle = await lifecyclePhases(db, project.id);
  const [latest] = await successfulReleases(db, project.id, [from.id], {
    acceptSkippedSteps: environmentsAcceptingSkippedSteps(lifecycle.phases),
  });
  if (!latest) return nothingDone(`nothing to deploy: ${from.name} has no successful deployment yet`);
  // A firing while the previous one's deployment still runs would queue the same release again.
  if ((await activeDeploymentsIn(services.context, to.id, project.id)) > 0) {
    return nothingDone(
      `a deployment of ${project.name} to ${to.name} is queued or running: nothing to do until it ends`,
    );
  }
  const [current] = await successfulReleases(db, project.id, [to.id]);
  if (current?.releaseId === latest.releaseId && (await lastDeploymentSucceeded(db, project.id, to.id))) {
    return nothingDone(`${to.name} already runs ${latest.version}, what ${from.name} runs: nothing to do`);
  }
  try {
    const created = await requestDeployment(services, {
      project: project.id,
      release: latest.releaseId,
      environment: to.id,
      createdBy: `trigger:${trigger.name}`,
      kind: "promote",
    });
    return {
      deployed: true,
      outcome: `deploying ${latest.version} from ${from.name} to ${to.name} (task ${created.taskId})`,
    };
  } catch (error) {
    // The lifecycle, a freeze, a missing release: the firing is refused like a person's request.
    if (error instanceof FerryError) return nothingDone(`not deployed: ${error.message}`);
    throw error;
  }
}

/** The longest the runner sleeps: a trigger created through another server node fires from this one no later than this. */
const MAX_SLEEP_MS = 60_000;

/**
 * Fires due scheduled triggers; several server nodes sharing a database fire each firing
 * once. It sleeps until the earliest firing is due (ADR 0069) and plans again when a trigger
 * changes on this node (`triggersChanged`).
 */
export class ScheduledTriggerRunner {
  private readonly timer: DueTimer;

  constructor(
    private readonly services: DeploymentServices,
    private readonly logger: FastifyBaseLogger,
  ) {
    this.timer = new DueTimer((now) => this.pass(now), {
      maxSleepMs: MAX_SLEEP_MS,
      retryMs: 5_000,
      onError: (error) => this.logger.warn({ err: error }, "could not fire scheduled triggers"),
    });
  }

  start(): void {
    this.timer.start();
  }

  async stop(): Promise<void> {
    await this.timer.stop();
  }

  /** A trigger was created, changed, paused, resumed or deleted: plan the sleep again. */
  triggersChanged(): void {
    this.timer.wake();
  }

  /** Fires what is due at `now`; when the next firing is. */
  private async pass(now: Date): Promise<Date | undefined> {
    const { context } = this.services;
    for (const trigger of await claimDueScheduledTriggers(context.db, now)) {
      let firing: ScheduledFiring;
      try {
        firing = await fire(this.services, trigger, now);
      } catch (error) {
        firing = nothingDone(`failed: ${error instanceof Error ? error.message : String(error)}`);
        this.logger.warn({ err: error, trigger: trigger.name }, "a scheduled trigger's firing failed");
      }
      await recordScheduledFiring(context.db, trigger.id, firing.outcome);
      // A firing that deployed nothing (nothing new, missed, refused) is audited as such, with its reason.
      await appendAuditEvent(context, {
        actor: { id: null, name: `scheduled trigger ${trigger.name}` },
        source: "schedule",
        action: firing.deployed ? "trigger.fire" : "trigger.ignore",
        resource: { type: "project", id: trigger.projectId, name: null },
        diff: {
          trigger: { from: null, to: trigger.name },
          cause: { from: null, to: "schedule" },
          firing: { from: null, to: trigger.dueAt.toISOString() },
          [firing.deployed ? "outcome" : "reason"]: { from: null, to: firing.outcome },
        },
      }).catch((error: unknown) => this.logger.error({ err: error }, "could not audit a scheduled trigger's firing"));
    }
    return nextScheduledFiringAt(context.db);
  }
}
