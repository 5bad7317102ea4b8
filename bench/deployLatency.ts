import { execFileSync } from "node:child_process";
import { buildNodeAppImage, type DemoImage, removeImages } from "../test/helpers/images.js";
import { startRegistry } from "../test/helpers/registry.js";
import { type BlueGreenBench, numberFlag, onPath, startBlueGreenBench } from "./blueGreenBench.js";
import type { BenchmarkResult } from "./run.js";

const VERSIONS = ["1.0.0", "2.0.0"] as const;

/**
 * The bare script deploy-latency compares with: what a blue/green deploy does at the very
 * least, by hand — docker run the new colour on a free port, wait until /health answers,
 * switch the same ferry proxy's route through its admin API, stop the old colour.
 * Arguments: image, proxy state dir, route name, old container ("" for none), new container.
 */
const BARE_SCRIPT = `
set -euo pipefail
image=$1 state=$2 route=$3 old=$4 new=$5
docker run -d --name "$new" -p 127.0.0.1::8080 "$image" >/dev/null
port=$(docker port "$new" 8080/tcp | head -n1 | sed 's/.*://')
for _ in $(seq 600); do curl -sf "http://127.0.0.1:$port/health" >/dev/null && break; sleep 0.1; done
curl -sf --unix-socket "$state/admin.sock" -H "authorization: Bearer $(cat "$state/admin-token")" \\
  -H 'content-type: application/json' -X PUT "http://localhost/routes/$route" \\
  -d "{\\"host\\":\\"bare.test\\",\\"upstream\\":\\"http://127.0.0.1:$port\\"}" >/dev/null
if [ -n "$old" ]; then docker stop -t 5 "$old" >/dev/null; docker rm "$old" >/dev/null; fi
`;

/**
 * `deploy-latency`: one blue/green deploy of an image already on the host, Ferry (API call
 * → task succeeded, through its queue, health probe, switch, drain and the old colour's
 * stop) against the bare script doing the same docker run + health wait + proxy switch +
 * stop. Medians of several deploys each, same machine, same run.
 */
export async function deployLatency(): Promise<BenchmarkResult> {
  const rounds = numberFlag("--rounds", 7);
  const missing = ["docker", "curl", "docker-registry"].filter((tool) => !onPath(tool));
  if (missing.length > 0) return skipped("deploy-latency", missing);
  return withImages(async (images) => {
    const bench = await startBlueGreenBench("builtin", "latency", { keepPreviousRunning: false, retain: 0 });
    const ferry: number[] = [];
    const bare: number[] = [];
    try {
      await warmUp(bench, images);
      for (let round = 1; round <= rounds; round++) {
        const started = performance.now();
        await bench.deploy(`1.0.${round}`, images[round % 2] as DemoImage);
        ferry.push((performance.now() - started) / 1000);
      }
      const container = (round: number) => `ferry-bench-bare-${process.pid}-${round}`;
      for (let round = 0; round <= rounds; round++) {
        const started = performance.now();
        execFileSync(
          "bash",
          [
            "-c",
            BARE_SCRIPT,
            "bare",
            images[round % 2]?.reference ?? "",
            bench.proxyStateDir,
            "bare",
            round === 0 ? "" : container(round - 1),
            container(round),
          ],
          { stdio: ["ignore", "ignore", "inherit"] },
        );
        // Round 0 only puts the first colour in place.
        if (round > 0) bare.push((performance.now() - started) / 1000);
      }
      execFileSync("docker", ["rm", "-f", container(rounds)], { stdio: "ignore" });
    } finally {
      await bench.stop();
    }
    const ferryMedian = median(ferry);
    const bareMedian = median(bare);
    const ratio = ferryMedian / bareMedian;
    return {
      name: "deploy-latency",
      rows: [
        {
          figure: `blue/green deploy of a present image, median of ${rounds} (Ferry via API vs bare script)`,
          goal: "≤ 1.1× the bare script",
          measured: `${ferryMedian.toFixed(2)} s (${ratio.toFixed(2)}×)`,
          baseline: `bare script ${bareMedian.toFixed(2)} s`,
          met: ratio <= 1.1,
        },
      ],
      values: {
        ferry_s: round2(ferryMedian),
        bare_s: round2(bareMedian),
        ratio: round2(ratio),
        rounds,
      },
    };
  });
}

/**
 * `rollback`: a rollback to the previous release while its colour is retained and
 * running — the switch time from the task's own log, and the time from the API call to
 * the first request the old release serves. Median of several rollbacks (each rollback
 * goes back to the release the one before left).
 */
export async function rollback(): Promise<BenchmarkResult> {
  const rounds = numberFlag("--rounds", 7);
  const missing = ["docker", "docker-registry"].filter((tool) => !onPath(tool));
  if (missing.length > 0) return skipped("rollback", missing);
  return withImages(async (images) => {
    const bench = await startBlueGreenBench("builtin", "rollback", { keepPreviousRunning: true, retain: 2 });
    const switches: number[] = [];
    const firstServed: number[] = [];
    try {
      await warmUp(bench, images);
      // warmUp leaves VERSIONS[0] live and VERSIONS[1] retained and running.
      let live = 0;
      for (let round = 1; round <= rounds; round++) {
        const back = 1 - live;
        const result = await bench.rollback(`version ${VERSIONS[back]}`);
        switches.push(result.switchMs);
        firstServed.push(result.firstServedMs);
        live = back;
      }
    } finally {
      await bench.stop();
    }
    const switchMs = median(switches);
    const firstMs = median(firstServed);
    return {
      name: "rollback",
      rows: [
        {
          figure: `rollback to a retained running colour: switch time, median of ${rounds}`,
          goal: "≤ 100 ms",
          measured: `${switchMs.toFixed(1)} ms`,
          met: switchMs <= 100,
        },
        {
          figure: "rollback: API call → first request served by the previous release, median",
          goal: "-",
          measured: `${firstMs.toFixed(0)} ms`,
          met: undefined,
        },
      ],
      values: { switch_ms: round2(switchMs), first_served_ms: Math.round(firstMs), rounds },
    };
  });
}

/** Two releases deployed, so both images are on the host and a previous colour exists; the live one runs VERSIONS[0]. */
async function warmUp(bench: BlueGreenBench, images: DemoImage[]): Promise<void> {
  await bench.deploy("0.0.1", images[1] as DemoImage);
  await bench.deploy("0.0.2", images[0] as DemoImage);
}

async function withImages(run: (images: DemoImage[]) => Promise<BenchmarkResult>): Promise<BenchmarkResult> {
  const registry = await startRegistry();
  let images: DemoImage[] = [];
  try {
    images = await Promise.all(
      VERSIONS.map((version) => buildNodeAppImage({ registryUrl: registry.url, repository: "bench/latency", version })),
    );
    return await run(images);
  } finally {
    await registry.stop();
    await removeImages(images.map((image) => image.reference));
  }
}

function skipped(name: string, missing: string[]): BenchmarkResult {
  return {
    name,
    rows: [
      {
        figure: name,
        goal: "-",
        measured: `skipped: needs ${missing.join(", ")} (scripts/test-services.sh installs them)`,
        met: undefined,
      },
    ],
    values: { skipped: 1 },
  };
}

function median(values: readonly number[]): number {
  const sorted = [...values].sort((a, b) => a - b);
  const middle = Math.floor(sorted.length / 2);
  return sorted.length % 2 === 1
    ? (sorted[middle] ?? Number.NaN)
    : ((sorted[middle - 1] ?? 0) + (sorted[middle] ?? 0)) / 2;
}

function round2(value: number): number {
  return Math.round(value * 100) / 100;
}
