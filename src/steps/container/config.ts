import { isIP } from "node:net";
import { z } from "zod";
import { ENV_NAME_HINT } from "../../runtimes/docker.js";
import { blueGreenOptionsSchema, routeShape } from "../blueGreen/config.js";

/*
 * The container step's configuration: what both strategies share, and a discriminated
 * union on `strategy` for what each adds — `recreate` (stop the old container, start the
 * new one: a short gap) and `blueGreen` (a new colour beside the live one, switched into
 * traffic once healthy). A field of the other strategy is refused, naming why.
 */

const portSchema = z.number().int().min(1).max(65535);

const publishedPortShape = {
  container: portSchema,
  protocol: z.enum(["tcp", "udp"]).default("tcp"),
  /** Address the port is published on; 127.0.0.1 unless another is asked for. */
  hostIp: z
    .string()
    .refine((address) => isIP(address) !== 0, {
      message: "use an IPv4 or IPv6 address, e.g. 127.0.0.1 or 0.0.0.0",
    })
    .default("127.0.0.1"),
};

const commonShape = {
  /** Template of the image reference, e.g. "#{Ferry.Image[web]}" or "registry:5000/team/app@sha256:…". */
  image: z.string().min(1).max(1024),
  /** Environment variables of the container; each value is a template. */
  env: z
    .record(z.string().regex(/^[A-Za-z_][A-Za-z0-9_]{0,254}$/, { message: ENV_NAME_HINT }), z.string().max(65_536))
    .default({}),
  volumes: z
    .array(
      z.strictObject({
        /** Template: a volume name ("shop-data") or an absolute host path (a bind mount). */
        source: z.string().min(1).max(4096),
        /** Template: an absolute path inside the container. */
        target: z.string().min(1).max(4096),
        readOnly: z.boolean().default(false),
      }),
    )
    .max(50)
    .default([]),
  /** Networks (which must exist) the container joins; the default bridge when empty. */
  networks: z
    .array(z.string().regex(/^[a-zA-Z0-9][a-zA-Z0-9_.-]{0,127}$/, { message: "use letters, digits, '_', '.' and '-'" }))
    .max(10)
    .default([]),
  /** CPU limit in CPUs (0.5 = half of one). */
  cpus: z.number().positive().max(1024).optional(),
  /** Memory limit in MiB (the engine's minimum is 6). */
  memoryMb: z
    .number()
    .int()
    .min(6)
    .max(1024 * 1024)
    .optional(),
  restartPolicy: z.enum(["no", "always", "unless-stopped", "on-failure"]).default("unless-stopped"),
  /** The new container must still be running this long after it started, or the step fails with its log. */
  settleSeconds: z.number().min(0).max(300).default(2),
  /** How long the previous container gets to stop after SIGTERM before it is killed. */
  stopTimeoutSeconds: z.number().int().min(0).max(600).default(10),
  pullTimeoutSeconds: z.number().int().min(1).max(3600).default(600),
};

/** A field the strategy does not use: refused with a message saying which strategy it belongs to. */
const onlyFor = (message: string) => z.never({ error: message }).optional();

const blueGreenRouteSchema = z.strictObject(
  {
    ...routeShape,
    /** The container port the app listens on; each colour publishes it on 127.0.0.1 at a port the engine picks. */
    port: portSchema,
  },
  {
    error: (issue) =>
      issue.input === undefined
        ? "strategy blueGreen needs a route: { host, port } (the container port the proxy sends traffic to)"
        : undefined,
  },
);

/** `recreate` stops and removes the running container, then starts the new one in its place (a short gap in service). */
const recreateConfigSchema = z.strictObject({
  strategy: z.literal("recreate"),
  ...commonShape,
  /** Template of the container's name; default "ferry-<project>-<environment>". */
  name: z.string().min(1).max(256).optional(),
  ports: z
    .array(
      z.strictObject({
        /** Port on the host; absent: the engine picks a free one (see the hostPort output). */
        host: portSchema.optional(),
        ...publishedPortShape,
      }),
    )
    .max(50)
    .default([]),
  route: onlyFor("route is only used with strategy: blueGreen"),
  blueGreen: onlyFor("blueGreen is only used with strategy: blueGreen"),
});
export type RecreateConfig = z.infer<typeof recreateConfigSchema>;

/** `blueGreen` starts the new colour beside the live one and switches the route to it once healthy. */
const blueGreenConfigSchema = z.strictObject({
  strategy: z.literal("blueGreen"),
  ...commonShape,
  /** The route whose traffic the container serves. */
  route: blueGreenRouteSchema,
  /** The health check, pre-switch tests, drain, bake and retention around the switch. */
  blueGreen: blueGreenOptionsSchema.optional(),
  name: onlyFor("blue/green colours are named <project>-<environment>-<release>-<id>; leave `name` out"),
  ports: z
    .array(
      z.strictObject({
        host: onlyFor(
          "two colours run side by side, so they cannot share a host port; leave `host` out (the engine picks one) and send traffic through the route",
        ),
        ...publishedPortShape,
      }),
    )
    .max(50)
    .default([]),
});
export type BlueGreenConfig = z.infer<typeof blueGreenConfigSchema>;

const strategyConfigSchema = z.discriminatedUnion("strategy", [recreateConfigSchema, blueGreenConfigSchema]);
type StrategyConfig = z.output<typeof strategyConfigSchema>;

/**
 * What every strategy shares, checked first so that one answer names every problem of the
 * shared fields, even when the strategy itself is wrong (a union stops at its discriminator).
 */
const sharedFieldsSchema = z.looseObject({
  strategy: z.enum(["recreate", "blueGreen"]),
  ...commonShape,
  ports: z
    .array(z.looseObject({ host: portSchema.optional(), ...publishedPortShape }))
    .max(50)
    .default([]),
});

/** Left out, the strategy is recreate (what a container step did before strategies existed). */
export const containerConfigSchema = z.preprocess(
  (input) =>
    input !== null && typeof input === "object" && !Array.isArray(input) && !("strategy" in input)
      ? { strategy: "recreate", ...input }
      : input,
  sharedFieldsSchema.pipe(
    strategyConfigSchema as unknown as z.ZodType<StrategyConfig, z.output<typeof sharedFieldsSchema>>,
  ),
);
export type ContainerConfig = z.infer<typeof containerConfigSchema>;
