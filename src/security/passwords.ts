import { randomBytes, type ScryptOptions, timingSafeEqual } from "node:crypto";
import { availableParallelism } from "node:os";
import { Worker } from "node:worker_threads";

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

/**
 * Hashes run on worker threads of their own at a lower CPU priority than the event loop
 * (nice +10 from the server's own: Linux keeps a nice value per thread, so only the worker is
 * lowered). In
 * libuv's thread pool a hash had the event loop's priority, and when the host's cores were
 * all busy (a sign-in flood's client on the same host, other services) the scheduler shared
 * them evenly: /healthz waited for its turn behind five hashes. Lowered, a hash takes
 * whatever CPU the event loop leaves. Plain JavaScript, so the same code runs from the
 * sources (tests) and from the build.
 */
const workerSource = `
const { parentPort } = require("node:worker_threads");
const { scryptSync } = require("node:crypto");
const { getPriority, setPriority } = require("node:os");
try { setPriority(Math.min(19, getPriority() + 10)); } catch {}
parentPort.on("message", ({ password, salt, keyLength, options }) => {
  try {
    parentPort.postMessage({ key: scryptSync(password, salt, keyLength, options) });
  } catch (error) {
    parentPort.postMessage({ error: error instanceof Error ? error.message : String(error) });
  }
});
`;

interface HashRequest {
  password: string;
  salt: Buffer;
  keyLength: number;
  options: ScryptOptions;
}

/** One worker, one hash at a time; started when first needed, never keeping the process alive. */
class HashWorker {
  private worker: Worker | undefined;

  async hash(request: HashRequest): Promise<Buffer> {
    const worker = this.started();
    return new Promise<Buffer>((resolve, reject) => {
      const onMessage = (answer: { key?: Uint8Array; error?: string }) => {
        worker.off("error", onError);
        worker.unref();
        if (answer.key) resolve(Buffer.from(answer.key));
        else reject(new Error(`password hashing failed: ${answer.error ?? "no answer"}`));
      };
      const onError = (error: Error) => {
        worker.off("message", onMessage);
        this.worker = undefined;
        reject(error);
      };
      worker.once("message", onMessage);
      worker.once("error", onError);
      // Kept alive while it works, so a hash under way is never dropped at exit.
      worker.ref();
      worker.postMessage(request);
    });
  }

  private started(): Worker {
    if (!this.worker) {
      const worker = new Worker(workerSource, { eval: true });
      worker.once("exit", () => {
        if (this.worker === worker) this.worker = undefined;
      });
      this.worker = worker;
    }
    return this.worker;
  }
}

const idle: HashWorker[] = [];
let started = 0;
const waiting: ((worker: HashWorker) => void)[] = [];

async function derive(password: string, salt: Buffer, options: ScryptOptions & { keyLength: number }): Promise<Buffer> {
  let worker = idle.pop();
  if (!worker && started < HASHES_AT_ONCE) {
    started += 1;
    worker = new HashWorker();
  }
  worker ??= await new Promise<HashWorker>((resolve) => waiting.push(resolve));
  const { keyLength, ...scryptOptions } = options;
  try {
    return await worker.hash({
      password: password.normalize("NFC"),
      salt,
      keyLength,
      options: { ...scryptOptions, maxmem: MAX_MEMORY },
    });
  } finally {
    // The worker passes to the next in line, or waits for one.
    const next = waiting.shift();
    if (next) next(worker);
    else idle.push(worker);
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
