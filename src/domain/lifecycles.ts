import { z } from "zod";
import {
  atLeastOneField,
  descriptionSchema,
  nameSchema,
  referenceSchema,
  slugSchema,
  timestampsShape,
} from "./common.js";
import type { FieldIssue } from "./errors.js";

const phaseSchema = z.object({
  name: z.string(),
  environments: z.array(z.string()).describe("environment slugs"),
  /** Deploy to this phase's environments on its own when the previous phase succeeds. */
  autoDeploy: z.boolean(),
  /** A release may progress past this phase without deploying to it. */
  optional: z.boolean(),
  /** A deployment here that skipped a failed required step (guided failure) still counts as a success. */
  acceptSkippedSteps: z.boolean(),
  /** Approvals here refuse the person who started the deployment (an approval step may override it). */
  separateApprover: z.boolean(),
});

export const lifecycleSchema = z.object({
  id: z.string(),
  slug: z.string(),
  name: z.string(),
  description: z.string(),
  phases: z.array(phaseSchema),
  ...timestampsShape,
});
export type Lifecycle = z.infer<typeof lifecycleSchema>;

const phaseInputSchema = z.strictObject({
  /** Defaults to the name of the phase's first environment. */
  name: nameSchema.optional(),
  environments: z.array(referenceSchema).min(1, { message: "a phase needs at least one environment" }),
  autoDeploy: z.boolean().default(false),
  optional: z.boolean().default(false),
  /** Left out: false (kept optional so that older ferry.yml files and clients need not name them). */
  acceptSkippedSteps: z.boolean().optional(),
  separateApprover: z.boolean().optional(),
});
export type PhaseInput = z.infer<typeof phaseInputSchema>;

const lifecycleFields = {
  name: nameSchema,
  slug: slugSchema,
  description: descriptionSchema,
  phases: z.array(phaseInputSchema).min(1, { message: "a lifecycle needs at least one phase" }).max(50),
};

export const createLifecycleSchema = z.strictObject({
  ...lifecycleFields,
  slug: lifecycleFields.slug.optional(),
  description: lifecycleFields.description.default(""),
});
export type CreateLifecycle = z.infer<typeof createLifecycleSchema>;

export const updateLifecycleSchema = atLeastOneField(lifecycleFields);
export type UpdateLifecycle = z.infer<typeof updateLifecycleSchema>;

/** A phase with its environment references resolved to ids and names. */
export interface ResolvedPhase {
  name: string;
  environmentIds: string[];
  autoDeploy: boolean;
  optional: boolean;
  acceptSkippedSteps?: boolean | undefined;
  separateApprover?: boolean | undefined;
}

/**
 * Rules a lifecycle must satisfy beyond its shape: an environment belongs to one phase
 * only (otherwise "which phase has this release reached" is ambiguous) and phase names
 * are unique. Returns the problems found, each addressed by pointer into the body.
 */
export function checkPhases(phases: readonly ResolvedPhase[]): FieldIssue[] {
  const issues: FieldIssue[] = [];
  const phaseOfEnvironment = new Map<string, number>();
  const phaseNames = new Map<string, number>();
  phases.forEach((phase, index) => {
    const previous = phaseNames.get(phase.name.toLowerCase());
    if (previous !== undefined) {
      issues.push({
        pointer: `/phases/${index}/name`,
        detail: `phase name '${phase.name}' is already used by phase ${previous}; give each phase its own name`,
      });
    } else {
      phaseNames.set(phase.name.toLowerCase(), index);
    }
    phase.environmentIds.forEach((environmentId, environmentIndex) => {
      const owner = phaseOfEnvironment.get(environmentId);
      if (owner !== undefined) {
        issues.push({
          pointer: `/phases/${index}/environments/${environmentIndex}`,
          detail: `this environment is already in phase ${owner}; an environment can be in one phase only`,
        });
      } else {
        phaseOfEnvironment.set(environmentId, index);
      }
    });
  });
  return issues;
}
