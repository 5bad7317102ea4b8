import { z } from "zod";
import { descriptionSchema, nameSchema, referenceSchema } from "./common.js";

/*
 * Deployment freezes (issue 14, part 4): windows during which new deployments to a project's
 * environment are refused (and, per freeze, runbook runs), unless someone with the
 * overrideFreezes permission gives a reason. A window is one-off (from, until) or weekly
 * recurring (days at a local time, for a duration) in an IANA time zone.
 */

const weekdays = ["mon", "tue", "wed", "thu", "fri", "sat", "sun"] as const;

function isTimeZone(name: string): boolean {
  try {
    new Intl.DateTimeFormat("en-GB", { timeZone: name });
    return true;
  } catch {
    return false;
  }
}

export const timeZoneSchema = z.string().min(1).max(100).refine(isTimeZone, {
  message: "use an IANA time zone such as 'UTC' or 'Europe/Berlin'",
});

const isoInstantSchema = z.iso.datetime({
  offset: true,
  message: "use an ISO 8601 time with its offset, e.g. 2026-12-24T00:00:00Z",
});

const oneOffSchema = z.strictObject({
  kind: z.literal("once"),
  from: isoInstantSchema,
  until: isoInstantSchema,
});

const weeklySchema = z.strictObject({
  kind: z.literal("weekly"),
  /** The days a window starts on (in the freeze's time zone). */
  days: z.array(z.enum(weekdays)).min(1, { message: "name at least one day (mon … sun)" }).max(7),
  /** Local start time, HH:MM (24 h). */
  at: z.string().regex(/^(?:[01][0-9]|2[0-3]):[0-5][0-9]$/, { message: "use HH:MM, 24 h (e.g. 16:00)" }),
  durationMinutes: z
    .number()
    .int()
    .min(1)
    .max(7 * 24 * 60, { message: "at most a week (10080 minutes)" }),
});

export const freezeWindowSchema = z.discriminatedUnion("kind", [oneOffSchema, weeklySchema]);
export type FreezeWindow = z.infer<typeof freezeWindowSchema>;

export const createFreezeSchema = z
  .strictObject({
    name: nameSchema,
    description: descriptionSchema.default(""),
    /** Environments (slugs or ids) of the project the freeze covers. */
    environments: z.array(referenceSchema).min(1, { message: "name at least one environment" }).max(50),
    window: freezeWindowSchema,
    timeZone: timeZoneSchema.default("UTC"),
    /** Also refuse runbook runs (default: only deployments). */
    runbooks: z.boolean().default(false),
  })
  .superRefine((freeze, context) => {
    if (freeze.window.kind === "once" && Date.parse(freeze.window.until) <= Date.parse(freeze.window.from)) {
      context.addIssue({ code: "custom", path: ["window", "until"], message: "must be after 'from'" });
    }
  });
export type CreateFreeze = z.infer<typeof createFreezeSchema>;

export const freezeSchema = z.object({
  id: z.string(),
  project: z.string(),
  name: z.string(),
  description: z.string(),
  environments: z.array(z.string()).describe("environment slugs"),
  window: freezeWindowSchema,
  timeZone: z.string(),
  runbooks: z.boolean(),
  createdBy: z.string(),
  createdAt: z.string(),
});
export type Freeze = z.infer<typeof freezeSchema>;

/** The local wall-clock time of an instant in a zone, as minutes since 1970-01-01 00:00 (that zone's calendar). */
function wallClockMinutes(instant: Date, timeZone: string): { minutes: number; weekday: number } {
  const parts = new Intl.DateTimeFormat("en-GB", {
    timeZone,
    hourCycle: "h23",
    year: "numeric",
    month: "2-digit",
    day: "2-digit",
    hour: "2-digit",
    minute: "2-digit",
  }).formatToParts(instant);
  const part = (type: string) => Number(parts.find((item) => item.type === type)?.value ?? 0);
  const days = Date.UTC(part("year"), part("month") - 1, part("day")) / 86_400_000;
  // 1970-01-01 was a Thursday: Monday = 0.
  const weekday = (((days + 3) % 7) + 7) % 7;
  return { minutes: days * 1440 + part("hour") * 60 + part("minute"), weekday };
}

/**
 * Whether the freeze's window covers the instant. A weekly window is compared in the zone's
 * wall-clock time: "fri 16:00 for 3 days" is Friday 16:00 local however the offset changes
 * (a window across a daylight-saving change is an hour longer or shorter, as people expect).
 */
export function freezeCovers(window: FreezeWindow, timeZone: string, instant: Date): boolean {
  if (window.kind === "once") {
    const time = instant.getTime();
    return Date.parse(window.from) <= time && time < Date.parse(window.until);
  }
  const now = wallClockMinutes(instant, timeZone);
  const [hours, minutes] = window.at.split(":").map(Number) as [number, number];
  const today = now.minutes - (now.minutes % 1440);
  // A window that started up to 7 days ago may still be open.
  for (let back = 0; back <= 7; back += 1) {
    const weekday = weekdays[(((now.weekday - back) % 7) + 7) % 7] as (typeof weekdays)[number];
    if (!window.days.includes(weekday)) continue;
    const start = today - back * 1440 + hours * 60 + minutes;
    if (start <= now.minutes && now.minutes < start + window.durationMinutes) return true;
  }
  return false;
}

/** The message a refused deployment or run gets: it names the freeze and says what to do. */
export function frozenMessage(freeze: Pick<Freeze, "name" | "description">, what: string, environment: string): string {
  return `${what} to ${environment} is refused: deployment freeze '${freeze.name}' is in effect${
    freeze.description ? ` (${freeze.description.split("\n")[0]})` : ""
  }; wait until it ends, or override it with a reason (--override-freeze REASON, which needs the 'overrideFreezes' permission)`;
}
