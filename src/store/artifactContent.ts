import { mkdir, open, rename, rm } from "node:fs/promises";
import { join } from "node:path";
import { Readable } from "node:stream";
import { Kysely, PostgresDialect, sql, type Transaction } from "kysely";
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
/** What one read of a large object fetches (see largeObjectContent). */
const READ_BYTES = 256 * 1024;
/**
 * What one lowrite carries: fewer round trips than the source's chunks (a pipe's are 64 KiB,
 * an SSH channel's 32 KiB); the chunks are written to the socket as they are, never joined.
 */
const WRITE_BYTES = 256 * 1024;
/** INV_WRITE of libpq-fs.h. */
const INV_WRITE = 0x20000;

/**
 * A connection of the store's pg pool, for what Kysely cannot say: the bytes of large objects
 * go over the wire as they are instead of through node-postgres' text decoding and its
 * growing serializer buffers.
 */
interface PgPoolClient {
  query(config: unknown): unknown;
  query(text: string, values?: unknown[]): Promise<unknown>;
  release(error?: Error | boolean): void;
}
export interface PgPool {
  connect(): Promise<PgPoolClient>;
}

/**
 * The large-object store. A write is one transaction (lo_create, lo_open, lowrite per 256 KiB,
 * then the row): a failure or a crash part-way rolls the object back with it, so no orphan
 * is left for a sweep to guess at. It holds one pool connection for as long as the source
 * takes, so at most `concurrentWrites` run at once per node and the pool (10) keeps room for
 * the API. A read is one query per 256 KiB chunk, each on any free connection: a slow
 * download holds none between chunks.
 *
 * Both directions go around node-postgres' row handling (ADR 0043): it returns a bytea as
 * hex text (its binary mode too), and its serializer copies a parameter through buffers it
 * grows from 1 KiB each time — a 2 GiB artifact left hundreds of MB of strings and buffers
 * for the collector, and the server's RSS passed 200 MB. A read is a `COPY (select lo_get(…))
 * TO STDOUT (FORMAT binary)`, whose CopyData messages node-postgres hands over as bytes; a
 * write sends its own Parse/Bind/Execute/Sync with the source's chunks written to the socket
 * as they came.
 */
export function largeObjectContent(pool: PgPool, concurrentWrites = 3): ArtifactContent {
  const slots = new Semaphore(concurrentWrites);
  return {
    storage: "largeObject",
    async write(_id, source, record) {
      await slots.acquire();
      let client: PgPoolClient;
      try {
        client = await pool.connect();
      } catch (error) {
        // No connection (PostgreSQL down, the pool's wait timed out): the slot is free again.
        slots.release();
        throw error;
      }
      let broken: Error | undefined;
      try {
        // Kysely over this one connection: the transaction's queries and the raw writes share it.
        const single = new Kysely<Database>({
          dialect: new PostgresDialect({
            pool: {
              connect: async () => ({
                query: client.query.bind(client) as never,
                release: () => undefined,
              }),
              end: async () => undefined,
            },
          }),
        });
        return await single.transaction().execute(async (transaction) => {
          const created = await sql<{ oid: number | string }>`select lo_create(0) as oid`.execute(transaction);
          const oid = Number(created.rows[0]?.oid);
          const opened = await sql<{ fd: number }>`select lo_open(${oid}, ${INV_WRITE}) as fd`.execute(transaction);
          const fd = Number(opened.rows[0]?.fd);
          let pending: Buffer[] = [];
          let pendingBytes = 0;
          const flush = async () => {
            if (pendingBytes === 0) return;
            const chunks = pending;
            const bytes = pendingBytes;
            pending = [];
            pendingBytes = 0;
            try {
              await runSubmittable(client, new LowriteQuery(fd, chunks, bytes));
            } catch (error) {
              if ((error as { broken?: boolean }).broken) broken = error as Error;
              throw error;
            }
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
        // A connection whose protocol state is unknown is closed, not given to the next query.
        client.release(broken ?? false);
        slots.release();
      }
    },
    read(location) {
      const oid = oidOf(location);
      let offset = 0;
      return new Readable({
        highWaterMark: CHUNK_BYTES,
        read() {
          readSlice(pool, oid, offset, READ_BYTES).then(
            (data) => {
              if (data.length === 0) {
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

/** `length` bytes of a large object from `offset` (fewer at its end, none past it), on any free connection. */
async function readSlice(pool: PgPool, oid: number, offset: number, length: number): Promise<Buffer> {
  const client = await pool.connect();
  let failed: Error | undefined;
  try {
    return await runSubmittable(client, new CopyOutSlice(oid, offset, length));
  } catch (error) {
    failed = error as Error;
    throw error;
  } finally {
    // An error PostgreSQL answered leaves the connection usable; anything else closes it.
    client.release((failed as { broken?: boolean } | undefined)?.broken ? failed : false);
  }
}

/** What node-postgres calls on a query object it is given (its "Submittable"). */
interface Connection {
  query(text: string): void;
  stream: { cork(): void; uncork(): void; write(data: Buffer): boolean };
}

abstract class RawQuery<T> {
  callback: ((error: Error | null) => void) | undefined;
  #settle: { resolve(value: T): void; reject(error: Error): void } | undefined;
  #error: Error | undefined;
  readonly done = new Promise<T>((resolve, reject) => {
    this.#settle = { resolve, reject };
  });

  abstract submit(connection: Connection): void;
  protected abstract result(): T;

  /** Something not as this query expects: the connection's state is unknown. */
  protected fail(message: string): void {
    this.#error ??= Object.assign(new Error(message), { broken: true });
  }
  handleRowDescription(): void {}
  handleDataRow(_message: { fields: (string | null)[] }): void {}
  handleCopyData(_message: { chunk: Buffer }): void {}
  handleCommandComplete(): void {}
  handleEmptyQuery(): void {}
  handlePortalSuspended(): void {}
  handleCopyInResponse(): void {
    this.fail("unexpected COPY FROM");
  }
  /** PostgreSQL's error (it then sends ReadyForQuery to no one: the query ends here). */
  handleError(error: Error): void {
    this.#settle?.reject(error);
  }
  handleReadyForQuery(): void {
    if (this.#error) this.#settle?.reject(this.#error);
    else this.#settle?.resolve(this.result());
  }
}

function runSubmittable<T>(client: PgPoolClient, query: RawQuery<T>): Promise<T> {
  client.query(query);
  return query.done;
}

/**
 * `COPY (select lo_get(oid, offset, length)) TO STDOUT (FORMAT binary)`: one row of one bytea,
 * framed as the binary COPY format says (11-byte signature, flags, header extension, then
 * per row a field count and each field's length), its bytes copied out of the parser's
 * buffer (which it reuses) as they arrive.
 */
class CopyOutSlice extends RawQuery<Buffer> {
  readonly #text: string;
  readonly #received: Buffer;
  #length = 0;

  constructor(oid: number, offset: number, length: number) {
    super();
    // COPY takes no parameters: the numbers are checked integers, written as literals.
    if (![oid, offset, length].every(Number.isSafeInteger)) throw new Error("not a large object slice");
    this.#text = `COPY (select lo_get(${oid}::oid, ${offset}::bigint, ${length}::integer)) TO STDOUT (FORMAT binary)`;
    // Header 19 + field count 2 + length 4 + trailer 2.
    this.#received = Buffer.allocUnsafe(length + 27);
  }

  submit(connection: Connection): void {
    connection.query(this.#text);
  }

  override handleCopyData(message: { chunk: Buffer }): void {
    if (this.#length + message.chunk.length > this.#received.length) {
      this.fail("a large object slice longer than asked for");
      return;
    }
    message.chunk.copy(this.#received, this.#length);
    this.#length += message.chunk.length;
  }

  protected result(): Buffer {
    const data = this.#received.subarray(0, this.#length);
    const extension = data.length >= 19 ? data.readUInt32BE(15) : 0;
    const row = 19 + extension;
    if (data.length < row + 2 || !data.subarray(0, 11).equals(COPY_SIGNATURE) || data.readInt16BE(row) !== 1) {
      throw Object.assign(new Error("a large object slice in an unexpected COPY format"), { broken: true });
    }
    const size = data.readInt32BE(row + 2);
    // NULL: the object is gone (lo_get of a missing oid is an error; kept for safety).
    if (size < 0) return Buffer.alloc(0);
    return data.subarray(row + 6, row + 6 + size);
  }

  override handleReadyForQuery(): void {
    try {
      super.handleReadyForQuery();
    } catch (error) {
      this.handleError(error as Error);
    }
  }
}

const COPY_SIGNATURE = Buffer.from("PGCOPY\n\xff\r\n\0", "latin1");

/**
 * `select lowrite(fd, data)` in the extended protocol, built here: Parse (types int4, bytea),
 * Bind (both binary), Execute, Sync — the data's chunks written to the socket as they are.
 */
class LowriteQuery extends RawQuery<void> {
  readonly #fd: number;
  readonly #chunks: readonly Buffer[];
  readonly #bytes: number;
  #written: number | undefined;

  constructor(fd: number, chunks: readonly Buffer[], bytes: number) {
    super();
    this.#fd = fd;
    this.#chunks = chunks;
    this.#bytes = bytes;
  }

  submit(connection: Connection): void {
    const text = Buffer.from("select lowrite($1, $2)\0", "utf8");
    // Parse: 'P', length, "" statement, text, 2 parameter types (int4 23, bytea 17).
    const parse = Buffer.alloc(1 + 4 + 1 + text.length + 2 + 8);
    let at = parse.writeUInt8(0x50, 0);
    at = parse.writeInt32BE(parse.length - 1, at);
    at = parse.writeUInt8(0, at);
    at += text.copy(parse, at);
    at = parse.writeInt16BE(2, at);
    at = parse.writeInt32BE(23, at);
    parse.writeInt32BE(17, at);
    // Bind: 'B', length, "" portal, "" statement, 1 format (binary), 2 values (fd as int4, the bytes), 0 result formats.
    const bindHead = Buffer.alloc(1 + 4 + 1 + 1 + 2 + 2 + 2 + 4 + 4 + 4);
    const bindLength = bindHead.length - 1 + this.#bytes + 2;
    at = bindHead.writeUInt8(0x42, 0);
    at = bindHead.writeInt32BE(bindLength, at);
    at = bindHead.writeUInt8(0, at);
    at = bindHead.writeUInt8(0, at);
    at = bindHead.writeInt16BE(1, at);
    at = bindHead.writeInt16BE(1, at);
    at = bindHead.writeInt16BE(2, at);
    at = bindHead.writeInt32BE(4, at);
    at = bindHead.writeInt32BE(this.#fd, at);
    bindHead.writeInt32BE(this.#bytes, at);
    // Result formats (0), Execute ('E', "" portal, no row limit), Sync ('S').
    const tail = Buffer.from([0, 0, 0x45, 0, 0, 0, 9, 0, 0, 0, 0, 0, 0x53, 0, 0, 0, 4]);
    const stream = connection.stream;
    stream.cork();
    stream.write(parse);
    stream.write(bindHead);
    for (const chunk of this.#chunks) stream.write(chunk);
    stream.write(tail);
    stream.uncork();
  }

  override handleDataRow(message: { fields: (string | null)[] }): void {
    this.#written = Number(message.fields[0]);
  }

  protected result(): void {
    if (this.#written !== this.#bytes) {
      throw Object.assign(new Error(`lowrite wrote ${this.#written} of ${this.#bytes} bytes`), { broken: true });
    }
  }

  override handleReadyForQuery(): void {
    try {
      super.handleReadyForQuery();
    } catch (error) {
      this.handleError(error as Error);
    }
  }
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
