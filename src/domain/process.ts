import { z } from "zod";
import { nameSchema, roleSchema, slugSchema } from "./common.js";
import { packageNameSchema } from "./packages.js";
import { stepFilesSchema } from "./stepFiles.js";
import { storedVersionRuleSchema, versionRuleSchema } from "./versionRules.js";

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
 * How a step reaches many targets: in batches of `window` targets (a count, or a percentage
 * of the step's targets, rounded up) that run in parallel, with a pause between batches. A
 * batch in which a target failed is a barrier: no later batch starts.
 */
const rollingSchema = z.strictObject({
  window: z
    .union([
      z.number().int().min(1, { message: "a window of at least 1 target" }).max(10_000),
      z.string().regex(/^(100|[1-9][0-9]?)%$/, {
        message: 'write the window as a number of targets (2) or a percentage from 1% to 100% ("25%")',
      }),
    ])
    .describe('How many targets run at once: a count (2) or a percentage of the step\'s targets ("25%", rounded up)'),
  pauseSeconds: z
    .number()
    .min(0)
    .max(3600, { message: "pause at most 3600 seconds between batches" })
    .default(0)
    .describe("Wait this long after a batch succeeded before the next one starts"),
});
export type RollingConfig = z.infer<typeof rollingSchema>;

/**
 * One step of a deployment process. `config` is validated by the step kind named in
 * `kind` (src/steps/); this envelope holds what every kind shares.
 */
export const stepSchema = z
  .strictObject({
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
    /** Rolling over the step's targets in batches; absent: one target after another. */
    rolling: rollingSchema.optional(),
    /**
     * Template files rendered per target and written through its transport (ADR 0051), on
     * kinds that deploy files; absent: none.
     */
    files: stepFilesSchema.optional(),
  })
  .superRefine((step, context) => {
    if (step.rolling && step.roles.length === 0) {
      context.addIssue({
        code: "custom",
        path: ["rolling"],
        message: "a rolling step runs over targets: give it roles, or leave rolling out",
      });
    }
  });
export type Step = z.infer<typeof stepSchema>;

/**
 * An image the project deploys: which feed and repository, and which tags qualify. A
 * release picks one tag (given, or the latest matching) and pins it by digest.
 */
function imageSchemaOf(versionRule: typeof versionRuleSchema) {
  return z.strictObject({
    /** Referred to as #{Ferry.Image[<name>]} in step configs. */
    name: slugSchema,
    feed: z.string().min(1).max(100).describe("feed slug or id"),
    repository: z.string().regex(/^[a-z0-9]+(?:[._-][a-z0-9]+)*(?:\/[a-z0-9]+(?:[._-][a-z0-9]+)*)*$/, {
      message: "use a registry repository name such as 'demo/app'",
    }),
    version: versionRule.default({ kind: "regex", pattern: ".+" }),
  });
}
const imageSchema = imageSchemaOf(versionRuleSchema);
export type ProjectImage = z.infer<typeof imageSchema>;

/**
 * A package of the built-in feed the project deploys (ADR 0044): a release pins one version
 * of it (given, or the newest pushed) by sha256; `package` and `process` steps unpack it.
 */
const processPackageSchema = z.strictObject({
  /** The package's name in the feed (`ferry package list`). */
  name: packageNameSchema,
});
export type ProcessPackage = z.infer<typeof processPackageSchema>;

/**
 * The process as an editor saves it (`processSchema`: every check of today) and as the store
 * reads it back (`storedProcessSchema`, ADR 0073): a definition saved before a check became
 * stricter still loads, and fails only where the stricter check matters (an image's version
 * rule when a release picks a tag by it; a step's config when the step runs).
 */
function processSchemaOf(anImage: typeof imageSchema) {
  return z.strictObject({
    images: z
      .array(anImage)
      .max(20)
      .default([])
      .refine((images) => new Set(images.map((image) => image.name)).size === images.length, {
        message: "give each image its own name",
      }),
    packages: z
      .array(processPackageSchema)
      .max(20)
      .default([])
      .refine((packages) => new Set(packages.map((item) => item.name)).size === packages.length, {
        message: "name each package once",
      }),
    steps: z
      .array(stepSchema)
      .max(100)
      .refine((steps) => new Set(steps.map((step) => step.name.toLowerCase())).size === steps.length, {
        message: "give each step its own name (output variables refer to steps by name)",
      }),
  });
}

export const processSchema = processSchemaOf(imageSchema);
export const storedProcessSchema = processSchemaOf(imageSchemaOf(storedVersionRuleSchema));
export type Process = z.infer<typeof processSchema>;

/** Whether a step runs in the environment (by slug). */
export function stepRunsIn(step: Step, environmentSlug: string): boolean {
  if (step.excludeEnvironments.includes(environmentSlug)) return false;
  return step.environments.length === 0 || step.environments.includes(environmentSlug);
}

/**
 * Which environments a change of the process alters: those where the steps that run there
 * (in order, with every setting) differ. `everyEnvironment` is true when the change reaches
 * environments no step names, today's and ones created later (a step without environments
 * changed, or the images did): such a change is a change for every environment.
 */
export function environmentsChangedBy(
  before: Process,
  after: Process,
  environmentSlugs: readonly string[],
): { slugs: string[]; everyEnvironment: boolean } {
  const runningIn = (process: Process, slug: string) =>
    canonicalJson(process.steps.filter((step) => stepRunsIn(step, slug)));
  const differsIn = (slug: string) => runningIn(before, slug) !== runningIn(after, slug);
  // An environment no step names stands for every such environment, including future ones:
  // no slug can contain a space, so this one matches no step's list.
  const unnamed = " any other environment";
  // A slug no environment has yet (or one renamed away) is an environment someone may
  // create later: changing what runs there is a change for every environment.
  const existing = new Set(environmentSlugs);
  const named = [...before.steps, ...after.steps].flatMap((step) => [
    ...step.environments,
    ...step.excludeEnvironments,
  ]);
  const future = [...new Set(named)].filter((slug) => !existing.has(slug));
  const everyEnvironment =
    differsIn(unnamed) ||
    future.some(differsIn) ||
    canonicalJson(before.images) !== canonicalJson(after.images) ||
    canonicalJson(before.packages) !== canonicalJson(after.packages);
  return { slugs: environmentSlugs.filter(differsIn), everyEnvironment };
}

/** JSON with object keys sorted, so that two equal values always give the same text. */
function canonicalJson(value: unknown): string {
  return JSON.stringify(value, (_key, item: unknown) =>
    item !== null && typeof item === "object" && !Array.isArray(item)
      ? Object.fromEntries(Object.entries(item).sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0)))
      : item,
  );
}
