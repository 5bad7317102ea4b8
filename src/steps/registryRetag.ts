import { z } from "zod";
import { InputError } from "../domain/errors.js";
import { IMAGE_TAG_HINT, isImageTag } from "../domain/images.js";
import { TaskFailure } from "../engine/types.js";
import { RegistryError } from "../feeds/registry.js";
import { parseImageReference } from "../runtimes/imageReference.js";
import type { StepKind } from "./types.js";

const registryRetagConfigSchema = z.strictObject({
  /**
   * Template of the image to tag, with its registry: "#{Ferry.Image[web]}" (the release's
   * pinned image, by digest) or "registry.example.com/team/app:1.0-beta" (resolved when the
   * step runs).
   */
  image: z.string().min(1).max(1024),
  /** Templates of the tags to give it: ["#{Ferry.Release.Number}", "latest"]. */
  tags: z.array(z.string().min(1).max(256)).min(1).max(20),
  /**
   * Move a tag that already points to another image. Off by default: a tag others deploy
   * ("1.0") silently changing under them is what pinning by digest exists to prevent.
   */
  force: z.boolean().default(false),
});
type RegistryRetagConfig = z.infer<typeof registryRetagConfigSchema>;

/**
 * Gives an image that is already in its registry more tags ("1.0-beta" → "1.0", "latest")
 * through the registry's API, by manifest: no pull, no layer upload, the same digest under
 * each new tag. The registry is called from the server with the credentials of the feed on
 * that registry host (the feed's user needs push rights), through the outbound guard.
 */
export const registryRetagStep: StepKind<RegistryRetagConfig> = {
  kind: "registry-retag",
  config: registryRetagConfigSchema,

  plan(config, render) {
    return [
      {
        description: `tag ${render(config.image)} as ${config.tags.map(render).join(", ")} in its registry${config.force ? " (moving tags that point elsewhere)" : ""}`,
      },
    ];
  },

  async run(context, config) {
    const rendered = context.render(config.image);
    let reference: ReturnType<typeof parseImageReference>;
    try {
      reference = parseImageReference(rendered);
    } catch (error) {
      throw new TaskFailure(`image: ${error instanceof Error ? error.message : String(error)}`);
    }
    if (!reference.registry) {
      throw new TaskFailure(
        `image '${rendered.slice(0, 200)}' names no registry: write it with its registry host (registry.example.com/team/app), or use #{Ferry.Image[name]}`,
      );
    }
    const tags = config.tags.map((template, index) => {
      const tag = context.render(template);
      if (!isImageTag(tag))
        throw new TaskFailure(`tags/${index}: '${tag.slice(0, 200)}' is not a tag: ${IMAGE_TAG_HINT}`);
      return tag;
    });
    try {
      const registry = await context.registryClient(reference.registry);
      const digest =
        reference.digest ?? (await registry.resolveDigest(reference.repository, reference.tag ?? "latest")).digest;
      const name = `${reference.registry}/${reference.repository}`;
      context.log.info(`${name}@${digest}`);
      const outputs: Record<string, string> = { digest };
      for (const tag of tags) {
        context.signal.throwIfAborted();
        const result = await registry.retag(reference.repository, digest, tag, { force: config.force });
        context.log.info(
          result.outcome === "created"
            ? `tagged ${name}:${tag}`
            : result.outcome === "unchanged"
              ? `${name}:${tag} already points to it`
              : `moved ${name}:${tag} from ${result.previous} (force)`,
        );
        outputs[`tag.${tag}`] = result.outcome;
      }
      return { outputs };
    } catch (error) {
      if (error instanceof RegistryError || error instanceof InputError) throw new TaskFailure(error.message);
      throw error;
    }
  },
};
