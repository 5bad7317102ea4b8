import { z } from "zod";
import { nameSchema, referenceSchema, roleSchema, slugSchema } from "./common.js";

/**
 * `ferry agent`: a host that dials out to the server (docs/decisions/0030-agents.md). The
 * schemas of enrolment (one-time tokens, the agent's own credential) and of the work protocol
 * the agent and the server speak, so both sides validate the same shapes.
 */

/** What an enrolment token is now: only a `usable` one enrols an agent. */
const enrolmentTokenStates = ["usable", "used", "expired", "revoked"] as const;

const uniqueList = <T extends z.ZodType<string>>(item: T, what: string) =>
  z.array(item).refine((values) => new Set(values).size === values.length, { message: `list each ${what} once` });

export const createEnrolmentTokenSchema = z.strictObject({
  expiresInMinutes: z
    .number()
    .int()
    .min(1)
    .max(7 * 24 * 60, { message: "a token lives at most 7 days (10080 minutes): create a new one when needed" })
    .default(60)
    .describe("How long the token can be used; 60 minutes when left out"),
  environments: uniqueList(referenceSchema, "environment")
    .min(1)
    .optional()
    .describe("The environments an agent enrolled with it may join; any when left out"),
  roles: uniqueList(roleSchema, "role")
    .min(1)
    .max(50)
    .optional()
    .describe(
      "The only roles an agent enrolled with it may take (it gets all of them when it names none); any when left out",
    ),
  note: z.string().max(200).optional().describe("What the token is for (shown in the list)"),
});
export type CreateEnrolmentToken = z.infer<typeof createEnrolmentTokenSchema>;

export const enrolmentTokenSchema = z.object({
  id: z.string(),
  note: z.string(),
  environments: z.array(z.string()).nullable().describe("environment slugs an agent may join; null: any"),
  roles: z.array(z.string()).nullable().describe("the roles an agent may take; null: any"),
  state: z.enum(enrolmentTokenStates),
  createdAt: z.string(),
  expiresAt: z.string(),
  usedAt: z.string().nullable(),
  usedBy: z.string().nullable().describe("The target the agent became"),
  revokedAt: z.string().nullable(),
});
export type EnrolmentToken = z.infer<typeof enrolmentTokenSchema>;

export const createdEnrolmentTokenSchema = enrolmentTokenSchema.extend({
  token: z.string().describe("Shown once: give it to `ferry agent` on the host (--token-file or FERRY_AGENT_TOKEN)"),
});

/** What `ferry agent` sends once, with its token, to become a target. */
export const enrolSchema = z.strictObject({
  token: z.string().min(1).max(200),
  name: nameSchema,
  slug: slugSchema.optional(),
  environments: uniqueList(referenceSchema, "environment").min(1, {
    message: "an agent joins at least one environment: pass --environments",
  }),
  roles: uniqueList(roleSchema, "role").max(50).default([]),
  runtimes: uniqueList(z.enum(["docker", "process"]), "runtime")
    .min(1)
    .default(["docker"]),
});
export type Enrol = z.infer<typeof enrolSchema>;

export const enrolAnswerSchema = z.object({
  target: z.object({ id: z.string(), slug: z.string(), name: z.string() }),
  credential: z.string().describe("The agent's own credential: saved 0600 on the host, never shown again"),
});

/** How the target list shows an agent: whether it is connected, never its credential. */
export const agentStatusSchema = z.object({
  state: z
    .enum(["connected", "lost", "never", "revoked"])
    .describe(
      "connected: polling; lost: not heard from within FERRY_AGENT_TIMEOUT_SECONDS (or stopped); never: enrolled, never polled; revoked: its credential was revoked",
    ),
  since: z.string().nullable().describe("When it entered that state"),
  rotationPending: z.boolean().describe("A new credential waits for the agent to pick it up"),
});
export type AgentStatus = z.infer<typeof agentStatusSchema>;

// The work protocol. Every call has an id; the agent answers each exactly once (a `run` it
// journalled and lost to a restart is reported interrupted, never started again).

/** A call the server asks the agent to make: one Transport method, or a Docker tunnel. */
const agentCallSchema = z.object({
  id: z.string().min(1).max(100),
  operation: z.string().min(1).max(50),
  input: z.unknown(),
});
export type AgentCall = z.infer<typeof agentCallSchema>;

export const pollRequestSchema = z.strictObject({
  /** Calls the agent is working on or whose answer the server has not acknowledged yet. */
  running: z.array(z.string().max(100)).max(10_000),
  /** Calls of an earlier run of the agent that it journalled and could not finish (it was killed). */
  interrupted: z.array(z.strictObject({ id: z.string().max(100), reason: z.string().max(1000) })).max(10_000),
  /** The agent is stopping: the server marks it gone at once instead of after the timeout. */
  leaving: z.boolean().optional(),
});
export type PollRequest = z.infer<typeof pollRequestSchema>;

export interface PollAnswer {
  calls: AgentCall[];
  /** Calls to stop (a cancelled task, a step the server gave up on). */
  cancel: string[];
  /** The link timeout: after this long without the server, the agent stops its running work. */
  timeoutMs: number;
  /** The longest the server holds a poll: a poll unanswered well past it went into a dead link. */
  holdMs: number;
  /** A rotated credential: the agent saves it and uses it from its next request. */
  credential?: string;
}

const lineEventSchema = z.strictObject({
  call: z.string().max(100),
  kind: z.literal("line"),
  stream: z.enum(["stdout", "stderr"]),
  text: z.string().max(256 * 1024),
  cut: z.boolean(),
});
const resultEventSchema = z.strictObject({ call: z.string().max(100), kind: z.literal("result"), value: z.unknown() });
const errorEventSchema = z.strictObject({
  call: z.string().max(100),
  kind: z.literal("error"),
  message: z.string().max(4000),
});
const agentEventSchema = z.discriminatedUnion("kind", [lineEventSchema, resultEventSchema, errorEventSchema]);
export type AgentEvent = z.infer<typeof agentEventSchema>;

export const eventsRequestSchema = z.strictObject({
  /** This run of the agent (random at start) and the batch's number in it: a batch sent twice is taken once. */
  instance: z.string().min(1).max(100),
  sequence: z.number().int().min(0),
  events: z.array(agentEventSchema).max(10_000),
});
export type EventsRequest = z.infer<typeof eventsRequestSchema>;

/**
 * Exponential backoff with full jitter (AWS Architecture Blog, "Exponential Backoff And
 * Jitter"): a delay drawn uniformly from [0, min(cap, base·2^attempt)). After a server
 * restart 1,000 agents spread their reconnections over the window instead of arriving
 * together at each step of a fixed schedule.
 */
export function fullJitterDelay(
  attempt: number,
  options: { baseMs: number; capMs: number },
  random: () => number = Math.random,
): number {
  const ceiling = Math.min(options.capMs, options.baseMs * 2 ** Math.min(attempt, 30));
  return Math.floor(random() * ceiling);
}
