import type { Kysely } from "kysely";
import { fitLogLine, markCut } from "../domain/logLines.js";
import type { TaskLogLevel } from "../domain/tasks.js";
import type { Database } from "../store/schema.js";
import { appendLogLines, type NewLogLine } from "../store/tasks.js";

export interface TaskLogOptions {
  /** Most bytes of log text kept per task; later lines are dropped after one marker line. */
  maxBytes: number;
  /** How often buffered lines are written (ms). A crash loses at most this much log. */
  flushIntervalMs: number;
  /** Called after each write, so live followers can read the new lines at once. */
  onFlush?: (taskId: string) => void;
}

/** Hides sensitive values in what the task writes (LogMasker is one). */
export interface TaskLogMasker {
  /** Masks a whole text. */
  mask(text: string): string;
  /** Masks a chunk of a stream, holding back a tail that could be the start of a sensitive value. */
  write(chunk: string): string;
  /** Ends the stream and releases what write held back. */
  flush(): string;
}

/**
 * What a step writes to its task's log. A TaskLog is one; so is a lane (TaskLog.lane) — the
 * log of one of several targets a rolling step runs on at the same time.
 */
export interface StepLog {
  info(text: string): void;
  warn(text: string): void;
  error(text: string): void;
  writeCutLine(level: "info" | "warn", start: string): void;
  redact(text: string): string;
}

/** A lane of a task's log: its lines carry the lane's own step name, whatever else runs meanwhile. */
export interface TaskLogLane extends StepLog {
  /** Runs the work between a start and an end line (duration, outcome), as TaskLog.step does. */
  run<T>(work: () => Promise<T>): Promise<T>;
}

const noMasking: TaskLogMasker = { mask: (text) => text, write: (chunk) => chunk, flush: () => "" };

export const defaultTaskLogOptions: TaskLogOptions = { maxBytes: 16 * 1024 * 1024, flushIntervalMs: 250 };

/**
 * A task's log: lines are buffered and written in batches (one transaction per flush,
 * at most every `flushIntervalMs`), capped in size with an explicit truncation marker.
 * Each line is kept up to MAX_LOG_LINE_BYTES (domain/logLines.ts), then cut with a mark.
 */
export class TaskLog {
  private buffer: NewLogLine[] = [];
  private bytes = 0;
  private truncated = false;
  private currentStep: string | null = null;
  private timer: NodeJS.Timeout | undefined;
  private writing: Promise<void> = Promise.resolve();
  private masker: TaskLogMasker = noMasking;
  private stampedAt = Number.NaN;
  private stamp = "";

  constructor(
    private readonly db: Kysely<Database>,
    readonly taskId: string,
    private readonly options: TaskLogOptions = defaultTaskLogOptions,
    initialBytes = 0,
  ) {
    this.bytes = initialBytes;
  }

  /** The text with the task's sensitive values masked, for anything else the task shows (its error, a question). */
  redact(text: string): string {
    return this.masker.mask(text);
  }

  /** Masks what is written from now on (a deployment sets it once it knows its secrets). */
  setMasker(masker: TaskLogMasker): void {
    this.masker = masker;
  }

  info(text: string): void {
    this.write("info", text);
  }

  warn(text: string): void {
    this.write("warn", text);
  }

  error(text: string): void {
    this.write("error", text);
  }

  /**
   * Writes the start of a line whose rest was dropped (see engine/lineSplitter.ts), masked
   * and marked as cut. The cut may have split a sensitive value, leaving its first
   * characters at the end of the start, where no mask would recognise them: masked as a
   * stream instead, the masker holds back such a tail, and it is dropped with the rest.
   */
  writeCutLine(level: "info" | "warn", start: string, step: string | null = this.currentStep): void {
    if (this.truncated) return;
    const masked = this.masker.write(start);
    this.masker.flush();
    this.store(level, markCut(masked), step);
  }

  /**
   * A lane for work that runs beside other work of the same task (the targets of one batch of
   * a rolling step): every line it writes names `step` ("web on host-3"), so that lines of
   * parallel targets, interleaved in time, each say which target they belong to. The task's
   * current step (TaskLog.step) is neither read nor changed by a lane.
   */
  lane(step: string): TaskLogLane {
    return {
      info: (text) => this.write("info", text, step),
      warn: (text) => this.write("warn", text, step),
      error: (text) => this.write("error", text, step),
      writeCutLine: (level, start) => this.writeCutLine(level, start, step),
      redact: (text) => this.redact(text),
      run: async (work) => {
        const started = performance.now();
        this.write("step", `▶ ${step}`, step);
        try {
          const result = await work();
          this.write("step", `✔ ${step} (${formatDuration(performance.now() - started)})`, step);
          return result;
        } catch (error) {
          this.write("step", `✖ ${step} failed after ${formatDuration(performance.now() - started)}`, step);
          throw error;
        }
      },
    };
  }

  /** Runs one step with a start and an end line (with its duration and outcome) around it. */
  async step<T>(name: string, run: () => Promise<T>): Promise<T> {
    const previous = this.currentStep;
    this.currentStep = name;
    const started = performance.now();
    this.write("step", `▶ ${name}`);
    try {
      const result = await run();
      this.write("step", `✔ ${name} (${formatDuration(performance.now() - started)})`);
      return result;
    } catch (error) {
      this.write("step", `✖ ${name} failed after ${formatDuration(performance.now() - started)}`);
      throw error;
    } finally {
      this.currentStep = previous;
    }
  }

  private write(level: TaskLogLevel, text: string, step: string | null = this.currentStep): void {
    // Mask the whole text first (a secret may span lines), then split it into lines.
    const masked = this.masker.mask(text);
    for (const line of masked.includes("\n") ? masked.split(/\r?\n/) : [masked]) {
      if (this.truncated) return;
      // Masked whole before it is cut: no part of a sensitive value is left at the cut.
      this.store(level, fitLogLine(this.masker.mask(line)), step);
    }
  }

  private store(level: TaskLogLevel, clean: string, step: string | null): void {
    const size = Buffer.byteLength(clean);
    if (this.bytes + size > this.options.maxBytes) {
      this.truncated = true;
      this.push("warn", `[log truncated: this task reached its ${this.options.maxBytes}-byte log limit]`, step);
      return;
    }
    this.bytes += size;
    this.push(level, clean, step);
  }

  private push(level: TaskLogLevel, text: string, step: string | null): void {
    this.buffer.push({ at: this.now(), level, step, text });
    this.timer ??= setTimeout(() => {
      this.timer = undefined;
      // A failed batch is reported by the next explicit flush; it must not crash the process.
      this.flush().catch(() => {});
    }, this.options.flushIntervalMs);
  }

  /** The time as ISO text; a burst of lines within one millisecond shares one string. */
  private now(): string {
    const now = Date.now();
    if (now !== this.stampedAt) {
      this.stampedAt = now;
      this.stamp = new Date(now).toISOString();
    }
    return this.stamp;
  }

  /** Writes what is buffered; resolves when it is stored. Writes never overlap. */
  flush(): Promise<void> {
    if (this.timer) {
      clearTimeout(this.timer);
      this.timer = undefined;
    }
    const lines = this.buffer;
    this.buffer = [];
    // One failed write must not poison every later one: chain on the settled previous write.
    this.writing = this.writing
      .catch(() => {})
      .then(async () => {
        if (lines.length === 0) return;
        await appendLogLines(this.db, this.taskId, lines);
        this.options.onFlush?.(this.taskId);
      });
    return this.writing;
  }
}

function formatDuration(milliseconds: number): string {
  return milliseconds < 1000 ? `${Math.round(milliseconds)} ms` : `${(milliseconds / 1000).toFixed(1)} s`;
}
