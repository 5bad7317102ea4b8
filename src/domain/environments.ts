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
  ...timestampsShape,
});
export type Environment = z.infer<typeof environmentSchema>;

const environmentFields = {
  name: nameSchema,
  slug: slugSchema,
  description: descriptionSchema,
  position: z.number().int().min(0),
  unavailableTargets: unavailableTargetsSchema.describe(
    'When a target of the environment cannot be reached: "fail" the deployment (default) or "skip" the target',
  ),
};

export const createEnvironmentSchema = z.strictObject({
  ...environmentFields,
  slug: environmentFields.slug.optional(),
  description: environmentFields.description.default(""),
  unavailableTargets: environmentFields.unavailableTargets.default("fail"),
  /** Where to insert; the end of the list when absent. */
  position: environmentFields.position.optional(),
});
/** The policy may be left out by callers inside the server (the demo, tests): "fail" then. */
export type CreateEnvironment = Omit<z.infer<typeof createEnvironmentSchema>, "unavailableTargets"> & {
  unavailableTargets?: UnavailableTargetPolicy | undefined;
};

export const updateEnvironmentSchema = atLeastOneField(environmentFields);
export type UpdateEnvironment = z.infer<typeof updateEnvironmentSchema>;
