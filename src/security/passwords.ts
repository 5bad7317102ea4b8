import { randomBytes, type ScryptOptions, scrypt, timingSafeEqual } from "node:crypto";
import { availableParallelism } from "node:os";

/**
 * scrypt parameters: N = 2^15, r = 8, p = 1 (about 32 MiB and tens of milliseconds per
 * hash). They are stored with each hash, so raising them later does not break old ones.
 */
const N = 2 ** 15;
const R = 8;
const P = 1;
const KEY_LENGTH = 32;
// Node refuses N·r·128 bytes above maxmem (32 MiB by default); leave room for the parameters above.
const MAX_MEMORY = 64 * 1024 * 1024;

/**
 * How many hashes run at once: one core is left to the event loop. Each hash keeps a core
 * busy for tens of milliseconds; five sign-ins at once on a two-core host ran five of them
 * beside the event loop, and every request (/healthz too) waited for CPU meanwhile. More
 * wait in line, first come first served; a sign-in takes longer under a flood, the rest
 * of the server does not.
 */
const HASHES_AT_ONCE = Math.max(1, availableParallelism() - 1);
let hashing = 0;
const waiting: (() => void)[] = [];

async function derive(password: string, salt: Buffer, options: ScryptOptions & { keyLength: number }): Promise<Buffer> {
  if (hashing >= HASHES_AT_ONCE) await new Promise<void>((resolve) => waiting.push(resolve));
  else hashing += 1;
  try {
    return await new Promise((resolve, reject) => {
      scrypt(password.normalize("NFC"), salt, options.keyLength, { ...options, maxmem: MAX_MEMORY }, (error, key) =>
        error ? reject(error) : resolve(key),
      );
    });
  } finally {
    // The place passes to the next in line (the count stays), or is given back.
    const next = waiting.shift();
    if (next) next();
    else hashing -= 1;
  }
}

/** "scrypt$N$r$p$<salt>$<hash>" (base64): a per-password random 16-byte salt. */
export async function hashPassword(password: string): Promise<string> {
  const salt = randomBytes(16);
  const key = await derive(password, salt, { N, r: R, p: P, keyLength: KEY_LENGTH });
  return ["scrypt", N, R, P, salt.toString("base64"), key.toString("base64")].join("$");
}

/** Whether `password` matches `stored`, compared in constant time. A malformed hash matches nothing. */
export async function verifyPassword(password: string, stored: string): Promise<boolean> {
  const [scheme, n, r, p, salt, hash] = stored.split("$");
  if (scheme !== "scrypt" || !n || !r || !p || !salt || !hash) return false;
  const expected = Buffer.from(hash, "base64");
  const actual = await derive(password, Buffer.from(salt, "base64"), {
    N: Number(n),
    r: Number(r),
    p: Number(p),
    keyLength: expected.length,
  });
  return expected.length > 0 && timingSafeEqual(actual, expected);
}

/**
 * A hash to check against when the username does not exist, so that an unknown user costs
 * the same time as a wrong password (the answer must not tell them apart).
 */
let dummyHash: Promise<string> | undefined;
export function passwordHashForUnknownUser(): Promise<string> {
  dummyHash ??= hashPassword(randomBytes(16).toString("hex"));
  return dummyHash;
}
