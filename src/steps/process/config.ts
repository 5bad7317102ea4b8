import { z } from "zod";
import { packageNameSchema } from "../../domain/packages.js";
import { blueGreenOptionsSchema, routeShape } from "../blueGreen/config.js";

/*
 * The process step's configuration: a command the process runtime supervises on the
 * target (docs/decisions/0029-process-runtime.md), and how a new instance replaces the
 * old — `recreate` (stop the old, start the new: a short gap) or `blueGreen` (a new colour
 * beside the live one, switched into traffic once healthy), as for containers.
 */

const pathTemplateSchema = z.string().min(1).max(4096);

const commonShape = {
  /** Template of the program: a path, a name looked up in PATH, or "node" (the Node.js that runs Ferry). */
  command: z.string().min(1).max(4096),
  /** Arguments; each is a template rendered with the variables and passed as one argv entry. */
  args: z.array(z.string().max(8192)).max(100).default([]),
  /** Environment variables of the process (besides PORT); each value is a template. */
  env: z
    .record(
      z.string().regex(/^[A-Za-z_][A-Za-z0-9_]{0,254}$/, {
        message: "use letters, digits and '_', not starting with a digit",
      }),
      z.string().max(65_536),
    )
    .refine((env) => !("PORT" in env), { message: "PORT is set by Ferry: the port each instance listens on" })
    .default({}),
  /**
   * Template of an absolute directory on the target (an unpacked release, say): copied into
   * the instance's own directory, which becomes its working directory. The copy is made
   * as the account the instance runs as, so that account must be able to read it.
   */
  copyFrom: pathTemplateSchema.optional(),
  /**
   * A package of the project's process (ADR 0044): the release's pinned version is unpacked
   * on the target (sha256 checked there) and copied into the instance's own directory, its
   * working directory — what copyFrom does for a directory already on the host.
   */
  package: packageNameSchema.optional(),
  /** Template of an absolute working directory, when nothing is copied; default: the instance's own (empty) directory. */
  workingDirectory: pathTemplateSchema.optional(),
  /** `always` (the default) restarts it whenever it exits, `on-failure` when it exits with an error, `no` never. */
  restartPolicy: z.enum(["no", "on-failure", "always"]).default("always"),
  /** Limits the kernel enforces on the process (setrlimit through prlimit). */
  limits: z
    .strictObject({
      /** RLIMIT_AS in MiB: virtual memory, not resident memory (Node.js needs about 1 GiB of it to start). */
      addressSpaceMb: z
        .number()
        .int()
        .min(16)
        .max(1024 * 1024)
        .optional(),
      /** RLIMIT_NOFILE: open files and sockets. */
      openFiles: z.number().int().min(16).max(1_048_576).optional(),
    })
    .default({}),
  /** The new instance must still be running this long after it started, or the step fails with its log. */
  settleSeconds: z.number().min(0).max(300).default(2),
  /** How long an instance gets to stop after SIGTERM before it is killed. */
  stopTimeoutSeconds: z.number().int().min(0).max(600).default(10),
};

const onlyFor = (message: string) => z.never({ error: message }).optional();

/** `recreate` stops and removes the running instance, then starts the new one in its place (a short gap). */
const recreateConfigSchema = z.strictObject({
  strategy: z.literal("recreate"),
  ...commonShape,
  /** Template of the instance's name; default "ferry-<project>-<environment>". */
  name: z.string().min(1).max(256).optional(),
  /** The port it is told to listen on (PORT); absent: a free one (see the port output). */
  port: z.number().int().min(1).max(65535).optional(),
  route: onlyFor("route is only used with strategy: blueGreen"),
  blueGreen: onlyFor("blueGreen is only used with strategy: blueGreen"),
});
export type ProcessRecreateConfig = z.infer<typeof recreateConfigSchema>;

/** `blueGreen` starts the new colour beside the live one, on a free port, and switches the route to it once healthy. */
const blueGreenConfigSchema = z.strictObject({
  strategy: z.literal("blueGreen"),
  ...commonShape,
  /** The route whose traffic the process serves; each colour listens on a free port of its own (PORT). */
  route: z.strictObject(routeShape, {
    error: (issue) =>
      issue.input === undefined
        ? "strategy blueGreen needs a route: { host } (the proxy sends its traffic to the colour's PORT)"
        : undefined,
  }),
  blueGreen: blueGreenOptionsSchema.optional(),
  name: onlyFor("blue/green colours are named <project>-<environment>-<release>-<id>; leave `name` out"),
  port: onlyFor(
    "two colours run side by side, so they cannot share a port; leave `port` out (each colour gets a free one as PORT) and send traffic through the route",
  ),
});
export type ProcessBlueGreenConfig = z.infer<typeof blueGreenConfigSchema>;

const strategyConfigSchema = z.discriminatedUnion("strategy", [recreateConfigSchema, blueGreenConfigSchema]);
type StrategyConfig = z.output<typeof strategyConfigSchema>;

/** What both strategies share, checked first so one answer names every problem of those fields. */
const sharedFieldsSchema = z.looseObject({ strategy: z.enum(["recreate", "blueGreen"]), ...commonShape });

/** Left out, the strategy is recreate, as for the container step. */
export const processConfigSchema = z
  .preprocess(
    (input) =>
      input !== null && typeof input === "object" && !Array.isArray(input) && !("strategy" in input)
        ? { strategy: "recreate", ...input }
        : input,
    sharedFieldsSchema.pipe(
      strategyConfigSchema as unknown as z.ZodType<StrategyConfig, z.output<typeof sharedFieldsSchema>>,
    ),
  )
  .refine((config) => !(config.copyFrom !== undefined && config.workingDirectory !== undefined), {
    message: "give copyFrom (the copy becomes the working directory) or workingDirectory, not both",
    path: ["workingDirectory"],
  })
  .refine((config) => !(config.package !== undefined && (config.copyFrom ?? config.workingDirectory) !== undefined), {
    message: "give package (its unpacked copy becomes the working directory) or copyFrom / workingDirectory, not both",
    path: ["package"],
  });
export type ProcessConfig = z.infer<typeof processConfigSchema>;
