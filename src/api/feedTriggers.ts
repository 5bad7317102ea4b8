import { timingSafeEqual } from "node:crypto";
import type { FastifyRequest } from "fastify";
import { z } from "zod";
import type { Page } from "../domain/common.js";
import { UnauthenticatedError } from "../domain/errors.js";
import {
  createFeedTriggerSchema,
  type FeedTrigger,
  feedTriggerSchema,
  pushedTags,
  registryEnvelopeSchema,
  updateFeedTriggerSchema,
} from "../domain/feedTriggers.js";
import {
  createScheduledTriggerSchema,
  type ScheduledTrigger,
  scheduledTriggerSchema,
  updateScheduledTriggerSchema,
} from "../domain/scheduledTriggers.js";
import type { DeploymentServices } from "../engine/deployments.js";
import { auditIgnoredFiring, type FiringOutcome, fireTrigger, ignoredReason } from "../engine/feedTriggers.js";
import { appendAuditEvent } from "../store/audit.js";
import * as triggers from "../store/feedTriggers.js";
import { getProcess } from "../store/releases.js";
import * as scheduledTriggers from "../store/scheduledTriggers.js";
import { collectionRoutes } from "./crud.js";
import { defineRoute, type RouteSpec } from "./route.js";

const hookParams = z.strictObject({ trigger: z.string().min(1).max(100) });

const firingSchema = z.object({
  tag: z.string(),
  outcome: z.enum(["released", "already-seen", "ignored"]),
  release: z.string().optional(),
  digest: z.string().optional(),
  reason: z.string().optional(),
  deployments: z.array(z.string()).optional(),
});

function describeFiring(outcome: FiringOutcome): z.infer<typeof firingSchema> {
  switch (outcome.kind) {
    case "released":
      return {
        tag: outcome.tag,
        outcome: outcome.kind,
        release: outcome.release,
        digest: outcome.digest,
        deployments: outcome.deployments.map((created) => created.environment),
      };
    case "already-seen":
      return { tag: outcome.tag, outcome: outcome.kind, digest: outcome.digest };
    case "ignored":
      return { tag: outcome.tag, outcome: outcome.kind, reason: outcome.reason };
  }
}

/** The bearer token of the request, if it sent one. */
function bearerOf(request: FastifyRequest): string | undefined {
  const header = request.headers.authorization;
  const match = typeof header === "string" ? /^Bearer ([\x21-\x7e]+)$/.exec(header) : null;
  return match?.[1];
}

function sameSecret(sent: string | undefined, expected: string): boolean {
  if (sent === undefined) return false;
  const a = Buffer.from(sent);
  const b = Buffer.from(expected);
  return a.length === b.length && timingSafeEqual(a, b);
}

/**
 * A project's feed triggers (docs/triggers.md) and the registry's notification endpoint. The
 * secret is write-only. Triggers deploy on their own, so a project's administrators manage
 * them, like its webhooks.
 */
export function feedTriggerRoutes(services: DeploymentServices): RouteSpec[] {
  const { context } = services;
  const project = (params: { project?: string }) => params.project ?? "";
  // A change moves a trigger's next poll or firing: this node's pollers plan their sleep again.
  const replanning = async <T>(change: Promise<T>): Promise<T> => {
    const result = await change;
    services.triggersChanged?.();
    return result;
  };
  const crud = collectionRoutes({
    tag: "Triggers",
    noun: "feed trigger",
    path: "/api/v1/projects/:project/triggers",
    scope: ["project"],
    itemParam: "trigger",
    itemSchema: feedTriggerSchema,
    createSchema: createFeedTriggerSchema,
    updateSchema: updateFeedTriggerSchema,
    list: ([projectRef = ""], paging): Promise<Page<FeedTrigger>> =>
      triggers.listFeedTriggers(context, projectRef, paging),
    create: ([projectRef = ""], body) => replanning(triggers.createFeedTrigger(context, projectRef, body)),
    get: ([projectRef = ""], reference) => triggers.getFeedTrigger(context, projectRef, reference),
    update: ([projectRef = ""], reference, body) =>
      replanning(triggers.updateFeedTrigger(context, projectRef, reference, body)),
    remove: ([projectRef = ""], reference) => replanning(triggers.deleteFeedTrigger(context, projectRef, reference)),
    secretFields: () => ["secret"],
    access: {
      list: { kind: "project", permission: "view", project },
      read: { kind: "project", permission: "view", project },
      create: { kind: "project", permission: "administer", project },
      change: { kind: "project", permission: "administer", project },
    },
  });
  const hook = defineRoute({
    method: "POST",
    path: "/api/v1/hooks/registry/:trigger",
    tag: "Triggers",
    summary:
      "A registry's notification (Docker distribution's envelope): each pushed tag of the trigger's image that matches its version rule becomes a release deployed to the lifecycle's first phase",
    params: hookParams,
    body: registryEnvelopeSchema,
    response: z.object({ trigger: z.string(), paused: z.boolean(), firings: z.array(firingSchema) }),
    // The trigger's secret is the credential (Authorization: Bearer …), checked by the handler.
    access: { kind: "public" },
    handler: async ({ params, body, request }) => {
      const trigger = await triggers.triggerForFiring(context, params.trigger);
      // One answer for an unknown trigger and a wrong secret: the endpoint tells nobody which ids exist.
      if (!trigger || !sameSecret(bearerOf(request), trigger.secret)) {
        await appendAuditEvent(context, {
          actor: { id: null, name: "anonymous" },
          source: request.ip,
          action: "trigger.refused",
          resource: { type: "feed-trigger", id: trigger?.id ?? null, name: trigger?.name ?? params.trigger },
          diff: { reason: { from: null, to: "missing or wrong secret" } },
        }).catch((error: unknown) =>
          request.log.error({ err: error }, "could not audit a refused registry notification"),
        );
        throw new UnauthenticatedError(
          "the notification's secret is missing or wrong: the registry must send Authorization: Bearer <the trigger's secret>",
        );
      }
      const image = (await getProcess(context, trigger.project)).images.find(
        (candidate) => candidate.name === trigger.image,
      );
      const pushed = image ? pushedTags(body, image.repository) : [];
      if (trigger.paused) {
        for (const { tag } of pushed) {
          await auditIgnoredFiring(services, trigger, "notification", { tag, reason: "the trigger is paused" });
        }
        return { trigger: trigger.name, paused: true, firings: [] };
      }
      const firings: z.infer<typeof firingSchema>[] = [];
      for (const tag of pushed) {
        const outcome = await fireTrigger(services, trigger, tag, "notification");
        const reason = ignoredReason(outcome);
        if (reason !== undefined) {
          await auditIgnoredFiring(services, trigger, "notification", {
            tag: outcome.tag,
            reason,
            ...(outcome.kind === "already-seen" && { digest: outcome.digest }),
          });
        }
        firings.push(describeFiring(outcome));
      }
      return { trigger: trigger.name, paused: false, firings };
    },
  });
  const scheduled = collectionRoutes({
    tag: "Triggers",
    noun: "scheduled trigger",
    path: "/api/v1/projects/:project/scheduled-triggers",
    scope: ["project"],
    itemParam: "trigger",
    itemSchema: scheduledTriggerSchema,
    createSchema: createScheduledTriggerSchema,
    updateSchema: updateScheduledTriggerSchema,
    list: ([projectRef = ""], paging): Promise<Page<ScheduledTrigger>> =>
      scheduledTriggers.listScheduledTriggers(context, projectRef, paging),
    create: ([projectRef = ""], body) =>
      replanning(scheduledTriggers.createScheduledTrigger(context, projectRef, body)),
    get: ([projectRef = ""], reference) => scheduledTriggers.getScheduledTrigger(context, projectRef, reference),
    update: ([projectRef = ""], reference, body) =>
      replanning(scheduledTriggers.updateScheduledTrigger(context, projectRef, reference, body)),
    remove: ([projectRef = ""], reference) =>
      replanning(scheduledTriggers.deleteScheduledTrigger(context, projectRef, reference)),
    access: {
      list: { kind: "project", permission: "view", project },
      read: { kind: "project", permission: "view", project },
      create: { kind: "project", permission: "administer", project },
      change: { kind: "project", permission: "administer", project },
    },
  });
  return [...crud, hook, ...scheduled];
}
