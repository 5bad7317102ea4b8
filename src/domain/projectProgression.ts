import { z } from "zod";
import { permissions } from "./access.js";
import { pagingSchema, referenceSchema } from "./common.js";
import { taskStates } from "./tasks.js";

/*
 * A project's progression (Octopus calls it the same): for each environment of its
 * lifecycle what runs there and whether a promotion may go there now, and for a page of
 * releases where each was deployed and where it may go next, with the lifecycle's reason
 * when it may not. A client shows buttons from it; the deployment routes decide again.
 */

export const progressionQuerySchema = pagingSchema.extend({
  release: referenceSchema.optional().describe("only this release (version or id) in `releases`"),
});
export type ProgressionQuery = z.infer<typeof progressionQuerySchema>;

const namedSchema = z.object({ id: z.string(), slug: z.string(), name: z.string() });

const deploymentSummarySchema = z.object({
  deploymentId: z.string(),
  taskId: z.string(),
  release: z.string().describe("release version"),
  state: z.enum(taskStates),
  createdAt: z.string(),
  finishedAt: z.string().nullable(),
});

/** May it go there now; when not, the lifecycle's words (the same a deployment request would be refused with). */
const decisionSchema = z.object({
  allowed: z.boolean(),
  reason: z.string().nullable(),
});

const progressionEnvironmentSchema = z.object({
  environment: namedSchema,
  phase: z.string().describe("name of the lifecycle phase holding the environment"),
  phaseIndex: z.number().int(),
  autoDeploy: z.boolean(),
  optional: z.boolean(),
  live: deploymentSummarySchema.nullable().describe("the newest successful deployment: what runs there"),
  latest: deploymentSummarySchema.nullable().describe("the newest deployment in any state"),
  promotion: decisionSchema.extend({
    release: z.string().nullable().describe("the release a promotion would deploy: what the previous phase runs"),
  }),
  permissions: z.array(z.enum(permissions)).describe("what the caller may do on this project in this environment"),
});

const progressionReleaseSchema = z.object({
  id: z.string(),
  version: z.string(),
  notes: z.string(),
  createdBy: z.string(),
  createdAt: z.string(),
  environments: z.array(
    decisionSchema.extend({
      environment: z.string().describe("environment slug"),
      deployment: deploymentSummarySchema.nullable().describe("this release's newest deployment there"),
    }),
  ),
});

export const projectProgressionSchema = z.object({
  project: namedSchema,
  lifecycle: z.object({ slug: z.string(), name: z.string() }),
  /** The lifecycle's environments the caller may view, phase by phase. */
  environments: z.array(progressionEnvironmentSchema),
  /** A page of releases, newest first. */
  releases: z.array(progressionReleaseSchema),
  total: z.number().int().describe("releases of the project"),
  limit: z.number().int(),
  offset: z.number().int(),
});
export type ProjectProgression = z.infer<typeof projectProgressionSchema>;
export type ProgressionEnvironment = z.infer<typeof progressionEnvironmentSchema>;
export type ProgressionRelease = z.infer<typeof progressionReleaseSchema>;
export type DeploymentSummary = z.infer<typeof deploymentSummarySchema>;
