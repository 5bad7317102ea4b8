import { type Colour, type ColourRuntime, coloursOf } from "../runtimes/colours.js";
import { allowingOrigin, defaultOutboundPolicy } from "../security/outboundGuard.js";
import { colourHealthCheck } from "../steps/blueGreen/config.js";
import { probeUntilHealthy } from "../steps/healthProbe.js";
import type { Target, Transport } from "../transports/types.js";
import type { LiveUpstream, Router, RouteSpec } from "./router.js";

/** How many routes of a host are reconciled at the same time. */
const RECONCILE_CONCURRENCY = 8;

export interface ReconcileOptions {
  /** The host's transport: a colour listens on that host's loopback, so its health check is sent from there. */
  readonly transport: Pick<Transport, "request">;
  /** Aborted when the server stops: waits for health end at once (the colours started stay started). */
  readonly signal?: AbortSignal | undefined;
  /** Routes reconciled at the same time; RECONCILE_CONCURRENCY by default. */
  readonly concurrency?: number | undefined;
}

/**
 * Start-up reconciliation of the data plane (DESIGN.md: the router's state is the truth for
 * which colour is live). Unfinished colours of crashed deployments are removed by the task
 * engine's clean-up of interrupted tasks, which keeps any colour the router already serves;
 * here, every live colour is made to run again (after a host reboot, say) on whichever
 * runtime of the host has it, and a live colour no runtime has is reported, since only a
 * deployment can fix that.
 *
 * A colour started again is probed with the health check it was deployed with (its labels,
 * ADR 0072) until it passes or that check's deadline passes, so that when this resolves the
 * routes it started answer: the router points at them all along. Routes are reconciled
 * several at a time, so one slow or broken colour holds up no other route. Returns what it
 * did, one line each, in the router's order of routes.
 */
export async function reconcileLiveColours(
  router: Router,
  runtimes: readonly ColourRuntime[],
  options: ReconcileOptions,
): Promise<string[]> {
  const routes = (await router.routes()).filter((route) => route.colour !== null);
  const reports: string[][] = routes.map(() => []);
  let next = 0;
  // Workers take the next route until none is left: at most `concurrency` at a time.
  const worker = async () => {
    for (let index = next++; index < routes.length; index = next++) {
      const route = routes[index];
      const report = reports[index];
      if (route === undefined || report === undefined) continue;
      try {
        await reconcileRoute(router, runtimes, route, options, report);
      } catch (error) {
        report.push(
          `route ${route.name}: could not reconcile its live colour ${route.colour}: ${(error as Error).message}`,
        );
      }
    }
  };
  const workers = Math.max(1, Math.min(options.concurrency ?? RECONCILE_CONCURRENCY, routes.length));
  await Promise.all(Array.from({ length: workers }, worker));
  return reports.flat();
}

async function reconcileRoute(
  router: Router,
  runtimes: readonly ColourRuntime[],
  route: RouteSpec & LiveUpstream,
  options: ReconcileOptions,
  report: string[],
): Promise<void> {
  let found: { runtime: ColourRuntime; colour: Colour } | undefined;
  const unreachable: string[] = [];
  for (const runtime of runtimes) {
    try {
      const colour = await runtime.find(route.colour ?? "");
      if (colour) {
        found = { runtime, colour };
        break;
      }
    } catch (error) {
      // A host without Docker: its other runtimes may have the colour.
      unreachable.push(`${runtime.noun}s: ${(error as Error).message}`);
    }
  }
  if (!found) {
    report.push(
      unreachable.length > 0
        ? `route ${route.name}: could not find its live colour ${route.colour} (${unreachable.join("; ")})`
        : `route ${route.name}: its live colour ${route.colour} has no container or process; deploy or roll back to put one behind ${route.host}${route.pathPrefix}`,
    );
    return;
  }
  const wasRunning = found.colour.state === "running";
  if (!wasRunning) report.push(`route ${route.name}: starting its live colour ${route.colour}, which was not running`);
  // Starting is a no-op for a running colour; either way it says where it listens now.
  let started: Awaited<ReturnType<ColourRuntime["start"]>>;
  try {
    started = await found.runtime.start(found.colour);
  } catch (error) {
    report.push(`route ${route.name}: could not start its live colour ${route.colour}: ${(error as Error).message}`);
    return;
  }
  const moved = started.upstream !== route.upstream;
  // A colour that runs where the route points was serving already: nothing to wait for.
  // One started just now, or one the route must follow to a new port, is checked first.
  if (!wasRunning || moved) {
    report.push(await waitUntilHealthy(route, found, started.upstream, options));
  }
  // A restarted container gets a new host port from the engine: the route must follow it
  // (even when it is not healthy yet: the old port has nothing behind it either way).
  if (!moved) return;
  await router.switch(route, { upstream: started.upstream, colour: route.colour });
  report.push(
    `route ${route.name}: its live colour ${route.colour} moved to ${started.upstream}; switched the route there`,
  );
}

/** Probes the colour with the health check it was deployed with; the line that says how it went. */
async function waitUntilHealthy(
  route: RouteSpec,
  found: { runtime: ColourRuntime; colour: Colour },
  upstream: string,
  options: ReconcileOptions,
): Promise<string> {
  const what = `route ${route.name}: its live colour ${found.colour.name}`;
  let check: ReturnType<typeof colourHealthCheck>;
  try {
    check = colourHealthCheck(found.colour.labels);
  } catch (error) {
    return `${what} was started but not checked: ${(error as Error).message}; a deployment gives it valid labels`;
  }
  const origin = new URL(upstream);
  const url = new URL(check.path, origin);
  const signal = options.signal ?? new AbortController().signal;
  const started = Date.now();
  try {
    const health = await probeUntilHealthy(
      // Each probe's own line would flood the server's log: the outcome is one line below.
      { log: { info: () => {} }, signal, target: { transport: options.transport } },
      url,
      check,
      // The colour's own address and nothing else (a path "//elsewhere/" leaves it: refused).
      allowingOrigin(defaultOutboundPolicy, origin),
    );
    const seconds = ((Date.now() - started) / 1000).toFixed(1);
    if (health.healthy) {
      return `${what} answers HTTP ${check.expectedStatus} on ${check.path} (after ${health.attempts} probe(s) in ${seconds} s)`;
    }
    return `${what} was started but did not answer HTTP ${check.expectedStatus} on ${check.path} within ${check.deadlineSeconds} s (last: ${health.last}); the route sends its traffic there all the same: see the ${found.runtime.noun}'s log, and deploy or roll back to fix it`;
  } catch (error) {
    if (signal.aborted) {
      return `${what} was started; the server stopped before it answered HTTP ${check.expectedStatus} on ${check.path}`;
    }
    return `${what} was started but could not be checked on ${check.path}: ${(error as Error).message}`;
  }
}

/**
 * Start-up reconciliation of remote hosts, each with its own router and runtimes, at the
 * same time: a host whose router has routes (or runs) gets its live colours running again;
 * a host that cannot be reached is reported and left alone — its router, if it runs, keeps
 * serving what it served. A host with no router in use is not touched (nothing is started
 * there).
 */
export async function reconcileHosts(
  targets: readonly Target[],
  report: (target: string, line: string) => void,
  signal?: AbortSignal,
): Promise<void> {
  await Promise.all(
    targets.map(async (target) => {
      try {
        const router = await target.routerInUse();
        if (!router) return;
        const runtimes = target.runtimes().map(coloursOf);
        for (const line of await reconcileLiveColours(router, runtimes, { transport: target.transport, signal })) {
          report(target.name, `target ${target.name}: ${line}`);
        }
      } catch (error) {
        report(
          target.name,
          `target ${target.name}: could not reconcile its live colours (${(error as Error).message}); its router keeps serving what it served, and the next deployment there checks again`,
        );
      }
    }),
  );
}
