import { COMPOSE_PROJECT_LABEL, ROUTE_LABEL } from "../../runtimes/colours.js";
import type { StepKind, StepRunContext } from "../types.js";
import { composeProjectName } from "./composeStep.js";
import { type ComposeDownConfig, composeDownConfigSchema } from "./config.js";

/**
 * Takes a Compose application down on the target's engine (`docker-compose down`): its
 * containers (the routed services' colours too) and networks; its named volumes only when
 * asked (`removeVolumes: true`), since they hold the application's data. Only what carries
 * the application's labels for this project and environment is touched.
 */
export const composeDownStep: StepKind<ComposeDownConfig> = {
  kind: "compose-down",
  config: composeDownConfigSchema,
  plan: (config, render) => [
    {
      description: `take Compose application ${
        config.projectName === undefined ? "<project>-<environment>" : render(config.projectName)
      } down: remove its containers and networks${config.removeVolumes ? " and its volumes (their data is deleted)" : "; keep its volumes"}`,
    },
  ],
  run: runComposeDown,
};

async function runComposeDown(context: StepRunContext, config: ComposeDownConfig) {
  const { log, signal } = context;
  const docker = context.target.runtime("docker");
  const projectName = composeProjectName(context, config.projectName);
  const owned = (labels: Record<string, string>) =>
    labels["ferry.project"] === context.scope.project.slug && labels["ferry.env"] === context.scope.environment.slug;
  const containers = (await docker.listByLabel(COMPOSE_PROJECT_LABEL, projectName, { signal })).filter((container) =>
    owned(container.labels),
  );
  const routed = new Set<string>();
  for (const container of containers) {
    const route = container.labels[ROUTE_LABEL];
    if (route !== undefined) routed.add(route);
    log.info(`removing container ${container.name}`);
    await docker.stopAndRemove(container.id, { stopTimeoutSeconds: config.stopTimeoutSeconds, signal });
  }
  const networks = (await docker.listNetworksByLabel(COMPOSE_PROJECT_LABEL, projectName, { signal })).filter(
    (network) => owned(network.labels),
  );
  for (const network of networks) {
    log.info(`removing network ${network.name}`);
    await docker.removeNetwork(network.name, { signal });
  }
  const volumes = (await docker.listVolumesByLabel(COMPOSE_PROJECT_LABEL, projectName, { signal })).filter((volume) =>
    owned(volume.labels),
  );
  if (config.removeVolumes) {
    for (const volume of volumes) {
      log.warn(`removing volume ${volume.name} and its data`);
      await docker.removeVolume(volume.name, { signal });
    }
  } else if (volumes.length > 0) {
    log.info(`keeping volume(s) ${volumes.map((volume) => volume.name).join(", ")} (removeVolumes: true deletes them)`);
  }
  if (routed.size > 0) {
    log.warn(
      `route(s) ${[...routed].join(", ")} still name the removed colours in the router: requests to them now fail until a compose step deploys again`,
    );
  }
  return {
    outputs: {
      projectName,
      containersRemoved: String(containers.length),
      networksRemoved: String(networks.length),
      volumesRemoved: String(config.removeVolumes ? volumes.length : 0),
    },
  };
}
