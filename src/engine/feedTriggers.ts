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
  recordPoll,
  releaseFiring,
  setFiringRelease,
  type TriggerForFiring,
  triggerForFiring,
} from "../store/feedTriggers.js";
import { createRelease, getProcess } from "../store/releases.js";
import { type DeploymentCreated, deployToFirstPhase } from "./deploymentRequests.js";
import type { DeploymentServices } from "./deployments.js";

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

/**
 * Polls the triggers that poll, on a schedule the server nodes share (a claim moves a
 * trigger's next poll forward): each due trigger by one node, several in parallel.
 */
export class FeedTriggerPoller {
  private timer: NodeJS.Timeout | undefined;
  private stopped = false;
  private readonly running = new Map<string, Promise<void>>();
  private ticking: Promise<void> | undefined;

  constructor(
    private readonly services: DeploymentServices,
    private readonly logger: FastifyBaseLogger,
    /** How often due triggers are looked for (tests shorten it). */
    private readonly tickMs = 5_000,
  ) {}

  start(): void {
    this.schedule();
  }

  async stop(): Promise<void> {
    this.stopped = true;
    clearTimeout(this.timer);
    await this.ticking;
    await Promise.allSettled(this.running.values());
  }

  private schedule(): void {
    if (this.stopped) return;
    this.timer = setTimeout(
      () => {
        this.ticking = this.tick()
          .catch((error: unknown) => this.logger.warn({ err: error }, "could not look for feed triggers to poll"))
          .finally(() => {
            this.ticking = undefined;
            this.schedule();
          });
      },
      this.tickMs * (0.75 + Math.random() / 2),
    );
    this.timer.unref();
  }

  private async tick(): Promise<void> {
    const room = MAX_POLLS - this.running.size;
    if (room <= 0) return;
    // A claim outlasts a poll's registry calls (15 s each at most) and the release it makes.
    const due = await claimDueTriggers(this.services.context.db, new Date(), 120_000, room);
    for (const id of due) {
      if (this.running.has(id)) continue;
      this.running.set(
        id,
        this.poll(id).finally(() => this.running.delete(id)),
      );
    }
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
    } catch (caught) {
      error = caught instanceof Error ? caught.message : String(caught);
      this.logger.warn({ trigger: trigger.name, project: trigger.project, error }, "a feed trigger's poll failed");
    }
    await recordPoll(this.services.context.db, trigger.id, new Date(Date.now() + trigger.pollSeconds * 1000), error);
  }
}
