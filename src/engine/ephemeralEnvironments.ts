import type { FastifyBaseLogger } from "fastify";
import type { Environment } from "../domain/environments.js";
import { ConflictError } from "../domain/errors.js";
import { appendAuditEvent } from "../store/audit.js";
import type { StoreContext } from "../store/common.js";
import { environmentTargets, type TargetInfo } from "../store/deployments.js";
import {
  activeDeploymentsIn,
  deleteEnvironment,
  expiredEphemeralEnvironments,
  getEnvironment,
} from "../store/environments.js";
import type { Target } from "../transports/types.js";

/** What tearing an environment down needs: the store and how hosts are reached. */
export interface TearDownServices {
  context: StoreContext;
  target: (info: TargetInfo | undefined) => Target;
}

/**
 * Tears an ephemeral environment down (ADR 0045) and deletes it: on the server's host and
 * on each of its targets, every instance (containers, supervised processes) labelled
 * `ferry.env=<slug>`, then the networks and volumes labelled so, then the environment row
 * with its lifecycle-phase and target memberships. Refused while a deployment to it is
 * queued or running (it would start things as they go). A host that cannot be reached fails
 * the tear-down, naming it, and the environment stays, so a retry (or the next TTL sweep)
 * finds what is left. Returns what was removed, as lines.
 */
export async function tearDownEnvironment(services: TearDownServices, reference: string): Promise<string[]> {
  const environment = await getEnvironment(services.context, reference);
  if (!environment.ephemeral) {
    throw new ConflictError(
      `environment '${environment.name}' is not ephemeral: only an ephemeral environment is torn down; delete it with 'ferry env delete' once nothing is deployed there`,
    );
  }
  const active = await activeDeploymentsIn(services.context, environment.id);
  if (active > 0) {
    throw new ConflictError(
      `environment '${environment.name}' has ${active} deployment(s) queued or running; wait for them or cancel them, then delete it again`,
    );
  }
  const removed = await removeEverythingLabelled(services, environment);
  await deleteEnvironment(services.context, environment.id);
  return removed;
}

async function removeEverythingLabelled(services: TearDownServices, environment: Environment): Promise<string[]> {
  const hosts = [
    services.target(undefined),
    ...(await environmentTargets(services.context.db, environment.id)).map((info) => services.target(info)),
  ];
  const removed: string[] = [];
  const seen = new Set<unknown>();
  for (const host of hosts) {
    // Targets sharing a host (several on the server's own): each engine once.
    if (seen.has(host.transport)) continue;
    seen.add(host.transport);
    const where = host.id === null ? "" : ` on ${host.name}`;
    for (const runtime of host.runtimes()) {
      try {
        for (const name of await runtime.removeByLabel("ferry.env", environment.slug)) {
          removed.push(`${runtime.kind} ${name}${where}`);
        }
        for (const name of (await runtime.removeResourcesByLabel?.("ferry.env", environment.slug)) ?? []) {
          removed.push(`${name}${where}`);
        }
      } catch (error) {
        throw new ConflictError(
          `could not tear down environment '${environment.name}'${where} (${runtime.kind}: ${error instanceof Error ? error.message : String(error)}); it is kept: try again once the host answers`,
        );
      }
    }
  }
  return removed;
}

/**
 * Tears down ephemeral environments whose TTL ran out, every `intervalMs` (jittered, so
 * nodes sharing a database do not sweep at once). Two nodes tearing the same environment
 * down both remove by label, which is idempotent; the second's delete finds no row and only
 * logs it.
 */
export class EphemeralEnvironmentSweeper {
  private timer: NodeJS.Timeout | undefined;
  private stopped = false;
  private sweeping: Promise<void> | undefined;

  constructor(
    private readonly services: TearDownServices,
    private readonly logger: FastifyBaseLogger,
    private readonly intervalMs = 60_000,
  ) {}

  start(): void {
    this.schedule();
  }

  async stop(): Promise<void> {
    this.stopped = true;
    clearTimeout(this.timer);
    await this.sweeping;
  }

  private schedule(): void {
    if (this.stopped) return;
    this.timer = setTimeout(
      () => {
        this.sweeping = this.sweep()
          .catch((error: unknown) =>
            this.logger.warn({ err: error }, "could not look for expired ephemeral environments"),
          )
          .finally(() => {
            this.sweeping = undefined;
            this.schedule();
          });
      },
      this.intervalMs * (0.75 + Math.random() / 2),
    );
    this.timer.unref();
  }

  /** One pass: each expired environment torn down and deleted, audited with what went. */
  async sweep(now = new Date()): Promise<void> {
    for (const environment of await expiredEphemeralEnvironments(this.services.context, now)) {
      if (this.stopped) return;
      try {
        const removed = await tearDownEnvironment(this.services, environment.id);
        const outcome = `torn down ${environment.ttlMinutes} min after its last deployment: removed ${removed.length > 0 ? removed.join(", ") : "nothing (nothing was deployed)"}`;
        this.logger.info({ environment: environment.slug }, "ephemeral environment expired and was torn down");
        await appendAuditEvent(this.services.context, {
          actor: { id: null, name: "ephemeral environment TTL" },
          source: "server",
          action: "environment.expire",
          resource: { type: "environment", id: environment.id, name: environment.slug },
          diff: { outcome: { from: null, to: outcome } },
        }).catch((error: unknown) =>
          this.logger.error({ err: error }, "could not audit an ephemeral environment's tear-down"),
        );
      } catch (error) {
        // Tried again at the next sweep (a deployment still runs, a host does not answer).
        this.logger.warn(
          { err: error, environment: environment.slug },
          "could not tear down an expired ephemeral environment yet",
        );
      }
    }
  }
}
