import { join } from "node:path";
import { localDocker } from "../runtimes/docker.js";
import { killTaskProcesses } from "../runtimes/processGroups.js";
import type { RuntimeKind, RuntimesByKind } from "../runtimes/types.js";
import type { LazyRouter } from "../traffic/routers.js";
import type { Target, Transport } from "./types.js";

/** The server's own host: processes spawned here, its Docker engine through the local socket. */
export class LocalTransport implements Transport {
  readonly kind = "local" as const;

  /** @param workRoot where tasks keep working files on this host (their process-group records among them) */
  constructor(private readonly workRoot: string) {}

  runtime<K extends RuntimeKind>(kind: K): RuntimesByKind[K] {
    const runtimes: RuntimesByKind = { docker: localDocker() };
    return runtimes[kind];
  }

  killTaskProcesses(taskId: string): Promise<number> {
    return killTaskProcesses(join(this.workRoot, taskId), taskId);
  }
}

/**
 * A target on the server's own host. Until remote transports exist every target is one of
 * these, and they share the host's Docker engine and router.
 */
export function localTarget(
  transport: LocalTransport,
  router: LazyRouter | undefined,
  target: { id: string | null; name: string; roles: readonly string[] },
): Target {
  return {
    ...target,
    transport,
    runtime: (kind) => transport.runtime(kind),
    runtimes: () => [transport.runtime("docker")],
    router: async () => {
      if (!router) throw new Error("this server has no traffic router for blue/green deployments");
      return router.get();
    },
    routerInUse: async () => router?.inUse(),
  };
}
