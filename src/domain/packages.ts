import { z } from "zod";
import { slugSchema } from "./common.js";

/**
 * The built-in package feed (docs/decisions/0044-package-feed.md): archives that are not
 * images (tar.gz, zip) pushed by CI as NAME VERSION, pinned by releases (sha256) and
 * unpacked on targets. Pure rules here: names, versions, what an entry of an archive may be,
 * how versions sort, which ones retention removes.
 */

/** A package's name: like a project's slug (it becomes part of directory names on hosts). */
export const packageNameSchema = slugSchema;

/** Letters, digits, '.', '+', '_', '-'; starting with a letter or digit; at most 100 characters (a release version's rule). */
export const packageVersionSchema = z.string().regex(/^[0-9A-Za-z][0-9A-Za-z.+_-]{0,99}$/, {
  message:
    "use 1-100 letters, digits, '.', '+', '_' and '-', starting with a letter or digit (e.g. 1.4.2 or 2026.11.23-1)",
});

/** The archive formats the feed takes, by what their bytes start with (not by file name). */
export type PackageFormat = "tar.gz" | "zip";

export const packageVersionInfoSchema = z.object({
  id: z.string(),
  name: z.string(),
  version: z.string(),
  format: z.enum(["tar.gz", "zip"]),
  size: z.number().int().describe("bytes of the archive"),
  sha256: z.string().describe("hex SHA-256 of the archive, computed by the server while it was pushed"),
  files: z.number().int().describe("entries in the archive (files, directories, links)"),
  pushedBy: z.string(),
  createdAt: z.string(),
});
export type PackageVersionInfo = z.infer<typeof packageVersionInfoSchema>;

/** How many versions of each package are kept (FERRY_PACKAGE_KEEP_VERSIONS). */
export const DEFAULT_KEEP_VERSIONS = 20;

/**
 * Why an entry of an archive may not be unpacked, or undefined. An entry's path must stay
 * inside the directory it is unpacked into: relative, without a `..` segment; a symbolic
 * link's target, resolved from the link's own directory, must stay inside too; a hard link
 * must name another entry's path (inside). Devices and FIFOs are refused: a package is
 * files. The answer quotes the path (shortened): archive paths are not secrets.
 */
export function archiveEntryProblem(entry: {
  path: string;
  type: "file" | "directory" | "symlink" | "hardlink" | "other";
  linkTarget?: string | undefined;
}): string | undefined {
  const shown = JSON.stringify(entry.path.slice(0, 200));
  const pathProblem = relativePathProblem(entry.path);
  if (pathProblem) return `entry ${shown} ${pathProblem}`;
  if (entry.type === "other")
    return `entry ${shown} is a device, FIFO or other special file; a package holds files, directories and links`;
  if (entry.type === "symlink" || entry.type === "hardlink") {
    const target = entry.linkTarget ?? "";
    if (target === "") return `link ${shown} has no target`;
    if (target.startsWith("/")) {
      return `link ${shown} points to the absolute path ${JSON.stringify(target.slice(0, 200))}, outside the package; make it relative`;
    }
    // A symbolic link resolves from its own directory; a hard link names a path of the archive.
    const base = entry.type === "symlink" ? segments(entry.path).slice(0, -1) : [];
    if (escapes([...base, ...segments(target)])) {
      return `link ${shown} points to ${JSON.stringify(target.slice(0, 200))}, outside the package; links must stay inside it`;
    }
  }
  return undefined;
}

function relativePathProblem(path: string): string | undefined {
  if (path === "" || path === "." || path === "./") return undefined;
  if (path.includes("\0")) return "has a NUL character in its path";
  if (path.startsWith("/")) return "has an absolute path; a package's paths are relative to where it is unpacked";
  if (/^[A-Za-z]:[\\/]/.test(path) || path.includes("\\")) {
    return "has a Windows path (a drive letter or '\\'); use '/' and relative paths";
  }
  if (segments(path).includes("..")) return "has a '..' segment, which would unpack it outside the package's directory";
  return undefined;
}

function segments(path: string): string[] {
  return path.split("/").filter((segment) => segment !== "" && segment !== ".");
}

/** True when walking the segments ever climbs above the start. */
function escapes(parts: readonly string[]): boolean {
  let depth = 0;
  for (const part of parts) {
    depth += part === ".." ? -1 : 1;
    if (depth < 0) return true;
  }
  return false;
}

/**
 * Which versions retention removes: all but the newest `keep` of a package, never one a
 * deployed release pins. `versions` are newest first.
 */
export function versionsPastRetention<V extends { id: string }>(
  versions: readonly V[],
  keep: number,
  pinnedByDeployed: ReadonlySet<string>,
): V[] {
  return versions.slice(keep).filter((version) => !pinnedByDeployed.has(version.id));
}
