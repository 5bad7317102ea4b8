/**
 * Runs a pass of work when it is next due, and sleeps until then (ADR 0069): no fixed tick.
 * A pass does what is due now and answers when the next thing is due (undefined: nothing is
 * scheduled); the timer sleeps until that moment, and `wake()` — called when the schedule
 * changed on this node (a trigger created, resumed or changed, a poll finished) — makes it
 * run a pass at once and plan again.
 *
 * The sleep is capped at `maxSleepMs` (jittered, so server nodes sharing a database do not
 * look at once): a change made through another node reaches this one no later than that.
 * That node wakes itself, and any node may act on any due row, so the cap bounds only how
 * late this node learns of work another node would do anyway.
 */
export class DueTimer {
  private timer: NodeJS.Timeout | undefined;
  private running: Promise<void> | undefined;
  /** Set by wake() while a pass runs: what it answered may be stale, so another pass follows at once. */
  private wokenDuringPass = false;
  private stopped = true;

  constructor(
    private readonly pass: (now: Date) => Promise<Date | undefined>,
    private readonly options: {
      /** The longest sleep, whatever is due (changes made through other nodes). */
      maxSleepMs: number;
      /** A pass that failed (the database did not answer) is tried again after this. */
      retryMs: number;
      onError: (error: unknown) => void;
    },
  ) {}

  start(): void {
    this.stopped = false;
    this.sleep(0);
  }

  async stop(): Promise<void> {
    this.stopped = true;
    clearTimeout(this.timer);
    this.timer = undefined;
    await this.running;
  }

  /** The schedule changed: run a pass now (after the one under way, if any) and plan again. */
  wake(): void {
    if (this.stopped) return;
    if (this.running) {
      this.wokenDuringPass = true;
      return;
    }
    this.sleep(0);
  }

  /** The delay a pass's answer asks for, at `now`: until the next due moment, within the cap. */
  static delayUntil(next: Date | undefined, now: number, maxSleepMs: number): number {
    const cap = maxSleepMs * (0.75 + Math.random() / 4);
    if (next === undefined) return cap;
    return Math.min(cap, Math.max(0, next.getTime() - now));
  }

  private sleep(delayMs: number): void {
    clearTimeout(this.timer);
    if (this.stopped) return;
    this.timer = setTimeout(() => {
      this.timer = undefined;
      // Planned in the same callback that clears `running`: a wake() either sees the pass
      // under way (and its flag is read here) or none (and plans a pass itself).
      this.running = this.runPass().then((delay) => {
        this.running = undefined;
        this.sleep(this.wokenDuringPass ? 0 : delay);
      });
    }, delayMs);
    this.timer.unref();
  }

  /** One pass; the delay until the next. Never throws. */
  private async runPass(): Promise<number> {
    this.wokenDuringPass = false;
    try {
      const next = await this.pass(new Date());
      return DueTimer.delayUntil(next, Date.now(), this.options.maxSleepMs);
    } catch (error) {
      this.options.onError(error);
      return this.options.retryMs;
    }
  }
}
