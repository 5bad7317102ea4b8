import { randomBytes } from "node:crypto";
import { open, rename, unlink } from "node:fs/promises";
import { basename, dirname, join } from "node:path";

/**
 * Writes a file so that a crash leaves either the old content or the new, never half:
 * a temporary file beside the target (a dot file ending in ".tmp", so globs such as
 * nginx's `include *.conf` never see it), fsync, rename over the target (atomic on POSIX),
 * then fsync the directory so the rename itself survives a power cut.
 */
export async function writeFileAtomic(path: string, data: string, mode = 0o600): Promise<void> {
  const temporary = join(dirname(path), `.${basename(path)}.${process.pid}.${randomBytes(6).toString("hex")}.tmp`);
  const file = await open(temporary, "wx", mode);
  try {
    await file.writeFile(data, "utf8");
    await file.sync();
  } finally {
    await file.close();
  }
  try {
    await rename(temporary, path);
  } catch (error) {
    await unlink(temporary).catch(() => undefined);
    throw error;
  }
  const directory = await open(dirname(path), "r");
  try {
    await directory.sync();
  } finally {
    await directory.close();
  }
}
