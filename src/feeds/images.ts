import { type FieldIssue, InputError } from "../domain/errors.js";
import type { ProjectImage } from "../domain/process.js";
import type { PinnedImage } from "../domain/releases.js";
import type { OutboundPolicy } from "../security/outboundGuard.js";
import { resolveReference, type StoreContext, throwIfIssues } from "../store/common.js";
import { feedCredentialsForHost, feedForHost, getFeed, getFeedCredentials } from "../store/feeds.js";
import { pickLatestTag } from "./latestTag.js";
import { RegistryClient } from "./registry.js";

/** Refuses a process whose images name feeds that do not exist. */
export async function checkImageFeeds(context: StoreContext, images: readonly ProjectImage[]): Promise<void> {
  const issues: FieldIssue[] = [];
  for (const [index, image] of images.entries()) {
    await resolveReference(context.db, "feeds", image.feed, `/images/${index}/feed`, issues);
  }
  throwIfIssues(issues);
}

/**
 * Chooses each image's tag (the one asked for, or the latest matching its rule) and pins
 * it by the digest the registry reports now: the release deploys exactly these bytes
 * for ever, whatever the tag points to later. Registry calls go through the outbound guard
 * with `outbound`.
 */
export async function pinImages(
  context: StoreContext,
  images: readonly ProjectImage[],
  requested: Readonly<Record<string, string>>,
  outbound: OutboundPolicy,
): Promise<PinnedImage[]> {
  const unknown = Object.keys(requested).filter((name) => !images.some((image) => image.name === name));
  if (unknown.length > 0) {
    throw new InputError("the release asks for images the project does not have", [
      ...unknown.map((name) => ({
        pointer: `/images/${name}`,
        detail: `no image '${name}' in the process; its images are: ${images.map((image) => image.name).join(", ") || "none"}`,
      })),
    ]);
  }
  const pinned: PinnedImage[] = [];
  for (const image of images) {
    const feed = await getFeed(context, image.feed);
    const credentials = await getFeedCredentials(context, feed.id);
    const client = new RegistryClient({ url: feed.url, ...credentials, outbound });
    const tag = requested[image.name] ?? (await pickLatestTag(image, await client.listTags(image.repository)));
    if (!tag) {
      throw new InputError(`no tag of ${image.repository} in feed '${feed.name}' matches the image's version rule`, [
        {
          pointer: `/images/${image.name}`,
          detail: "push a matching tag, or choose one with images: { name: tag }",
        },
      ]);
    }
    const { digest } = await client.resolveDigest(image.repository, tag);
    const host = new URL(feed.url).host;
    pinned.push({
      name: image.name,
      feed: feed.id,
      repository: image.repository,
      tag,
      digest,
      reference: `${host}/${image.repository}@${digest}`,
    });
  }
  return pinned;
}

/**
 * A client of the registry on `registryHost` ("registry.example.com:5000"): the URL and
 * credentials of the feed on that host, or https and anonymous when no feed is there.
 */
export async function registryClientForHost(
  context: StoreContext,
  registryHost: string,
  outbound: OutboundPolicy,
): Promise<RegistryClient> {
  const feed = await feedForHost(context, registryHost);
  const credentials = await feedCredentialsForHost(context, registryHost);
  return new RegistryClient({ url: feed?.url ?? `https://${registryHost}`, ...credentials, outbound });
}
