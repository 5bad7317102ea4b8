import { z } from "zod";
import { atLeastOneField, descriptionSchema, nameSchema, slugSchema, timestampsShape } from "./common.js";

/**
 * What a deployment does with a target of the environment it cannot reach (its host is down,
 * its link cut): `fail` the deployment (the default, ADR 0032) or `skip` the target — leave it
 * out, say so in the log, and deploy to the others.
 */
export const unavailableTargetPolicies = ["fail", "skip"] as const;
export type UnavailableTargetPolicy = (typeof unavailableTargetPolicies)[number];
const unavailableTargetsSchema = z.enum(unavailableTargetPolicies, {
  message:
    'write "fail" (a deployment fails when a target cannot be reached) or "skip" (it leaves that target out and goes on)',
});

export const environmentSchema = z.object({
  id: z.string(),
  slug: z.string(),
  name: z.string(),
  description: z.string(),
  /** 0-based place in the ordered list (dev before test before prod). */
  position: z.number().int(),
  unavailableTargets: z
    .enum(unavailableTargetPolicies)
    .describe("What a deployment does with a target it cannot reach: fail, or skip it and go on"),
  ephemeral: z
    .boolean()
    .describe("Torn down (what is deployed there removed) and deleted by `ferry env delete` or after ttlMinutes"),
  ttlMinutes: z
    .number()
    .int()
    .nullable()
    .describe(
      "An ephemeral environment is torn down this many minutes after its last deployment (or creation); null: only when deleted",
    ),
  ...timestampsShape,
});
export type Environment = z.infer<typeof environmentSchema>;

/** Minutes after the last deployment (or creation) an ephemeral environment is torn down; null: only when deleted. */
export const ttlMinutesSchema = z
  .number({ message: "give ttlMinutes as a number of minutes, or null for no automatic tear-down" })
  .int({ message: "give ttlMinutes as a whole number of minutes" })
  .min(1, { message: "ttlMinutes must be at least 1" })
  .max(525_600, { message: "ttlMinutes must be at most 525600 (a year)" })
  .nullable()
  .describe("Minutes after the last deployment (or creation) an ephemeral environment is torn down and deleted");

const environmentFields = {
  name: nameSchema,
  slug: slugSchema,
  description: descriptionSchema,
  position: z.number().int().min(0),
  unavailableTargets: unavailableTargetsSchema.describe(
    'When a target of the environment cannot be reached: "fail" the deployment (default) or "skip" the target',
  ),
  ephemeral: z
    .boolean({ message: "write ephemeral as true or false" })
    .describe("A short-lived environment (e.g. per branch): deleting it tears down what is deployed there (ADR 0045)"),
  ttlMinutes: ttlMinutesSchema,
};

/** A TTL only means something on an ephemeral environment: said on the field. */
function ttlNeedsEphemeral(
  input: { ephemeral?: boolean | undefined; ttlMinutes?: number | null | undefined },
  context: z.RefinementCtx,
) {
  if (input.ttlMinutes !== undefined && input.ttlMinutes !== null && input.ephemeral === false) {
    context.addIssue({
      code: "custom",
      path: ["ttlMinutes"],
      message: "only an ephemeral environment has a ttlMinutes: set ephemeral: true, or leave ttlMinutes out",
    });
  }
}

export const createEnvironmentSchema = z
  .strictObject({
    ...environmentFields,
    slug: environmentFields.slug.optional(),
    description: environmentFields.description.default(""),
    unavailableTargets: environmentFields.unavailableTargets.default("fail"),
    /** Where to insert; the end of the list when absent. */
    position: environmentFields.position.optional(),
    ephemeral: environmentFields.ephemeral.default(false),
    ttlMinutes: environmentFields.ttlMinutes.optional(),
  })
  .superRefine(ttlNeedsEphemeral);

/** The policy may be left out by callers inside the server (the demo, tests): "fail" then. */
export type CreateEnvironment = Omit<
  z.infer<typeof createEnvironmentSchema>,
  "unavailableTargets" | "ephemeral" | "ttlMinutes"
> & {
  unavailableTargets?: UnavailableTargetPolicy | undefined;
  ephemeral?: boolean | undefined;
  ttlMinutes?: number | null | undefined;
};

export const updateEnvironmentSchema = atLeastOneField(environmentFields).superRefine(ttlNeedsEphemeral);
export type UpdateEnvironment = z.infer<typeof updateEnvironmentSchema>;
