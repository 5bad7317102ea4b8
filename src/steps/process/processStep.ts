import type { StepKind, StepRunContext } from "../types.js";
import { describeProcessBlueGreen, runProcessBlueGreen } from "./blueGreen.js";
import { type ProcessConfig, processConfigSchema } from "./config.js";
import { runProcessRecreate } from "./recreate.js";
import { describeProcessLimits } from "./shared.js";

/** One way a new instance replaces the old; one entry per strategy of the config's union. */
interface Strategy<C extends ProcessConfig> {
  describe(config: C, render: (template: string) => string): string;
  run(context: StepRunContext, config: C): Promise<{ outputs?: Record<string, string> }>;
}

const strategies: { [S in ProcessConfig["strategy"]]: Strategy<Extract<ProcessConfig, { strategy: S }>> } = {
  recreate: {
    describe: (config, render) =>
      `recreate process ${config.name === undefined ? "ferry-<project>-<environment>" : render(config.name)} running ${render(
        config.command,
      )}${config.package !== undefined ? ` from the release's version of package ${config.package}` : ""}${describeProcessLimits(config)}`,
    run: (context, config) => runProcessRecreate(context, config, context.target.runtime("process")),
  },
  blueGreen: {
    describe: describeProcessBlueGreen,
    run: async (context, config) =>
      runProcessBlueGreen(context, config, context.target.runtime("process"), await context.target.router()),
  },
};

function strategyOf<C extends ProcessConfig>(config: C): Strategy<C> {
  return strategies[config.strategy] as unknown as Strategy<C>;
}

/**
 * Runs a command on the target as a supervised process of the process runtime (for hosts
 * without Docker), replacing the previous instance by the config's strategy.
 */
export const processStep: StepKind<ProcessConfig> = {
  kind: "process",
  config: processConfigSchema,
  deploysFiles: true,
  plan: (config, render) => [{ description: strategyOf(config).describe(config, render) }],
  run: (context, config) => strategyOf(config).run(context, config),
  together: (config) => config.strategy === "blueGreen" && config.blueGreen?.switch === "allAtOnce",
};
