import { isAbsolute, normalize } from "node:path";
import { z } from "zod";
import { stepSchema } from "../../domain/process.js";
import { ENV_NAME_HINT } from "../../runtimes/docker.js";

/*
 * The isolated test group's configuration (ADR 0045): the services it deploys on a network
 * of its own, the limits everything it starts gets, and the steps it runs against them.
 */

/** Defaults that let a test deployment run beside others on a shared host without starving them. */
export const DEFAULT_LIMITS = { cpus: 1, memoryMb: 512, pids: 512 } as const;

const portSchema = z.number().int().min(1).max(65535);
const envSchema = z
  .record(z.string().regex(/^[A-Za-z_][A-Za-z0-9_]{0,254}$/, { message: ENV_NAME_HINT }), z.string().max(65_536))
  .default({});

const limitsSchema = z.strictObject({
  /** CPUs (0.5 = half of one). */
  cpus: z
    .number()
    .positive({ message: "give cpus above 0 (0.5 = half of one CPU)" })
    .max(64, { message: "at most 64 cpus" })
    .default(DEFAULT_LIMITS.cpus),
  /** Memory in MiB, swap included: beyond it the kernel kills the container (OOMKilled). */
  memoryMb: z
    .number()
    .int({ message: "give memoryMb as a whole number of MiB" })
    .min(6, { message: "memoryMb must be at least 6 (the Docker engine's minimum)" })
    .max(1024 * 1024)
    .default(DEFAULT_LIMITS.memoryMb),
  /** Processes and threads at once. */
  pids: z
    .number()
    .int()
    .min(8, { message: "pids must be at least 8 (a shell and its children need a few)" })
    .max(1_000_000)
    .default(DEFAULT_LIMITS.pids),
});

const healthCheckSchema = z.strictObject({
  path: z.string().startsWith("/", { message: "the health check path starts with '/', e.g. /health" }).max(2048),
  expectedStatus: z.number().int().min(100).max(599).default(200),
  intervalMs: z.number().int().min(50).max(60_000).default(500),
  timeoutMs: z.number().int().min(50).max(60_000).default(2_000),
  deadlineSeconds: z.number().int().min(1).max(3600).default(60),
});

const serviceSchema = z.strictObject({
  /** The service's name: its host name on the group's network and its variables' key. */
  name: z.string().regex(/^[a-z][a-z0-9-]{0,30}$/, {
    message: "use up to 31 lowercase letters, digits and '-', starting with a letter (e.g. web)",
  }),
  /** Template of the image reference, e.g. "#{Ferry.Image[web]}". */
  image: z.string().min(1).max(1024),
  env: envSchema,
  /** Replaces the image's command (an argument array; no shell unless it names one). */
  command: z.array(z.string().max(65_536)).min(1).max(200).optional(),
  /** The container port the service listens on: published on the target's 127.0.0.1 at a port the engine picks. */
  port: portSchema.optional(),
  /** Waited for before the group's steps run; needs `port`. Without it the service must stay up `settleSeconds`. */
  healthCheck: healthCheckSchema.optional(),
  /** A fresh, empty volume per run mounted at each path, removed with the group. */
  volumes: z
    .array(
      z.strictObject({
        target: z
          .string()
          .max(4096)
          .refine((path) => isAbsolute(path) && normalize(path) === path, {
            message: "give a normalised absolute path inside the container, e.g. /var/lib/data",
          }),
      }),
    )
    .max(10)
    .default([]),
  settleSeconds: z.number().min(0).max(300).default(1),
});
export type IsolatedService = z.infer<typeof serviceSchema>;

/** What a step nested in a group may not have: it runs where the group runs, in every environment the group runs in. */
const nestedStepSchema = stepSchema.superRefine((step, context) => {
  if (step.kind === "isolated") {
    context.addIssue({ code: "custom", path: ["kind"], message: "an isolated group cannot hold another one" });
  }
  if (step.roles.length > 0) {
    context.addIssue({
      code: "custom",
      path: ["roles"],
      message: "a step inside an isolated group runs on the group's target: give roles to the group, not to its steps",
    });
  }
  if (step.rolling) {
    context.addIssue({ code: "custom", path: ["rolling"], message: "a step inside an isolated group does not roll" });
  }
  // Template files (ADR 0051) are captured and checked for the process's own steps only.
  if (step.files !== undefined && step.files.length > 0) {
    context.addIssue({
      code: "custom",
      path: ["files"],
      message: "a step inside an isolated group takes no template files: write them in a step before the group",
    });
  }
  if (step.environments.length > 0 || step.excludeEnvironments.length > 0) {
    context.addIssue({
      code: "custom",
      path: ["environments"],
      message: "choose environments on the group, not on the steps inside it",
    });
  }
});

/**
 * Each nested step's own config, validated by its kind (the registry is passed in: it lists
 * this kind too, so importing it here would be a cycle).
 */
export function isolatedConfigSchema(
  validateNested: (kind: string, config: unknown) => { pointer: string; detail: string }[],
) {
  return z
    .strictObject({
      services: z
        .array(serviceSchema)
        .min(1, {
          message: "name at least one service to deploy (e.g. { name: web, image: '#{Ferry.Image[web]}', port: 8080 })",
        })
        .max(20)
        .refine((services) => new Set(services.map((service) => service.name)).size === services.length, {
          message: "give each service its own name",
        }),
      limits: limitsSchema.default(DEFAULT_LIMITS),
      pullTimeoutSeconds: z.number().int().min(1).max(3600).default(600),
      steps: z
        .array(nestedStepSchema)
        .min(1, { message: "give the group at least one test step to run against the services" })
        .max(50)
        .refine((steps) => new Set(steps.map((step) => step.name.toLowerCase())).size === steps.length, {
          message: "give each step of the group its own name",
        }),
    })
    .superRefine((config, context) => {
      for (const [index, service] of config.services.entries()) {
        if (service.healthCheck && service.port === undefined) {
          context.addIssue({
            code: "custom",
            path: ["services", index, "healthCheck"],
            message: "a health check needs the service's port: add port (the container port it listens on)",
          });
        }
      }
      for (const [index, step] of config.steps.entries()) {
        for (const issue of validateNested(step.kind, step.config)) {
          context.addIssue({
            code: "custom",
            path: ["steps", index, ...pathOf(issue.pointer)],
            message: issue.detail,
          });
        }
      }
    });
}
export type IsolatedConfig = z.infer<ReturnType<typeof isolatedConfigSchema>>;

/** "/kind" → ["kind"]; "/config/url" → ["config", "url"] (a JSON pointer back into a path). */
function pathOf(pointer: string): (string | number)[] {
  return pointer
    .split("/")
    .slice(1)
    .map((part) => part.replace(/~1/g, "/").replace(/~0/g, "~"));
}
