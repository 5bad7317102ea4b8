import { setTimeout as sleep } from "node:timers/promises";
import {
  type CanaryVerdict,
  describeSide,
  figuresBetween,
  judgeCanary,
  type UpstreamFigures,
} from "../../domain/canary.js";
import { renderTemplate } from "../../domain/templates.js";
import { escapeControlCharacters } from "../../domain/text.js";
import { TARGET_LABEL } from "../../engine/processRunner.js";
import { FinalFailure, TaskFailure } from "../../engine/types.js";
import { type Colour, type ColourRuntime, ROUTE_LABEL, type StartedColour } from "../../runtimes/colours.js";
import { isContainerName } from "../../runtimes/docker.js";
import { allowingOrigin, defaultOutboundPolicy, type OutboundPolicy } from "../../security/outboundGuard.js";
import { routeNameSchema } from "../../traffic/proxyState.js";
import {
  type LiveUpstream,
  type Router,
  type RouteSpec,
  trafficBetween,
  type UpstreamTraffic,
} from "../../traffic/router.js";
import { probeUntilHealthy } from "../healthProbe.js";
import { httpTestStep } from "../httpTest.js";
import type { StepRunContext } from "../types.js";
import { type BlueGreenOptions, type CanaryOptions, healthCheckLabels, stageThresholds } from "./config.js";

/** One failed probe during bake is a blip; this many in a row switch back. */
const BAKE_FAILURES_TO_SWITCH_BACK = 2;
/** Log lines of a colour put into the task log when it fails to start or to become healthy. */
const FAILURE_LOG_LINES = 20;

/** What one blue/green deployment switches, and how. */
export interface BlueGreenSettings {
  /** The route's template fields as configured (host is rendered here). */
  route: { name?: string | undefined; host: string; pathPrefix: string };
  options: BlueGreenOptions;
  /** A new colour must still run this long after its start. */
  settleSeconds: number;
  /** How long a colour has to stop after SIGTERM when it is retired. */
  stopTimeoutSeconds: number;
  /**
   * Which of the step's routes this is, when one step switches several (a Compose file's
   * routed services): part of each colour's name, so two services' colours never clash.
   */
  instance?: string;
}

/** How the step starts a colour of its own kind (a container from an image, a process from a command). */
export interface NewColour {
  /**
   * The label saying what a colour runs (the image reference pinned by digest; the
   * command and its files): a retained colour of the same release with the same value is
   * switched back to instead of starting a new one.
   */
  readonly runs: { label: string; value: string };
  /** What reusing a retained colour spares, for the log ("no pull"). */
  readonly reuseSpares: string;
  /** Gets what it needs (an image pull) and starts a colour with this name and these labels. */
  start(name: string, labels: Record<string, string>): Promise<StartedColour>;
}

/**
 * The blue/green strategy (DESIGN.md, "Deployment, step by step"), on any runtime: start
 * the new colour beside the live one (or reuse a retained colour of the same release),
 * wait until healthy, run the pre-switch tests, switch the route (the commit point), drain
 * the old colour, bake, then stop the old colour and keep the last `retain` ones.
 *
 * Until the switch nothing the users see changes: any failure before it removes the new
 * colour and leaves the live one serving. A colour is never stopped while the router
 * sends it requests or before it drained (or its drain deadline passed).
 */
export async function runBlueGreen(
  context: StepRunContext,
  settings: BlueGreenSettings,
  runtime: ColourRuntime,
  fresh: NewColour,
  router: Router,
) {
  const { log, signal } = context;
  const { options } = settings;
  const project = context.scope.project.slug;
  const environment = context.scope.environment.slug;
  const subject = context.scope.subject;
  if (subject.kind !== "release") {
    // A colour is a release's: a runbook has none to switch traffic to (its restart step will go through here with the live release).
    throw new TaskFailure("a blue/green step switches a release into traffic: it runs in deployments, not in runbooks");
  }
  const release = subject.version;
  const route: RouteSpec = {
    name: settings.route.name ?? routeNameSchema.parse(`${project}-${environment}`.slice(0, 63)),
    host: context.render(settings.route.host),
    pathPrefix: settings.route.pathPrefix,
  };
  const trafficBefore = await router.traffic().catch(() => undefined);

  const live = await router.live(route.name);
  if (options.canary !== undefined && router.split === undefined) {
    // Refused before anything starts: nothing the users see has changed.
    throw new TaskFailure(
      `blueGreen.canary: the ${router.driver} router cannot send a share of the traffic to the new colour; canary stages need the builtin proxy or HAProxy (FERRY_ROUTER=builtin or haproxy, or a target router with driver: builtin or haproxy). Remove blueGreen.canary to switch all the traffic at once`,
    );
  }
  const colours = await coloursOf(runtime, route.name, project, environment, context.target.slug, signal);
  log.info(
    `route ${route.name} (${route.host}${route.pathPrefix}, ${router.driver}): ${
      live ? `live colour ${live.colour ?? "(unnamed)"} at ${live.upstream}` : "new: nothing is live yet"
    }; ${colours.length} colour(s) on this host`,
  );

  // A retained colour of this very release (and what it runs) is switched back to without a pull.
  const retained = colours.find(
    (colour) =>
      colour.labels["ferry.release"] === release &&
      colour.labels[fresh.runs.label] === fresh.runs.value &&
      colour.name !== live?.colour,
  );
  let candidate: Candidate;
  if (retained) {
    const wasRunning = retained.state === "running";
    log.info(
      wasRunning
        ? `colour ${retained.name} of release ${release} is retained and running: ${fresh.reuseSpares}, no start`
        : `colour ${retained.name} of release ${release} is retained: starting it (${fresh.reuseSpares})`,
    );
    candidate = { colour: await runtime.start(retained, signal), created: false, wasRunning };
  } else {
    const name = colourName(project, environment, release, context.target.slug, context.taskId, settings.instance);
    const colour = await fresh.start(name, {
      ...context.labels,
      "ferry.step": context.stepName,
      [ROUTE_LABEL]: route.name,
      [fresh.runs.label]: fresh.runs.value,
      // Start-up reconciliation probes this colour with the same check when it starts it again.
      ...healthCheckLabels(options.healthCheck),
    });
    candidate = { colour, created: true, wasRunning: false };
    const settled = await runtime.waitUntilSettled(colour.id, settings.settleSeconds * 1000, signal);
    if (settled.failure !== undefined) {
      await abandon(context, runtime, candidate, settings);
      throw new TaskFailure(
        `colour ${name} ${settled.failure}; its last log lines are in the task log. ${keptLive(live)}`,
      );
    }
  }
  const { colour } = candidate;
  const { upstream } = colour;
  const previewUrl = `${upstream}/`;
  // The new colour's own private address (127.0.0.1 and its port) may be called by the
  // requests that check it, and nothing else the outbound guard refuses: the health
  // probes, the pre-switch tests whose address a variable chose, and the bake.
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
    if (!signal.aborted) await abandon(context, runtime, candidate, settings, false);
    throw error;
  }
  if (!health.healthy) {
    await abandon(context, runtime, candidate, settings);
    throw new TaskFailure(
      `colour ${colour.name} did not answer HTTP ${options.healthCheck.expectedStatus} on ${options.healthCheck.path} within ${options.healthCheck.deadlineSeconds} s (last: ${health.last}). ${keptLive(live)}`,
    );
  }
  try {
    await runPreSwitchTests({ ...context, outbound: colourChecks }, options, previewUrl);
  } catch (error) {
    await abandon(context, runtime, candidate, settings, false);
    throw error;
  }

  // All at once: no router switches before every target has a healthy new colour.
  const notReady = await context.allAtOnce?.reach("healthy", signal);
  if (notReady !== undefined) {
    await abandon(context, runtime, candidate, settings, false);
    throw new TaskFailure(
      `not switched: the switch is all at once, and another target failed before its switch (${notReady}). ${keptLive(live)}`,
    );
  }

  if (options.canary !== undefined && router.split !== undefined) {
    if (live === undefined) {
      log.info(`canary: nothing is live on route ${route.name} yet, so the first colour takes all its traffic at once`);
    } else {
      await runCanary(context, router, router.split.bind(router), route, live, colour, options.canary, async () => {
        await drain(context, router, { upstream, colour: colour.name }, options);
        await abandon(context, runtime, candidate, settings, false);
        await logTraffic(context, router, trafficBefore);
      });
    }
  }

  // The commit point: from here on new requests reach the new colour.
  const switchStarted = performance.now();
  let switched: Awaited<ReturnType<Router["switch"]>>;
  try {
    switched = await router.switch(route, { upstream, colour: colour.name });
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
      if (now === "unknown") log.warn(`colour ${colour.name} is left running: the router may already send it traffic`);
      else await abandon(context, runtime, candidate, settings, false);
      throw new TaskFailure(
        `the ${router.driver} router could not switch route ${route.name}: ${error instanceof Error ? error.message : error}. ${keptLive(live)}`,
      );
    }
  }
  const switchMs = Math.round(switched.switchMs * 10) / 10;
  const previous = switched.previous && switched.previous.upstream !== upstream ? switched.previous : undefined;
  log.info(
    `switched route ${route.name} to colour ${colour.name} (${upstream}) in ${switchMs} ms${
      previous ? `; previous colour ${previous.colour ?? "(unnamed)"} at ${previous.upstream}` : ""
    }`,
  );

  /**
   * All at once, another target failed after this one switched: back to the previous colour
   * here too, so that no mix of versions is left serving.
   */
  const switchBack = async (reason: string): Promise<never> => {
    if (!previous) {
      log.warn(`route ${route.name} was new on this host: nothing served it before, so it keeps colour ${colour.name}`);
      throw new TaskFailure(
        `another target failed (${reason}); route ${route.name} had no colour here before, so it keeps ${colour.name}`,
      );
    }
    const back = await router.switch(route, previous);
    log.warn(
      `switched route ${route.name} back to colour ${previous.colour ?? "(unnamed)"} in ${Math.round(back.switchMs)} ms: the switch is all at once, and another target failed (${reason})`,
    );
    await drain(context, router, { upstream, colour: colour.name }, options);
    await abandon(context, runtime, candidate, settings, false);
    await logTraffic(context, router, trafficBefore);
    throw new TaskFailure(
      `switched back to ${previous.colour ?? previous.upstream}: another target failed (${reason}), and the switch is all at once`,
    );
  };
  const notSwitched = await context.allAtOnce?.reach("switched", signal);
  if (notSwitched !== undefined) await switchBack(notSwitched);

  let drainMs = 0;
  if (previous) drainMs = await drain(context, router, previous, options);

  if (options.bakeSeconds > 0) {
    const failure = await bake(context, upstream, options, colourChecks);
    if (failure !== undefined) {
      if (!previous) {
        throw new TaskFailure(
          `colour ${colour.name} failed during bake (${failure}) and there is no earlier colour to switch back to`,
        );
      }
      const back = await router.switch(route, previous);
      log.warn(
        `bake failed (${failure}): switched route ${route.name} back to colour ${previous.colour ?? "(unnamed)"} in ${Math.round(back.switchMs)} ms`,
      );
      await drain(context, router, { upstream, colour: colour.name }, options);
      await abandon(context, runtime, candidate, settings, false);
      await logTraffic(context, router, trafficBefore);
      throw new TaskFailure(
        `colour ${colour.name} failed during the ${options.bakeSeconds} s bake (${failure}); traffic is back on ${previous.colour ?? previous.upstream}`,
      );
    }
  }

  const notBaked = await context.allAtOnce?.reach("baked", signal);
  if (notBaked !== undefined) await switchBack(notBaked);

  await retire(context, runtime, colours, colour.name, previous?.colour ?? undefined, settings);
  const traffic = await logTraffic(context, router, trafficBefore);
  return {
    outputs: {
      ...colour.outputs,
      colour: colour.name,
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

/** How often a timed stage's figures are read and judged. */
const CANARY_CHECK_INTERVAL_MS = 1_000;

/**
 * The canary stages below weight 100 (ADR 0049): each sends its share of the visitors to the
 * new colour, lasts its pause or until approved (figures judged every second either way, and
 * once more when approved; an approval question is withdrawn when they fail meanwhile),
 * and fails the step, everyone back on the live colour, when the new colour's figures pass
 * the stage's thresholds. Any other end (a rejection, a cancel, a router error) takes the
 * split away too before it is thrown on: an unfinished canary never stays in the route.
 */
async function runCanary(
  context: StepRunContext,
  router: Router,
  split: NonNullable<Router["split"]>,
  route: RouteSpec,
  live: LiveUpstream,
  colour: StartedColour,
  canary: CanaryOptions,
  takeAway: () => Promise<void>,
): Promise<void> {
  const { log, signal } = context;
  const stages = canary.steps.filter((stage) => stage.weight < 100);
  const stableName = live.colour ?? live.upstream;
  const switchBack = async (why: string) => {
    const back = await split(route.name, null);
    log.warn(
      `canary: switched route ${route.name} back to 0 % on colour ${colour.name} in ${Math.round(back.switchMs)} ms (${why}); colour ${stableName} serves everyone`,
    );
    await takeAway();
  };
  for (const [index, stage] of stages.entries()) {
    const thresholds = stageThresholds(canary, stage);
    const label = `canary stage ${index + 1} of ${canary.steps.length} (${stage.weight} %)`;
    let verdict: CanaryVerdict;
    try {
      const before = await figuresOf(router, route.name, [colour.upstream, live.upstream]);
      const set = await split(route.name, { upstream: colour.upstream, colour: colour.name, weight: stage.weight });
      const next = canary.steps[index + 1]?.weight ?? 100;
      log.info(
        `${label}: ${stage.weight} % of the visitors of route ${route.name} go to colour ${colour.name} (set in ${Math.round(set.switchMs)} ms), the others stay on ${stableName}; ${
          stage.approval !== undefined
            ? `waiting for an approval to go on to ${next} %`
            : `${stage.pauseSeconds} s until ${next} %`
        }`,
      );
      const judge = async () => {
        const now = await figuresOf(router, route.name, [colour.upstream, live.upstream]);
        return judgeCanary(figuresBetween(before[0], now[0]), figuresBetween(before[1], now[1]), thresholds);
      };
      if (stage.approval !== undefined) {
        // The figures are judged every second while the question waits, as in a timed stage:
        // a new colour that fails meanwhile is switched back at once, and its question
        // withdrawn, rather than left to its visitors until someone answers.
        const withdraw = new AbortController();
        const answered = new AbortController();
        let overThresholds: (CanaryVerdict & { outcome: "unhealthy" }) | undefined;
        const watching = (async () => {
          try {
            for (;;) {
              await sleep(CANARY_CHECK_INTERVAL_MS, undefined, { signal: answered.signal });
              const current = await judge();
              if (current.outcome === "unhealthy") {
                overThresholds = current;
                withdraw.abort(
                  new Error(
                    `the canary of colour ${colour.name} went over its thresholds at ${stage.weight} % (${current.reasons.join("; ")}) and was switched back`,
                  ),
                );
                return;
              }
            }
          } catch (error) {
            // A router that cannot be read ends the wait too: nobody stays on a canary no one watches.
            if (!answered.signal.aborted) withdraw.abort(error);
          }
        })();
        let decision: Awaited<ReturnType<StepRunContext["waitForDecision"]>> | undefined;
        try {
          decision = await context.waitForDecision({
            kind: "approval",
            prompt: `${context.render(stage.approval.instructions)} (canary of colour ${colour.name} at ${stage.weight} %; approve to go on to ${next} %)`,
            allowed: ["approve", "reject"],
            separateFromStarter: stage.approval.separateApprover,
            withdraw: withdraw.signal,
          });
        } catch (error) {
          if (overThresholds === undefined) throw error;
        } finally {
          answered.abort();
          await watching;
        }
        if (decision === undefined) {
          log.warn(`${label}: over the thresholds while it waited for an approval; the question is withdrawn`);
        }
        verdict = overThresholds ?? (await judge());
        if (decision !== undefined && decision.decision !== "approve") {
          logFigures(context, label, verdict, "warn");
          await switchBack(`rejected by ${escapeControlCharacters(decision.decidedBy ?? "someone")}`);
          throw new FinalFailure(
            `${label} rejected by ${escapeControlCharacters(decision.decidedBy ?? "someone")}${decision.comment ? `: ${escapeControlCharacters(decision.comment)}` : ""}; colour ${stableName} serves everyone`,
          );
        }
      } else {
        const end = Date.now() + (stage.pauseSeconds ?? 0) * 1000;
        verdict = await judge();
        while (verdict.outcome !== "unhealthy" && Date.now() < end) {
          await sleep(Math.min(CANARY_CHECK_INTERVAL_MS, Math.max(0, end - Date.now())), undefined, { signal });
          verdict = await judge();
        }
      }
    } catch (error) {
      if (error instanceof FinalFailure) throw error;
      // Cancelled, or the router or the decision failed: nobody is left on a canary no one watches.
      await split(route.name, null).catch((splitError: unknown) =>
        log.warn(`canary: could not take the split of route ${route.name} away: ${(splitError as Error).message}`),
      );
      log.warn(`canary: route ${route.name} back to 0 % on colour ${colour.name}`);
      if (!signal.aborted) await takeAway();
      throw error;
    }
    if (verdict.outcome === "unhealthy") {
      logFigures(context, label, verdict, "warn");

      await switchBack(`over the thresholds: ${verdict.reasons.join("; ")}`);
      throw new TaskFailure(
        `${label}: colour ${colour.name} was over the thresholds (${verdict.reasons.join("; ")}) and was switched back to 0 %; colour ${stableName} serves everyone`,
      );
    }
    logFigures(context, label, verdict, "info");
    if (verdict.outcome === "too-few-requests") {
      log.warn(
        `${label}: only ${verdict.canary.requests} request(s) reached the new colour (minRequests ${thresholds.minRequests}): too few to judge, going on`,
      );
    }
  }
  log.info(`canary: every stage passed; switching all the traffic of route ${route.name} to colour ${colour.name}`);
}

/** The figures of a stage in the task log: the new colour's and the stable colour's. */
function logFigures(context: StepRunContext, label: string, verdict: CanaryVerdict, level: "info" | "warn") {
  context.log[level](
    `${label}: ${describeSide("new colour", verdict.canary)}; ${describeSide("stable colour", verdict.stable)}`,
  );
}

/** What the router counted so far for these upstreams of the route (undefined where it counted nothing). */
async function figuresOf(router: Router, route: string, upstreams: string[]): Promise<(UpstreamFigures | undefined)[]> {
  const traffic = (await router.traffic()) ?? [];
  return upstreams.map((upstream) => {
    const entry = traffic.find((candidate) => candidate.route === route && candidate.upstream === upstream);
    if (!entry) return undefined;
    return {
      served: entry.served,
      serverErrors: entry.serverErrors ?? 0,
      connectionErrors: entry.failed + (entry.retried ?? 0),
      durations: entry.duration ?? { buckets: [], count: 0 },
    };
  });
}

interface Candidate {
  colour: StartedColour;
  /** Started by this deployment (removed when it will not go live), or a retained one reused. */
  created: boolean;
  wasRunning: boolean;
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
  runtime: ColourRuntime,
  colours: readonly Colour[],
  liveName: string,
  previousName: string | undefined,
  settings: BlueGreenSettings,
) {
  const { log, signal } = context;
  const { options, stopTimeoutSeconds } = settings;
  // The colour that was live until this switch comes first, then the others newest first.
  const earlier = colours
    .filter((colour) => colour.name !== liveName)
    .sort((a, b) => Number(b.name === previousName) - Number(a.name === previousName) || b.created - a.created);
  for (const [index, colour] of earlier.entries()) {
    const keepRunning = index === 0 && colour.name === previousName && options.keepPreviousRunning;
    if (index >= Math.max(options.retain, keepRunning ? 1 : 0)) {
      log.info(`removing colour ${colour.name} (more than ${options.retain} retained)`);
      await runtime.remove(colour.id, { stopTimeoutSeconds, signal });
    } else if (keepRunning) {
      log.info(`keeping colour ${colour.name} running for an instant rollback`);
    } else if (colour.state === "running") {
      log.info(`stopping colour ${colour.name} (retained for rollback)`);
      await runtime.stop(colour.id, { stopTimeoutSeconds, signal });
    }
  }
}

/**
 * Takes away a colour that will not go live: a new one is removed (with its last log
 * lines in the task log), a retained one goes back to how it was.
 */
async function abandon(
  context: StepRunContext,
  runtime: ColourRuntime,
  candidate: Candidate,
  settings: BlueGreenSettings,
  withLog = true,
) {
  const { colour } = candidate;
  if (withLog) await logColourTail(context, runtime, colour.name);
  if (candidate.created) {
    context.log.info(`removing colour ${colour.name}`);
    await runtime.remove(colour.id, { stopTimeoutSeconds: 0 }).catch(() => false);
  } else if (!candidate.wasRunning) {
    await runtime.stop(colour.id, { stopTimeoutSeconds: settings.stopTimeoutSeconds }).catch(() => {});
  }
}

/** Puts the last lines of a colour's log into the task log (a failure to read them is logged too). */
async function logColourTail(context: StepRunContext, runtime: ColourRuntime, name: string) {
  try {
    const lines = await runtime.logTail(name, FAILURE_LOG_LINES, context.signal);
    context.log.warn(`last ${lines.length} log lines of ${runtime.noun} ${name}:`);
    for (const line of lines) context.log.warn(`  ${line}`);
  } catch (error) {
    context.log.warn(
      `could not read the log of ${runtime.noun} ${name}: ${error instanceof Error ? error.message : error}`,
    );
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

/**
 * Colours of the route on this host of this project and environment (every state), newest
 * first: of this target (another target on the same host has its own), and those made
 * before colours carried their target.
 */
async function coloursOf(
  runtime: ColourRuntime,
  route: string,
  project: string,
  environment: string,
  target: string | undefined,
  signal: AbortSignal,
): Promise<Colour[]> {
  const colours = await runtime.list(route, signal);
  return colours
    .filter(
      (colour) =>
        colour.labels["ferry.project"] === project &&
        colour.labels["ferry.env"] === environment &&
        (colour.labels[TARGET_LABEL] === undefined || colour.labels[TARGET_LABEL] === target),
    )
    .sort((a, b) => b.created - a.created);
}

/**
 * "ferry-shop-prod-1.4.2-web-1-3fa9c1": which release it runs, on which target, (which of the
 * step's routes,) and a part of the task that made it.
 */
function colourName(
  project: string,
  environment: string,
  release: string,
  target: string | undefined,
  taskId: string,
  instance: string | undefined,
): string {
  const safeRelease = release.replace(/[^a-zA-Z0-9_.-]/g, "-");
  const name = `ferry-${project}-${environment}-${safeRelease}${target === undefined ? "" : `-${target}`}${
    instance === undefined ? "" : `-${instance}`
  }-${taskId.slice(-6)}`;
  // Container names and process instance names follow the same rule.
  if (!isContainerName(name)) throw new TaskFailure(`cannot name a colour '${name.slice(0, 200)}'`);
  return name;
}

function keptLive(live: LiveUpstream | undefined): string {
  return live ? `The live colour ${live.colour ?? live.upstream} keeps serving.` : "Nothing was switched.";
}

/** "…, wait for /health to answer HTTP 200, switch host/ to it [through canary stages 10 % (60 s) → 100 %], drain the old colour (30 s), bake 20 s, retain 3" */
export function describeSwitch(
  options: BlueGreenOptions,
  route: { host: string; pathPrefix: string } | undefined,
  render: (template: string) => string,
): string {
  const stages =
    options.canary === undefined
      ? ""
      : ` through canary stages ${options.canary.steps
          .map((stage) =>
            stage.weight === 100
              ? "100 %"
              : `${stage.weight} % (${stage.approval !== undefined ? "until approved" : `${stage.pauseSeconds} s`})`,
          )
          .join(" → ")}`;
  return `wait for ${options.healthCheck.path} to answer HTTP ${options.healthCheck.expectedStatus}, switch ${
    route ? `${render(route.host)}${route.pathPrefix}` : "the route"
  } to it${stages}, drain the old colour (${options.drainSeconds} s)${
    options.bakeSeconds > 0 ? `, bake ${options.bakeSeconds} s` : ""
  }, retain ${options.retain}${options.switch === "allAtOnce" ? "; all targets at once" : ""}`;
}
