import { TaskFailure } from "../engine/types.js";
import type { Processes } from "../runtimes/process.js";
import type { Runtime, RuntimesByKind } from "../runtimes/types.js";
import type { HostRouter } from "../traffic/hostRouter.js";
import type { Target, Transport } from "./types.js";

/**
 * A target on another host (ssh or agent): its host through the transport, its Docker
 * engine as the transport reaches it, its supervised processes through the transport
 * (docs/decisions/0035), and the traffic router its settings choose on that host, driven
 * through the transport like everything else (docs/decisions/0031).
 */
export function remoteTarget(
  transport: Transport,
  target: { id: string; slug?: string; name: string; roles: readonly string[] },
  router: HostRouter | undefined,
  processes: Processes,
): Target {
  return {
    ...target,
    transport,
    runtime: (kind) => (kind === "process" ? (processes as RuntimesByKind[typeof kind]) : transport.runtime(kind)),
    // Clean-up asks the host's engine too; a host without Docker answers with an error it logs.
    runtimes: (): Runtime[] => [transport.runtime("docker"), processes],
    router: async () => {
      if (!router) {
        throw new TaskFailure(
          `target '${target.name}' has no traffic router for a blue/green switch: give it one (ferry target update ${target.slug ?? target.name} --router builtin --router-listen 0.0.0.0:80, or router: in ferry.yml; docs/targets.md)`,
        );
      }
      return router.get();
    },
    routerInUse: async () => router?.inUse(),
  };
}
