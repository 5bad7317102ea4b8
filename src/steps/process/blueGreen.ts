import type { Processes } from "../../runtimes/process.js";
import { processColours, startedProcessColour } from "../../runtimes/processColours.js";
import type { Router } from "../../traffic/router.js";
import { blueGreenOptionsSchema } from "../blueGreen/config.js";
import { describeSwitch, runBlueGreen } from "../blueGreen/strategy.js";
import { unpackPackage } from "../package.js";
import type { StepRunContext } from "../types.js";
import type { ProcessBlueGreenConfig } from "./config.js";
import { COMMAND_LABEL, describeProcessLimits, describeProcessStart, renderProcessInputs } from "./shared.js";

/**
 * The blue/green strategy of the process step: colours are supervised processes, each told
 * to listen on a free port of 127.0.0.1 (PORT), which is its upstream; the strategy itself
 * (health check, pre-switch tests, switch, drain, bake, retention) is steps/blueGreen/.
 */
export async function runProcessBlueGreen(
  context: StepRunContext,
  config: ProcessBlueGreenConfig,
  processes: Processes,
  router: Router,
) {
  const { spec, identity } = renderProcessInputs(
    context,
    config,
    config.package === undefined ? undefined : await unpackPackage(context, config.package),
  );
  return runBlueGreen(
    context,
    {
      route: config.route,
      options: config.blueGreen ?? blueGreenOptionsSchema.parse({}),
      settleSeconds: config.settleSeconds,
      stopTimeoutSeconds: config.stopTimeoutSeconds,
    },
    processColours(processes),
    {
      runs: { label: COMMAND_LABEL, value: identity },
      reuseSpares: "no copy",
      async start(name, labels) {
        context.log.info(describeProcessStart("colour", name, spec));
        const started = await processes.createAndStart(
          { ...spec, name, labels, port: "auto" },
          { signal: context.signal },
        );
        return startedProcessColour(started.name, started.port);
      },
    },
    router,
  );
}

/** What `ferry plan` prints for a blue/green process step. */
export function describeProcessBlueGreen(config: ProcessBlueGreenConfig, render: (template: string) => string): string {
  const options = config.blueGreen ?? blueGreenOptionsSchema.parse({});
  return `blue/green: start a new colour running ${render(config.command)}${
    config.args.length > 0 ? ` with ${config.args.length} argument(s)` : ""
  }${config.package !== undefined ? ` from the release's version of package ${config.package}` : ""}${describeProcessLimits(config)} on a free port, ${describeSwitch(options, config.route, render)}`;
}
