import type { Kysely } from "kysely";
import { COMPOSE_SERVICE_LABEL, coloursOf, ROUTE_LABEL } from "../runtimes/colours.js";
import type { TargetInfo } from "../store/deployments.js";
import {
  finishPendingCleanup,
  notePendingCleanupError,
  type PendingCleanup,
  recordPendingCleanup,
} from "../store/pendingCleanups.js";
import type { Database } from "../store/schema.js";
import { touchedTargets } from "../store/taskTargets.js";
import type { Target } from "../transports/types.js";
import type { TaskLog } from "./taskLog.js";

/**
 * Removes what an unfinished task left on every host it touched (recorded before each step
 * ran there), and on the server's own host (tasks from before hosts were recorded): the
 * processes it started, and every instance labelled with its id except a blue/green colour
 * that went live before the task stopped — it passed its health check and is the live
 * version now.
 */
export async function cleanUpTask(
  db: Kysely<Database>,
  target: (info: TargetInfo | undefined) => Target,
  taskId: string,
  log: TaskLog,
): Promise<void> {
  const hosts = [target(undefined), ...(await touchedTargets(db, taskId)).map((info) => target(info))];
  // Several targets may share one host (today every target is the server's own): clean each transport once.
  const seen = new Set<unknown>();
  for (const host of hosts) {
    if (seen.has(host.transport)) continue;
    seen.add(host.transport);
    // One host that cannot be reached (an SSH target that is down) must not keep the others
    // from being cleaned; its clean-up is remembered and retried until it answers.
    try {
      await cleanUpHost(host, taskId, log);
    } catch (error) {
      const reason = error instanceof Error ? error.message : String(error);
      if (host.id === null) {
        log.warn(`clean-up: could not clean up on ${host.name} (${reason}); what the task left there stays`);
        continue;
      }
      await recordPendingCleanup(db, taskId, host.id, reason);
      log.warn(
        `clean-up: could not clean up on ${host.name} (${reason}); Ferry tries again until the host answers, and notes here when it is done`,
      );
    }
  }
}

/**
 * Retries the clean-up of a task on a host that could not be reached before (see
 * cleanUpTask). Done: it is forgotten and the task's log says so. The host still out of
 * reach: tried again later (each failure doubles the pause, up to 5 minutes).
 */
export async function retryCleanUp(
  db: Kysely<Database>,
  target: (info: TargetInfo | undefined) => Target,
  pending: PendingCleanup,
  log: TaskLog,
): Promise<boolean> {
  const host = target(pending.target);
  try {
    await cleanUpHost(host, pending.taskId, log);
  } catch (error) {
    await notePendingCleanupError(db, pending.taskId, pending.target.id, (error as Error).message ?? String(error));
    return false;
  }
  await finishPendingCleanup(db, pending.taskId, pending.target.id);
  log.info(
    `clean-up: ${host.name} answers again: removed what the task left there (it could not be reached when the task stopped)`,
  );
  return true;
}

async function cleanUpHost(host: Target, taskId: string, log: TaskLog): Promise<void> {
  const where = host.id === null ? "" : ` on ${host.name}`;
  const killed = await host.transport.killTaskProcesses(taskId);
  if (killed > 0) log.warn(`clean-up: killed ${killed} process group(s) the task had started${where}`);
  await takeAwayCanaries(host, taskId, log);
  const liveColours = await liveColourNames(host, log);
  for (const runtime of host.runtimes()) {
    const removed = await runtime
      .removeByLabel("ferry.task", taskId, {
        keep: (instance) => {
          // A Compose service the task recreated (not a colour) replaced its previous container
          // already: removing it would leave the service with none, so it stays.
          if (instance.labels[COMPOSE_SERVICE_LABEL] !== undefined && instance.labels[ROUTE_LABEL] === undefined) {
            log.warn(
              `clean-up: container ${instance.name} of Compose service ${instance.labels[COMPOSE_SERVICE_LABEL]} keeps running (it replaced the previous one)`,
            );
            return true;
          }
          const live = liveColours === "unknown" || liveColours.has(instance.name);
          if (live) log.warn(`clean-up: colour ${instance.name} went live before the task stopped: it keeps serving`);
          return live;
        },
      })
      .catch((error: unknown) => {
        log.warn(
          `clean-up: could not list the task's ${runtime.kind} instances${where} (${error instanceof Error ? error.message : error})`,
        );
        return [] as string[];
      });
    if (removed.length > 0) {
      const noun = coloursOf(runtime).noun;
      log.warn(`clean-up: removed ${noun}${noun.endsWith("s") ? "(es)" : "(s)"} ${removed.join(", ")}${where}`);
    }
    // After the instances: a network or volume is removable only once nothing uses it. An
    // isolated test group's network and volumes (ADR 0045) go here when the task could not
    // remove them itself (the server was killed).
    const resources = await runtime.removeResourcesByLabel?.("ferry.task", taskId).catch((error: unknown) => {
      log.warn(
        `clean-up: could not remove the task's ${runtime.kind} networks and volumes${where} (${error instanceof Error ? error.message : error})`,
      );
      return [] as string[];
    });
    if (resources && resources.length > 0) log.warn(`clean-up: removed ${resources.join(", ")}${where}`);
  }
}

/**
 * A canary the task had set (its colour carries the task's label) is taken out of its route
 * before that colour is removed: its visitors go back to the live colour instead of to a
 * colour that is gone (ADR 0049). A router that cannot be asked is left to liveColourNames,
 * which then keeps every instance.
 */
async function takeAwayCanaries(host: Target, taskId: string, log: TaskLog): Promise<void> {
  const router = await host.routerInUse().catch(() => undefined);
  if (!router?.split) return;
  const routes = await router.routes().catch(() => []);
  for (const route of routes) {
    const canary = route.canary?.colour;
    if (!canary) continue;
    for (const runtime of host.runtimes().map(coloursOf)) {
      const colour = await runtime.find(canary).catch(() => undefined);
      if (colour?.labels["ferry.task"] !== taskId) continue;
      await router.split(route.name, null);
      log.warn(
        `clean-up: took the canary ${canary} out of route ${route.name}; colour ${route.colour ?? route.upstream} serves everyone`,
      );
      break;
    }
  }
}

/** Names of the colours the host's router sends traffic to: none when no router is in use, "unknown" when it cannot be asked. */
async function liveColourNames(host: Target, log: TaskLog): Promise<Set<string> | "unknown"> {
  try {
    const router = await host.routerInUse();
    if (!router) return new Set();
    const routes = await router.routes();
    return new Set(routes.flatMap((route) => (route.colour ? [route.colour] : [])));
  } catch (error) {
    log.warn(`clean-up: could not ask the traffic router which colours are live (${(error as Error).message})`);
    // Unknown: keep every instance rather than risk removing the live one.
    return "unknown";
  }
}
