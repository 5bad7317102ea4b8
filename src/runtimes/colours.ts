import { dockerColours } from "./dockerColours.js";
import { processColours } from "./processColours.js";
import type { Runtime, RuntimeKind, RuntimesByKind } from "./types.js";

/*
 * How blue/green (steps/blueGreen/strategy.ts) and start-up reconciliation
 * (traffic/reconcile.ts) see a runtime's instances: as colours of a route. Each runtime
 * kind has one adapter (dockerColours.ts, processColours.ts); starting a *new* colour is
 * the step's, since its config says what runs.
 */

/** Labels that make an instance a colour of a route (besides ferry.project/env/release/task). */
export const ROUTE_LABEL = "ferry.route";
export const HEALTH_PATH_LABEL = "ferry.health-path";
/**
 * The rest of the health check a colour was deployed with (ADR 0072): start-up
 * reconciliation probes a colour it starts again with the same check. A colour deployed
 * before these existed has only the path; the check's defaults stand in for the rest.
 */
export const HEALTH_STATUS_LABEL = "ferry.health-status";
export const HEALTH_INTERVAL_LABEL = "ferry.health-interval-ms";
export const HEALTH_TIMEOUT_LABEL = "ferry.health-timeout-ms";
export const HEALTH_DEADLINE_LABEL = "ferry.health-deadline-seconds";
/** What the compose step creates carries these (a routed service's colours too): clean-up tells them apart. */
export const COMPOSE_PROJECT_LABEL = "ferry.compose.project";
export const COMPOSE_SERVICE_LABEL = "ferry.compose.service";

/** One colour on a host, in any state. */
export interface Colour {
  id: string;
  name: string;
  /** "running", "exited"… */
  state: string;
  labels: Record<string, string>;
  /** When it was created (Unix seconds). */
  created: number;
}

/** A running colour and where it listens. */
export interface StartedColour {
  id: string;
  name: string;
  /** Its private HTTP address on the host, e.g. "http://127.0.0.1:32768": what the route points at. */
  upstream: string;
  /** The step outputs this runtime adds (a container's id and host ports; a process's port). */
  outputs: Record<string, string>;
}

export interface ColourRuntime {
  /** What an instance is called in log lines: "container", "process". */
  readonly noun: string;
  /** The colours of a route on this host (every state, every project: the caller filters). */
  list(route: string, signal?: AbortSignal): Promise<Colour[]>;
  /** The colour of this name; undefined when the runtime has none. */
  find(name: string, signal?: AbortSignal): Promise<Colour | undefined>;
  /** Starts a colour again (a no-op when it runs) and says where it listens now (a port may move). */
  start(colour: Colour, signal?: AbortSignal): Promise<StartedColour>;
  /**
   * Starts a fresh instance named `name` running what `source` runs — the same release: a
   * container from the same image (by id) with its env, mounts and limits; a process with
   * its command, env, limits and a copy of its files — with the source's labels and
   * `labels` over them. What the `restart` step switches in (ADR 0052).
   */
  clone(source: Colour, name: string, labels: Record<string, string>, signal?: AbortSignal): Promise<StartedColour>;
  /**
   * Stops the instance (SIGTERM, SIGKILL after the timeout) and starts it again in place: a
   * short gap, for an instance no route sends traffic to. Says nothing of where it listens.
   */
  restart(id: string, options: { stopTimeoutSeconds: number; signal?: AbortSignal }): Promise<void>;
  /** Waits `settleMs`; the problem when the colour stopped or was restarted meanwhile. */
  waitUntilSettled(id: string, settleMs: number, signal: AbortSignal): Promise<{ failure?: string }>;
  /** Stops it (SIGTERM, SIGKILL after the timeout) and keeps it, for a rollback. */
  stop(id: string, options: { stopTimeoutSeconds: number; signal?: AbortSignal }): Promise<void>;
  /** Stops and removes it; false when it was gone already. */
  remove(id: string, options: { stopTimeoutSeconds: number; signal?: AbortSignal }): Promise<boolean>;
  /** Its last log lines. */
  logTail(name: string, lines: number, signal?: AbortSignal): Promise<string[]>;
}

const adapters: { [K in RuntimeKind]: (runtime: RuntimesByKind[K]) => ColourRuntime } = {
  docker: dockerColours,
  process: processColours,
};

/** The colours view of a runtime of any kind (for reconciliation, which walks every runtime of a host). */
export function coloursOf(runtime: Runtime): ColourRuntime {
  // runtime.kind says which class it is: RuntimesByKind maps each kind to its class.
  return (adapters[runtime.kind] as (runtime: Runtime) => ColourRuntime)(runtime);
}
