/**
 * The Prometheus text exposition format (version 0.0.4), written by hand: Ferry needs a
 * few counters, gauges and histograms, not a metrics library. What the format demands
 * and this enforces: HELP and TYPE once per family before its samples, every sample of a
 * family together, escaped HELP text (\\ and newline) and label values (\\, " and
 * newline), histograms as cumulative `_bucket{le}` series ending in `le="+Inf"` (equal
 * to `_count`), then `_sum` and `_count`; a newline after the last line.
 */

export const EXPOSITION_CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8";

export type Labels = Readonly<Record<string, string>>;

interface Sample {
  readonly labels: Labels;
  readonly value: number;
}

/** A histogram's state: cumulative counts per upper bound (ascending, +Inf left out), sum and count. */
export interface HistogramSnapshot {
  readonly buckets: readonly { readonly le: number; readonly count: number }[];
  readonly sum: number;
  readonly count: number;
}

export type MetricFamily =
  | {
      readonly name: string;
      readonly help: string;
      readonly type: "counter" | "gauge";
      readonly samples: readonly Sample[];
    }
  | {
      readonly name: string;
      readonly help: string;
      readonly type: "histogram";
      readonly samples: readonly (HistogramSnapshot & { readonly labels: Labels })[];
    };

const METRIC_NAME = /^[a-zA-Z_:][a-zA-Z0-9_:]*$/;
const LABEL_NAME = /^[a-zA-Z_][a-zA-Z0-9_]*$/;

/** The families as one exposition document. Throws on a name the format does not allow (a bug, not input). */
export function renderExposition(families: readonly MetricFamily[]): string {
  const lines: string[] = [];
  const seen = new Set<string>();
  for (const family of families) {
    if (!METRIC_NAME.test(family.name)) throw new Error(`invalid metric name '${family.name}'`);
    if (seen.has(family.name)) throw new Error(`metric family '${family.name}' is written twice`);
    seen.add(family.name);
    lines.push(`# HELP ${family.name} ${escapeHelp(family.help)}`);
    lines.push(`# TYPE ${family.name} ${family.type}`);
    if (family.type === "histogram") {
      for (const sample of family.samples) lines.push(...histogramLines(family.name, sample));
    } else {
      for (const sample of family.samples) {
        lines.push(`${family.name}${formatLabels(sample.labels)} ${formatValue(sample.value)}`);
      }
    }
  }
  return lines.length === 0 ? "" : `${lines.join("\n")}\n`;
}

function histogramLines(name: string, sample: HistogramSnapshot & { labels: Labels }): string[] {
  if ("le" in sample.labels) throw new Error(`histogram '${name}' must not have its own 'le' label`);
  const lines: string[] = [];
  let previous = Number.NEGATIVE_INFINITY;
  for (const bucket of sample.buckets) {
    if (!(bucket.le > previous) || bucket.le === Number.POSITIVE_INFINITY) {
      throw new Error(`histogram '${name}' needs finite bucket bounds in ascending order`);
    }
    previous = bucket.le;
    lines.push(`${name}_bucket${formatLabels({ ...sample.labels, le: formatValue(bucket.le) })} ${bucket.count}`);
  }
  lines.push(`${name}_bucket${formatLabels({ ...sample.labels, le: "+Inf" })} ${sample.count}`);
  lines.push(`${name}_sum${formatLabels(sample.labels)} ${formatValue(sample.sum)}`);
  lines.push(`${name}_count${formatLabels(sample.labels)} ${sample.count}`);
  return lines;
}

function formatLabels(labels: Labels): string {
  const entries = Object.entries(labels);
  if (entries.length === 0) return "";
  const parts = entries.map(([name, value]) => {
    if (!LABEL_NAME.test(name) || name.startsWith("__")) throw new Error(`invalid label name '${name}'`);
    return `${name}="${escapeLabelValue(value)}"`;
  });
  return `{${parts.join(",")}}`;
}

/** Go's float syntax, which Prometheus parses: JavaScript's shortest round-trip form, and Inf/NaN spelled its way. */
function formatValue(value: number): string {
  if (Number.isNaN(value)) return "NaN";
  if (value === Number.POSITIVE_INFINITY) return "+Inf";
  if (value === Number.NEGATIVE_INFINITY) return "-Inf";
  return String(value);
}

function escapeHelp(text: string): string {
  return text.replace(/\\/g, "\\\\").replace(/\n/g, "\\n");
}

function escapeLabelValue(value: string): string {
  return value.replace(/\\/g, "\\\\").replace(/"/g, '\\"').replace(/\n/g, "\\n");
}
