import type { FastifyBaseLogger } from "fastify";
import { ConflictError, InputError } from "../domain/errors.js";
import { type PushedTag, releaseVersionOfTag } from "../domain/feedTriggers.js";
import { pinImages } from "../feeds/images.js";
import { pickLatestTag } from "../feeds/latestTag.js";
import { RegistryClient, RegistryError } from "../feeds/registry.js";
import { defaultOutboundPolicy } from "../security/outboundGuard.js";
import { appendAuditEvent } from "../store/audit.js";
import { getFeed, getFeedCredentials } from "../store/feeds.js";
import {
  claimDueTriggers,
  claimFiring,
  hasFirings,
  nextPollAt,
  recordPoll,
  releaseFiring,
  setFiringRelease,
  type TriggerForFiring,
  triggerForFiring,
} from "../store/feedTriggers.js";
import { createRelease, getProcess } from "../store/releases.js";
import { type DeploymentCreated, deployToFirstPhase } from "./deploymentRequests.js";
import type { DeploymentServices } from "./deployments.js";
import { DueTimer } from "./dueTimer.js";

/**
 * Feed triggers (docs/triggers.md): a tag pushed to a project image's repository, announced
 * by the registry's notification or found by polling, creates a release pinned by digest and
 * deploys it to the lifecycle's first phase. Every digest is acted on once per trigger
 * (store/feedTriggers.ts claimFiring), so a notification delivered twice, replayed later, or
 * the registry's notification of a retag step's new tags, creates nothing more.
 */

export type TriggerCause = "notification" | "poll";

export type FiringOutcome =
  | { kind: "released"; tag: string; digest: string; release: string; deployments: DeploymentCreated[] }
  | { kind: "already-seen"; tag: string; digest: string }
  | { kind: "ignored"; tag: string; reason: string };

/** Acts on one pushed tag: a release and its first deployments, or why nothing was done. */
export async function fireTrigger(
  services: DeploymentServices,
  trigger: TriggerForFiring,
  pushed: Pick<PushedTag, "tag">,
  cause: TriggerCause,
): Promise<FiringOutcome> {
  const { context } = services;
  const { tag } = pushed;
  const process = await getProcess(context, trigger.project);
  const image = process.images.find((candidate) => candidate.name === trigger.image);
  if (!image) return { kind: "ignored", tag, reason: `the project's process has no image '${trigger.image}' any more` };
  if ((await pickLatestTag(image, [tag])) !== tag) {
    return { kind: "ignored", tag, reason: `tag ${tag} does not match image '${image.name}''s version rule` };
  }
  const version = releaseVersionOfTag(tag, trigger.versionFromTag);
  if (version === undefined) {
    return { kind: "ignored", tag, reason: `tag ${tag} does not match the trigger's versionFromTag pattern` };
  }
  // The digest the tag points to now, read from the registry (a notification's own word is
  // not taken for it): the release pins exactly that, with the other images' latest tags.
  const images = await pinImages(
    context,
    process.images,
    { [image.name]: tag },
    services.outbound ?? defaultOutboundPolicy,
  );
  const digest = images.find((pinned) => pinned.name === image.name)?.digest ?? "";
  if (!(await claimFiring(context.db, { triggerId: trigger.id, digest, tag, cause }))) {
    return { kind: "already-seen", tag, digest };
  }
  const createdBy = `trigger:${trigger.name}`;
  try {
    await createRelease(
      context,
      trigger.project,
      {
        version,
        notes: `Created by feed trigger '${trigger.name}' for ${image.repository}:${tag} (${digest}), on a registry ${cause}.`,
        images: {},
      },
      createdBy,
      { process, images },
    );
  } catch (error) {
    // A release of that version exists (made by hand, or from another digest of the tag).
    if (error instanceof InputError || error instanceof ConflictError) {
      return { kind: "ignored", tag, reason: error.message };
    }
    await releaseFiring(context.db, trigger.id, digest);
    throw error;
  }
  await setFiringRelease(context.db, trigger.id, digest, version);
  const frozen: string[] = [];
  const deployments = await deployToFirstPhase(services, trigger.project, version, createdBy, (message) =>
    frozen.push(message),
  );
  await appendAuditEvent(context, {
    actor: { id: null, name: `feed trigger ${trigger.name}` },
    source: cause === "notification" ? "registry notification" : "registry poll",
    action: "trigger.fire",
    resource: { type: "project", id: trigger.projectId, name: trigger.project },
    diff: {
      trigger: { from: null, to: trigger.name },
      cause: { from: null, to: cause },
      image: { from: null, to: `${image.repository}:${tag}@${digest}` },
      release: { from: null, to: version },
      deployments: { from: null, to: deployments.map((created) => created.environment) },
      ...(frozen.length > 0 && { frozen: { from: null, to: frozen } }),
    },
  });
  return { kind: "released", tag, digest, release: version, deployments };
}

/**
 * Audits a firing that did nothing (`trigger.ignore`), with its cause and why: a tag already
 * acted on, one that does not match, a release that exists, a paused trigger. A trigger that
 * deploys on its own must say also when it chose not to.
 */
export async function auditIgnoredFiring(
  services: DeploymentServices,
  trigger: Pick<TriggerForFiring, "name" | "projectId" | "project">,
  cause: TriggerCause,
  outcome: { tag: string; reason: string; digest?: string | undefined },
): Promise<void> {
  await appendAuditEvent(services.context, {
    actor: { id: null, name: `feed trigger ${trigger.name}` },
    source: cause === "notification" ? "registry notification" : "registry poll",
    action: "trigger.ignore",
    resource: { type: "project", id: trigger.projectId, name: trigger.project },
    diff: {
      trigger: { from: null, to: trigger.name },
      cause: { from: null, to: cause },
      tag: { from: null, to: outcome.tag },
      ...(outcome.digest !== undefined && { digest: { from: null, to: outcome.digest } }),
      reason: { from: null, to: outcome.reason },
    },
  });
}

/** Why an outcome did nothing, for the audit log; undefined: it released. */
export function ignoredReason(outcome: FiringOutcome): string | undefined {
  switch (outcome.kind) {
    case "released":
      return undefined;
    case "already-seen":
      return `nothing new: digest ${outcome.digest} was acted on already (a repeated or replayed notification, or a retag)`;
    case "ignored":
      return outcome.reason;
  }
}

/** The baseline firing of a first poll that found no tag (a digest no manifest has). */
const EMPTY_BASELINE = "baseline:no-tags";

/**
 * One poll: the newest tag matching the image's version rule, acted on unless its digest was
 * seen. The first poll of a trigger only notes what is there (a baseline): a trigger added to
 * a repository with a hundred tags does not release the newest of them by itself.
 */
async function pollTrigger(
  services: DeploymentServices,
  trigger: TriggerForFiring,
): Promise<FiringOutcome | undefined> {
  const { context } = services;
  const process = await getProcess(context, trigger.project);
  const image = process.images.find((candidate) => candidate.name === trigger.image);
  if (!image) throw new Error(`the project's process has no image '${trigger.image}' any more`);
  const feed = await getFeed(context, image.feed);
  const client = new RegistryClient({
    url: feed.url,
    ...(await getFeedCredentials(context, feed.id)),
    outbound: services.outbound ?? defaultOutboundPolicy,
  });
  const tags = await client.listTags(image.repository).catch((error: unknown) => {
    // A repository nothing was pushed to yet: no tags (its first push is a new tag).
    if (error instanceof RegistryError && error.reason === "not-found") return [];
    throw error;
  });
  const newest = await pickLatestTag(image, tags);
  if (!(await hasFirings(context.db, trigger.id))) {
    // The baseline is noted also when there is nothing: otherwise a tag pushed after a
    // first poll of an empty repository became the baseline, and was never released.
    const digest = newest ? (await client.resolveDigest(image.repository, newest)).digest : EMPTY_BASELINE;
    await claimFiring(context.db, { triggerId: trigger.id, digest, tag: newest ?? "", cause: "baseline" });
    return undefined;
  }
  if (!newest) return undefined;
  return fireTrigger(services, trigger, { tag: newest }, "poll");
}

/** Triggers one node polls at the same time. */
const MAX_POLLS = 10;

/** The longest the poller sleeps: a trigger created through another server node is polled by this one no later than this. */
const MAX_SLEEP_MS = 60_000;

/**
 * Polls the triggers that poll, on a schedule the server nodes share (a claim moves a
 * trigger's next poll forward): each due trigger by one node, several in parallel. It sleeps
 * until the earliest trigger is due (ADR 0069), and plans again when a trigger changes on
 * this node (`triggersChanged`) or one of its polls ends (that trigger's next poll moved).
 */
export class FeedTriggerPoller {
  private readonly running = new Map<string, Promise<void>>();
  private readonly timer: DueTimer;

  constructor(
    private readonly services: DeploymentServices,
    private readonly logger: FastifyBaseLogger,
  ) {
    this.timer = new DueTimer((now) => this.pass(now), {
      maxSleepMs: MAX_SLEEP_MS,
      retryMs: 5_000,
      onError: (error) => this.logger.warn({ err: error }, "could not look for feed triggers to poll"),
    });
  }

  start(): void {
    this.timer.start();
  }

  async stop(): Promise<void> {
    await this.timer.stop();
    await Promise.allSettled(this.running.values());
  }

  /** A trigger was created, changed, paused, resumed or deleted: plan the sleep again. */
  triggersChanged(): void {
    this.timer.wake();
  }

  /** Starts the polls due at `now` this node has room for; when the next is due. */
  private async pass(now: Date): Promise<Date | undefined> {
    const room = MAX_POLLS - this.running.size;
    // Full: the end of a poll wakes the timer (a due trigger would otherwise be "due now" in a loop).
    if (room <= 0) return undefined;
    // A claim outlasts a poll's registry calls (15 s each at most) and the release it makes.
    const due = await claimDueTriggers(this.services.context.db, now, 120_000, room);
    for (const id of due) {
      if (this.running.has(id)) continue;
      this.running.set(
        id,
        this.poll(id)
          .catch((error: unknown) =>
            this.logger.warn({ err: error, trigger: id }, "could not record a feed trigger's poll"),
          )
          .finally(() => {
            this.running.delete(id);
            this.timer.wake();
          }),
      );
    }
    if (this.running.size >= MAX_POLLS) return undefined;
    return nextPollAt(this.services.context.db);
  }

  private async poll(triggerId: string): Promise<void> {
    const trigger = await triggerForFiring(this.services.context, triggerId);
    if (!trigger || trigger.pollSeconds === null) return;
    let error: string | null = null;
    try {
      const outcome = await pollTrigger(this.services, trigger);
      if (outcome?.kind === "released") {
        this.logger.info(
          { trigger: trigger.name, project: trigger.project, release: outcome.release },
          "a feed trigger's poll found a new tag and created a release",
        );
      }
      // A poll that finds the digest it acted on ("nothing new") is the usual case and only
      // moves lastPolledAt. A newest tag it ignores is kept as the trigger's last error and
      // audited when that reason is new: every poll would otherwise repeat the entry.
      if (outcome?.kind === "ignored") {
        error = `ignored tag ${outcome.tag}: ${outcome.reason}`;
        if (error !== trigger.lastError) await auditIgnoredFiring(this.services, trigger, "poll", outcome);
      }
    } catch (caught) {
      error = caught instanceof Error ? caught.message : String(caught);
      this.logger.warn({ trigger: trigger.name, project: trigger.project, error }, "a feed trigger's poll failed");
    }
    await recordPoll(this.services.context.db, trigger.id, new Date(Date.now() + trigger.pollSeconds * 1000), error);
  }
}
