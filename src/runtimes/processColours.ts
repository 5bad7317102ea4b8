import { setTimeout as sleep } from "node:timers/promises";
import { type ColourRuntime, ROUTE_LABEL, type StartedColour } from "./colours.js";
import { type Processes, type ProcessStatus, processOrigin } from "./process.js";

const SETTLE_POLL_MS = 100;

/** Supervised processes as colours of a route: the process runtime's side of blue/green. */
export function processColours(processes: Processes): ColourRuntime {
  return {
    noun: "process",
    list: (route, signal) => processes.listByLabel(ROUTE_LABEL, route, { signal }),
    async find(name, signal) {
      const found = await processes.inspect(name, { signal });
      return found && { id: found.id, name: found.name, state: found.status, labels: found.labels, created: 0 };
    },
    async start(colour, signal) {
      const started = await processes.start(colour.id, { signal });
      return startedProcessColour(started.name, started.port);
    },
    async clone(source, name, labels, signal) {
      const started = await processes.clone(source.id, name, labels, { signal });
      return startedProcessColour(started.name, started.port);
    },
    async restart(id, { stopTimeoutSeconds, signal }) {
      await processes.stop(id, { stopTimeoutSeconds, signal });
      await processes.start(id, { signal });
    },
    waitUntilSettled: (id, settleMs, signal) => waitUntilSettled(processes, id, settleMs, signal),
    stop: (id, options) => processes.stop(id, options),
    remove: (id, options) => processes.stopAndRemove(id, options),
    logTail: (name, lines, signal) => processes.logTail(name, lines, { signal }),
  };
}

/** A started process as a colour: it listens on 127.0.0.1 at the port it was given (PORT). */
export function startedProcessColour(name: string, port: number | undefined): StartedColour {
  if (port === undefined) throw new Error(`colour ${name} has no port`);
  return { id: name, name, upstream: processOrigin(port), outputs: { processName: name, port: String(port) } };
}

/** Waits `settleMs`; the problem when the process exited or was restarted meanwhile. */
export async function waitUntilSettled(
  processes: Processes,
  name: string,
  settleMs: number,
  signal: AbortSignal,
): Promise<{ failure?: string }> {
  const deadline = Date.now() + settleMs;
  for (;;) {
    const failure = settleFailure(await processes.inspect(name, { signal }), settleMs);
    if (failure !== undefined) return { failure };
    const remaining = deadline - Date.now();
    if (remaining <= 0) return {};
    await sleep(Math.min(SETTLE_POLL_MS, remaining), undefined, { signal });
  }
}

function settleFailure(status: ProcessStatus | undefined, settleMs: number): string | undefined {
  const within = `within ${settleMs / 1000} s of starting`;
  if (status === undefined) return `was removed by someone else ${within}`;
  const exit = status.exitCode === null ? "" : ` (exit code ${status.exitCode})`;
  if (status.restarting || status.restartCount > 0)
    return `exited ${within} and was restarted by its restart policy${exit}`;
  if (!status.running) return `exited${exit} ${within}${status.error ? ` (${status.error})` : ""}`;
  return undefined;
}
