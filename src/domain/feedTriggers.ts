import { z } from "zod";
import { atLeastOneField, nameSchema, timestampsShape } from "./common.js";
import { SECRET_SET } from "./feeds.js";
import { isImageTag } from "./images.js";
import { compileLinearPattern, linearPatternProblem } from "./linearPattern.js";

/**
 * Feed triggers (issue 15, docs/triggers.md): a new tag of one of a project's images —
 * announced by the registry's notification, or found by polling — that matches the image's
 * version rule creates a release pinned by digest and deploys it to the lifecycle's first
 * phase. Pure: no I/O.
 */

export const feedTriggerSchema = z.object({
  id: z.string(),
  project: z.string().describe("project slug"),
  name: z.string(),
  image: z.string().describe("the name of the project's image whose new tags it watches"),
  versionFromTag: z
    .string()
    .nullable()
    .describe("RE2 pattern whose first group is the release version; null: the tag is the version"),
  pollSeconds: z.number().nullable().describe("seconds between polls of the registry; null: notifications only"),
  paused: z.boolean(),
  /** Never the secret itself: always "set". */
  secret: z.literal(SECRET_SET),
  hookPath: z.string().describe("where the registry sends its notifications (POST, Authorization: Bearer <secret>)"),
  lastPolledAt: z.string().nullable(),
  lastError: z.string().nullable(),
  lastFiring: z
    .object({
      at: z.string(),
      cause: z.enum(["notification", "poll", "baseline"]),
      outcome: z.string().describe("what it did, in words"),
    })
    .nullable()
    .describe("the newest digest the trigger acted on (a baseline only noted it); null: none yet"),
  ...timestampsShape,
});
export type FeedTrigger = z.infer<typeof feedTriggerSchema>;

const versionFromTagSchema = z
  .string()
  .min(1)
  .max(500)
  .superRefine((pattern, context) => {
    const problem = linearPatternProblem(pattern);
    if (problem) {
      context.addIssue({ code: "custom", message: problem });
    } else if (compileLinearPattern(pattern).groupCount() < 1) {
      context.addIssue({
        code: "custom",
        message: "put the part of the tag that is the release version in a group: ^(\\d+\\.\\d+\\.\\d+)-beta$",
      });
    }
  });

const feedTriggerFields = {
  name: nameSchema,
  image: z.string().min(1).max(100).describe("the name of one of the project's images"),
  versionFromTag: versionFromTagSchema.nullable(),
  secret: z
    .string()
    .min(16, { message: "use at least 16 characters (e.g. openssl rand -hex 32)" })
    .max(4096)
    .regex(/^[\x21-\x7e]+$/, { message: "use printable ASCII without spaces: it travels in an HTTP header" })
    .describe("the registry sends it as Authorization: Bearer <secret>; write-only"),
  pollSeconds: z.number().int().min(10).max(86_400).nullable(),
  paused: z.boolean(),
};

export const createFeedTriggerSchema = z.strictObject({
  ...feedTriggerFields,
  versionFromTag: feedTriggerFields.versionFromTag.default(null),
  pollSeconds: feedTriggerFields.pollSeconds.default(300),
  paused: feedTriggerFields.paused.default(false),
});
export type CreateFeedTrigger = z.infer<typeof createFeedTriggerSchema>;

export const updateFeedTriggerSchema = atLeastOneField(feedTriggerFields);
export type UpdateFeedTrigger = z.infer<typeof updateFeedTriggerSchema>;

/**
 * The release version a tag stands for: the pattern's first group (when it matches the whole
 * tag), or the tag itself without a pattern; undefined when the pattern does not match.
 */
export function releaseVersionOfTag(tag: string, versionFromTag: string | null): string | undefined {
  if (versionFromTag === null) return tag;
  const matcher = compileLinearPattern(versionFromTag).matcher(tag);
  if (!matcher.matches()) return undefined;
  const version = matcher.group(1);
  return version ? version : undefined;
}

/**
 * The registry's notification envelope (distribution's notifications): events of pushes and
 * pulls; only what a trigger reads is checked, the rest is let through.
 */
export const registryEnvelopeSchema = z.object({
  events: z
    .array(
      z.looseObject({
        id: z.string().max(200).optional(),
        action: z.string().max(50),
        target: z
          .looseObject({
            mediaType: z.string().max(200).optional(),
            digest: z.string().max(200).optional(),
            repository: z.string().max(300).optional(),
            tag: z.string().max(200).optional(),
          })
          .optional(),
      }),
    )
    .max(1000),
});
export type RegistryEnvelope = z.infer<typeof registryEnvelopeSchema>;

/** A pushed tag in the envelope: a manifest push naming a tag (layer pushes name none). */
export interface PushedTag {
  repository: string;
  tag: string;
  digest: string | undefined;
}

/** The tag pushes of `repository` in an envelope, each once. */
export function pushedTags(envelope: RegistryEnvelope, repository: string): PushedTag[] {
  const seen = new Set<string>();
  const pushes: PushedTag[] = [];
  for (const event of envelope.events) {
    const target = event.target;
    if (event.action !== "push" || !target?.tag || target.repository !== repository) continue;
    if (!isImageTag(target.tag) || seen.has(target.tag)) continue;
    seen.add(target.tag);
    pushes.push({
      repository,
      tag: target.tag,
      digest: target.digest?.startsWith("sha256:") ? target.digest : undefined,
    });
  }
  return pushes;
}

/** A firing of a feed trigger as it was recorded: the digest's tag, and the release made of it (if any). */
export interface RecordedFeedFiring {
  at: string;
  cause: string;
  tag: string;
  release: string | null;
}

/** The trigger's last firing in words, for the API, `ferry trigger list` and the dashboard. */
export function describeFeedFiring(firing: RecordedFeedFiring): NonNullable<FeedTrigger["lastFiring"]> {
  const at = firing.at;
  if (firing.cause === "baseline") {
    const outcome =
      firing.tag === ""
        ? "first poll: the repository had no matching tag yet; nothing released"
        : `first poll: noted ${firing.tag}, already there; nothing released`;
    return { at, cause: "baseline", outcome };
  }
  const cause = firing.cause === "poll" ? "poll" : "notification";
  if (firing.release !== null) return { at, cause, outcome: `released ${firing.release} from tag ${firing.tag}` };
  // Claimed but no release: one of its version existed already (see the audit log), or it is being made now.
  return {
    at,
    cause,
    outcome: `tag ${firing.tag}: no release made (a release of that version exists, or is being made)`,
  };
}
