import type { DockerRuntime } from "./docker.js";
import type { Processes } from "./process.js";

/** One instance a runtime runs (a container; a supervised process with the process runtime). */
interface RuntimeInstance {
  id: string;
  name: string;
  /** "running", "exited", "created"… */
  state: string;
  labels: Record<string, string>;
  /** When it was created (Unix seconds). */
  created: number;
}

/**
 * What runs an application's instances on a target. Clean-up and start-up reconciliation
 * are written against this and nothing else; a step that starts instances asks its target
 * for the runtime kind it needs (`target.runtime("docker")`) and gets that kind's own API.
 * Docker (docker.ts) is one implementation; supervised processes (process.ts) another.
 */
export interface Runtime {
  readonly kind: RuntimeKind;
  /** Instances carrying the label with this value, in any state. */
  listByLabel(label: string, value: string, options?: { signal?: AbortSignal }): Promise<RuntimeInstance[]>;
  /** Stops and removes the instances carrying the label, but those `keep` accepts; returns the names removed. */
  removeByLabel(
    label: string,
    value: string,
    options?: { keep?: (instance: RuntimeInstance) => boolean; signal?: AbortSignal },
  ): Promise<string[]>;
  /**
   * Removes what the runtime keeps beside its instances carrying the label (Docker: networks
   * and volumes), once the instances are gone; returns what it removed ("network x"). Absent:
   * the runtime keeps nothing beside them.
   */
  removeResourcesByLabel?(label: string, value: string, options?: { signal?: AbortSignal }): Promise<string[]>;
  /** The instance's last log lines. */
  logTail(nameOrId: string, lines: number, options?: { signal?: AbortSignal }): Promise<string[]>;
}

/** Each runtime kind and the API a step gets for it. */
export interface RuntimesByKind {
  docker: DockerRuntime;
  process: Processes;
}
export type RuntimeKind = keyof RuntimesByKind;
