import { setTimeout as sleep } from "node:timers/promises";
import { z } from "zod";
import { renderTemplate } from "../../domain/templates.js";
import { TaskFailure } from "../../engine/types.js";
import {
  type ContainerSummary,
  type DockerRuntime,
  isContainerName,
  publishedOrigin,
  type StartedContainer,
} from "../../runtimes/docker.js";
import { allowingOrigin, defaultOutboundPolicy, type OutboundPolicy } from "../../security/outboundGuard.js";
import { routeNameSchema } from "../../traffic/proxyState.js";
import {
  type LiveUpstream,
  type Router,
  type RouteSpec,
  trafficBetween,
  type UpstreamTraffic,
} from "../../traffic/router.js";
import { probeUntilHealthy } from "../healthCheck.js";
import { httpTestStep } from "../httpTest.js";
import type { StepRunContext } from "../types.js";
import { type BlueGreenConfig, type BlueGreenOptions, blueGreenOptionsSchema } from "./config.js";
import {
  containerOutputs,
  describeLimits,
  describeStart,
  logContainerTail,
  pullImage,
  renderContainerInputs,
  waitUntilSettled,
} from "./shared.js";

/** Labels that make a container a colour of a route (besides ferry.project/env/release/task). */
const ROUTE_LABEL = "ferry.route";
const PORT_LABEL = "ferry.route-port";
const IMAGE_LABEL = "ferry.image";
const HEALTH_PATH_LABEL = "ferry.health-path";

/** One failed probe during bake is a blip; this many in a row switch back. */
const BAKE_FAILURES_TO_SWITCH_BACK = 2;

/**
 * The blue/green strategy (DESIGN.md, "Deployment, step by step"): start the new colour
 * beside the live one (or reuse a retained colour of the same release: no pull), wait
 * until healthy, run the pre-switch tests, switch the route (the commit point), drain the
 * old colour, bake, then stop the old colour and keep the last `retain` ones.
 *
 * Until the switch nothing the users see changes: any failure before it removes the new
 * colour and leaves the live one serving. A colour is never stopped while the router
 * sends it requests or before it drained (or its drain deadline passed).
 */
export async function runBlueGreen(
  context: StepRunContext,
  config: BlueGreenConfig,
  docker: DockerRuntime,
  router: Router,
) {
  const { log, signal } = context;
  const options = config.blueGreen ?? blueGreenOptionsSchema.parse({});
  // The schema requires it for blue/green: the union's blueGreen member has a route.
  const routeConfig = config.route;
  const project = context.scope.project.slug;
  const environment = context.scope.environment.slug;
  const release = context.scope.subject.version;
  const route: RouteSpec = {
    name: routeConfig.name ?? routeNameSchema.parse(`${project}-${environment}`.slice(0, 63)),
    host: context.render(routeConfig.host),
    pathPrefix: routeConfig.pathPrefix,
  };
  const { imageText, registry, pinned, env, volumes } = renderContainerInputs(context, config);
  const trafficBefore = await router.traffic().catch(() => undefined);

  const live = await router.live(route.name);
  const colours = await coloursOf(docker, route.name, project, environment, signal);
  log.info(
    `route ${route.name} (${route.host}${route.pathPrefix}, ${router.driver}): ${
      live ? `live colour ${live.colour ?? "(unnamed)"} at ${live.upstream}` : "new: nothing is live yet"
    }; ${colours.length} colour(s) on this host`,
  );

  // A retained colour of this very release (and image) is switched back to without a pull.
  const retained = colours.find(
    (colour) =>
      colour.labels["ferry.release"] === release &&
      colour.labels[IMAGE_LABEL] === imageText &&
      colour.name !== live?.colour,
  );
  let candidate: { container: StartedContainer; created: boolean; wasRunning: boolean };
  if (retained) {
    const wasRunning = retained.state === "running";
    log.info(
      wasRunning
        ? `colour ${retained.name} of release ${release} is retained and running: no pull, no start`
        : `colour ${retained.name} of release ${release} is retained: starting it (no pull)`,
    );
    candidate = { container: await docker.startContainer(retained.id, { signal }), created: false, wasRunning };
  } else {
    await pullImage(context, config, docker, imageText, registry, pinned);
    const name = colourName(project, environment, release, context.taskId);
    log.info(describeStart("colour", name, imageText, config, env));
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
        labels: {
          ...context.labels,
          "ferry.step": context.stepName,
          [ROUTE_LABEL]: route.name,
          [PORT_LABEL]: String(routeConfig.port),
          [IMAGE_LABEL]: imageText,
          [HEALTH_PATH_LABEL]: options.healthCheck.path,
        },
        restartPolicy: config.restartPolicy,
      },
      { signal },
    );
    candidate = { container, created: true, wasRunning: false };
    const settled = await waitUntilSettled(docker, container.id, config.settleSeconds * 1000, signal);
    if (settled.failure !== undefined) {
      await abandon(context, docker, candidate, config);
      throw new TaskFailure(
        `colour ${name} ${settled.failure}; its last log lines are in the task log. ${keptLive(live)}`,
      );
    }
  }
  const { container } = candidate;
  const upstream = upstreamOf(container, routeConfig.port);
  const previewUrl = `${upstream}/`;
  // The new colour's own private address (127.0.0.1 and the port the engine published) may be
  // called by the requests that check it, and nothing else the outbound guard refuses: the
  // health probes, the pre-switch tests whose address a variable chose, and the bake.
  const colourChecks = allowingOrigin(context.outbound ?? defaultOutboundPolicy, new URL(upstream));

  let health: Awaited<ReturnType<typeof probeUntilHealthy>>;
  try {
    health = await probeUntilHealthy(
      context,
      new URL(options.healthCheck.path, upstream),
      options.healthCheck,
      colourChecks,
    );
  } catch (error) {
    // The guard refused the probe (a path of "//another-host/…" leaves the colour): nothing was switched.
    if (!signal.aborted) await abandon(context, docker, candidate, config, false);
    throw error;
  }
  if (!health.healthy) {
    await abandon(context, docker, candidate, config);
    throw new TaskFailure(
      `colour ${container.name} did not answer HTTP ${options.healthCheck.expectedStatus} on ${options.healthCheck.path} within ${options.healthCheck.deadlineSeconds} s (last: ${health.last}). ${keptLive(live)}`,
    );
  }
  try {
    await runPreSwitchTests({ ...context, outbound: colourChecks }, options, previewUrl);
  } catch (error) {
    await abandon(context, docker, candidate, config, false);
    throw error;
  }

  // The commit point: from here on new requests reach the new colour.
  const switchStarted = performance.now();
  let switched: Awaited<ReturnType<Router["switch"]>>;
  try {
    switched = await router.switch(route, { upstream, colour: container.name });
  } catch (error) {
    // The router refused (nginx -t failed) or did not answer. Only a colour the router
    // surely does not send traffic to may be taken away: when it cannot be asked, it stays.
    const now = await router.live(route.name).catch(() => "unknown" as const);
    if (now !== "unknown" && now?.upstream === upstream) {
      log.warn(
        `the switch answered with an error (${(error as Error).message}) but the route does point at ${upstream}`,
      );
      switched = { previous: live, switchMs: performance.now() - switchStarted };
    } else {
      if (now === "unknown")
        log.warn(`colour ${container.name} is left running: the router may already send it traffic`);
      else await abandon(context, docker, candidate, config, false);
      throw new TaskFailure(
        `the ${router.driver} router could not switch route ${route.name}: ${error instanceof Error ? error.message : error}. ${keptLive(live)}`,
      );
    }
  }
  const switchMs = Math.round(switched.switchMs * 10) / 10;
  const previous = switched.previous && switched.previous.upstream !== upstream ? switched.previous : undefined;
  log.info(
    `switched route ${route.name} to colour ${container.name} (${upstream}) in ${switchMs} ms${
      previous ? `; previous colour ${previous.colour ?? "(unnamed)"} at ${previous.upstream}` : ""
    }`,
  );

  let drainMs = 0;
  if (previous) drainMs = await drain(context, router, previous, options);

  if (options.bakeSeconds > 0) {
    const failure = await bake(context, upstream, options, colourChecks);
    if (failure !== undefined) {
      if (!previous) {
        throw new TaskFailure(
          `colour ${container.name} failed during bake (${failure}) and there is no earlier colour to switch back to`,
        );
      }
      const back = await router.switch(route, previous);
      log.warn(
        `bake failed (${failure}): switched route ${route.name} back to colour ${previous.colour ?? "(unnamed)"} in ${Math.round(back.switchMs)} ms`,
      );
      await drain(context, router, { upstream, colour: container.name }, options);
      await abandon(context, docker, candidate, config, false);
      await logTraffic(context, router, trafficBefore);
      throw new TaskFailure(
        `colour ${container.name} failed during the ${options.bakeSeconds} s bake (${failure}); traffic is back on ${previous.colour ?? previous.upstream}`,
      );
    }
  }

  await retire(context, docker, colours, container.name, previous?.colour ?? undefined, options, config);
  const traffic = await logTraffic(context, router, trafficBefore);
  return {
    outputs: {
      ...containerOutputs(container.id, container.name, imageText, container.ports),
      colour: container.name,
      upstream,
      previewUrl,
      route: route.name,
      switchMs: String(switchMs),
      drainMs: String(drainMs),
      ...(previous?.colour && { previousColour: previous.colour }),
      ...(traffic && { requestsServed: String(traffic.served), requestsFailed: String(traffic.failed) }),
    },
  };
}

/**
 * The pre-switch tests: http-test configs rendered with #{Ferry.Route.PreviewUrl} added; the
 * context's outbound policy allows the new colour's address.
 */
async function runPreSwitchTests(context: StepRunContext, options: BlueGreenOptions, previewUrl: string) {
  if (options.preSwitchTests.length === 0) return;
  const variables = new Map(context.variables);
  variables.set("Ferry.Route.PreviewUrl", previewUrl.replace(/\/$/, ""));
  const testContext: StepRunContext = {
    ...context,
    variables,
    render: (template) => renderTemplate(template, variables),
  };
  for (const [index, test] of options.preSwitchTests.entries()) {
    context.log.info(`pre-switch test ${index + 1} of ${options.preSwitchTests.length}`);
    try {
      await httpTestStep.run(testContext, test);
    } catch (error) {
      throw new TaskFailure(
        `pre-switch test ${index + 1} failed: ${error instanceof Error ? error.message : error}; the live colour keeps serving`,
      );
    }
  }
}

async function drain(context: StepRunContext, router: Router, colour: LiveUpstream, options: BlueGreenOptions) {
  const result = await router.drain(colour.upstream, options.drainSeconds * 1000);
  const name = colour.colour ?? colour.upstream;
  if (result.drained) {
    context.log.info(`colour ${name} drained in ${result.waitedMs} ms`);
  } else {
    context.log.warn(
      `colour ${name} still had ${result.inFlight ?? "some"} request(s) in flight at the ${options.drainSeconds} s drain deadline`,
    );
  }
  return result.waitedMs;
}

/** Probes the new colour for the bake period; the problem that ended it early, or undefined when it held. */
async function bake(
  context: StepRunContext,
  upstream: string,
  options: BlueGreenOptions,
  guard: OutboundPolicy,
): Promise<string | undefined> {
  const { log, signal } = context;
  const { path, expectedStatus, intervalMs, timeoutMs } = options.healthCheck;
  const url = new URL(path, upstream);
  log.info(`baking: probing ${url.href} for ${options.bakeSeconds} s`);
  const end = Date.now() + options.bakeSeconds * 1000;
  let failures = 0;
  while (Date.now() < end) {
    const outcome = await context.target.transport.request(url, { timeoutMs, signal, guard });
    if (outcome.ok) await outcome.response.body?.cancel();
    const problem = !outcome.ok
      ? outcome.problem
      : outcome.response.status === expectedStatus
        ? undefined
        : `HTTP ${outcome.response.status}`;
    failures = problem === undefined ? 0 : failures + 1;
    if (problem !== undefined && failures >= BAKE_FAILURES_TO_SWITCH_BACK) {
      return `${failures} probes in a row failed, the last with ${problem}`;
    }
    await sleep(Math.min(intervalMs, Math.max(0, end - Date.now())), undefined, { signal });
  }
  log.info("bake passed");
  return undefined;
}

/**
 * After a successful switch: the earlier colours are stopped (the one live until now kept
 * running when asked), the newest `retain` of them kept, older ones removed.
 */
async function retire(
  context: StepRunContext,
  docker: DockerRuntime,
  colours: readonly ContainerSummary[],
  liveName: string,
  previousName: string | undefined,
  options: BlueGreenOptions,
  config: BlueGreenConfig,
) {
  const { log, signal } = context;
  // The colour that was live until this switch comes first, then the others newest first.
  const earlier = colours
    .filter((colour) => colour.name !== liveName)
    .sort((a, b) => Number(b.name === previousName) - Number(a.name === previousName) || b.created - a.created);
  for (const [index, colour] of earlier.entries()) {
    const keepRunning = index === 0 && colour.name === previousName && options.keepPreviousRunning;
    if (index >= Math.max(options.retain, keepRunning ? 1 : 0)) {
      log.info(`removing colour ${colour.name} (more than ${options.retain} retained)`);
      await docker.stopAndRemove(colour.id, { stopTimeoutSeconds: config.stopTimeoutSeconds, signal });
    } else if (keepRunning) {
      log.info(`keeping colour ${colour.name} running for an instant rollback`);
    } else if (colour.state === "running") {
      log.info(`stopping colour ${colour.name} (retained for rollback)`);
      await docker.stopContainer(colour.id, { stopTimeoutSeconds: config.stopTimeoutSeconds, signal });
    }
  }
}

/**
 * Takes away a colour that will not go live: a new one is removed (with its last log
 * lines in the task log), a retained one goes back to how it was.
 */
async function abandon(
  context: StepRunContext,
  docker: DockerRuntime,
  candidate: { container: StartedContainer; created: boolean; wasRunning: boolean },
  config: BlueGreenConfig,
  withLog = true,
) {
  const { container } = candidate;
  if (withLog) await logContainerTail(context, docker, container.name);
  if (candidate.created) {
    context.log.info(`removing colour ${container.name}`);
    await docker.stopAndRemove(container.id, { stopTimeoutSeconds: 0 }).catch(() => false);
  } else if (!candidate.wasRunning) {
    await docker.stopContainer(container.id, { stopTimeoutSeconds: config.stopTimeoutSeconds }).catch(() => {});
  }
}

/** Logs what the router counted per upstream since `before` (the deployment window); the totals. */
async function logTraffic(context: StepRunContext, router: Router, before: UpstreamTraffic[] | undefined) {
  const after = await router.traffic().catch(() => undefined);
  if (!before || !after) {
    context.log.info(`traffic: the ${router.driver} router does not count requests per upstream`);
    return undefined;
  }
  const window = trafficBetween(before, after);
  let served = 0;
  let failed = 0;
  for (const entry of window) {
    served += entry.served;
    failed += entry.failed;
    context.log.info(`traffic: ${entry.route} → ${entry.upstream}: ${entry.served} served, ${entry.failed} failed`);
  }
  (failed === 0 ? context.log.info : context.log.warn).call(
    context.log,
    `traffic during this deployment: ${served} request(s) served, ${failed} failed`,
  );
  return { served, failed };
}

/** Colours of the route on this host (every state), newest first. */
async function coloursOf(
  docker: DockerRuntime,
  route: string,
  project: string,
  environment: string,
  signal: AbortSignal,
): Promise<ContainerSummary[]> {
  const containers = await docker.listByLabel(ROUTE_LABEL, route, { signal });
  return containers
    .filter(
      (container) => container.labels["ferry.project"] === project && container.labels["ferry.env"] === environment,
    )
    .sort((a, b) => b.created - a.created);
}

/** "ferry-shop-prod-1.4.2-3fa9c1": which release it runs, and a part of the task that made it. */
function colourName(project: string, environment: string, release: string, taskId: string): string {
  const safeRelease = release.replace(/[^a-zA-Z0-9_.-]/g, "-");
  const name = `ferry-${project}-${environment}-${safeRelease}-${taskId.slice(-6)}`;
  if (!isContainerName(name)) throw new TaskFailure(`cannot name a colour '${name.slice(0, 200)}'`);
  return name;
}

function upstreamOf(container: StartedContainer, port: number): string {
  const origin = publishedOrigin(container.ports, port);
  if (!origin) throw new TaskFailure(`colour ${container.name} does not publish port ${port}`);
  return origin;
}

function keptLive(live: LiveUpstream | undefined): string {
  return live ? `The live colour ${live.colour ?? live.upstream} keeps serving.` : "Nothing was switched.";
}

/** What `ferry plan` prints for a blue/green container step. */
export function describeBlueGreen(config: BlueGreenConfig, render: (template: string) => string): string {
  const route = config.route;
  const options = config.blueGreen ?? blueGreenOptionsSchema.parse({});
  return `blue/green: start a new colour from ${render(config.image)}${describeLimits(config)}, wait for ${
    options.healthCheck.path
  } to answer HTTP ${options.healthCheck.expectedStatus}, switch ${route ? `${render(route.host)}${route.pathPrefix}` : "the route"} to it, drain the old colour (${options.drainSeconds} s)${
    options.bakeSeconds > 0 ? `, bake ${options.bakeSeconds} s` : ""
  }, retain ${options.retain}`;
}
