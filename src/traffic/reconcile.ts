import { type Colour, type ColourRuntime, coloursOf } from "../runtimes/colours.js";
import type { Target } from "../transports/types.js";
import type { Router } from "./router.js";

/**
 * Start-up reconciliation of the data plane (DESIGN.md: the router's state is the truth for
 * which colour is live). Unfinished colours of crashed deployments are removed by the task
 * engine's clean-up of interrupted tasks, which keeps any colour the router already serves;
 * here, every live colour is made to run again (after a host reboot, say) on whichever
 * runtime of the host has it, and a live colour no runtime has is reported, since only a
 * deployment can fix that. Returns what it did, one line each.
 */
export async function reconcileLiveColours(router: Router, runtimes: readonly ColourRuntime[]): Promise<string[]> {
  const report: string[] = [];
  for (const route of await router.routes()) {
    if (route.colour === null) continue;
    let found: { runtime: ColourRuntime; colour: Colour } | undefined;
    const unreachable: string[] = [];
    for (const runtime of runtimes) {
      try {
        const colour = await runtime.find(route.colour);
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
      continue;
    }
    if (found.colour.state !== "running")
      report.push(`route ${route.name}: starting its live colour ${route.colour}, which was not running`);
    // Starting is a no-op for a running colour; either way it says where it listens now.
    const started = await found.runtime.start(found.colour).catch((error: unknown) => {
      report.push(`route ${route.name}: could not start its live colour ${route.colour}: ${(error as Error).message}`);
      return undefined;
    });
    // A restarted container gets a new host port from the engine: the route must follow it.
    if (started === undefined || started.upstream === route.upstream) continue;
    await router.switch(route, { upstream: started.upstream, colour: route.colour });
    report.push(
      `route ${route.name}: its live colour ${route.colour} moved to ${started.upstream}; switched the route there`,
    );
  }
  return report;
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
): Promise<void> {
  await Promise.all(
    targets.map(async (target) => {
      try {
        const router = await target.routerInUse();
        if (!router) return;
        for (const line of await reconcileLiveColours(router, target.runtimes().map(coloursOf))) {
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
