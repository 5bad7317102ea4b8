import { z } from "zod";
import { atLeastOneField, nameSchema, timestampsShape } from "./common.js";
import { timeZoneSchema } from "./freezes.js";
import { cronSchema } from "./runbookSchedules.js";

/**
 * Scheduled triggers (issue 15, docs/triggers.md): on a cron expression read in a time zone,
 * deploy the release an environment runs (its latest successful deployment) to another —
 * "every night at 02:00 Europe/Berlin, test gets what dev has". Pure: no I/O.
 */

export const scheduledTriggerSchema = z.object({
  id: z.string(),
  project: z.string().describe("project slug"),
  name: z.string(),
  cron: z.string(),
  timeZone: z.string(),
  from: z.string().describe("environment slug whose latest successful release is deployed"),
  to: z.string().describe("environment slug it is deployed to"),
  paused: z.boolean(),
  nextFireAt: z.string().nullable(),
  lastFiredAt: z.string().nullable(),
  lastOutcome: z.string().nullable().describe("what the last firing did, in words"),
  lastFiring: z
    .object({ at: z.string(), cause: z.literal("schedule"), outcome: z.string() })
    .nullable()
    .describe("the last firing (lastFiredAt and lastOutcome together, as feed triggers give theirs); null: none yet"),
  ...timestampsShape,
});
export type ScheduledTrigger = z.infer<typeof scheduledTriggerSchema>;

const environmentReference = z.string().min(1).max(100);

const scheduledTriggerFields = {
  name: nameSchema,
  cron: cronSchema,
  timeZone: timeZoneSchema,
  from: environmentReference,
  to: environmentReference,
  paused: z.boolean(),
};

export const createScheduledTriggerSchema = z.strictObject({
  ...scheduledTriggerFields,
  timeZone: scheduledTriggerFields.timeZone.default("UTC"),
  paused: scheduledTriggerFields.paused.default(false),
});
export type CreateScheduledTrigger = z.infer<typeof createScheduledTriggerSchema>;

export const updateScheduledTriggerSchema = atLeastOneField(scheduledTriggerFields);
export type UpdateScheduledTrigger = z.infer<typeof updateScheduledTriggerSchema>;
