import { MAX_LOG_LINE_BYTES, startWithin } from "../domain/logLines.js";

/**
 * Splits a stream of text (a process's stdout or stderr, decoded) into lines, keeping at
 * most `maxBytes` of each. A longer line is handed on as soon as its first `maxBytes` are
 * in, marked as cut, and the rest of it is dropped as it arrives, up to the next newline.
 *
 * Each chunk is looked at once: a 48 MB line costs one pass and `maxBytes` of memory.
 * (Joining the unfinished line to every new chunk and splitting again, as this replaced,
 * re-read the whole line for every 64 KiB that arrived: quadratic, and 1.2 GB of RSS.)
 */
export class LineSplitter {
  /** Pieces of the line being read. */
  #pieces: string[] = [];
  #bytes = 0;
  /** The line being read was cut and handed on: drop the rest of it. */
  #discarding = false;

  /** `onLine` gets each line without its "\n" (nor a "\r" before it); `cut` when only its start is kept. */
  constructor(
    private readonly onLine: (text: string, cut: boolean) => void,
    private readonly maxBytes = MAX_LOG_LINE_BYTES,
  ) {}

  push(chunk: string): void {
    let start = 0;
    for (;;) {
      const newline = chunk.indexOf("\n", start);
      const end = newline === -1 ? chunk.length : newline;
      if (!this.#discarding && end > start) this.#add(chunk.slice(start, end));
      if (newline === -1) return;
      this.#endLine();
      start = newline + 1;
    }
  }

  /** The stream ended: hands on a last line that had no newline. */
  end(): void {
    if (this.#pieces.length > 0) this.#endLine();
    this.#discarding = false;
  }

  #add(piece: string): void {
    const bytes = Buffer.byteLength(piece);
    if (this.#bytes + bytes <= this.maxBytes) {
      this.#pieces.push(piece);
      this.#bytes += bytes;
      return;
    }
    this.#pieces.push(startWithin(piece, this.maxBytes - this.#bytes));
    const text = this.#pieces.join("");
    this.#reset();
    this.#discarding = true;
    this.onLine(text, true);
  }

  #endLine(): void {
    if (this.#discarding) {
      this.#discarding = false;
      return;
    }
    const text = this.#pieces.join("");
    this.#reset();
    this.onLine(text.endsWith("\r") ? text.slice(0, -1) : text, false);
  }

  #reset(): void {
    this.#pieces = [];
    this.#bytes = 0;
  }
}
