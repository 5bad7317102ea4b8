import { composeHostPaths } from "../compose/composeFile.js";
import { composeStep } from "../compose/composeStep.js";
import type { ComposeConfig } from "../compose/config.js";
import type { StepKind, StepRunContext } from "../types.js";
import { describeBlueGreen, runContainerBlueGreen } from "./blueGreen.js";
import { type ContainerConfig, containerConfigSchema } from "./config.js";
import { runRecreate } from "./recreate.js";
import { describeLimits } from "./shared.js";

/** One way a new container replaces the old; one entry per strategy of the config's union. */
interface Strategy<C extends ContainerConfig> {
  /** What `ferry plan` prints. */
  describe(config: C, render: (template: string) => string): string;
  run(context: StepRunContext, config: C): Promise<{ outputs?: Record<string, string> }>;
}

const strategies: { [S in ContainerConfig["strategy"]]: Strategy<Extract<ContainerConfig, { strategy: S }>> } = {
  recreate: {
    describe: (config, render) =>
      `recreate container ${config.name === undefined ? "ferry-<project>-<environment>" : render(config.name)} from ${render(
        config.image,
      )}${describeLimits(config)}`,
    run: (context, config) => runRecreate(context, config, context.target.runtime("docker")),
  },
  blueGreen: {
    describe: describeBlueGreen,
    run: async (context, config) =>
      runContainerBlueGreen(context, config, context.target.runtime("docker"), await context.target.router()),
  },
};

/** The strategy of a config, typed for that config (TypeScript cannot correlate a lookup by itself). */
function strategyOf<C extends ContainerConfig>(config: C): Strategy<C> {
  return strategies[config.strategy] as unknown as Strategy<C>;
}

/**
 * Runs the release's image as one container on the target's Docker engine, replacing the
 * previous one by the config's strategy.
 */
export const containerStep: StepKind<ContainerConfig> = {
  kind: "container",
  config: containerConfigSchema,
  deploysFiles: true,
  plan: (config, render) => [{ description: strategyOf(config).describe(config, render) }],
  run: (context, config) => strategyOf(config).run(context, config),
  together: (config) => config.strategy === "blueGreen" && config.blueGreen?.switch === "allAtOnce",
};

/**
 * The volume sources of a process's container steps that may reach the host's files: an
 * absolute path, or a template (a variable could make it one). Saving a process with any
 * needs the administer permission everywhere (ADR 0020): a bind mount of `/` or the
 * Docker socket is root on the host.
 */
export function hostPathVolumes(steps: readonly { kind: string; config: Record<string, unknown> }[]): string[] {
  return steps.flatMap((step) => {
    if (step.kind === composeStep.kind) return composeHostPaths(step.config as ComposeConfig);
    if (step.kind !== containerStep.kind) return [];
    const volumes = (step.config as Partial<ContainerConfig>).volumes ?? [];
    return volumes.map((volume) => volume.source).filter((source) => !plainVolumeName.test(source));
  });
}

const plainVolumeName = /^[a-zA-Z0-9][a-zA-Z0-9_.-]{0,127}$/;
