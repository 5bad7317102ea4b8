import { Cron } from "croner";
import { z } from "zod";
import { nameSchema, referenceSchema } from "./common.js";
import { timeZoneSchema } from "./freezes.js";
import { retentionSchemaOf } from "./retention.js";

/*
 * Runbook schedules (issue 14, part 3) and run retention (part 7): the rules, without I/O.
 * A schedule fires a runbook's published version in one environment on a cron expression
 * read in an IANA time zone; firings missed while no server ran are reported, then skipped
 * or run once. Retention decides which finished runs of a runbook in an environment go.
 */

/** Five fields (minute …) or six (second minute …); no year field. */
const CRON_MODE = "5-or-6-parts" as const;

/** Why a cron expression cannot be used (undefined: it can); never throws. */
export function cronProblem(expression: string, timeZone = "UTC"): string | undefined {
  let cron: Cron;
  try {
    cron = new Cron(expression, { paused: true, mode: CRON_MODE, timezone: timeZone });
  } catch (error) {
    return `not a cron expression: ${(error as Error).message.replace(/^CronPattern: /, "")}; use five fields (minute hour day-of-month month day-of-week, e.g. '0 3 * * *') or six with seconds first`;
  }
  try {
    if (cron.nextRun() === null) return "never fires (no date matches it); check the day and month fields";
  } catch {
    // The zone is checked on its own field.
    return undefined;
  }
  return undefined;
}

export const cronSchema = z
  .string()
  .trim()
  .min(1, { message: "give a cron expression, e.g. '0 3 * * *' (every day at 03:00)" })
  .max(200)
  .superRefine((expression, context) => {
    const problem = cronProblem(expression);
    if (problem) context.addIssue({ code: "custom", message: problem });
  });

const missedFiringPolicies = ["skip", "runOnce"] as const;
export type MissedFiringPolicy = (typeof missedFiringPolicies)[number];

/** A parameter value as a schedule gives it: what a person's run request would. */
const parameterValueSchema = z.union([z.string().max(8192), z.number(), z.boolean()]);

export const createScheduleSchema = z.strictObject({
  /** Unique per runbook: what the audit log and the run's task call it ("schedule nightly"). */
  name: nameSchema,
  environment: referenceSchema.describe("environment slug or id"),
  cron: cronSchema.describe("five fields (minute hour day month weekday) or six with seconds first"),
  timeZone: timeZoneSchema.default("UTC"),
  /** Values of the runbook's parameters; checked now and again at each firing. */
  parameters: z.record(z.string().max(64), parameterValueSchema).default({}),
  /** Only on these targets (names or ids) of the environment; left out: every target with a step's role. */
  targets: z.array(referenceSchema).max(100).optional(),
  /** What a firing missed while no server ran becomes: reported, then skipped or run once. */
  missed: z.enum(missedFiringPolicies).default("skip"),
  /** Created paused: it fires only once resumed. */
  paused: z.boolean().default(false),
});
export type CreateSchedule = z.infer<typeof createScheduleSchema>;

export const updateScheduleSchema = z
  .strictObject({
    cron: cronSchema,
    timeZone: timeZoneSchema,
    parameters: createScheduleSchema.shape.parameters.unwrap(),
    targets: z.array(referenceSchema).max(100).nullable(),
    missed: z.enum(missedFiringPolicies),
  })
  .partial()
  .refine((body) => Object.keys(body).length > 0, { message: "send at least one field to change" });
export type UpdateSchedule = z.infer<typeof updateScheduleSchema>;

export const scheduleSchema = z.object({
  id: z.string(),
  project: z.string(),
  runbook: z.string().describe("runbook slug"),
  name: z.string(),
  environment: z.string().describe("environment slug"),
  cron: z.string(),
  timeZone: z.string(),
  /** Sensitive values show as "********". */
  parameters: z.record(z.string(), z.union([z.string(), z.number(), z.boolean()])),
  targets: z.array(z.string()).nullable(),
  missed: z.enum(missedFiringPolicies),
  paused: z.boolean(),
  /** The next firing (ISO 8601 UTC); null while paused. */
  nextRunAt: z.string().nullable(),
  /** The last firing: when it was due, and the task it queued or why it was refused. */
  lastFiring: z
    .object({
      scheduledFor: z.string(),
      cause: z.string(),
      taskId: z.string().nullable(),
      error: z.string().nullable(),
    })
    .nullable(),
  createdBy: z.string(),
  createdAt: z.string(),
  updatedAt: z.string(),
});
export type Schedule = z.infer<typeof scheduleSchema>;

/** The next firing strictly after `after`, or null when the expression never fires again. */
export function nextFiring(expression: string, timeZone: string, after: Date): Date | null {
  return new Cron(expression, { paused: true, mode: CRON_MODE, timezone: timeZone }).nextRun(after);
}

/** What a due schedule does now (decideFiring). */
export interface FiringDecision {
  /** The firing to run on time (due within the grace), if any. */
  onTime: Date | null;
  /**
   * Firings due longer ago than the grace: nobody ran them (no server was up). Past
   * MAX_COUNTED they are not counted one by one: `count` is then a lower bound (`atLeast`).
   */
  missed: { count: number; atLeast: boolean; first: Date; last: Date } | null;
  /** Whether one catch-up run is queued for the missed firings (runOnce, and no on-time run to stand for it). */
  catchUp: boolean;
  /** Where the schedule's next firing goes. */
  next: Date | null;
}

/** Missed firings counted one by one up to this many (a second-by-second schedule down for a day has 86,400). */
const MAX_COUNTED = 1_000;

/**
 * Given a schedule's due firing `due` (its next_run_at) and the time now, which firings are
 * on time and which were missed. A firing is missed when its time passed more than `graceMs`
 * ago: a server that was up would have fired it within a few seconds. Of several firings due,
 * only the latest can be on time (the others are older still). With `runOnce`, the missed
 * firings get one catch-up run — unless a firing is on time now, whose run stands for them.
 */
export function decideFiring(
  schedule: { cron: string; timeZone: string; missed: MissedFiringPolicy },
  due: Date,
  now: Date,
  graceMs: number,
): FiringDecision {
  const cron = new Cron(schedule.cron, { paused: true, mode: CRON_MODE, timezone: schedule.timeZone });
  const firings: Date[] = [];
  let cursor: Date | null = due;
  while (cursor && cursor.getTime() <= now.getTime() && firings.length < MAX_COUNTED) {
    firings.push(cursor);
    cursor = cron.nextRun(cursor);
  }
  const capped = cursor !== null && cursor.getTime() <= now.getTime();
  if (capped) {
    // Too many to count: the latest firing due is the one that matters (it may be on time).
    const latest = cron.previousRuns(1, new Date(now.getTime() + 1))[0];
    if (latest && latest.getTime() > (firings.at(-1)?.getTime() ?? 0)) firings.push(latest);
  }
  const next = cron.nextRun(now);
  const latest = firings.at(-1);
  const onTime = latest && now.getTime() - latest.getTime() <= graceMs ? latest : null;
  const missedFirings = onTime ? firings.slice(0, -1) : firings;
  const first = missedFirings[0];
  const last = missedFirings.at(-1);
  const missed = first && last ? { count: missedFirings.length, atLeast: capped, first, last } : null;
  return { onTime, missed, catchUp: missed !== null && onTime === null && schedule.missed === "runOnce", next };
}

/** Per runbook and environment: how many finished runs to keep, and for how long (src/domain/retention.ts). */
export const retentionSchema = retentionSchemaOf("runs");
export type { Retention } from "./retention.js";
