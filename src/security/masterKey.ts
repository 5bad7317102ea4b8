import { randomBytes } from "node:crypto";
import { chmod, mkdir, open, readFile } from "node:fs/promises";
import { join } from "node:path";

const FILE_NAME = "master.key";

/**
 * Loads the install's master key from the data directory, creating it on first start.
 * The file holds 32 random bytes as base64, readable by the owner only. Creation uses
 * O_EXCL so two processes starting at once cannot each write a different key.
 */
export async function loadOrCreateMasterKey(dataDir: string): Promise<Buffer> {
  await mkdir(dataDir, { recursive: true, mode: 0o700 });
  await chmod(dataDir, 0o700);
  const path = join(dataDir, FILE_NAME);
  try {
    const handle = await open(path, "wx", 0o600);
    try {
      await handle.writeFile(`${randomBytes(32).toString("base64")}\n`);
      await handle.sync();
    } finally {
      await handle.close();
    }
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code !== "EEXIST") throw error;
  }
  const key = Buffer.from((await readFile(path, "utf8")).trim(), "base64");
  if (key.length !== 32) {
    throw new Error(`${path} does not hold a 32-byte base64 key; restore it from your backup`);
  }
  return key;
}
