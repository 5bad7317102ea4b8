import type { Runtime, RuntimeKind, RuntimesByKind } from "../runtimes/types.js";
import type { Router } from "../traffic/router.js";

/**
 * How the server reaches a host: `local` (its own), `ssh` (agentless) or `agent` (`ferry
 * agent` on the host dials out). A step never knows which: it asks its Target.
 */
export interface Transport {
  readonly kind: "local" | "ssh" | "agent";
  /** The host's runtime of this kind (its Docker engine…), connected on first use. */
  runtime<K extends RuntimeKind>(kind: K): RuntimesByKind[K];
  /**
   * Kills what a task started on this host and is still running (its recorded process
   * groups, any process carrying its id) and removes its work files; returns how many
   * process groups or processes were killed.
   */
  killTaskProcesses(taskId: string): Promise<number>;
}

/**
 * Where a step runs: a host, reached through its transport, with its runtimes and its
 * traffic router. Deployments, runbooks and clean-up all see hosts only through this.
 */
export interface Target {
  /** The target's id; null for the server's own host (steps without roles run there). */
  readonly id: string | null;
  readonly name: string;
  readonly roles: readonly string[];
  readonly transport: Transport;
  runtime<K extends RuntimeKind>(kind: K): RuntimesByKind[K];
  /** Every runtime of the host, for clean-up and reconciliation, which do not care which kind. */
  runtimes(): Runtime[];
  /** The traffic switch on this host, connected on first use. */
  router(): Promise<Router>;
  /** The router only when it is in use (connected, or with routes from an earlier run): clean-up asks it without starting one. */
  routerInUse(): Promise<Router | undefined>;
}
