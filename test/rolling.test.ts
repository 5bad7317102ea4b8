import { chmodSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { isolatedEnv, runFerry } from "./helpers/cli.js";
import { startTestServer, type TestServer } from "./helpers/server.js";

/**
 * Rolling deployments over eight targets of the server's own host (transport local): each
 * target's script leaves a marker file named after it, so what ran where is read from the
 * disk, not from the log. What a user notices: a 25 % window deploys two targets at a time
 * and a failure in the first batch stops the rollout there; a 100 % window runs every target
 * at once; under guided failure, excluding the failed target lets the rollout go on without
 * it; and the lines of targets running side by side each say which target they are from.
 */

interface LogLine {
  step: string | null;
  text: string;
}

const TARGETS = Array.from({ length: 8 }, (_, index) => `node-${index + 1}`);

describe("rolling deployments over eight targets", { timeout: 120_000 }, () => {
  let test: TestServer;
  const directories: string[] = [];
  let releaseCount = 0;

  /** A world-writable directory: local scripts run as an account of their task's own, not root. */
  const markerDirectory = () => {
    const directory = mkdtempSync(join(tmpdir(), "ferry-rolling-"));
    chmodSync(directory, 0o777);
    directories.push(directory);
    return directory;
  };
  /** The targets that left a marker `<prefix><target>` in the directory. */
  const markers = (directory: string, prefix = "") =>
    readdirSync(directory)
      .filter((name) => name.startsWith(prefix) && /^node-[0-9]+$/.test(name.slice(prefix.length)))
      .map((name) => name.slice(prefix.length))
      .sort();
  const logOf = async (taskId: string) => {
    const lines: LogLine[] = [];
    for (let after = 0; ; ) {
      const page = await test.call<{ lines: (LogLine & { line: number })[] }>(
        "GET",
        `/api/v1/tasks/${taskId}/log?after=${after}`,
      );
      lines.push(...page.body.lines);
      const last = page.body.lines.at(-1);
      if (!last) return lines;
      after = last.line;
    }
  };
  const setSteps = async (steps: unknown[]) => {
    const answer = await test.call("PUT", "/api/v1/projects/fleet/process", { steps });
    expect(answer.status, JSON.stringify(answer.body)).toBe(200);
  };
  const deploy = async (guidedFailure = false) => {
    const version = `1.0.${++releaseCount}`;
    expect((await test.call("POST", "/api/v1/projects/fleet/releases", { version })).status).toBe(201);
    const queued = await test.call<{ taskId: string }>("POST", "/api/v1/projects/fleet/deployments", {
      release: version,
      environment: "prod",
      guidedFailure,
    });
    expect(queued.status, JSON.stringify(queued.body)).toBe(201);
    return queued.body.taskId;
  };
  /** A script step on every web target that leaves `<dir>/<prefix><target>` and fails on `failOn`. */
  const markingStep = (name: string, directory: string, extra: Record<string, unknown>, failOn = "", prefix = "") => ({
    name,
    kind: "script",
    roles: ["web"],
    ...extra,
    config: {
      script: [
        'touch "$MARKERS/$PREFIX$TARGET"',
        'date +%s%3N > "$MARKERS/$PREFIX$TARGET.start"',
        'echo "hello from $TARGET"',
        "sleep 1",
        'date +%s%3N > "$MARKERS/$PREFIX$TARGET.end"',
        'if [ "$TARGET" = "$FAIL_ON" ] && [ ! -e "$MARKERS/fixed" ]; then echo "$TARGET breaks" >&2; exit 3; fi',
      ].join("\n"),
      env: { MARKERS: directory, TARGET: "#{Ferry.Target.Name}", FAIL_ON: failOn, PREFIX: prefix },
    },
  });

  beforeAll(async () => {
    test = await startTestServer();
    expect((await test.call("POST", "/api/v1/environments", { name: "prod" })).status).toBe(201);
    expect(
      (await test.call("POST", "/api/v1/lifecycles", { name: "one", phases: [{ environments: ["prod"] }] })).status,
    ).toBe(201);
    expect((await test.call("POST", "/api/v1/projects", { name: "fleet", lifecycle: "one" })).status).toBe(201);
    for (const name of TARGETS) {
      const created = await test.call("POST", "/api/v1/targets", {
        name,
        environments: ["prod"],
        roles: ["web"],
        runtimes: ["process"],
      });
      expect(created.status, JSON.stringify(created.body)).toBe(201);
    }
  });

  afterAll(async () => {
    await test?.close();
    for (const directory of directories) rmSync(directory, { recursive: true, force: true });
  });

  it("with a 25 % window runs two targets at a time, and stops after a batch in which one failed", async () => {
    const directory = markerDirectory();
    await setSteps([
      markingStep("deploy", directory, { rolling: { window: "25%" } }, "node-2"),
      { name: "after", kind: "script", roles: ["web"], config: { script: "echo after" } },
    ]);
    const taskId = await deploy();
    // ferry plan says what the batches will be.
    const plan = await test.call<{ steps: { name: string; actions: string[] }[] }>(
      "GET",
      `/api/v1/projects/fleet/plan?release=1.0.${releaseCount}&environment=prod`,
    );
    expect(plan.status, JSON.stringify(plan.body)).toBe(200);
    expect(plan.body.steps[0]?.actions[0]).toBe(
      "rolling: 4 batch(es) of up to 2 (window 25%): node-1, node-2 | node-3, node-4 | node-5, node-6 | node-7, node-8",
    );
    const task = await test.waitForTask(taskId, 60_000);
    expect(task.state).toBe("failed");
    expect(task.error).toBe("step 'deploy' on node-2 failed: the script exited with code 3");
    // The first batch ran (node-1 succeeded beside the failing node-2); no later batch started.
    expect(markers(directory)).toEqual(["node-1", "node-2"]);
    const text = (await logOf(taskId)).map((line) => line.text).join("\n");
    expect(text).toContain("step 'deploy' rolls over 8 target(s) in 4 batch(es) of up to 2 (window 25%)");
    expect(text).toContain("batch 1 of 4: node-1, node-2");
    expect(text).toContain(
      "batch 1 of step 'deploy' failed: no later batch starts (node-3, node-4, node-5, node-6, node-7, node-8 not deployed)",
    );
    expect(text).not.toContain("batch 2 of 4");
    expect(text).toContain("skipping step 'after': its run condition is not met");
  });

  it("with a 100 % window runs every target at once, each line of the log naming its target", async () => {
    const directory = markerDirectory();
    await setSteps([markingStep("deploy", directory, { rolling: { window: "100%" } })]);
    const taskId = await deploy();
    expect((await test.waitForTask(taskId, 60_000)).state).toBe("succeeded");
    expect(markers(directory)).toEqual(TARGETS);
    // All eight ran at the same time: each started before any of them ended.
    const read = (name: string) => Number(readFileSync(join(directory, name), "utf8").trim());
    const starts = TARGETS.map((name) => read(`${name}.start`));
    const ends = TARGETS.map((name) => read(`${name}.end`));
    expect(Math.max(...starts)).toBeLessThan(Math.min(...ends));
    // Interleaved in time, each target's lines still say whose they are.
    const lines = await logOf(taskId);
    for (const name of TARGETS) {
      const own = lines.filter((line) => line.text === `hello from ${name}`);
      expect(own, name).toHaveLength(1);
      expect(own[0]?.step).toBe(`deploy on ${name}`);
      expect(
        lines.some((line) => line.step === `deploy on ${name}` && line.text.startsWith(`✔ deploy on ${name}`)),
      ).toBe(true);
    }
    expect(lines.map((line) => line.text)).toContain(`batch 1 of 1: ${TARGETS.join(", ")}`);
    // As `ferry task logs` prints them: the target in brackets on each line.
    const home = mkdtempSync(join(tmpdir(), "ferry-rolling-cli-"));
    directories.push(home);
    const printed = await runFerry(
      ["task", "logs", taskId],
      isolatedEnv(home, { FERRY_URL: test.server.url, FERRY_API_KEY: test.apiKey }),
    );
    expect(printed.code, printed.stderr).toBe(0);
    for (const name of TARGETS)
      expect(printed.stdout).toMatch(new RegExp(`\\[deploy on ${name}\\] hello from ${name}\n`));
  });

  it("under guided failure, excluding the failed target lets the rollout go on without it", async () => {
    const directory = markerDirectory();
    await setSteps([
      markingStep("deploy", directory, { rolling: { window: 2, pauseSeconds: 1 } }, "node-2"),
      markingStep("after", directory, {}, "", "after-"),
    ]);
    const taskId = await deploy(true);
    const question = await waitForDecision(taskId);
    expect(question.prompt).toBe("step 'deploy' on node-2 failed: the script exited with code 3");
    expect(question.allowed).toEqual(["retry", "skip", "exclude", "abort"]);
    // While the question is open the rollout waits at the barrier: only the first batch ran.
    expect(markers(directory)).toEqual(["node-1", "node-2"]);
    const answer = await test.call("POST", `/api/v1/tasks/${taskId}/decisions`, { decision: "exclude" });
    expect(answer.status, JSON.stringify(answer.body)).toBe(200);
    expect((await test.waitForTask(taskId, 60_000)).state).toBe("succeeded");
    // Every later batch ran; the step after it ran on every target but the excluded one.
    expect(markers(directory)).toEqual(TARGETS);
    expect(markers(directory, "after-")).toEqual(TARGETS.filter((name) => name !== "node-2"));
    const text = (await logOf(taskId)).map((line) => line.text).join("\n");
    expect(text).toContain("node-2 was excluded from the rest of this deployment");
    expect(text).toContain("pausing 1 s before batch 2");
    // Excluding overrides a required step: the deployment counts it as skipped for the lifecycle.
    expect(text).toContain("1 required step(s) failed and were skipped");
  });

  it("under guided failure, retry runs the failed target again before the next batch starts", async () => {
    const directory = markerDirectory();
    await setSteps([markingStep("deploy", directory, { rolling: { window: "50%" } }, "node-3")]);
    const taskId = await deploy(true);
    await waitForDecision(taskId);
    expect(markers(directory)).toEqual(["node-1", "node-2", "node-3", "node-4"]);
    rmSync(join(directory, "node-3"));
    // The cause is fixed: the retry succeeds and the second half follows.
    writeFileSync(join(directory, "fixed"), "");
    await test.call("POST", `/api/v1/tasks/${taskId}/decisions`, { decision: "retry" });
    expect((await test.waitForTask(taskId, 60_000)).state).toBe("succeeded");
    expect(markers(directory)).toEqual(TARGETS);
  });

  it("refuses a rolling step whose window is no count or percentage, naming the field", async () => {
    const answer = await test.call<{ errors: { pointer: string; detail: string }[] }>(
      "PUT",
      "/api/v1/projects/fleet/process",
      {
        steps: [
          { name: "deploy", kind: "script", roles: ["web"], rolling: { window: "half" }, config: { script: "true" } },
        ],
      },
    );
    expect(answer.status).toBe(400);
    expect(answer.body.errors[0]?.pointer).toBe("/steps/0/rolling/window");
    expect(answer.body.errors[0]?.detail).toContain('("25%")');
  });

  async function waitForDecision(taskId: string) {
    for (let attempt = 0; attempt < 1200; attempt++) {
      const { body } = await test.call<{ decision: string | null; prompt: string; allowed: string[] }[]>(
        "GET",
        `/api/v1/tasks/${taskId}/decisions`,
      );
      const open = body.find((decision) => decision.decision === null);
      const task = await test.call<{ state: string }>("GET", `/api/v1/tasks/${taskId}`);
      if (open && task.body.state === "waiting") return open;
      await new Promise((resolve) => setTimeout(resolve, 50));
    }
    throw new Error(`task ${taskId} never asked for a decision`);
  }
});
