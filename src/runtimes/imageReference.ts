import { InputError } from "../domain/errors.js";
import { IMAGE_TAG_HINT, isDigest, isImageTag, isRepositoryName, REPOSITORY_NAME_HINT } from "../domain/images.js";

/**
 * An image reference as `docker pull` reads it: `[registry/]repository[:tag][@digest]`
 * ("127.0.0.1:5000/demo/app@sha256:…", "nginx:1.27", "ghcr.io/team/api:2.1@sha256:…").
 * Parsed and checked before it reaches the engine, so a user value can never be anything
 * but an image name (no option, no path trick, no second reference).
 */
export interface ImageReference {
  /** "registry.example.com:5000"; undefined for Docker Hub. */
  readonly registry: string | undefined;
  /** "demo/app" ("library/nginx" is written as the user wrote it: "nginx"). */
  readonly repository: string;
  readonly tag: string | undefined;
  readonly digest: string | undefined;
}

const MAX_REFERENCE_LENGTH = 1024;
/** A DNS name (letters, digits, '-' inside labels, '.' between them), or a bracketed IPv6 address. */
const hostPattern =
  /^(?:[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?)*|\[[0-9A-Fa-f:.]+\])$/;

/** Registry host of an image on Docker Hub, as credentials are looked up. */
export const DOCKER_HUB_REGISTRY = "docker.io";

/** Parses and validates; throws InputError saying what is wrong with the reference. */
export function parseImageReference(text: string): ImageReference {
  const fail = (detail: string): never => {
    throw new InputError(`'${text.slice(0, 200)}' is not an image reference: ${detail}`);
  };
  if (text.length === 0 || text.length > MAX_REFERENCE_LENGTH) fail(`write 1 to ${MAX_REFERENCE_LENGTH} characters`);
  const at = text.indexOf("@");
  const beforeDigest = at === -1 ? text : text.slice(0, at);
  const digest = at === -1 ? undefined : text.slice(at + 1);
  if (digest !== undefined && !isDigest(digest))
    fail("the digest after '@' must be sha256: and 64 lowercase hex digits");

  // The first component is a registry when it looks like a host: it has a '.' or a port,
  // or is "localhost" (the rule of distribution's reference package).
  const slash = beforeDigest.indexOf("/");
  const first = slash === -1 ? "" : beforeDigest.slice(0, slash);
  const hasRegistry = slash !== -1 && (first.includes(".") || first.includes(":") || first === "localhost");
  const registry = hasRegistry ? first : undefined;
  const remainder = hasRegistry ? beforeDigest.slice(slash + 1) : beforeDigest;
  if (registry !== undefined) checkRegistryHost(registry, fail);

  const colon = remainder.lastIndexOf(":");
  const repository = colon === -1 ? remainder : remainder.slice(0, colon);
  const tag = colon === -1 ? undefined : remainder.slice(colon + 1);
  if (!isRepositoryName(repository)) fail(`the repository ${REPOSITORY_NAME_HINT}`);
  if (tag !== undefined && !isImageTag(tag)) fail(`the tag: ${IMAGE_TAG_HINT}`);
  return { registry, repository, tag, digest };
}

function checkRegistryHost(registry: string, fail: (detail: string) => never): void {
  const portAt = registry.startsWith("[") ? registry.indexOf("]:") + 1 : registry.lastIndexOf(":");
  const host = portAt > 0 ? registry.slice(0, portAt) : registry;
  const port = portAt > 0 ? registry.slice(portAt + 1) : undefined;
  if (!hostPattern.test(host) || host.length > 253) fail("the registry must be a host name or address");
  if (port !== undefined && !(/^[0-9]{1,5}$/.test(port) && Number(port) >= 1 && Number(port) <= 65535)) {
    fail("the registry port must be a number from 1 to 65535");
  }
}

/**
 * The reference a container is created from: by digest when there is one (the tag is then
 * only a label and is dropped, so what runs is exactly what was pinned), else by tag
 * ("latest" when none, as docker does).
 */
export function formatImageReference(reference: ImageReference): string {
  const name = reference.registry ? `${reference.registry}/${reference.repository}` : reference.repository;
  return reference.digest ? `${name}@${reference.digest}` : `${name}:${reference.tag ?? "latest"}`;
}
