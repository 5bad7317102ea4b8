import type { HistogramSnapshot, Labels, MetricFamily } from "./exposition.js";

/**
 * In-process counters and histograms with labels: what this node saw since it started
 * (task durations, webhook deliveries). Figures that are in the database are read from it
 * at scrape time instead, so every node reports the same.
 */
abstract class LabelledInstrument<State> {
  protected readonly series = new Map<string, { labels: Labels; state: State }>();

  constructor(
    readonly name: string,
    readonly help: string,
    private readonly labelNames: readonly string[],
  ) {}

  protected stateOf(labels: Labels, create: () => State): State {
    const values = this.labelNames.map((name) => {
      const value = labels[name];
      if (value === undefined) throw new Error(`metric ${this.name} needs label '${name}'`);
      return value;
    });
    const key = values.join("\u0000");
    let entry = this.series.get(key);
    if (!entry) {
      entry = {
        labels: Object.fromEntries(this.labelNames.map((name, index) => [name, values[index] ?? ""])),
        state: create(),
      };
      this.series.set(key, entry);
    }
    return entry.state;
  }
}

export class CounterVec extends LabelledInstrument<{ value: number }> {
  inc(labels: Labels, by = 1): void {
    this.stateOf(labels, () => ({ value: 0 })).value += by;
  }

  collect(): MetricFamily {
    return {
      name: this.name,
      help: this.help,
      type: "counter",
      samples: [...this.series.values()].map(({ labels, state }) => ({ labels, value: state.value })),
    };
  }
}

export class HistogramVec extends LabelledInstrument<{ counts: number[]; sum: number; count: number }> {
  constructor(
    name: string,
    help: string,
    labelNames: readonly string[],
    private readonly bounds: readonly number[],
  ) {
    super(name, help, labelNames);
  }

  observe(labels: Labels, value: number): void {
    const state = this.stateOf(labels, () => ({ counts: this.bounds.map(() => 0), sum: 0, count: 0 }));
    // Cumulative: the value counts in every bucket whose upper bound it does not exceed.
    this.bounds.forEach((bound, index) => {
      if (value <= bound) state.counts[index] = (state.counts[index] ?? 0) + 1;
    });
    state.sum += value;
    state.count += 1;
  }

  collect(): MetricFamily {
    return {
      name: this.name,
      help: this.help,
      type: "histogram",
      samples: [...this.series.values()].map(({ labels, state }) => ({ labels, ...this.snapshot(state) })),
    };
  }

  private snapshot(state: { counts: number[]; sum: number; count: number }): HistogramSnapshot {
    return {
      buckets: this.bounds.map((le, index) => ({ le, count: state.counts[index] ?? 0 })),
      sum: state.sum,
      count: state.count,
    };
  }
}
