import { z } from "zod";
import { packageVersionSchema } from "./packages.js";
import { storedProcessSchema } from "./process.js";

/** A variable as frozen into a release: sensitive values stay sealed (re-sealed for the release). */
const snapshotVariableSchema = z.object({
  name: z.string(),
  sensitive: z.boolean(),
  /** The value when not sensitive. */
  value: z.string().nullable(),
  /** SecretBox-sealed value when sensitive, bound to "release:<id>:variable:<index>". */
  sealed: z.string().nullable(),
  scope: z.object({
    environments: z.array(z.string()).describe("environment ids"),
    roles: z.array(z.string()),
    targets: z.array(z.string()).describe("target ids"),
  }),
  /** The variable set the value came from and the set's place in the project's list; absent: the project's own. */
  set: z.object({ id: z.string(), slug: z.string(), position: z.number().int() }).optional(),
});
export type SnapshotVariable = z.infer<typeof snapshotVariableSchema>;

/** An image as pinned at release creation: the tag chosen then, and its digest for ever. */
const pinnedImageSchema = z.object({
  name: z.string(),
  feed: z.string().describe("feed id"),
  repository: z.string(),
  tag: z.string(),
  digest: z.string(),
  /** What the runtime pulls: <registry host>/<repository>@<digest>. */
  reference: z.string(),
});
export type PinnedImage = z.infer<typeof pinnedImageSchema>;

/** A package version as pinned at release creation (ADR 0044): a deployment unpacks exactly these bytes. */
const pinnedPackageSchema = z.object({
  name: z.string(),
  version: z.string(),
  sha256: z.string().describe("hex SHA-256 of the archive; checked on the target before it is unpacked"),
  size: z.number().int(),
  format: z.enum(["tar.gz", "zip"]),
  /** The package version's id in the feed. */
  id: z.string(),
});
export type PinnedPackage = z.infer<typeof pinnedPackageSchema>;

/** A release's snapshot as the store reads it back: its process through storedProcessSchema (ADR 0073). */
export const releaseSnapshotSchema = z.object({
  process: storedProcessSchema,
  variables: z.array(snapshotVariableSchema),
  images: z.array(pinnedImageSchema).default([]),
  packages: z.array(pinnedPackageSchema).default([]),
});
export type ReleaseSnapshot = z.infer<typeof releaseSnapshotSchema>;

export const releaseSchema = z.object({
  id: z.string(),
  project: z.string().describe("project slug"),
  version: z.string(),
  notes: z.string(),
  steps: z.array(z.object({ name: z.string(), kind: z.string() })),
  images: z.array(z.object({ name: z.string(), tag: z.string(), digest: z.string(), reference: z.string() })),
  packages: z
    .array(z.object({ name: z.string(), version: z.string(), sha256: z.string(), size: z.number().int() }))
    .describe("package versions the release pins (ADR 0044)"),
  createdBy: z.string(),
  createdAt: z.string(),
  /** Set when the variables were re-snapshotted after creation (the only change a release allows). */
  variablesUpdatedAt: z.string().nullable(),
  variablesUpdatedBy: z.string().nullable(),
});
export type Release = z.infer<typeof releaseSchema>;

const releaseVersionSchema = z.string().regex(/^[0-9A-Za-z][0-9A-Za-z.+_-]{0,99}$/, {
  message: "use letters, digits, '.', '+', '_' and '-' (e.g. 1.4.2 or 2026.11.23-1)",
});

export const createReleaseSchema = z.strictObject({
  /** Explicit version; the project's version pattern makes the next one when absent. */
  version: releaseVersionSchema.optional(),
  notes: z.string().max(20_000).default(""),
  /** Tags chosen per image name ({"web": "1.4.2"}); others take the latest tag matching their rule. */
  images: z.record(z.string(), z.string().min(1).max(128)).default({}),
  /** Versions chosen per package name ({"web-app": "1.4.2"}); others take the newest pushed. */
  packages: z.record(z.string(), packageVersionSchema).default({}),
});
export type CreateRelease = z.infer<typeof createReleaseSchema>;

export const sealedVariableContext = (releaseId: string, index: number) => `release:${releaseId}:variable:${index}`;
