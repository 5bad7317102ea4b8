import { z } from "zod";
import { TaskFailure } from "../../engine/types.js";
import type { Colour, ColourRuntime } from "../../runtimes/colours.js";
import { isContainerName } from "../../runtimes/docker.js";
import { routeNameSchema } from "../../traffic/proxyState.js";
import type { LiveUpstream, Router, RouteSpec } from "../../traffic/router.js";
import type { StepRunContext } from "../types.js";

/*
 * Which instance is "the project's service in this environment" on a target, for the
 * operations steps that act on it (exec, restart): the live colour of its route when it is
 * deployed blue/green, else the instance of a recreate deployment — a container or a
 * supervised process, on whichever of the runtimes given has it. Only an instance Ferry
 * started for this project and environment is ever acted on.
 */

export const serviceShape = {
  /** The route whose live colour is the service; default "<project>-<environment>", as blue/green names it. */
  route: routeNameSchema.optional(),
  /**
   * Template: the container (or supervised process) instead — one Ferry started for this
   * project and environment; absent: the route's live colour, else the recreate instance
   * ferry-<project>-<environment>[-<target>].
   */
  container: z.string().min(1).max(256).optional(),
};

export interface Service {
  /** The container or process. */
  instance: Colour;
  /** The runtime that runs it: what acts on it. */
  runtime: ColourRuntime;
  /** Set when the instance is the live colour of a route on this host's router. */
  routed?: { router: Router; route: RouteSpec & LiveUpstream };
}

export async function findService(
  context: StepRunContext,
  config: { route?: string | undefined; container?: string | undefined },
  runtimes: readonly ColourRuntime[],
): Promise<Service> {
  const { project, environment } = context.scope;
  const { signal } = context;
  const routeName = config.route ?? routeNameSchema.parse(`${project.slug}-${environment.slug}`.slice(0, 63));
  // Never started for this: a step that only looks must not bring a proxy up.
  const router = await context.target.routerInUse();
  const routes = router ? await router.routes() : [];
  const nouns = [...new Set(runtimes.map((runtime) => runtime.noun))].join(" or ");

  let name: string;
  let guessed = false;
  if (config.container !== undefined) {
    name = context.render(config.container);
  } else {
    const route = routes.find((candidate) => candidate.name === routeName);
    if (route?.colour) {
      name = route.colour;
    } else {
      const target = context.target.slug === undefined ? "" : `-${context.target.slug}`;
      name = `ferry-${project.slug}-${environment.slug}${target}`;
      guessed = true;
    }
  }
  // Container names and process instance names follow the same rule.
  if (!isContainerName(name)) throw new TaskFailure(`'${name.slice(0, 200)}' is not a ${nouns} name`);

  const found: { runtime: ColourRuntime; instance: Colour }[] = [];
  const unreachable: string[] = [];
  for (const runtime of runtimes) {
    try {
      const instance = await runtime.find(name, signal);
      if (instance) found.push({ runtime, instance });
    } catch (error) {
      if (signal.aborted) throw error;
      // A host without Docker: its other runtimes may run the service.
      unreachable.push(`${runtime.noun}s: ${(error as Error).message}`);
    }
  }
  const belongs = (instance: Colour) =>
    instance.labels["ferry.project"] === project.slug && instance.labels["ferry.env"] === environment.slug;
  const ours = found.filter((candidate) => belongs(candidate.instance));
  const [first, second] = ours;
  if (found[0] === undefined) {
    const why = unreachable.length > 0 ? ` (could not ask ${unreachable.join("; ")})` : "";
    throw new TaskFailure(
      guessed
        ? `no live colour of route ${routeName} on ${context.target.name} and no ${nouns} ${name}${why}: deploy the service first, or name its ${nouns} (container:)`
        : `there is no ${nouns} ${name} on ${context.target.name}${why}`,
    );
  }
  if (!first) {
    throw new TaskFailure(
      `${found[0].runtime.noun} ${name} was not started by Ferry for ${project.name} in ${environment.name}: refusing to act on it`,
    );
  }
  if (second) {
    throw new TaskFailure(
      `both a ${first.runtime.noun} and a ${second.runtime.noun} named ${name} on ${context.target.name} were started for ${project.name} in ${environment.name}: remove the one that is not the service`,
    );
  }
  const { runtime, instance } = first;
  const route = router ? routes.find((candidate) => candidate.colour === instance.name) : undefined;
  return { instance, runtime, ...(router && route && { routed: { router, route } }) };
}
