import { z } from "zod";

export const taskStates = ["queued", "running", "waiting", "succeeded", "failed", "cancelled", "interrupted"] as const;
export type TaskState = (typeof taskStates)[number];

/** A task in one of these states never changes again. */
export function isTerminal(state: TaskState): boolean {
  switch (state) {
    case "queued":
    case "running":
    case "waiting":
      return false;
    case "succeeded":
    case "failed":
    case "cancelled":
    case "interrupted":
      return true;
    default: {
      const unknown: never = state;
      throw new Error(`unknown task state ${String(unknown)}`);
    }
  }
}

export const taskSchema = z.object({
  id: z.string(),
  kind: z.string(),
  state: z.enum(taskStates),
  title: z.string(),
  project: z.string().nullable().describe("project id"),
  environment: z.string().nullable().describe("environment id"),
  error: z.string().nullable(),
  result: z.unknown(),
  createdBy: z.string(),
  createdAt: z.string(),
  startedAt: z.string().nullable(),
  finishedAt: z.string().nullable(),
  cancelRequested: z.boolean(),
  logLines: z.number().int(),
});
export type Task = z.infer<typeof taskSchema>;

const taskLogLevels = ["info", "warn", "error", "step"] as const;
export type TaskLogLevel = (typeof taskLogLevels)[number];

export const taskLogLineSchema = z.object({
  line: z.number().int(),
  at: z.string(),
  level: z.enum(taskLogLevels),
  step: z.string().nullable(),
  text: z.string(),
});
export type TaskLogLine = z.infer<typeof taskLogLineSchema>;
