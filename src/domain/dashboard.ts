import { z } from "zod";
import { pagingSchema, referenceSchema } from "./common.js";
import { taskStates } from "./tasks.js";

export const dashboardQuerySchema = pagingSchema.extend({
  project: referenceSchema.optional().describe("only this project (id or slug)"),
  environment: referenceSchema.optional().describe("only this environment (id or slug)"),
});
export type DashboardQuery = z.infer<typeof dashboardQuerySchema>;

const namedSchema = z.object({ id: z.string(), slug: z.string(), name: z.string() });

/** One deployment as the dashboard shows it. */
const dashboardDeploymentSchema = z.object({
  deploymentId: z.string(),
  taskId: z.string(),
  release: z.string().describe("release version"),
  state: z.enum(taskStates).describe("state of the deployment's task"),
  createdAt: z.string(),
  startedAt: z.string().nullable(),
  finishedAt: z.string().nullable(),
});
export type DashboardDeployment = z.infer<typeof dashboardDeploymentSchema>;

const dashboardCellSchema = z.object({
  environment: z.string().describe("environment slug"),
  /** False for an environment the project deployed to before its lifecycle changed. */
  inLifecycle: z.boolean(),
  latest: dashboardDeploymentSchema.nullable().describe("the newest deployment, in whatever state"),
  live: dashboardDeploymentSchema
    .nullable()
    .describe("the newest successful deployment: the release the environment runs; null before the first success"),
});
export type DashboardCell = z.infer<typeof dashboardCellSchema>;

const dashboardRowSchema = z.object({
  project: namedSchema,
  lifecycle: z.string().describe("lifecycle slug"),
  /** The environments of the project's lifecycle and any other it has deployed to, in environment order. */
  environments: z.array(dashboardCellSchema),
});

/** Projects × environments → live release, newest deployment and its state; paged by project. */
export const dashboardSchema = z.object({
  /** Server time of the answer: an age is generatedAt − (finishedAt ?? startedAt ?? createdAt). */
  generatedAt: z.string(),
  /** The columns: every environment (or the one asked for), in environment order. */
  environments: z.array(namedSchema),
  items: z.array(dashboardRowSchema),
  total: z.number().int().describe("projects matching, across all pages"),
  limit: z.number().int(),
  offset: z.number().int(),
});
export type Dashboard = z.infer<typeof dashboardSchema>;
