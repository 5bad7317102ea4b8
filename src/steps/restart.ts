import { z } from "zod";
import { TaskFailure } from "../engine/types.js";
import { coloursOf } from "../runtimes/colours.js";
import { blueGreenOptionsSchema, colourHealthCheck } from "./blueGreen/config.js";
import { runBlueGreen } from "./blueGreen/strategy.js";
import { findService, type Service, serviceShape } from "./operations/liveService.js";
import type { StepKind, StepRunContext } from "./types.js";

/** A restart leaves the colours a rollback needs as it found them: the colour it replaces (same release) goes. */
const DEFAULT_RETAIN = blueGreenOptionsSchema.parse({}).retain;

const restartConfigSchema = z.strictObject({
  ...serviceShape,
  /** The fresh colour's health check; default: the one the live colour was deployed with (its labels, ADR 0072). */
  healthCheck: blueGreenOptionsSchema.shape.healthCheck.optional(),
  /** How long requests in flight on the old colour may take to finish after the switch. */
  drainSeconds: z.number().min(0).max(3600).default(30),
  /** The fresh colour (or the restarted container) must still run this long after its start. */
  settleSeconds: z.number().min(0).max(300).default(2),
  /** How long the old colour (or the restarted container) gets to stop after SIGTERM before it is killed. */
  stopTimeoutSeconds: z.number().int().min(0).max(600).default(10),
});
type RestartConfig = z.infer<typeof restartConfigSchema>;

/**
 * Restarts the project's service in the environment on each target, on whichever runtime of
 * the target runs it (a container, or a supervised process: ADR 0052). A routed service goes
 * through the blue/green path: a fresh colour of the live release (a clone of the live
 * colour — a container from the same image by id, env, mounts, limits; a process with the
 * same command, env, limits and a copy of its files), health-checked, switched into
 * traffic, the old one drained and removed — so no request is dropped. A service that is
 * not routed (a recreate deployment's instance) is stopped and started again: a short gap.
 */
export const restartStep: StepKind<RestartConfig> = {
  kind: "restart",
  config: restartConfigSchema,

  plan(config, render) {
    const which =
      config.container === undefined
        ? `the live colour of route ${config.route ?? "<project>-<environment>"}`
        : render(config.container);
    return [
      {
        description: `restart ${which}: routed, a fresh colour of the live release is checked and switched in (drain ${config.drainSeconds} s); otherwise stop and start it`,
      },
    ];
  },

  async run(context, config) {
    const service = await findService(context, config, context.target.runtimes().map(coloursOf));
    if (service.routed) return restartRouted(context, config, service);
    return restartInPlace(context, config, service);
  },
};

async function restartRouted(context: StepRunContext, config: RestartConfig, service: Service) {
  const { instance: live, runtime } = service;
  const routed = service.routed;
  if (!routed) throw new Error("restartRouted needs a routed service");
  const release = live.labels["ferry.release"];
  if (release === undefined) {
    throw new TaskFailure(`the live colour ${live.name} carries no ferry.release label: deploy a release first`);
  }
  context.log.info(
    `restarting route ${routed.route.name}: a fresh colour of release ${release} beside ${runtime.noun} ${live.name}, switched in once healthy`,
  );
  // The fresh colour belongs to the live release (a later deployment retires it like any of
  // that release's colours) and to this task (a crash of it before the switch removes it).
  const releaseContext: StepRunContext = {
    ...context,
    scope: { ...context.scope, subject: { kind: "release", id: "", version: release } },
    labels: { ...context.labels, "ferry.release": release },
  };
  let healthCheck = config.healthCheck;
  try {
    healthCheck ??= colourHealthCheck(live.labels);
  } catch (error) {
    throw new TaskFailure(
      `the live colour ${live.name}: ${(error as Error).message}; give the restart step a healthCheck`,
    );
  }
  const options = blueGreenOptionsSchema.parse({
    healthCheck,
    drainSeconds: config.drainSeconds,
    // One more than usual: the replaced colour, retained by the strategy, is removed below.
    retain: DEFAULT_RETAIN + 1,
  });
  const result = await runBlueGreen(
    releaseContext,
    {
      route: { name: routed.route.name, host: routed.route.host, pathPrefix: routed.route.pathPrefix },
      options,
      settleSeconds: config.settleSeconds,
      stopTimeoutSeconds: config.stopTimeoutSeconds,
    },
    runtime,
    {
      // Unique to this restart: never a retained colour reused in place of a fresh start.
      runs: { label: "ferry.restart", value: context.taskId },
      reuseSpares: "",
      start(name, labels) {
        context.log.info(`starting colour ${name} as a copy of ${runtime.noun} ${live.name} (the same release)`);
        return runtime.clone(live, name, labels, context.signal);
      },
    },
    routed.router,
  );
  // The replaced colour ran the very release now live again: a rollback to it would change nothing.
  const replaced = await runtime.find(live.name, context.signal);
  if (replaced && replaced.name !== result.outputs.colour && replaced.labels["ferry.release"] === release) {
    await runtime.remove(replaced.id, { stopTimeoutSeconds: config.stopTimeoutSeconds, signal: context.signal });
    context.log.info(`removed the replaced colour ${replaced.name} (the same release as the fresh one)`);
  }
  return { outputs: { ...result.outputs, restartedColour: live.name } };
}

async function restartInPlace(context: StepRunContext, config: RestartConfig, service: Service) {
  const { instance, runtime } = service;
  const { signal } = context;
  const what = `${runtime.noun} ${instance.name}`;
  context.log.warn(
    `${what} is not behind a route: stopping and starting it (requests during the restart fail; deploy it blue/green for restarts without a gap)`,
  );
  await runtime.restart(instance.id, { stopTimeoutSeconds: config.stopTimeoutSeconds, signal });
  const settled = await runtime.waitUntilSettled(instance.id, config.settleSeconds * 1000, signal);
  if (settled.failure !== undefined) {
    const lines = await runtime.logTail(instance.name, 20, signal).catch(() => [] as string[]);
    if (lines.length > 0) context.log.warn(`last ${lines.length} log lines of ${what}:`);
    for (const line of lines) context.log.warn(`  ${line}`);
    throw new TaskFailure(`${what} ${settled.failure}`);
  }
  context.log.info(`${what} restarted and running`);
  return { outputs: { [runtime.noun]: instance.name } };
}
