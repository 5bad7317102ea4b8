/**
 * The meeting points of an all-at-once blue/green switch across targets (docs/ferry-yml.md,
 * `blueGreen.switch: allAtOnce`). Each target's deployment runs on its own and waits at each
 * checkpoint (new colour healthy; router switched; bake passed) until every target got
 * there — or until one failed, which every other one learns at its next checkpoint, and
 * then undoes what it did (removes its new colour, or switches its router back).
 */
export class AllAtOnce {
  #failure: string | undefined;
  readonly #arrivals = new Map<string, number>();
  readonly #waiters = new Set<() => void>();

  constructor(readonly participants: number) {}

  /** The reason the first participant failed, if one did. */
  get failure(): string | undefined {
    return this.#failure;
  }

  /** A participant failed (it will reach no further checkpoint): the others undo at theirs. */
  fail(target: string, reason: string): void {
    this.#failure ??= `on ${target}: ${reason}`;
    this.#wake();
  }

  /**
   * Waits at a checkpoint until every participant reached it: undefined then, or the first
   * failure (at once, if one is known already).
   */
  async reach(checkpoint: string, signal: AbortSignal): Promise<string | undefined> {
    if (this.#failure !== undefined) return this.#failure;
    if (signal.aborted) return "the deployment was stopped";
    const onAbort = () => this.fail("this deployment", "it was stopped");
    signal.addEventListener("abort", onAbort, { once: true });
    try {
      return await this.#wait(checkpoint);
    } finally {
      signal.removeEventListener("abort", onAbort);
    }
  }

  async #wait(checkpoint: string): Promise<string | undefined> {
    this.#arrivals.set(checkpoint, (this.#arrivals.get(checkpoint) ?? 0) + 1);
    this.#wake();
    for (;;) {
      if (this.#failure !== undefined) return this.#failure;
      if ((this.#arrivals.get(checkpoint) ?? 0) >= this.participants) return undefined;
      await new Promise<void>((resolve) => this.#waiters.add(resolve));
    }
  }

  #wake(): void {
    const waiters = [...this.#waiters];
    this.#waiters.clear();
    for (const wake of waiters) wake();
  }
}
