import type { DockerRuntime } from "../../runtimes/docker.js";
import { dockerColours, IMAGE_LABEL, PORT_LABEL, startedColour } from "../../runtimes/dockerColours.js";
import type { Router } from "../../traffic/router.js";
import { blueGreenOptionsSchema } from "../blueGreen/config.js";
import { describeSwitch, runBlueGreen } from "../blueGreen/strategy.js";
import type { StepRunContext } from "../types.js";
import type { BlueGreenConfig } from "./config.js";
import { describeLimits, describeStart, pullImage, renderContainerInputs } from "./shared.js";

/**
 * The blue/green strategy of the container step: colours are containers of the release's
 * image, each publishing the route's container port on 127.0.0.1 at a port the engine
 * picks (docs/decisions/0015-blue-green.md); the strategy itself is steps/blueGreen/.
 */
export async function runContainerBlueGreen(
  context: StepRunContext,
  config: BlueGreenConfig,
  docker: DockerRuntime,
  router: Router,
) {
  const { signal } = context;
  const routeConfig = config.route;
  // Every template is rendered before anything changes: a missing variable must not leave half a deployment.
  const { imageText, registry, pinned, env, volumes } = renderContainerInputs(context, config);
  return runBlueGreen(
    context,
    {
      route: routeConfig,
      options: config.blueGreen ?? blueGreenOptionsSchema.parse({}),
      settleSeconds: config.settleSeconds,
      stopTimeoutSeconds: config.stopTimeoutSeconds,
    },
    dockerColours(docker),
    {
      runs: { label: IMAGE_LABEL, value: imageText },
      reuseSpares: "no pull",
      async start(name, labels) {
        await pullImage(context, config, docker, imageText, registry, pinned);
        context.log.info(describeStart("colour", name, imageText, config, env));
        const container = await docker.createAndStart(
          {
            name,
            image: imageText,
            env,
            ports: [
              { containerPort: routeConfig.port, hostIp: "127.0.0.1", protocol: "tcp" as const },
              ...config.ports
                .filter((port) => !(port.container === routeConfig.port && port.protocol === "tcp"))
                .map((port) => ({ containerPort: port.container, hostIp: port.hostIp, protocol: port.protocol })),
            ],
            volumes,
            networks: config.networks,
            ...(config.cpus !== undefined && { cpus: config.cpus }),
            ...(config.memoryMb !== undefined && { memoryMb: config.memoryMb }),
            labels: { ...labels, [PORT_LABEL]: String(routeConfig.port) },
            restartPolicy: config.restartPolicy,
          },
          { signal },
        );
        return startedColour(
          container.id,
          container.name,
          { ...labels, [PORT_LABEL]: String(routeConfig.port) },
          container.ports,
        );
      },
    },
    router,
  );
}

/** What `ferry plan` prints for a blue/green container step. */
export function describeBlueGreen(config: BlueGreenConfig, render: (template: string) => string): string {
  const options = config.blueGreen ?? blueGreenOptionsSchema.parse({});
  return `blue/green: start a new colour from ${render(config.image)}${describeLimits(config)}, ${describeSwitch(
    options,
    config.route,
    render,
  )}`;
}
