import { type DockerRuntime, publishedOrigin } from "../runtimes/docker.js";
import type { Router } from "./router.js";

/**
 * Start-up reconciliation of the data plane (DESIGN.md: the router's state is the truth for
 * which colour is live). Unfinished colours of crashed deployments are removed by the task
 * engine's clean-up of interrupted tasks, which keeps any colour the router already serves;
 * here, every live colour's container is made to run again (after a host reboot, say), and
 * a live colour whose container is gone is reported, since only a deployment can fix that.
 * Returns what it did, one line each.
 */
export async function reconcileLiveColours(router: Router, docker: DockerRuntime): Promise<string[]> {
  const report: string[] = [];
  for (const route of await router.routes()) {
    if (route.colour === null) continue;
    const container = await docker.inspectContainer(route.colour).catch(() => undefined);
    if (!container) {
      report.push(
        `route ${route.name}: its live colour ${route.colour} has no container; deploy or roll back to put one behind ${route.host}${route.pathPrefix}`,
      );
      continue;
    }
    if (!container.running)
      report.push(`route ${route.name}: starting its live colour ${route.colour}, which was not running`);
    // Starting is a no-op for a running container; either way it says where the port is now.
    const started = await docker.startContainer(container.id);
    // A restarted container gets a new host port from the engine: the route must follow it.
    const upstream = publishedOrigin(started.ports, Number(container.labels["ferry.route-port"]));
    if (upstream === undefined) continue;
    if (upstream !== route.upstream) {
      await router.switch(route, { upstream, colour: route.colour });
      report.push(
        `route ${route.name}: its live colour ${route.colour} moved to ${upstream}; switched the route there`,
      );
    }
  }
  return report;
}
