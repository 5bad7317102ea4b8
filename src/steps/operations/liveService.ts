import { z } from "zod";
import { TaskFailure } from "../../engine/types.js";
import type { ContainerStatus, DockerRuntime } from "../../runtimes/docker.js";
import { isContainerName } from "../../runtimes/docker.js";
import { routeNameSchema } from "../../traffic/proxyState.js";
import type { LiveUpstream, Router, RouteSpec } from "../../traffic/router.js";
import type { StepRunContext } from "../types.js";

/*
 * Which container is "the project's service in this environment" on a target, for the
 * operations steps that act on it (exec, restart): the live colour of its route when it is
 * deployed blue/green, else the container of a recreate deployment. Only a container Ferry
 * started for this project and environment is ever acted on.
 */

export const serviceShape = {
  /** The route whose live colour is the service; default "<project>-<environment>", as blue/green names it. */
  route: routeNameSchema.optional(),
  /**
   * Template: the container instead (one Ferry started for this project and environment);
   * absent: the route's live colour, else the recreate container ferry-<project>-<environment>[-<target>].
   */
  container: z.string().min(1).max(256).optional(),
};

export interface Service {
  container: ContainerStatus;
  /** Set when the container is the live colour of a route on this host's router. */
  routed?: { router: Router; route: RouteSpec & LiveUpstream };
}

export async function findService(
  context: StepRunContext,
  config: { route?: string | undefined; container?: string | undefined },
  docker: DockerRuntime,
): Promise<Service> {
  const { project, environment } = context.scope;
  const { signal } = context;
  const routeName = config.route ?? routeNameSchema.parse(`${project.slug}-${environment.slug}`.slice(0, 63));
  // Never started for this: a step that only looks must not bring a proxy up.
  const router = await context.target.routerInUse();
  const routes = router ? await router.routes() : [];

  let name: string;
  if (config.container !== undefined) {
    name = context.render(config.container);
  } else {
    const route = routes.find((candidate) => candidate.name === routeName);
    if (route?.colour) {
      name = route.colour;
    } else {
      const target = context.target.slug === undefined ? "" : `-${context.target.slug}`;
      name = `ferry-${project.slug}-${environment.slug}${target}`;
      const found = await docker.inspectContainer(name, { signal });
      if (!found) {
        throw new TaskFailure(
          `no live colour of route ${routeName} on ${context.target.name} and no container ${name}: deploy the service first, or name its container (container:)`,
        );
      }
    }
  }
  if (!isContainerName(name)) throw new TaskFailure(`'${name.slice(0, 200)}' is not a container name`);
  const container = await docker.inspectContainer(name, { signal });
  if (!container) throw new TaskFailure(`there is no container ${name} on ${context.target.name}`);
  if (container.labels["ferry.project"] !== project.slug || container.labels["ferry.env"] !== environment.slug) {
    throw new TaskFailure(
      `container ${name} was not started by Ferry for ${project.name} in ${environment.name}: refusing to act on it`,
    );
  }
  const route = router ? routes.find((candidate) => candidate.colour === container.name) : undefined;
  return { container, ...(router && route && { routed: { router, route } }) };
}
