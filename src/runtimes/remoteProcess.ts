import { callFerryOnHost, FerryMissing } from "../transports/hostCommand.js";
import type { Transport } from "../transports/types.js";
import {
  type CallOptions,
  checkSpec,
  type Processes,
  type ProcessInstanceSpec,
  type ProcessStatus,
  type ProcessSummary,
  type StartedProcess,
} from "./process.js";
import type { ProcessHostRequest } from "./processHost.js";

/*
 * The process runtime of a remote target (docs/decisions/0035-process-runtime-on-every-target.md):
 * each operation is one `ferry processes` run on the host through the target's transport —
 * only `Transport.run`, as the host's router (traffic/hostRouter.ts) — with the request on
 * its standard input. The instances, their files and their supervisors are on the host
 * (ADR 0029); they outlive the connection and the server, and this object keeps nothing a
 * restart would lose.
 */

/** A copy of the release's files may be large. */
const CREATE_TIMEOUT_MS = 11 * 60_000;
const OPERATION_TIMEOUT_MS = 60_000;

export interface RemoteProcessOptions {
  /** The program on the host: `ferry` on its PATH unless the target's router names another. */
  command: string;
  /** The target's slug: its instances are kept apart from other targets' on the same host. */
  scope: string;
  targetName: string;
}

export class RemoteProcessRuntime implements Processes {
  readonly kind = "process" as const;
  /** One operation per instance at a time, as on the server's own host: they read and write its files. */
  readonly #busy = new Map<string, Promise<unknown>>();

  constructor(
    private readonly transport: Transport,
    private readonly options: RemoteProcessOptions,
  ) {}

  createAndStart(spec: ProcessInstanceSpec, options: CallOptions = {}): Promise<StartedProcess> {
    // Checked here too, so a wrong field is an input error before anything reaches the host.
    checkSpec(spec);
    const { name, command, args, env, copyFrom, workingDirectory, labels, restartPolicy, port, limits } = spec;
    const request: ProcessHostRequest = {
      operation: "createAndStart",
      spec: {
        name,
        command,
        ...(args && { args: [...args] }),
        ...(env && { env: { ...env } }),
        ...(copyFrom !== undefined && { copyFrom }),
        ...(workingDirectory !== undefined && { workingDirectory }),
        ...(labels && { labels: { ...labels } }),
        ...(restartPolicy !== undefined && { restartPolicy }),
        ...(port !== undefined && { port }),
        ...(limits && {
          limits: {
            ...(limits.addressSpaceMb !== undefined && { addressSpaceMb: limits.addressSpaceMb }),
            ...(limits.openFiles !== undefined && { openFiles: limits.openFiles }),
          },
        }),
      },
    };
    return this.#exclusive(name, () => this.#call<StartedProcess>(request, CREATE_TIMEOUT_MS, options.signal));
  }

  /** Copied on the host, from the instance's files there: its env values never come back over the connection. */
  clone(
    nameOrId: string,
    name: string,
    labels: Readonly<Record<string, string>>,
    options: CallOptions = {},
  ): Promise<StartedProcess> {
    return this.#exclusive(name, () =>
      this.#call<StartedProcess>(
        { operation: "clone", name: nameOrId, as: name, labels: { ...labels } },
        CREATE_TIMEOUT_MS,
        options.signal,
      ),
    );
  }

  start(nameOrId: string, options: CallOptions = {}): Promise<StartedProcess> {
    return this.#exclusive(nameOrId, () =>
      this.#call<StartedProcess>({ operation: "start", name: nameOrId }, OPERATION_TIMEOUT_MS, options.signal),
    );
  }

  async stop(nameOrId: string, options: CallOptions & { stopTimeoutSeconds?: number } = {}): Promise<void> {
    const seconds = options.stopTimeoutSeconds ?? 10;
    await this.#exclusive(nameOrId, () =>
      this.#call(
        { operation: "stop", name: nameOrId, stopTimeoutSeconds: seconds },
        OPERATION_TIMEOUT_MS + seconds * 1000,
        options.signal,
      ),
    );
  }

  stopAndRemove(nameOrId: string, options: CallOptions & { stopTimeoutSeconds?: number } = {}): Promise<boolean> {
    const seconds = options.stopTimeoutSeconds ?? 10;
    return this.#exclusive(nameOrId, () =>
      this.#call<boolean>(
        { operation: "stopAndRemove", name: nameOrId, stopTimeoutSeconds: seconds },
        OPERATION_TIMEOUT_MS + seconds * 1000,
        options.signal,
      ),
    );
  }

  async inspect(nameOrId: string, options: CallOptions = {}): Promise<ProcessStatus | undefined> {
    const status = await this.#call<ProcessStatus | null>(
      { operation: "inspect", name: nameOrId },
      OPERATION_TIMEOUT_MS,
      options.signal,
    );
    return status ?? undefined;
  }

  async listByLabel(label: string, value: string, options: CallOptions = {}): Promise<ProcessSummary[]> {
    try {
      return await this.#call<ProcessSummary[]>(
        { operation: "listByLabel", label, value },
        OPERATION_TIMEOUT_MS,
        options.signal,
      );
    } catch (error) {
      // A host without Ferry has no instances: clean-up and reconciliation of a container-only host go on.
      if (error instanceof FerryMissing) return [];
      throw error;
    }
  }

  /** Listed on the host, chosen here (`keep` is the caller's rule), each removed at once. */
  async removeByLabel(
    label: string,
    value: string,
    options: CallOptions & { keep?: (instance: ProcessSummary) => boolean } = {},
  ): Promise<string[]> {
    const removed: string[] = [];
    for (const instance of await this.listByLabel(label, value, options)) {
      if (options.keep?.(instance)) continue;
      if (await this.stopAndRemove(instance.name, { stopTimeoutSeconds: 0, signal: options.signal })) {
        removed.push(instance.name);
      }
    }
    return removed;
  }

  logTail(nameOrId: string, lines: number, options: CallOptions = {}): Promise<string[]> {
    return this.#call<string[]>(
      { operation: "logTail", name: nameOrId, lines: Math.max(1, Math.min(10_000, Math.floor(lines))) },
      OPERATION_TIMEOUT_MS,
      options.signal,
    );
  }

  /** Runs `ferry processes` on the host with the request on its standard input; its answer's value. */
  #call<T>(request: ProcessHostRequest, timeoutMs: number, signal: AbortSignal | undefined): Promise<T> {
    return callFerryOnHost<T>(this.transport, {
      command: this.options.command,
      args: ["processes", "--scope", this.options.scope],
      request,
      timeoutMs,
      signal,
      what: `the process runtime on target '${this.options.targetName}'`,
    });
  }

  #exclusive<T>(name: string, operation: () => Promise<T>): Promise<T> {
    const previous = this.#busy.get(name) ?? Promise.resolve();
    const next = previous.catch(() => {}).then(operation);
    const settled = next.catch(() => {});
    this.#busy.set(name, settled);
    void settled.then(() => {
      if (this.#busy.get(name) === settled) this.#busy.delete(name);
    });
    return next;
  }
}
