import { execFileSync } from "node:child_process";
import { appendFileSync, existsSync, readFileSync, writeFileSync } from "node:fs";
import { cpus, totalmem } from "node:os";
import { join } from "node:path";
import { agents } from "./agents.js";
import { artifacts } from "./artifacts.js";
import { attackFlood } from "./attackFlood.js";
import { controlPlane } from "./controlPlane.js";
import { deployLatency, rollback } from "./deployLatency.js";
import { footprint } from "./footprint.js";
import { logs } from "./logs.js";
import { proxy } from "./proxy.js";
import { rolling } from "./rolling.js";
import { rollingAgents } from "./rollingAgents.js";
import { s3Copy } from "./s3Copy.js";
import { throughput } from "./throughput.js";
import { triggerLatency } from "./triggerLatency.js";
import { ui } from "./ui.js";
import { zeroDowntime } from "./zeroDowntime.js";

/**
 * `npm run bench [-- name …]`: runs the sub-benchmarks, prints a table per benchmark (goal,
 * measured, baseline where there is one) and one machine-readable line each
 * (`<name> key=value …`), and appends the results to docs/benchmarks.md with the date,
 * commit and machine. Benchmarks print figures; they assert nothing.
 */
export interface BenchmarkResult {
  name: string;
  /** Rows of the printed table. */
  rows: { figure: string; goal: string; measured: string; baseline?: string; met: boolean | undefined }[];
  /** The machine-readable line's key=value pairs. */
  values: Record<string, string | number>;
  /** Further machine-readable lines printed after the main one (e.g. one per driver). */
  extraLines?: string[];
}

const benchmarks: Record<string, () => Promise<BenchmarkResult>> = {
  footprint,
  throughput,
  "control-plane": controlPlane,
  "zero-downtime": zeroDowntime,
  "deploy-latency": deployLatency,
  rollback,
  logs,
  "attack-flood": attackFlood,
  rolling,
  "rolling-agents": rollingAgents,
  agents,
  ui,
  "trigger-latency": triggerLatency,
  proxy,
  artifacts,
  "s3-copy": s3Copy,
};

const root = join(import.meta.dirname ?? ".", "..", "..");

async function main(): Promise<void> {
  // Names of benchmarks; "--flag value" pairs (--deploys 20, --store sqlite) belong to the benchmarks themselves.
  const args = process.argv.slice(2);
  const wanted = args.filter(
    (argument, index) =>
      !argument.startsWith("-") && !(index > 0 && args[index - 1]?.startsWith("--") && !(argument in benchmarks)),
  );
  const unknown = wanted.filter((name) => !(name in benchmarks));
  if (unknown.length > 0) {
    console.error(`unknown benchmark ${unknown.join(", ")}; choose from ${Object.keys(benchmarks).join(", ")}`);
    process.exit(2);
  }
  const results: BenchmarkResult[] = [];
  for (const name of wanted.length > 0 ? wanted : Object.keys(benchmarks)) {
    const run = benchmarks[name];
    if (!run) continue;
    console.log(`\n== ${name}`);
    const result = await run();
    printTable(result);
    results.push(result);
  }
  console.log("");
  for (const result of results) console.log(machineLines(result).join("\n"));
  record(results);
}

function printTable(result: BenchmarkResult): void {
  const header = ["figure", "goal", "measured", "baseline", "verdict"];
  const lines = result.rows.map((row) => [
    row.figure,
    row.goal,
    row.measured,
    row.baseline ?? "-",
    row.met === undefined ? "-" : row.met ? "met" : "MISS",
  ]);
  const widths = header.map((title, index) => Math.max(title.length, ...lines.map((line) => line[index]?.length ?? 0)));
  for (const line of [header, ...lines]) {
    console.log(line.map((cell, index) => cell.padEnd(widths[index] ?? 0)).join("  "));
  }
}

function machineLines(result: BenchmarkResult): string[] {
  return [
    [result.name, ...Object.entries(result.values).map(([key, value]) => `${key}=${value}`)].join(" "),
    ...(result.extraLines ?? []),
  ];
}

function machineInfo(): string {
  const cpu = cpus()[0]?.model ?? "unknown CPU";
  return `${cpus().length} × ${cpu}, ${Math.round(totalmem() / 2 ** 30)} GiB, Node ${process.version}`;
}

function record(results: BenchmarkResult[]): void {
  const file = join(root, "docs", "benchmarks.md");
  if (!existsSync(file)) {
    writeFileSync(file, "# Benchmarks\n\nAppended by `npm run bench`; newest last. Figures, not assertions.\n");
  }
  let commit = "unknown";
  try {
    commit = execFileSync("git", ["rev-parse", "--short", "HEAD"], { cwd: root, encoding: "utf8" }).trim();
  } catch {
    // not a git checkout
  }
  const section = [
    "",
    `## ${new Date().toISOString().slice(0, 16).replace("T", " ")} UTC — commit ${commit}`,
    "",
    `Machine: ${machineInfo()}`,
    "",
    "| benchmark | figure | goal | measured | baseline | verdict |",
    "|---|---|---|---|---|---|",
    ...results.flatMap((result) =>
      result.rows.map(
        (row) =>
          `| ${result.name} | ${row.figure} | ${row.goal} | ${row.measured} | ${row.baseline ?? "-"} | ${
            row.met === undefined ? "-" : row.met ? "met" : "**miss**"
          } |`,
      ),
    ),
    "",
    "```",
    ...results.flatMap(machineLines),
    "```",
    "",
  ].join("\n");
  appendFileSync(file, section);
  readFileSync(file);
}

await main();
