import type { FastifyReply, FastifyRequest } from "fastify";

/**
 * Requests of one client address run at most `limit` at a time; the rest wait in line,
 * first come first served (docs/decisions/0026-bounded-work-per-request.md).
 *
 * The server's work for a request is synchronous on the event loop (SQLite, JSON, the
 * response), so every request in flight at once is a slice of one loop turn that any other
 * request, liveness probes included, waits behind. One client sending 50 requests at a time
 * made every turn 50 requests long: /healthz waited up to a second under a sign-in flood
 * although each refusal took two milliseconds. With a line per address, a turn starts one of
 * a client's requests (below), and other clients' requests interleave with them.
 *
 * Nothing is refused: a waiting request is answered as it would have been, later (so rate
 * limits that count exactly still count exactly). A browser uses at most six connections per
 * host, the CLI one, so ordinary use waits a turn or two at most. Requests that hold their answer open (event
 * streams, long polls) and the health routes are not counted (`RouteSpec.unqueued`); a request's
 * place is given back when its handler returns, also when a stream then goes on.
 *
 * A client that leaves does not take its work out of the line: a request still running its
 * handler keeps its place until the handler ends (`working`), and one whose client left before
 * its handler began is not worked on at all (`acquire` answers false; src/api/app.ts skips a
 * handler whose response is already closed). Otherwise a client sending 50 requests and closing them at once had every one of
 * them run together, the line giving each place back as its connection closed.
 *
 * A turn of the event loop starts one request of an address, however few are running. On
 * SQLite a refused request runs start to end within the turn its data arrived in, so its
 * place was given back before the next connection's data was read: counting only the
 * requests running at once, 50 connections of one client each had their request done in the
 * same turn (40 per turn, 40–70 ms, measured), and /healthz, read in that turn too, waited
 * behind all of them. A request's work cannot be measured before it runs, so the share is
 * one request, not a time: a turn then holds one request of each client (a deployment's
 * creation is the longest, a few milliseconds). The rest wait in line, and the line moves
 * from setImmediate (the loop's check phase), one per turn; an idle loop turns in
 * microseconds, so a browser's six requests at once still start within a millisecond.
 */
const STARTS_PER_TURN = 1;

export class AddressQueue {
  private readonly addresses = new Map<string, AddressLine>();
  /** Requests holding a place: whether their client has left, and whether their handler is running. */
  private readonly holding = new WeakMap<FastifyRequest, { left: boolean; working: boolean }>();

  constructor(private readonly limit: number) {}

  /**
   * Resolves once the request may run; its place is then held until `release`, or until its
   * response closes (answered, or the client gone) with no handler of it running, whichever
   * comes first. False when the client left while waiting: the request is not to be worked on
   * (its place is given back at once).
   */
  async acquire(request: FastifyRequest, reply: FastifyReply): Promise<boolean> {
    let line = this.addresses.get(request.ip);
    if (!line) {
      line = { running: 0, startedThisTurn: 0, waiting: [], moving: false };
      this.addresses.set(request.ip, line);
    }
    if (line.waiting.length === 0 && this.hasRoom(line)) {
      this.start(request.ip, line);
    } else {
      // The line's turn (moveLine) counts the place in when it lets the request go.
      if (line.running < this.limit) this.moveOnNextTurn(request.ip, line);
      await new Promise<void>((resolve) => line.waiting.push(resolve));
    }
    const state = { left: false, working: false };
    this.holding.set(request, state);
    // A client that left while waiting has no close to come: its place goes back at once.
    if (reply.raw.closed) {
      this.release(request);
      return false;
    }
    reply.raw.once("close", () => {
      state.left = true;
      if (!state.working) this.release(request);
    });
    return true;
  }

  /**
   * Runs the request's handler holding its place: a client that leaves meanwhile gets it back
   * when the handler ends, not before (the work goes on without it).
   */
  async working<T>(request: FastifyRequest, handler: () => Promise<T>): Promise<T> {
    const state = this.holding.get(request);
    if (!state) return handler();
    state.working = true;
    try {
      return await handler();
    } finally {
      state.working = false;
      if (state.left) this.release(request);
    }
  }

  /** Gives the request's place to the next in line; safe to call more than once. */
  release(request: FastifyRequest): void {
    if (!this.holding.delete(request)) return;
    const line = this.addresses.get(request.ip);
    if (!line) return;
    line.running -= 1;
    if (line.waiting.length > 0) this.moveOnNextTurn(request.ip, line);
    else this.forgetIfIdle(request.ip, line);
  }

  /** Requests of an address running and waiting (for tests and metrics). */
  usage(address: string): { running: number; waiting: number } {
    const line = this.addresses.get(address);
    return { running: line?.running ?? 0, waiting: line?.waiting.length ?? 0 };
  }

  private hasRoom(line: AddressLine): boolean {
    return line.running < this.limit && line.startedThisTurn < STARTS_PER_TURN;
  }

  private start(address: string, line: AddressLine): void {
    line.running += 1;
    line.startedThisTurn += 1;
    // The turn's count ends with the turn.
    this.moveOnNextTurn(address, line);
  }

  private moveOnNextTurn(address: string, line: AddressLine): void {
    if (line.moving) return;
    line.moving = true;
    setImmediate(() => this.moveLine(address, line));
  }

  /** A new turn: lets the line's next requests go, as many as there is room for. */
  private moveLine(address: string, line: AddressLine): void {
    line.moving = false;
    line.startedThisTurn = 0;
    while (line.waiting.length > 0 && this.hasRoom(line)) {
      line.running += 1;
      line.startedThisTurn += 1;
      line.waiting.shift()?.();
    }
    if (line.startedThisTurn > 0) this.moveOnNextTurn(address, line);
    else this.forgetIfIdle(address, line);
  }

  private forgetIfIdle(address: string, line: AddressLine): void {
    if (line.running === 0 && line.waiting.length === 0 && !line.moving && this.addresses.get(address) === line) {
      this.addresses.delete(address);
    }
  }
}

/** One client address's requests: running, started in this turn of the loop, and waiting in line. */
interface AddressLine {
  running: number;
  startedThisTurn: number;
  waiting: (() => void)[];
  /** A turn of the line is scheduled (setImmediate). */
  moving: boolean;
}
