import { Duplex, type Readable, type Writable } from "node:stream";

/**
 * A byte stream to a host's Docker engine that is not a TCP socket (an SSH channel, an
 * agent's tunnel), shaped as the socket Node's HTTP client expects: data read from
 * `incoming`, written to `outgoing` (the same stream for a channel), with backpressure, and
 * a stream's usual destroy(). ssh2's own destroy() only ends and closes the channel, and
 * data or 'end' may still be emitted afterwards, which undici does not expect from a socket
 * it gave up on (a response body cancelled).
 */
export class StreamSocket extends Duplex {
  #ended = false;

  constructor(
    private readonly incoming: Readable,
    private readonly outgoing: Writable,
  ) {
    super();
    incoming.on("data", (chunk: Buffer) => {
      if (!this.push(chunk)) incoming.pause();
    });
    const end = () => {
      if (this.#ended) return;
      this.#ended = true;
      this.push(null);
    };
    incoming.on("end", end);
    incoming.on("close", end);
    // The other side went away (an agent's host killed mid-tunnel): an error for the consumer
    // reading it, the stream's end for one that no longer listens (an HTTP client done with
    // its response), never an uncaught exception.
    incoming.on("error", (error: Error) => this.destroy(this.listenerCount("error") > 0 ? error : undefined));
    if (outgoing !== (incoming as unknown)) outgoing.on("close", end);
  }

  override _read(): void {
    this.incoming.resume();
  }

  override _write(chunk: Buffer, encoding: BufferEncoding, callback: (error?: Error | null) => void): void {
    this.outgoing.write(chunk, encoding, (error) => callback(error ?? null));
  }

  override _final(callback: (error?: Error | null) => void): void {
    this.outgoing.end();
    callback();
  }

  override _destroy(error: Error | null, callback: (error?: Error | null) => void): void {
    this.outgoing.destroy();
    this.incoming.destroy();
    callback(error);
  }

  // What Node's HTTP client may call on a socket; these streams have no such knobs
  // (keep-alives and timeouts belong to the connection under them and to each call's deadline).
  setTimeout(): this {
    return this;
  }

  setNoDelay(): this {
    return this;
  }

  setKeepAlive(): this {
    return this;
  }

  ref(): this {
    return this;
  }

  unref(): this {
    return this;
  }
}
