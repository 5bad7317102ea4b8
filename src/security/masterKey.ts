import { randomBytes } from "node:crypto";
import { chmod, mkdir, open, readFile, rename } from "node:fs/promises";
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

const NEXT_FILE_NAME = "master.key.next";

/**
 * The key of a rotation that did not finish (<data-dir>/master.key.next), if there is one:
 * the server's start finishes it (ADR 0046).
 */
export async function readPendingMasterKey(dataDir: string): Promise<Buffer | undefined> {
  const path = join(dataDir, NEXT_FILE_NAME);
  let text: string;
  try {
    text = await readFile(path, "utf8");
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code === "ENOENT") return undefined;
    throw error;
  }
  const key = Buffer.from(text.trim(), "base64");
  if (key.length !== 32) throw new Error(`${path} does not hold a 32-byte base64 key; remove it and rotate again`);
  return key;
}

/**
 * The first step of a rotation: a new random key, written to master.key.next (fsync'd)
 * before any value is sealed under it, so a crash at any later point leaves a key on disk
 * for every value in the database. Refused while another rotation's file exists.
 */
export async function createPendingMasterKey(dataDir: string): Promise<Buffer> {
  const path = join(dataDir, NEXT_FILE_NAME);
  const key = randomBytes(32);
  let handle: Awaited<ReturnType<typeof open>>;
  try {
    handle = await open(path, "wx", 0o600);
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code === "EEXIST") {
      throw new Error(
        `${path} exists: another rotation is running, or one was interrupted (restart the server to finish it)`,
      );
    }
    throw error;
  }
  try {
    await handle.writeFile(`${key.toString("base64")}\n`);
    await handle.sync();
  } finally {
    await handle.close();
  }
  await syncDirectory(dataDir);
  return key;
}

/**
 * The last step: master.key.next replaces master.key in one rename (the old key's file is
 * gone from that moment; a backup of the data directory made before still has it).
 */
export async function commitPendingMasterKey(dataDir: string): Promise<void> {
  await rename(join(dataDir, NEXT_FILE_NAME), join(dataDir, FILE_NAME));
  await syncDirectory(dataDir);
}

async function syncDirectory(path: string): Promise<void> {
  const handle = await open(path, "r");
  try {
    await handle.sync();
  } finally {
    await handle.close();
  }
}
