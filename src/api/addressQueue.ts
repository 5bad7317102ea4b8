import type { FastifyReply, FastifyRequest } from "fastify";

/**
 * Requests of one client address run at most `limit` at a time; the rest wait in line,
 * first come first served (docs/decisions/0026-bounded-work-per-request.md).
 *
 * The server's work for a request is synchronous on the event loop (SQLite, JSON, the
 * response), so every request in flight at once is a slice of one loop turn that any other
 * request, liveness probes included, waits behind. One client sending 50 requests at a time
 * made every turn 50 requests long: /healthz waited up to a second under a sign-in flood
 * although each refusal took two milliseconds. With a line per address, a turn runs at most
 * `limit` of one client's requests, and other clients' requests interleave with them.
 *
 * Nothing is refused: a waiting request is answered as it would have been, later (so rate
 * limits that count exactly still count exactly). A browser uses at most six connections per
 * host, the CLI one, so ordinary use never waits. Requests that hold their answer open (event
 * streams, long polls) and the health routes are not counted (`RouteSpec.unqueued`); a request's
 * place is given back when its handler returns, also when a stream then goes on.
 *
 * The next request in line starts from setImmediate, not from the promise that freed the
 * place: otherwise a long line would run to its end within one turn, which is what this is for.
 */
export class AddressQueue {
  private readonly addresses = new Map<string, { running: number; waiting: (() => void)[] }>();
  private readonly holding = new WeakSet<FastifyRequest>();

  constructor(private readonly limit: number) {}

  /**
   * Resolves once the request may run; its place is then held until `release`, or until its
   * response closes (answered, or the client gone), whichever comes first.
   */
  async acquire(request: FastifyRequest, reply: FastifyReply): Promise<void> {
    let entry = this.addresses.get(request.ip);
    if (!entry) {
      entry = { running: 0, waiting: [] };
      this.addresses.set(request.ip, entry);
    }
    if (entry.running < this.limit) {
      entry.running += 1;
    } else {
      // The place is handed over by release: `running` stays as it is.
      await new Promise<void>((resolve) => entry.waiting.push(resolve));
    }
    this.holding.add(request);
    // A client that left while waiting has no close to come: its place goes back at once.
    if (reply.raw.closed) this.release(request);
    else reply.raw.once("close", () => this.release(request));
  }

  /** Gives the request's place to the next in line; safe to call more than once. */
  release(request: FastifyRequest): void {
    if (!this.holding.delete(request)) return;
    const entry = this.addresses.get(request.ip);
    if (!entry) return;
    const next = entry.waiting.shift();
    if (next) {
      setImmediate(next);
      return;
    }
    entry.running -= 1;
    if (entry.running === 0) this.addresses.delete(request.ip);
  }

  /** Requests of an address running and waiting (for tests and metrics). */
  usage(address: string): { running: number; waiting: number } {
    const entry = this.addresses.get(address);
    return { running: entry?.running ?? 0, waiting: entry?.waiting.length ?? 0 };
  }
}
