import { type ChildProcess, spawn } from "node:child_process";
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { loadavg, tmpdir } from "node:os";
import { join } from "node:path";
import { setTimeout as sleep } from "node:timers/promises";
import { startTestServer, type TestServer } from "../test/helpers/server.js";
import { type SshHosts, startSshHosts } from "../test/helpers/sshHosts.js";
import { numberFlag } from "./blueGreenBench.js";
import { deploy, deployTask, median, STEP_SCRIPT } from "./rolling.js";
import type { BenchmarkResult } from "./run.js";

const ROOT = join(import.meta.dirname ?? ".", "..", "..");

/**
 * `rolling-agents`: issue 12's fan-out goal on real agents. N (default 20, `--targets N`)
 * real `bin/ferry agent` processes, each enrolled with its own one-time token and state
 * directory, each in a network namespace of its own (test/helpers/sshHosts.ts; needs root),
 * dialling out to a real server over the namespace links. A rolling step with a 100 % window
 * over all N (a second of waiting on each host) against the same step on one of them: the
 * time from the deployment's request to its end, median of `--rounds` (default 3). What is
 * measured beside Ferry's fan-out: the pre-deployment availability probe of each agent, the
 * long-poll hand-over of N step calls and N log streams back. Goal: ≤ 2× one target.
 */
export async function rollingAgents(): Promise<BenchmarkResult> {
  const targets = numberFlag("--targets", 20);
  const rounds = numberFlag("--rounds", 3);
  const loadBefore = loadavg()[0] ?? 0;
  let hosts: SshHosts | undefined;
  let test: TestServer | undefined;
  const children: ChildProcess[] = [];
  const directory = mkdtempSync(join(tmpdir(), "ferry-bench-rolling-agents-"));
  try {
    hosts = await startSshHosts(targets);
    const gateway = (address: string) => address.replace(/\.2$/, ".1");
    for (const host of hosts.hosts) host.exec("ip", ["route", "add", "default", "via", gateway(host.address)]);
    test = await startTestServer({ host: gateway(hosts.hosts[0]?.address ?? "") });
    await setUp(test);
    console.log(`enrolling ${targets} agents…`);
    const names = hosts.hosts.map((_, index) => `agent-${String(index + 1).padStart(3, "0")}`);
    for (const [index, host] of hosts.hosts.entries()) {
      const token = await call<{ token: string }>(test, "POST", "/api/v1/agent-tokens", {});
      const stateDir = join(directory, `agent-${index}`);
      const tokenFile = `${stateDir}.token`;
      writeFileSync(tokenFile, token.token, { mode: 0o600 });
      children.push(
        spawn(
          "ip",
          [
            "netns",
            "exec",
            host.namespace,
            process.execPath,
            join(ROOT, "bin", "ferry"),
            "agent",
            "--server",
            test.server.url,
            "--state-dir",
            stateDir,
            "--token-file",
            tokenFile,
            "--name",
            names[index] ?? "",
            "--environments",
            "prod",
            // The first agent is also the one target of the comparison.
            "--roles",
            index === 0 ? "web,solo" : "web",
          ],
          { stdio: "ignore" },
        ),
      );
    }
    const connectedBy = Date.now() + 180_000;
    for (const name of names) {
      for (;;) {
        const target = await call<{ agent: { state: string } | null }>(test, "GET", `/api/v1/targets/${name}`).catch(
          () => undefined,
        );
        if (target?.agent?.state === "connected") break;
        if (Date.now() > connectedBy) throw new Error(`agent ${name} did not connect`);
        await sleep(200);
      }
    }
    console.log(`${targets} agents connected; deploying…`);
    // One of each first: the first deployment of a server pays for loading modules.
    await deploy(test, "solo");
    await deploy(test, "fleet");
    const one: number[] = [];
    const many: number[] = [];
    for (let round = 0; round < rounds; round++) {
      one.push(await deploy(test, "solo"));
      many.push(await deploy(test, "fleet"));
    }
    // Where the time of one more of each goes, from the task logs' own timestamps, and the
    // CPU it took: the server (this process) and the agents, on a machine of few cores.
    const cpu = () => ({
      server: process.cpuUsage().user / 1e6 + process.cpuUsage().system / 1e6,
      agents: children.reduce((sum, child) => sum + cpuSeconds(child.pid ?? 0), 0),
    });
    const beforeSolo = cpu();
    const soloPhases = await phases(test, await deployTask(test, "solo"));
    const beforeFleet = cpu();
    const fleetPhases = await phases(test, await deployTask(test, "fleet"));
    const afterFleet = cpu();
    const cpuText = (from: { server: number; agents: number }, to: { server: number; agents: number }) =>
      `server ${(to.server - from.server).toFixed(2)} s + agents ${(to.agents - from.agents).toFixed(2)} s`;
    const oneMedian = median(one);
    const manyMedian = median(many);
    const ratio = manyMedian / oneMedian;
    const loadAfter = loadavg()[0] ?? 0;
    return {
      name: "rolling-agents",
      rows: [
        {
          figure: `100 % window over ${targets} real agents (median of ${rounds})`,
          goal: "≤ 2× one target",
          measured: `${manyMedian.toFixed(2)} s (${ratio.toFixed(2)}×)`,
          baseline: `one agent ${oneMedian.toFixed(2)} s`,
          met: ratio <= 2,
        },
        {
          figure: "one more of each: request → batch starts → last target started → last ended → task done",
          goal: "(printed)",
          measured: `${targets} agents ${fleetPhases}`,
          baseline: `one agent ${soloPhases}`,
          met: undefined,
        },
        {
          figure: "CPU time of that one more of each",
          goal: "(printed)",
          measured: `${targets} agents: ${cpuText(beforeFleet, afterFleet)}`,
          baseline: `one agent: ${cpuText(beforeSolo, beforeFleet)}`,
          met: undefined,
        },
        {
          figure: "1-min load average before → after",
          goal: "-",
          measured: `${loadBefore.toFixed(1)} → ${loadAfter.toFixed(1)}`,
          met: undefined,
        },
      ],
      values: {
        targets,
        rounds,
        fan_out_seconds: Number(manyMedian.toFixed(3)),
        one_target_seconds: Number(oneMedian.toFixed(3)),
        ratio: Number(ratio.toFixed(2)),
        fan_out_all: many.map((value) => value.toFixed(2)).join(","),
        one_target_all: one.map((value) => value.toFixed(2)).join(","),
        load_before: Number(loadBefore.toFixed(1)),
        load_after: Number(loadAfter.toFixed(1)),
      },
    };
  } finally {
    for (const child of children) child.kill("SIGKILL");
    await test?.close();
    await hosts?.close();
    rmSync(directory, { recursive: true, force: true });
  }
}

/** utime + stime of a process (the agent: `ip netns exec` execs it in place), in seconds. */
function cpuSeconds(pid: number): number {
  try {
    const fields = readFileSync(`/proc/${pid}/stat`, "utf8").split(") ")[1]?.split(" ") ?? [];
    return (Number(fields[11]) + Number(fields[12])) / 100;
  } catch {
    return 0;
  }
}

/**
 * Seconds between: the request and the batch's log line (queueing, the availability probe of
 * every agent), that line and the last target's first line (the hand-over of the step to each
 * agent), that and the last target's last line (the step's own second), that and the task's end.
 */
async function phases(
  test: TestServer,
  run: { seconds: number; taskId: string; requestedAt: number },
): Promise<string> {
  const { lines } = await call<{ lines: { at: string; text: string }[] }>(
    test,
    "GET",
    `/api/v1/tasks/${run.taskId}/log`,
  );
  const at = (predicate: (text: string) => boolean) =>
    Math.max(...lines.filter((line) => predicate(line.text)).map((line) => Date.parse(line.at)));
  const batch = at((text) => text.startsWith("batch 1 of 1"));
  const started = at((text) => text.startsWith("deploying on "));
  const ended = at((text) => text.startsWith("done on "));
  const done = run.requestedAt + run.seconds * 1000;
  const seconds = (from: number, to: number) => ((to - from) / 1000).toFixed(2);
  return `${seconds(run.requestedAt, batch)} + ${seconds(batch, started)} + ${seconds(started, ended)} + ${seconds(ended, done)} s`;
}

async function call<T>(test: TestServer, method: string, path: string, body?: unknown): Promise<T> {
  const answer = await test.call<T>(method, path, body);
  if (answer.status >= 300) throw new Error(`${method} ${path}: ${answer.status} ${JSON.stringify(answer.body)}`);
  return answer.body;
}

async function setUp(test: TestServer): Promise<void> {
  await call(test, "POST", "/api/v1/environments", { name: "prod" });
  await call(test, "POST", "/api/v1/lifecycles", { name: "one", phases: [{ environments: ["prod"] }] });
  for (const [project, role] of [
    ["solo", "solo"],
    ["fleet", "web"],
  ] as const) {
    await call(test, "POST", "/api/v1/projects", { name: project, lifecycle: "one" });
    await call(test, "PUT", `/api/v1/projects/${project}/process`, {
      steps: [
        {
          name: "deploy",
          kind: "script",
          roles: [role],
          rolling: { window: "100%" },
          config: { script: STEP_SCRIPT, env: { TARGET: "#{Ferry.Target.Name}" } },
        },
      ],
    });
  }
}
