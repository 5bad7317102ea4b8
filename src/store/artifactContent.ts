import { mkdir, open, rename, rm } from "node:fs/promises";
import { join } from "node:path";
import { Readable } from "node:stream";
import { type Kysely, sql, type Transaction } from "kysely";
import type { Database } from "./schema.js";

/**
 * Where the bytes of artifacts are kept (ADR 0037): files in the data directory for a server
 * on SQLite (one node), PostgreSQL large objects for a server on PostgreSQL, which several
 * nodes share — a file one node wrote would be missing on the node asked for it. Both write
 * and read as streams: nothing holds a whole artifact in memory.
 */
export interface ArtifactContent {
  readonly storage: "directory" | "largeObject";
  /**
   * Writes `source` to its end and then runs `record` (the row naming the bytes) so that both
   * happen or neither: a source that fails or is destroyed part-way leaves nothing behind.
   * Returns `record`'s result.
   */
  write<T>(id: string, source: Readable, record: (location: string, db: Executor) => Promise<T>): Promise<T>;
  /** The bytes of an artifact, as a stream (paced by its reader). */
  read(location: string): Readable;
  /** Removes the bytes (with `db`, in the caller's transaction, for a large object). Gone already: no error. */
  remove(location: string, db: Executor): Promise<void>;
}

type Executor = Kysely<Database> | Transaction<Database>;

/**
 * The directory store: `<data dir>/artifacts/<id>`, written under `.incoming/` and renamed in
 * whole. The package feed (ADR 0044) keeps its archives the same way in `<data dir>/packages`,
 * with ids of its own prefix.
 */
export function directoryContent(db: Kysely<Database>, directory: string, idPrefix = "art"): ArtifactContent {
  const incoming = join(directory, ".incoming");
  const locationPattern = new RegExp(`^${idPrefix}_[0-9a-f]{20}$`);
  const path = (location: string) => {
    // Locations are ids this module made; anything else (a row edited by hand) is refused.
    if (!locationPattern.test(location)) throw new Error(`not an artifact location: ${location.slice(0, 40)}`);
    return join(directory, location);
  };
  // What a crash left half-written: one node owns this directory (SQLite), and nothing of
  // this process writes before this is done.
  const cleared = rm(incoming, { recursive: true, force: true }).catch(() => undefined);
  return {
    storage: "directory",
    async write(id, source, record) {
      await cleared;
      await mkdir(incoming, { recursive: true, mode: 0o700 });
      const temporary = join(incoming, id);
      const final = path(id);
      const handle = await open(temporary, "wx", 0o600);
      try {
        // One chunk at a time: the source waits while the disk writes.
        for await (const chunk of source as AsyncIterable<Buffer>) {
          let written = 0;
          while (written < chunk.length) written += (await handle.write(chunk, written)).bytesWritten;
        }
        // On disk before the row says it is there.
        await handle.sync();
      } catch (error) {
        await handle.close().catch(() => undefined);
        await rm(temporary, { force: true });
        throw error;
      }
      await handle.close();
      await rename(temporary, final);
      try {
        return await record(id, db);
      } catch (error) {
        await rm(final, { force: true });
        throw error;
      }
    },
    read(location) {
      const file = path(location);
      // Opened lazily by the stream: a missing file is the stream's error, as a read error would be.
      return Readable.from(readFileChunks(file), { objectMode: false, highWaterMark: CHUNK_BYTES });
    },
    async remove(location) {
      await rm(path(location), { force: true });
    },
  };
}

/** Chunks of a file, 256 KiB at a time: each read waits for the consumer to ask for more. */
async function* readFileChunks(file: string): AsyncGenerator<Buffer> {
  const handle = await open(file, "r");
  try {
    for (;;) {
      const buffer = Buffer.allocUnsafe(CHUNK_BYTES);
      const { bytesRead } = await handle.read(buffer, 0, CHUNK_BYTES, null);
      if (bytesRead === 0) return;
      yield bytesRead === CHUNK_BYTES ? buffer : buffer.subarray(0, bytesRead);
    }
  } finally {
    await handle.close();
  }
}

const CHUNK_BYTES = 256 * 1024;
/** What one lo_get reads (see largeObjectContent). */
const READ_BYTES = 32 * 1024;
/**
 * What one lowrite carries: fewer round trips than the source's chunks (an SSH channel's are
 * 32 KiB), small enough that the buffers each write leaves for the collector stay small.
 */
const WRITE_BYTES = 256 * 1024;
/** INV_WRITE of libpq-fs.h. */
const INV_WRITE = 0x20000;

/**
 * The large-object store. A write is one transaction (lo_create, lo_open, lowrite per MiB,
 * then the row): a failure or a crash part-way rolls the object back with it, so no orphan
 * is left for a sweep to guess at. It holds one pool connection for as long as the source
 * takes, so at most `concurrentWrites` run at once per node and the pool (10) keeps room for
 * the API. A read is one `lo_get(oid, offset, length)` per chunk, each on any free
 * connection: a slow download holds none between chunks. (A bytea comes back as hex text —
 * node-postgres reads every column as text, its binary mode included — so chunks are small:
 * the strings each leaves behind stay in the young generation, which the collector frees
 * at once, instead of piling up as large objects until a full collection.)
 */
export function largeObjectContent(db: Kysely<Database>, concurrentWrites = 3): ArtifactContent {
  const slots = new Semaphore(concurrentWrites);
  return {
    storage: "largeObject",
    async write(_id, source, record) {
      await slots.acquire();
      try {
        return await db.transaction().execute(async (transaction) => {
          const created = await sql<{ oid: number | string }>`select lo_create(0) as oid`.execute(transaction);
          const oid = Number(created.rows[0]?.oid);
          const opened = await sql<{ fd: number }>`select lo_open(${oid}, ${INV_WRITE}) as fd`.execute(transaction);
          const fd = Number(opened.rows[0]?.fd);
          let pending: Buffer[] = [];
          let pendingBytes = 0;
          const flush = async () => {
            if (pendingBytes === 0) return;
            const chunk = pending.length === 1 ? (pending[0] as Buffer) : Buffer.concat(pending, pendingBytes);
            pending = [];
            pendingBytes = 0;
            await sql`select lowrite(${fd}, ${chunk})`.execute(transaction);
          };
          // for await reads one chunk at a time: the source waits while PostgreSQL writes.
          for await (const chunk of source as AsyncIterable<Buffer>) {
            pending.push(chunk);
            pendingBytes += chunk.length;
            if (pendingBytes >= WRITE_BYTES) await flush();
          }
          await flush();
          await sql`select lo_close(${fd})`.execute(transaction);
          return record(String(oid), transaction);
        });
      } finally {
        slots.release();
      }
    },
    read(location) {
      const oid = oidOf(location);
      let offset = 0;
      return new Readable({
        highWaterMark: CHUNK_BYTES,
        read() {
          sql<{ data: Buffer | null }>`select lo_get(${oid}::oid, ${offset}::bigint, ${READ_BYTES}::integer) as data`
            .execute(db)
            .then(
              (result) => {
                const data = result.rows[0]?.data ?? null;
                if (data === null || data.length === 0) {
                  this.push(null);
                  return;
                }
                offset += data.length;
                this.push(data);
              },
              (error: unknown) => this.destroy(error instanceof Error ? error : new Error(String(error))),
            );
        },
      });
    },
    async remove(location, executor) {
      const oid = oidOf(location);
      // Gone already (a remove that ran twice): nothing to do, and no error to abort the caller's transaction.
      await sql`select lo_unlink(oid) from pg_largeobject_metadata where oid = ${oid}::oid`.execute(executor);
    },
  };
}

function oidOf(location: string): number {
  if (!/^[0-9]{1,10}$/.test(location)) throw new Error(`not a large object id: ${location.slice(0, 40)}`);
  return Number(location);
}

/** At most `size` holders at once; the rest wait in order. */
class Semaphore {
  #free: number;
  readonly #waiting: (() => void)[] = [];

  constructor(size: number) {
    this.#free = size;
  }

  async acquire(): Promise<void> {
    if (this.#free > 0) {
      this.#free--;
      return;
    }
    await new Promise<void>((resolve) => this.#waiting.push(resolve));
  }

  release(): void {
    const next = this.#waiting.shift();
    if (next) next();
    else this.#free++;
  }
}
