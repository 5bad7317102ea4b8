import type { FastifyBaseLogger } from "fastify";
import { Access } from "../domain/access.js";
import type { AuditDiff } from "../domain/audit.js";
import { decideFiring, type MissedFiringPolicy } from "../domain/runbookSchedules.js";
import { appendAuditEvent } from "../store/audit.js";
import {
  claimFiring,
  type DueSchedule,
  dueSchedules,
  openScheduleParameters,
  recordFiring,
} from "../store/runbookSchedules.js";
import type { DeploymentServices } from "./deployments.js";
import { requestRunbookRun } from "./runbooks.js";

/*
 * The runbook scheduler (issue 14, part 3; ADR 0036): every server node polls the shared
 * schedules, and a node fires a due schedule only after winning its claim (next_run_at moved
 * forward by a conditional UPDATE), so each firing queues one run however many nodes poll.
 * The claim comes before the run is queued: a node that dies in between loses that firing
 * (at most once, never twice — a backup run twice is worse than a firing reported missing).
 */

export interface SchedulerSettings {
  /** A firing later than this is missed (FERRY_SCHEDULE_GRACE_SECONDS). */
  graceMs: number;
  /** How often due schedules are looked for (jittered). */
  pollMs: number;
}

export const defaultSchedulerSettings: SchedulerSettings = { graceMs: 60_000, pollMs: 1_000 };

const messageOf = (error: unknown) => (error instanceof Error ? error.message : String(error));

/** One firing as the scheduler decided it: on time, or the catch-up of missed firings. */
interface Firing {
  cause: string;
  scheduledFor: Date;
}

export class RunbookScheduler {
  private timer: NodeJS.Timeout | undefined;
  /** Set by stop(): no new timer, and a tick under way stops between schedules. */
  private stopping = false;
  private ticking: Promise<void> | undefined;

  constructor(
    private readonly options: SchedulerSettings & {
      services: DeploymentServices;
      logger: FastifyBaseLogger;
    },
  ) {}

  start(): void {
    this.stopping = false;
    this.schedule(0);
  }

  async stop(): Promise<void> {
    this.stopping = true;
    clearTimeout(this.timer);
    await this.ticking;
  }

  private schedule(delayMs: number): void {
    if (this.stopping) return;
    this.timer = setTimeout(() => {
      this.ticking = this.tick()
        .catch((error: unknown) => this.options.logger.warn({ err: error }, "could not fire runbook schedules"))
        .finally(() => {
          this.ticking = undefined;
          // Jittered so that nodes polling one database do not all ask in the same instant.
          this.schedule(this.options.pollMs * (0.75 + Math.random() / 2));
        });
    }, delayMs);
    this.timer.unref();
  }

  /** Fires every schedule due at `now` whose claim this node wins. */
  async tick(now = new Date()): Promise<void> {
    const { db } = this.options.services.context;
    for (const due of await dueSchedules(db, now)) {
      if (this.stopping) return;
      const decision = decideFiring(
        { cron: due.cron, timeZone: due.time_zone, missed: due.missed as MissedFiringPolicy },
        new Date(due.next_run_at),
        now,
        this.options.graceMs,
      );
      if (!(await claimFiring(db, due.id, due.next_run_at, decision.next))) continue;
      if (decision.missed) await this.reportMissed(due, decision.missed);
      const firing: Firing | undefined = decision.onTime
        ? { cause: `schedule ${due.name}`, scheduledFor: decision.onTime }
        : decision.catchUp && decision.missed
          ? { cause: `missed firings of schedule ${due.name}`, scheduledFor: decision.missed.last }
          : undefined;
      if (firing) await this.fire(due, firing);
    }
  }

  /** Missed firings are reported (audit log and server log) before the policy is applied. */
  private async reportMissed(
    due: DueSchedule,
    missed: { count: number; atLeast: boolean; first: Date; last: Date },
  ): Promise<void> {
    const what = `${due.project_slug}/${due.runbook_slug}`;
    const policy = due.missed === "runOnce" ? "run once now" : "skipped";
    this.options.logger.warn(
      {
        schedule: due.name,
        runbook: what,
        environment: due.environment_slug,
        missed: missed.count,
        first: missed.first.toISOString(),
        last: missed.last.toISOString(),
      },
      `runbook schedule '${due.name}' of ${what} in ${due.environment_slug} missed ${missed.atLeast ? "at least " : ""}${missed.count} firing(s) while no server ran (${missed.first.toISOString()} … ${missed.last.toISOString()}); ${policy}`,
    );
    await this.audit(due, "runbook.schedule.missed", {
      missedFirings: { from: null, to: missed.atLeast ? `at least ${missed.count}` : missed.count },
      firstMissed: { from: null, to: missed.first.toISOString() },
      lastMissed: { from: null, to: missed.last.toISOString() },
      policy: { from: null, to: due.missed },
    });
  }

  /**
   * Queues the run exactly as a person's request would be checked (published version,
   * parameters against it as it is now, environment, targets, freezes), as the schedule: its
   * grant is runRunbooks on this project and environment only, so it can never run a draft or
   * override a freeze. A refusal is audited and recorded on the schedule, never dropped.
   */
  private async fire(due: DueSchedule, firing: Firing): Promise<void> {
    const { services, logger } = this.options;
    const access = Access.of([
      { permissions: new Set(["runRunbooks"]), projects: [due.project_id], environments: [due.environment_id] },
    ]);
    const base: AuditDiff = {
      cause: { from: null, to: firing.cause },
      scheduledFor: { from: null, to: firing.scheduledFor.toISOString() },
      scheduleCreatedBy: { from: null, to: due.created_by },
    };
    try {
      const run = await requestRunbookRun(services, {
        project: due.project_id,
        runbook: due.runbook_id,
        environment: due.environment_id,
        parameters: openScheduleParameters(services.context, due),
        ...(due.targets !== null && { targets: JSON.parse(due.targets) as string[] }),
        draft: false,
        guidedFailure: false,
        createdBy: `schedule ${due.name}`,
        createdByPrincipal: null,
        access,
        schedule: { id: due.id, cause: firing.cause, scheduledFor: firing.scheduledFor },
      });
      await recordFiring(services.context.db, due.id, { ...firing, taskId: run.taskId, error: null });
      await this.audit(due, "runbook.schedule.fire", {
        ...base,
        task: { from: null, to: run.taskId },
        version: { from: null, to: run.version },
        // The answer's parameters: sensitive values are masked in it.
        parameters: { from: null, to: run.parameters },
      });
      logger.info(
        { schedule: due.name, runbook: `${due.project_slug}/${due.runbook_slug}`, taskId: run.taskId },
        `runbook schedule '${due.name}' queued task ${run.taskId} (${firing.cause})`,
      );
    } catch (error) {
      const reason = messageOf(error);
      await recordFiring(services.context.db, due.id, { ...firing, taskId: null, error: reason });
      await this.audit(due, "runbook.schedule.refused", { ...base, reason: { from: null, to: reason } });
      logger.warn(
        { schedule: due.name, runbook: `${due.project_slug}/${due.runbook_slug}` },
        `runbook schedule '${due.name}' did not queue a run: ${reason}`,
      );
    }
  }

  private async audit(due: DueSchedule, action: string, diff: AuditDiff): Promise<void> {
    try {
      await appendAuditEvent(this.options.services.context, {
        actor: { id: null, name: `schedule ${due.name}` },
        source: "server",
        action,
        resource: {
          type: "runbook-schedule",
          id: due.id,
          name: `${due.project_slug}/${due.runbook_slug}/${due.name}`,
        },
        diff,
      });
    } catch (error) {
      this.options.logger.error({ err: error, audit: action }, "could not write to the audit log");
    }
  }
}
