import { z } from "zod";
import { referenceSchema } from "./common.js";

/*
 * Retention of a runbook's finished runs (issue 14, part 7; ADR 0036) and of their artifacts
 * (part 5; ADR 0037): one policy type and one rule for both. Per runbook and environment
 * ("*": every environment without a policy of its own), the newest `keepRuns` finished runs
 * are kept and none finished more than `keepDays` ago — never the newest run that
 * succeeded (the last good backup). Run retention deletes the runs; artifact retention only
 * their artifacts, usually sooner.
 */

/** What a retention keeps: the runs themselves, or only their artifacts (the words of its field descriptions). */
export type Retained = "runs" | "artifacts";

const WORDS: Record<Retained, { runs: string; days: string }> = {
  runs: {
    runs: "keep at most this many finished runs (the newest)",
    days: "keep finished runs at most this many days",
  },
  artifacts: {
    runs: "keep the artifacts of at most this many finished runs (the newest)",
    days: "keep the artifacts of finished runs at most this many days",
  },
};

function policySchema(retained: Retained) {
  return z
    .strictObject({
      environment: z
        .union([z.literal("*"), referenceSchema])
        .default("*")
        .describe("an environment (slug or id), or * for every environment without a policy of its own"),
      keepRuns: z.number().int().min(1).max(100_000).nullable().default(null).describe(WORDS[retained].runs),
      keepDays: z.number().int().min(1).max(36_500).nullable().default(null).describe(WORDS[retained].days),
    })
    .refine((policy) => policy.keepRuns !== null || policy.keepDays !== null, {
      message: "give keepRuns, keepDays or both (a policy that keeps everything is no policy: remove it)",
      path: ["keepRuns"],
    });
}

/** A runbook's retention (of runs or of artifacts): one policy per environment and '*'. */
export function retentionSchemaOf(retained: Retained) {
  return z.strictObject({
    policies: z
      .array(policySchema(retained))
      .max(50)
      .refine((policies) => new Set(policies.map((policy) => policy.environment)).size === policies.length, {
        message: "give each environment (and '*') one policy",
      }),
  });
}

export type Retention = z.infer<ReturnType<typeof retentionSchemaOf>>;
export type RetentionPolicy = Retention["policies"][number];

/** A finished run of a runbook in one environment, as retention sees it. */
export interface FinishedRun {
  taskId: string;
  /** When its task finished (ISO 8601). */
  finishedAt: string;
  succeeded: boolean;
}

/**
 * The runs past a policy, of one runbook in one environment: past the newest `keepRuns`, or
 * finished more than `keepDays` ago — never the newest run that succeeded, which is what
 * someone looks at to know the last good backup. Runs finished at the same time are
 * ordered by task id, so the answer does not depend on the order given.
 */
export function runsPastRetention(
  runs: readonly FinishedRun[],
  policy: Pick<RetentionPolicy, "keepRuns" | "keepDays">,
  now: Date,
): string[] {
  const newestFirst = [...runs].sort((a, b) =>
    a.finishedAt < b.finishedAt ? 1 : a.finishedAt > b.finishedAt ? -1 : a.taskId < b.taskId ? 1 : -1,
  );
  const lastSuccess = newestFirst.find((run) => run.succeeded)?.taskId;
  const oldest = policy.keepDays === null ? null : now.getTime() - policy.keepDays * 86_400_000;
  return newestFirst
    .filter(
      (run, index) =>
        run.taskId !== lastSuccess &&
        ((policy.keepRuns !== null && index >= policy.keepRuns) ||
          (oldest !== null && Date.parse(run.finishedAt) < oldest)),
    )
    .map((run) => run.taskId);
}
