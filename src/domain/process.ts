import { z } from "zod";
import { nameSchema, roleSchema, slugSchema } from "./common.js";
import { versionRuleSchema } from "./versionRules.js";

/**
 * When a step runs, given how the steps before it went: on success of all before it
 * (the default), only after a failure, always, or when a variable expression is true
 * (`#{if …}` syntax, evaluated with the deployment's variables).
 */
const runConditionSchema = z.union([
  z.enum(["success", "failure", "always"]),
  z.strictObject({ variable: z.string().min(1).max(500) }),
]);

/**
 * One step of a deployment process. `config` is validated by the step kind named in
 * `kind` (src/steps/); this envelope holds what every kind shares.
 */
const stepSchema = z.strictObject({
  name: nameSchema,
  kind: z.string().min(1).max(50),
  /** Target roles the step runs on; empty means once, on the server's own host. */
  roles: z.array(roleSchema).max(20).default([]),
  /** Environment slugs the step runs in; empty means all. */
  environments: z.array(slugSchema).max(50).default([]),
  /** Environment slugs the step is skipped in. */
  excludeEnvironments: z.array(slugSchema).max(50).default([]),
  condition: runConditionSchema.default("success"),
  /** A failing required step fails the deployment; a failing optional one logs a warning. */
  required: z.boolean().default(true),
  config: z.record(z.string(), z.unknown()).default({}),
});
export type Step = z.infer<typeof stepSchema>;

/**
 * An image the project deploys: which feed and repository, and which tags qualify. A
 * release picks one tag (given, or the latest matching) and pins it by digest.
 */
const imageSchema = z.strictObject({
  /** Referred to as #{Ferry.Image[<name>]} in step configs. */
  name: slugSchema,
  feed: z.string().min(1).max(100).describe("feed slug or id"),
  repository: z.string().regex(/^[a-z0-9]+(?:[._-][a-z0-9]+)*(?:\/[a-z0-9]+(?:[._-][a-z0-9]+)*)*$/, {
    message: "use a registry repository name such as 'demo/app'",
  }),
  version: versionRuleSchema.default({ kind: "regex", pattern: ".+" }),
});
export type ProjectImage = z.infer<typeof imageSchema>;

export const processSchema = z.strictObject({
  images: z
    .array(imageSchema)
    .max(20)
    .default([])
    .refine((images) => new Set(images.map((image) => image.name)).size === images.length, {
      message: "give each image its own name",
    }),
  steps: z
    .array(stepSchema)
    .max(100)
    .refine((steps) => new Set(steps.map((step) => step.name.toLowerCase())).size === steps.length, {
      message: "give each step its own name (output variables refer to steps by name)",
    }),
});
export type Process = z.infer<typeof processSchema>;

/** Whether a step runs in the environment (by slug). */
export function stepRunsIn(step: Step, environmentSlug: string): boolean {
  if (step.excludeEnvironments.includes(environmentSlug)) return false;
  return step.environments.length === 0 || step.environments.includes(environmentSlug);
}
