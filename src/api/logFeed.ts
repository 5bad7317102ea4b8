import type { EventEmitter } from "node:events";
import type { Writable } from "node:stream";
import type { Kysely } from "kysely";
import { isTerminal, type TaskLogLine, type TaskState } from "../domain/tasks.js";
import type { Database } from "../store/schema.js";
import { getTaskRow, readLogPage } from "../store/tasks.js";

export interface LogFeedOptions {
  /** How often a feed re-reads the log when no event arrives (lines written by another node). */
  pollMs: number;
  /** Most lines one read takes from the database (and at most about `writeBytes` of them). */
  readLines: number;
  /**
   * Bytes of frames a feed keeps beyond what its followers still need, for a follower
   * that joins or reconnects a little behind.
   */
  spareBytes: number;
  /**
   * Most bytes of frames a feed keeps at all, even while a follower that reads slowly
   * still needs older ones: that follower then reads from the database instead.
   */
  maxBytes: number;
  /**
   * Most bytes handed to one follower in one write (when more is due, the rest follows in
   * further writes), and about the most one read takes from the database: lines are at
   * most 64 KiB, but a thousand of them would be 64 MB, and more as JSON.
   */
  writeBytes: number;
  /** A comment line this often, so a follower (and any proxy) can tell a quiet task from a dead connection. */
  keepAliveMs: number;
}

const defaultLogFeedOptions: LogFeedOptions = {
  pollMs: 1000,
  readLines: 1000,
  spareBytes: 1024 * 1024,
  maxBytes: 16 * 1024 * 1024,
  writeBytes: 1024 * 1024,
  keepAliveMs: 15_000,
};

/**
 * Live task logs as Server-Sent Events, shared by everyone following the same task.
 *
 * One feed per followed task (created by its first follower, dropped when the last one
 * leaves) reads new lines once per engine event or poll, turns them into SSE frames
 * once, and keeps the most recent frames. Each follower is handed, in one write, the
 * frames after its own position; a follower behind what the feed still holds (it asked
 * for old lines, or it reads slowly) reads from the database on its own until it is back
 * within the feed's frames. So N followers cost one database read and one serialisation
 * per line, not N.
 */
export class TaskLogFeeds {
  readonly #feeds = new Map<string, TaskLogFeed>();
  readonly #onEvent = (taskId: string) => this.#feeds.get(taskId)?.request();

  constructor(
    private readonly db: Kysely<Database>,
    /** The engine's events: "log" after lines are stored, "state" when a task changes state. */
    private readonly events: EventEmitter,
    private readonly options: LogFeedOptions = defaultLogFeedOptions,
  ) {}

  /**
   * Streams the task's lines after `after` to `output` as `line` events, then an `end`
   * event with the final state, and ends `output`. `storedLines` is how many lines the
   * task had when the caller looked (a new feed starts reading there, or at `after` if
   * that is earlier). `onError` hears a failed read; the stream is ended after it. The
   * caller must call the returned function when the client goes away.
   */
  follow(
    taskId: string,
    position: { after: number; storedLines: number },
    output: Writable,
    onError: (error: unknown) => void,
  ): () => void {
    let feed = this.#feeds.get(taskId);
    if (feed === undefined) {
      if (this.#feeds.size === 0) {
        this.events.on("log", this.#onEvent);
        this.events.on("state", this.#onEvent);
      }
      const start = Math.min(position.after, position.storedLines);
      const created = new TaskLogFeed(this.db, taskId, start, this.options, () => this.#forget(created));
      feed = created;
      this.#feeds.set(taskId, feed);
    }
    return feed.add(position.after, output, onError);
  }

  #forget(feed: TaskLogFeed): void {
    if (this.#feeds.get(feed.taskId) !== feed) return;
    this.#feeds.delete(feed.taskId);
    if (this.#feeds.size === 0) {
      this.events.off("log", this.#onEvent);
      this.events.off("state", this.#onEvent);
    }
  }
}

interface Follower {
  readonly output: Writable;
  readonly onError: (error: unknown) => void;
  /** The last line sent (or skipped: the follower asked for lines after it). */
  position: number;
  /** A write returned false: nothing more is sent until 'drain'. */
  draining: boolean;
  /** Behind the feed's frames: reading from the database on its own. */
  catchingUp: boolean;
  /** Ended, or the client left. */
  done: boolean;
  keepAlive: NodeJS.Timeout;
}

/** The frames of one read, encoded once; a follower that needs all of them gets this very buffer. */
interface Segment {
  /** The frames one after another, as UTF-8. */
  readonly bytes: Buffer;
  /** Each frame's line number, ascending. */
  readonly lines: readonly number[];
  /** Where each frame starts in `bytes`. */
  readonly offsets: readonly number[];
}

/** Frames to write to a follower, and the last line among them. */
interface Chunk {
  readonly bytes: Buffer;
  readonly through: number;
}

/** The frames of one followed task and its followers. */
class TaskLogFeed {
  readonly #followers = new Set<Follower>();
  /** Frames of lines (floor, head], oldest first. */
  #segments: Segment[] = [];
  #bytes = 0;
  /** Lines up to here may be missing from #segments (never read, or dropped to stay bounded). */
  #floor: number;
  /** The last line read. */
  #head: number;
  /** The `end` frame, once the task has ended and every line up to #head is all there is. */
  #end: string | undefined;
  /** The last chunk joined from several segments, for the next follower at the same position. */
  #chunk: (Chunk & { after: number; head: number }) | undefined;
  #reading = false;
  /** Events came during a read: read once more when it ends (reads never overlap). */
  #again = false;
  /** A full read left more lines in the database, but every follower still had frames to take. */
  #stalled = false;
  #closed = false;
  #timer: NodeJS.Timeout | undefined;

  constructor(
    private readonly db: Kysely<Database>,
    readonly taskId: string,
    start: number,
    private readonly options: LogFeedOptions,
    private readonly onClose: () => void,
  ) {
    this.#floor = start;
    this.#head = start;
  }

  add(after: number, output: Writable, onError: (error: unknown) => void): () => void {
    const follower: Follower = {
      output,
      onError,
      position: after,
      draining: false,
      catchingUp: false,
      done: false,
      keepAlive: setInterval(() => {
        // A follower with unsent data is not quiet; a comment would only queue up behind it.
        if (!follower.draining) output.write(": keep-alive\n\n");
      }, this.options.keepAliveMs),
    };
    this.#followers.add(follower);
    this.#serve(follower);
    // A newcomer expects the log as it is now, including lines another node wrote since the last poll.
    this.request();
    return () => this.#remove(follower);
  }

  /** Reads new lines soon: at once, or after the read in flight (any number of requests meanwhile make one read). */
  request(): void {
    if (this.#closed || this.#end !== undefined) return;
    if (this.#reading) {
      this.#again = true;
      return;
    }
    void this.#read();
  }

  async #read(): Promise<void> {
    this.#reading = true;
    this.#stalled = false;
    clearTimeout(this.#timer);
    try {
      for (;;) {
        // The state first: once it is terminal, every line is stored, so the read after it is the last.
        const state = (await getTaskRow(this.db, this.taskId)).state as TaskState;
        const { lines, more: full } = await readLogPage(this.db, this.taskId, {
          afterLine: this.#head,
          limit: this.options.readLines,
          maxBytes: this.options.writeBytes,
        });
        if (this.#closed) return;
        this.#append(lines);
        if (!full && isTerminal(state)) {
          this.#end = frame("end", { state });
          // Done reading: a follower arriving from now on gets a feed of its own, which
          // sees the task as it is then.
          this.onClose();
        }
        for (const follower of this.#followers) this.#serve(follower);
        if (this.#end !== undefined || this.#closed) return;
        if (!full) break;
        // More is stored. Read it while some follower has been handed everything (it may
        // still be draining: the next batch is then ready when it is). Reading further
        // ahead than that would only push followers out of the frames kept; the first
        // follower handed everything asks for more.
        if (!this.#hasFollowerAtHead()) {
          this.#stalled = true;
          break;
        }
      }
    } catch (error) {
      this.#fail(error);
      return;
    } finally {
      this.#reading = false;
    }
    if (this.#stalled) {
      // What the events announced is among what is still to read; a follower resumes it.
      this.#again = false;
      return;
    }
    if (this.#again) {
      this.#again = false;
      this.request();
      return;
    }
    this.#timer = setTimeout(() => this.request(), this.options.pollMs);
  }

  #append(lines: readonly TaskLogLine[]): void {
    const last = lines[lines.length - 1];
    if (last === undefined) return;
    const frames = lines.map((line) => frame("line", line, line.line));
    const text = frames.join("");
    const bytes = Buffer.from(text, "utf8");
    const offsets: number[] = [];
    // ASCII text (the usual log) has as many bytes as characters: no need to measure each frame.
    const ascii = bytes.length === text.length;
    let offset = 0;
    for (const each of frames) {
      offsets.push(offset);
      offset += ascii ? each.length : Buffer.byteLength(each);
    }
    this.#segments.push({ bytes, lines: lines.map((line) => line.line), offsets });
    this.#bytes += bytes.length;
    this.#head = last.line;
    this.#trim();
  }

  /**
   * Drops the oldest segments that no follower needs beyond the spare allowance, and any
   * beyond the maximum. The newest segment stays whole for the followers that were up to date.
   */
  #trim(): void {
    let needed = Number.POSITIVE_INFINITY;
    for (const follower of this.#followers) {
      if (!follower.catchingUp) needed = Math.min(needed, follower.position);
    }
    const { spareBytes, maxBytes } = this.options;
    let drop = 0;
    let bytes = this.#bytes;
    for (; drop < this.#segments.length - 1; drop += 1) {
      const segment = this.#segments[drop];
      if (segment === undefined) break;
      const unneeded = (segment.lines[segment.lines.length - 1] ?? 0) <= needed;
      if (!(bytes > maxBytes || (unneeded && bytes > spareBytes))) break;
      bytes -= segment.bytes.length;
      this.#floor = segment.lines[segment.lines.length - 1] ?? this.#floor;
    }
    if (drop === 0) return;
    this.#segments.splice(0, drop);
    this.#bytes = bytes;
  }

  /** Sends a follower what it has not had yet, if it can take it now; ends it after the end. */
  #serve(follower: Follower): void {
    if (follower.done || follower.draining || follower.catchingUp) return;
    if (follower.position < this.#floor) {
      void this.#catchUp(follower);
      return;
    }
    let flowing = true;
    while (flowing) {
      const chunk = this.#chunkAfter(follower.position);
      if (chunk === undefined) break;
      follower.position = chunk.through;
      flowing = follower.output.write(chunk.bytes);
    }
    if (this.#end !== undefined && follower.position >= this.#head) {
      // What write() holds is bounded (one chunk); end() sends it and then closes.
      follower.output.write(this.#end);
      follower.output.end();
      this.#remove(follower);
      return;
    }
    if (this.#stalled && follower.position >= this.#head) this.request();
    if (!flowing) {
      follower.draining = true;
      void drained(follower.output).then(() => {
        follower.draining = false;
        this.#serve(follower);
      });
    }
  }

  /** Reads a follower's lines from the database until it is back within the frames kept. */
  async #catchUp(follower: Follower): Promise<void> {
    follower.catchingUp = true;
    try {
      while (!follower.done && follower.position < this.#floor) {
        const { lines } = await readLogPage(this.db, this.taskId, {
          afterLine: follower.position,
          limit: this.options.readLines,
          maxBytes: this.options.writeBytes,
        });
        if (follower.done) return;
        const last = lines[lines.length - 1];
        if (last === undefined) {
          // Nothing stored after it, yet the feed read further: nothing is missing in between.
          follower.position = this.#floor;
          break;
        }
        follower.position = last.line;
        if (!follower.output.write(lines.map((line) => frame("line", line, line.line)).join(""))) {
          follower.draining = true;
          await drained(follower.output);
          follower.draining = false;
        }
      }
    } catch (error) {
      this.#failFollower(follower, error);
      return;
    } finally {
      follower.catchingUp = false;
    }
    this.#serve(follower);
  }

  /**
   * The frames after `position`, up to about `writeBytes`, as one buffer: a segment as it
   * is (shared by every follower that needs all of it), or the segments needed joined.
   */
  #chunkAfter(position: number): Chunk | undefined {
    if (position >= this.#head) return undefined;
    if (this.#chunk?.after === position && this.#chunk.head === this.#head) return this.#chunk;
    let first = this.#segments.length;
    while (first > 0 && (this.#segments[first - 1]?.lines[0] ?? 0) > position) first -= 1;
    const parts: Buffer[] = [];
    let size = 0;
    let through = position;
    // The segment holding `position` itself (if any) contributes only the frames after it.
    const partial = this.#segments[first - 1];
    if (partial !== undefined) {
      const offset = partial.offsets[firstAfter(partial.lines, position)];
      if (offset !== undefined) {
        parts.push(partial.bytes.subarray(offset));
        size += partial.bytes.length - offset;
        through = partial.lines[partial.lines.length - 1] ?? through;
      }
    }
    for (let index = first; index < this.#segments.length && size < this.options.writeBytes; index += 1) {
      const segment = this.#segments[index];
      if (segment === undefined) break;
      parts.push(segment.bytes);
      size += segment.bytes.length;
      through = segment.lines[segment.lines.length - 1] ?? through;
    }
    const [only] = parts;
    if (only === undefined) return undefined;
    if (parts.length === 1) return { bytes: only, through };
    this.#chunk = { bytes: Buffer.concat(parts, size), through, after: position, head: this.#head };
    return this.#chunk;
  }

  #hasFollowerAtHead(): boolean {
    for (const follower of this.#followers) {
      if (!follower.catchingUp && follower.position >= this.#head) return true;
    }
    return false;
  }

  #remove(follower: Follower): void {
    if (follower.done) return;
    follower.done = true;
    clearInterval(follower.keepAlive);
    this.#followers.delete(follower);
    if (this.#followers.size === 0) this.#close();
  }

  #failFollower(follower: Follower, error: unknown): void {
    if (follower.done) return;
    follower.onError(error);
    follower.output.end();
    this.#remove(follower);
  }

  #fail(error: unknown): void {
    for (const follower of [...this.#followers]) this.#failFollower(follower, error);
    this.#close();
  }

  #close(): void {
    if (this.#closed) return;
    this.#closed = true;
    clearTimeout(this.#timer);
    this.#segments = [];
    this.#chunk = undefined;
    this.onClose();
  }
}

/** One SSE message: `id: N` (lines only, so a reconnecting client can ask for what follows), event, JSON data. */
function frame(event: string, data: unknown, id?: number): string {
  return `${id === undefined ? "" : `id: ${id}\n`}event: ${event}\ndata: ${JSON.stringify(data)}\n\n`;
}

/** Index of the first line number above `position` (binary search; line numbers ascend). */
function firstAfter(lineNumbers: readonly number[], position: number): number {
  let low = 0;
  let high = lineNumbers.length;
  while (low < high) {
    const middle = (low + high) >>> 1;
    if ((lineNumbers[middle] ?? Number.POSITIVE_INFINITY) <= position) low = middle + 1;
    else high = middle;
  }
  return low;
}

/** Resolves when `output` can take more, or is closed (then nothing more is written to it). */
function drained(output: Writable): Promise<void> {
  return new Promise((resolve) => {
    const done = () => {
      output.off("drain", done);
      output.off("close", done);
      resolve();
    };
    output.on("drain", done);
    output.on("close", done);
  });
}
