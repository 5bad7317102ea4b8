import { setTimeout as sleep } from "node:timers/promises";
import { startTestServer, type TestServer } from "../test/helpers/server.js";
import { numberFlag } from "./blueGreenBench.js";
import type { BenchmarkResult } from "./run.js";

/** The work each target does: a second of waiting, as a deployment step that waits on a host would. */
export const STEP_SCRIPT = 'echo "deploying on $TARGET"; sleep 1; echo "done on $TARGET"';

/**
 * `rolling`: a rolling step with a 100 % window over N targets (default 20, `--targets N`)
 * against the same step on one target: the time from the deployment's request to its end,
 * median of `--rounds` (default 3). Targets are transport-local (the server's own host), so
 * what is measured is Ferry's fan-out — availability probes, one process per target started
 * at once, parallel log lanes, the barrier — not a network. Goal (issue 12): ≤ 2× one target.
 */
export async function rolling(): Promise<BenchmarkResult> {
  const targets = numberFlag("--targets", 20);
  const rounds = numberFlag("--rounds", 3);
  const test = await startTestServer();
  try {
    await setUp(test, targets);
    // One of each first: the first deployment of a server pays for loading modules.
    await deploy(test, "solo");
    await deploy(test, "fleet");
    const one: number[] = [];
    const many: number[] = [];
    for (let round = 0; round < rounds; round++) {
      one.push(await deploy(test, "solo"));
      many.push(await deploy(test, "fleet"));
    }
    const oneMedian = median(one);
    const manyMedian = median(many);
    const ratio = manyMedian / oneMedian;
    return {
      name: "rolling",
      rows: [
        {
          figure: `100 % window over ${targets} targets (median of ${rounds})`,
          goal: "≤ 2× one target",
          measured: `${manyMedian.toFixed(2)} s (${ratio.toFixed(2)}×)`,
          baseline: `one target ${oneMedian.toFixed(2)} s`,
          met: ratio <= 2,
        },
      ],
      values: {
        targets,
        rounds,
        fan_out_seconds: Number(manyMedian.toFixed(3)),
        one_target_seconds: Number(oneMedian.toFixed(3)),
        ratio: Number(ratio.toFixed(2)),
      },
    };
  } finally {
    await test.close();
  }
}

async function setUp(test: TestServer, targets: number): Promise<void> {
  const call = async (path: string, body: unknown, method = "POST") => {
    const answer = await test.call(method, path, body);
    if (answer.status >= 300) throw new Error(`${method} ${path}: ${answer.status} ${JSON.stringify(answer.body)}`);
  };
  await call("/api/v1/environments", { name: "prod" });
  await call("/api/v1/lifecycles", { name: "one", phases: [{ environments: ["prod"] }] });
  const step = (role: string) => ({
    name: "deploy",
    kind: "script",
    roles: [role],
    rolling: { window: "100%" },
    config: { script: STEP_SCRIPT, env: { TARGET: "#{Ferry.Target.Name}" } },
  });
  for (const [project, role] of [
    ["solo", "solo"],
    ["fleet", "web"],
  ] as const) {
    await call("/api/v1/projects", { name: project, lifecycle: "one" });
    await call(`/api/v1/projects/${project}/process`, { steps: [step(role)] }, "PUT");
  }
  await call("/api/v1/targets", { name: "solo-1", environments: ["prod"], roles: ["solo"], runtimes: ["process"] });
  for (let index = 1; index <= targets; index++) {
    await call("/api/v1/targets", {
      name: `node-${String(index).padStart(3, "0")}`,
      environments: ["prod"],
      roles: ["web"],
      runtimes: ["process"],
    });
  }
}

let versions = 0;

/** Seconds from the deployment's request to its task's end; throws unless it succeeded. */
export async function deploy(test: TestServer, project: string): Promise<number> {
  return (await deployTask(test, project)).seconds;
}

/** As deploy, with the task's id and when the request was sent (epoch ms). */
export async function deployTask(
  test: TestServer,
  project: string,
): Promise<{ seconds: number; taskId: string; requestedAt: number }> {
  const version = `1.0.${++versions}`;
  const release = await test.call("POST", `/api/v1/projects/${project}/releases`, { version });
  if (release.status !== 201) throw new Error(`release: ${JSON.stringify(release.body)}`);
  const started = performance.now();
  const requestedAt = Date.now();
  const queued = await test.call<{ taskId: string }>("POST", `/api/v1/projects/${project}/deployments`, {
    release: version,
    environment: "prod",
  });
  if (queued.status !== 201) throw new Error(`deployment: ${JSON.stringify(queued.body)}`);
  for (;;) {
    const task = await test.call<{ state: string; error: string | null }>("GET", `/api/v1/tasks/${queued.body.taskId}`);
    if (task.body.state === "succeeded") {
      return { seconds: (performance.now() - started) / 1000, taskId: queued.body.taskId, requestedAt };
    }
    if (["failed", "cancelled", "interrupted"].includes(task.body.state)) {
      throw new Error(`deployment of ${project} ${task.body.state}: ${task.body.error ?? ""}`);
    }
    await sleep(20);
  }
}

export function median(values: readonly number[]): number {
  const sorted = [...values].sort((a, b) => a - b);
  const middle = Math.floor(sorted.length / 2);
  return sorted.length % 2 === 1 ? (sorted[middle] ?? 0) : ((sorted[middle - 1] ?? 0) + (sorted[middle] ?? 0)) / 2;
}
