/**
 * Names of container images, as the Docker Registry HTTP API v2 and `docker` accept them.
 * Checked before a name goes into a registry URL or a docker command line, so nothing
 * else (`..`, `?`, spaces, upper case, a leading '-') can get there.
 */

/**
 * Repository path components: lowercase letters and digits, separated by '.', '_', '__'
 * or dashes; components joined by '/'. This is the grammar of distribution's
 * `reference` package (at most 255 characters in all).
 */
const repositoryPattern = /^[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*(?:\/[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*)*$/;
const REPOSITORY_MAX_LENGTH = 255;

const tagPattern = /^[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}$/;

const digestPattern = /^(?:sha256:[a-f0-9]{64}|sha512:[a-f0-9]{128})$/;

export const REPOSITORY_NAME_HINT =
  "use lowercase letters and digits, separated by '.', '_' or '-', in components joined by '/' (e.g. team/web-api)";
export const IMAGE_TAG_HINT =
  "use up to 128 letters, digits, '_', '.' and '-', not starting with '.' or '-' (e.g. 1.4.2 or 1.4-alpine)";

/** "team/web-api", "library/nginx"; not "Team/App", "a//b", "../x". */
export function isRepositoryName(name: string): boolean {
  return name.length <= REPOSITORY_MAX_LENGTH && repositoryPattern.test(name);
}

/** "1.4.2", "latest", "1.4-alpine"; not "-x", ".x", "a:b", longer than 128 characters. */
export function isImageTag(tag: string): boolean {
  return tagPattern.test(tag);
}

/** A content digest: "sha256:" and 64 lowercase hex digits (or sha512 and 128). */
export function isDigest(value: string): boolean {
  return digestPattern.test(value);
}
