import { useId } from "react";

/*
 * Hand-made SVG charts: bars (optionally with a second, stacked series) and a line. Each is
 * a figure whose SVG has a summary for screen readers and a data table one click away, so
 * no figure is only a picture and no value only a colour.
 */

export interface Point {
  label: string;
  value: number | null;
  /** A second series stacked on the first (bars only), e.g. failures on top of successes. */
  stacked?: number;
}

const WIDTH = 480;
const HEIGHT = 200;
const MARGIN = { top: 12, right: 12, bottom: 34, left: 44 };

/** The top of the axis: a round number above every value (even for counts, so that the middle tick is whole). */
function scale(points: Point[], counts = false): number {
  const max = Math.max(0, ...points.map((point) => (point.value ?? 0) + (point.stacked ?? 0)));
  if (counts) return Math.max(2, Math.ceil(max / 2) * 2);
  if (max === 0) return 1;
  const magnitude = 10 ** Math.floor(Math.log10(max));
  return Math.ceil(max / magnitude) * magnitude;
}

function Axes({ top, format, count }: { top: number; format(value: number): string; count: number }) {
  const plotHeight = HEIGHT - MARGIN.top - MARGIN.bottom;
  const ticks = [0, 0.5, 1];
  return (
    <g>
      {ticks.map((tick) => {
        const y = MARGIN.top + plotHeight * (1 - tick);
        return (
          <g key={tick}>
            <line className="grid-line" x1={MARGIN.left} x2={WIDTH - MARGIN.right} y1={y} y2={y} />
            <text x={MARGIN.left - 6} y={y + 4} textAnchor="end">
              {format(top * tick)}
            </text>
          </g>
        );
      })}
      <line
        className="axis"
        x1={MARGIN.left}
        x2={WIDTH - MARGIN.right}
        y1={HEIGHT - MARGIN.bottom}
        y2={HEIGHT - MARGIN.bottom}
      />
      <desc>{count} points</desc>
    </g>
  );
}

function xLabels(points: Point[], step: number) {
  const every = Math.ceil(points.length / 6);
  return points.map((point, index) =>
    index % every === 0 ? (
      <text
        key={point.label}
        x={MARGIN.left + step * index + step / 2}
        y={HEIGHT - MARGIN.bottom + 16}
        textAnchor="middle"
      >
        {point.label}
      </text>
    ) : null,
  );
}

export function BarChart({
  title,
  points,
  format = (value) => String(Math.round(value * 100) / 100),
  valueName,
  stackedName,
  counts = false,
}: {
  title: string;
  points: Point[];
  format?(value: number): string;
  valueName: string;
  stackedName?: string;
  /** Whole numbers (deployments): the axis is marked in whole numbers too. */
  counts?: boolean;
}) {
  const titleId = useId();
  const top = scale(points, counts);
  const plotHeight = HEIGHT - MARGIN.top - MARGIN.bottom;
  const step = (WIDTH - MARGIN.left - MARGIN.right) / Math.max(1, points.length);
  const barWidth = Math.max(2, step * 0.7);
  const total = points.reduce((sum, point) => sum + (point.value ?? 0), 0);
  const stackedTotal = points.reduce((sum, point) => sum + (point.stacked ?? 0), 0);
  return (
    <figure className="chart card" aria-labelledby={titleId}>
      <figcaption id={titleId}>
        <strong>{title}</strong>
        <Legend items={[["bar", valueName], ...(stackedName ? [["bar-failed", stackedName] as const] : [])]} />
      </figcaption>
      <svg
        viewBox={`0 0 ${WIDTH} ${HEIGHT}`}
        role="img"
        aria-label={`${title}: ${format(total)} ${valueName}${stackedName ? `, ${format(stackedTotal)} ${stackedName}` : ""} over ${points.length} periods`}
      >
        <Axes top={top} format={format} count={points.length} />
        {points.map((point, index) => {
          const x = MARGIN.left + step * index + (step - barWidth) / 2;
          const height = ((point.value ?? 0) / top) * plotHeight;
          const stacked = ((point.stacked ?? 0) / top) * plotHeight;
          const base = HEIGHT - MARGIN.bottom;
          return (
            <g key={point.label}>
              <rect className="bar" x={x} width={barWidth} y={base - height} height={height}>
                <title>
                  {point.label}: {format(point.value ?? 0)} {valueName}
                </title>
              </rect>
              {stacked > 0 && (
                <rect className="bar-failed" x={x} width={barWidth} y={base - height - stacked} height={stacked}>
                  <title>
                    {point.label}: {format(point.stacked ?? 0)} {stackedName}
                  </title>
                </rect>
              )}
            </g>
          );
        })}
        {xLabels(points, step)}
      </svg>
      <DataTable points={points} format={format} valueName={valueName} stackedName={stackedName} />
    </figure>
  );
}

export function LineChart({
  title,
  points,
  format,
  valueName,
}: {
  title: string;
  points: Point[];
  format(value: number): string;
  valueName: string;
}) {
  const titleId = useId();
  const top = scale(points);
  const plotHeight = HEIGHT - MARGIN.top - MARGIN.bottom;
  const step = (WIDTH - MARGIN.left - MARGIN.right) / Math.max(1, points.length);
  const coordinates = points.map((point, index) =>
    point.value === null
      ? null
      : { x: MARGIN.left + step * index + step / 2, y: MARGIN.top + plotHeight * (1 - point.value / top), point },
  );
  // A gap (no value that period) breaks the line rather than drawing through it.
  const segments: string[] = [];
  let current = "";
  for (const coordinate of coordinates) {
    if (coordinate === null) {
      if (current) segments.push(current);
      current = "";
    } else {
      current += `${current ? " L" : "M"}${coordinate.x.toFixed(1)},${coordinate.y.toFixed(1)}`;
    }
  }
  if (current) segments.push(current);
  const measured = points.filter((point) => point.value !== null);
  return (
    <figure className="chart card" aria-labelledby={titleId}>
      <figcaption id={titleId}>
        <strong>{title}</strong>
        <Legend items={[["line-key", valueName]]} />
      </figcaption>
      <svg
        viewBox={`0 0 ${WIDTH} ${HEIGHT}`}
        role="img"
        aria-label={`${title}: ${measured.length} of ${points.length} periods measured${
          measured.length > 0 ? `, last ${format(measured.at(-1)?.value ?? 0)}` : ""
        }`}
      >
        <Axes top={top} format={format} count={points.length} />
        {segments.map((path) => (
          <path key={path} className="line" d={path} />
        ))}
        {coordinates.map((coordinate) =>
          coordinate === null ? null : (
            <circle key={coordinate.point.label} className="point" cx={coordinate.x} cy={coordinate.y} r={3.5}>
              <title>
                {coordinate.point.label}: {format(coordinate.point.value ?? 0)}
              </title>
            </circle>
          ),
        )}
        {xLabels(points, step)}
      </svg>
      <DataTable points={points} format={format} valueName={valueName} />
    </figure>
  );
}

function Legend({ items }: { items: ReadonlyArray<readonly [string, string]> }) {
  return (
    <span className="legend">
      {items.map(([kind, name]) => (
        <span key={name} className="legend-item">
          <svg width="12" height="12" aria-hidden="true" focusable="false">
            <rect width="12" height="12" className={kind === "line-key" ? "point" : kind} rx="2" />
          </svg>{" "}
          {name}
        </span>
      ))}
    </span>
  );
}

function DataTable({
  points,
  format,
  valueName,
  stackedName,
}: {
  points: Point[];
  format(value: number): string;
  valueName: string;
  stackedName?: string | undefined;
}) {
  return (
    <details>
      <summary>Data</summary>
      <table className="data small">
        <thead>
          <tr>
            <th scope="col">Period</th>
            <th scope="col">{valueName}</th>
            {stackedName && <th scope="col">{stackedName}</th>}
          </tr>
        </thead>
        <tbody>
          {points.map((point) => (
            <tr key={point.label}>
              <th scope="row">{point.label}</th>
              <td>{point.value === null ? "—" : format(point.value)}</td>
              {stackedName && <td>{format(point.stacked ?? 0)}</td>}
            </tr>
          ))}
        </tbody>
      </table>
    </details>
  );
}
