import { type ChildProcess, spawn } from "node:child_process";
import { chmodSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { setTimeout as sleep } from "node:timers/promises";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { FERRY } from "./helpers/cli.js";
import { startTestServer, type TestServer } from "./helpers/server.js";
import { type SshHosts, startSshHosts } from "./helpers/sshHosts.js";

/**
 * Issue 12's fleet acceptance on real agents: twenty real `bin/ferry agent` processes, each
 * enrolled with its own one-time token and its own state directory, each in a network
 * namespace of its own (test/helpers/sshHosts.ts; their sshd is not used), dialling out to a
 * real server over the namespace links. One rolling script step over all twenty leaves a
 * marker file per agent holding the address of the host it ran on, so what ran where is read
 * from the disk (the namespaces share this machine's files), not from the log. What a user
 * notices: with a 25 % window and a failure injected in the first batch, exactly that batch
 * ran — on the agents' own hosts — and no later batch started, and the task and its log say
 * so; with a 100 % window every agent ran the step.
 */

const COUNT = 20;
const NAMES = Array.from({ length: COUNT }, (_, index) => `fleet-${String(index + 1).padStart(2, "0")}`);
/** The target of the first batch whose script fails (exit 3). */
const FAILING = "fleet-03";

interface LogLine {
  step: string | null;
  text: string;
}

describe("20 enrolled agents: rolling deployments", { timeout: 300_000 }, () => {
  let hosts: SshHosts;
  let test: TestServer;
  const children: ChildProcess[] = [];
  const temporary: string[] = [];
  let releaseCount = 0;

  const tempDir = (prefix: string) => {
    const directory = mkdtempSync(join(tmpdir(), prefix));
    temporary.push(directory);
    return directory;
  };
  /** Host address of agent `name` (its namespace's 10.231.N.2). */
  const addressOf = (name: string) => hosts.hosts[NAMES.indexOf(name)]?.address ?? "";
  const agentState = async (name: string) =>
    (await test.call<{ agent: { state: string } | null }>("GET", `/api/v1/targets/${name}`)).body.agent?.state;
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
  /** The agents that left a marker in `directory`, each with the host address its script saw. */
  const markers = (directory: string) =>
    Object.fromEntries(
      readdirSync(directory)
        .filter((name) => /^fleet-\d\d$/.test(name))
        .sort()
        .map((name) => [name, readFileSync(join(directory, name), "utf8").trim()]),
    );
  const deploy = async (steps: unknown[]) => {
    const put = await test.call("PUT", "/api/v1/projects/fleet/process", { steps });
    expect(put.status, JSON.stringify(put.body)).toBe(200);
    const version = `1.0.${++releaseCount}`;
    expect((await test.call("POST", "/api/v1/projects/fleet/releases", { version })).status).toBe(201);
    const queued = await test.call<{ taskId: string }>("POST", "/api/v1/projects/fleet/deployments", {
      release: version,
      environment: "prod",
    });
    expect(queued.status, JSON.stringify(queued.body)).toBe(201);
    return { taskId: queued.body.taskId, version };
  };
  /** A script step on every agent: leaves `<dir>/<target>` holding its host's address; fails on `failOn`. */
  const markingStep = (directory: string, window: string, failOn = "") => ({
    name: "deploy",
    kind: "script",
    roles: ["web"],
    rolling: { window },
    config: {
      script: [
        'ip -4 -o addr show | grep -o "10\\.231\\.[0-9]*\\.2" > "$MARKERS/$TARGET"',
        'echo "hello from $TARGET"',
        "sleep 1",
        'if [ "$TARGET" = "$FAIL_ON" ]; then echo "$TARGET breaks" >&2; exit 3; fi',
      ].join("\n"),
      env: { MARKERS: directory, TARGET: "#{Ferry.Target.Name}", FAIL_ON: failOn },
    },
  });

  beforeAll(async () => {
    // One namespace per agent: each agent its own host, address and state directory.
    hosts = await startSshHosts(COUNT);
    const gateway = (address: string) => address.replace(/\.2$/, ".1");
    // Every namespace reaches the server through its own link (the server listens on host 0's side of it).
    for (const host of hosts.hosts) host.exec("ip", ["route", "add", "default", "via", gateway(host.address)]);
    test = await startTestServer({ host: gateway(hosts.hosts[0]?.address ?? "") });
    expect((await test.call("POST", "/api/v1/environments", { name: "prod" })).status).toBe(201);
    expect(
      (await test.call("POST", "/api/v1/lifecycles", { name: "one", phases: [{ environments: ["prod"] }] })).status,
    ).toBe(201);
    expect((await test.call("POST", "/api/v1/projects", { name: "fleet", lifecycle: "one" })).status).toBe(201);

    // Twenty enrolments, each with a fresh single-use token, started side by side.
    await Promise.all(
      NAMES.map(async (name, index) => {
        const created = await test.call<{ token: string }>("POST", "/api/v1/agent-tokens", {});
        expect(created.status, JSON.stringify(created.body)).toBe(201);
        const stateDir = tempDir("ferry-fleet-agent-");
        const tokenFile = join(stateDir, "token");
        writeFileSync(tokenFile, created.body.token, { mode: 0o600 });
        const host = hosts.hosts[index];
        if (!host) throw new Error("no host");
        const child = spawn(
          "ip",
          [
            "netns",
            "exec",
            host.namespace,
            process.execPath,
            FERRY,
            "agent",
            "--server",
            test.server.url,
            "--state-dir",
            stateDir,
            "--token-file",
            tokenFile,
            "--name",
            name,
            "--environments",
            "prod",
            "--roles",
            "web",
            "--stop-grace",
            "2",
          ],
          { stdio: ["ignore", "pipe", "pipe"] },
        );
        children.push(child);
        let output = "";
        child.stdout?.on("data", (chunk: Buffer) => {
          output += chunk.toString();
        });
        child.stderr?.on("data", (chunk: Buffer) => {
          output += chunk.toString();
        });
        await waitUntil(
          async () => (await agentState(name)) === "connected",
          120_000,
          () => `${name}: ${output}`,
        );
      }),
    );
  }, 240_000);

  afterAll(async () => {
    for (const child of children) child.kill("SIGKILL");
    await test?.close();
    await hosts?.close();
    for (const directory of temporary) rmSync(directory, { recursive: true, force: true });
  });

  it("lists twenty enrolled agent targets, each connected", async () => {
    const listed = await test.call<{ items: { name: string; transport: string }[] }>("GET", "/api/v1/targets");
    const agents = listed.body.items.filter((target) => target.transport === "agent").map((target) => target.name);
    expect(agents.sort()).toEqual(NAMES);
    for (const name of NAMES) expect(await agentState(name), name).toBe("connected");
  });

  it("with a 25 % window and a failure in the first batch, only that batch ran and no later batch started", async () => {
    const directory = tempDir("ferry-fleet-25-");
    chmodSync(directory, 0o777);
    const first = NAMES.slice(0, 5);
    const rest = NAMES.slice(5);
    const { taskId, version } = await deploy([
      markingStep(directory, "25%", FAILING),
      {
        name: "after",
        kind: "script",
        roles: ["web"],
        config: { script: 'touch "$MARKERS/after"', env: { MARKERS: directory } },
      },
    ]);
    // ferry plan says what the batches will be: four of five.
    const plan = await test.call<{ steps: { name: string; actions: string[] }[] }>(
      "GET",
      `/api/v1/projects/fleet/plan?release=${version}&environment=prod`,
    );
    expect(plan.status, JSON.stringify(plan.body)).toBe(200);
    expect(plan.body.steps[0]?.actions[0]).toBe(
      `rolling: 4 batch(es) of up to 5 (window 25%): ${[0, 5, 10, 15].map((start) => NAMES.slice(start, start + 5).join(", ")).join(" | ")}`,
    );

    const task = await test.waitForTask(taskId, 180_000);
    const lines = await logOf(taskId);
    const text = lines.map((line) => line.text).join("\n");
    expect(task.state, text).toBe("failed");
    expect(task.error).toBe(`step 'deploy' on ${FAILING} failed: the script exited with code 3`);

    // Exactly the first batch ran, each on its own agent's host; nothing of a later batch, nor the step after.
    expect(markers(directory)).toEqual(Object.fromEntries(first.map((name) => [name, addressOf(name)])));
    expect(readdirSync(directory)).not.toContain("after");

    expect(text).toContain("step 'deploy' rolls over 20 target(s) in 4 batch(es) of up to 5 (window 25%)");
    expect(text).toContain(`batch 1 of 4: ${first.join(", ")}`);
    expect(text).toContain(`batch 1 of step 'deploy' failed: no later batch starts (${rest.join(", ")} not deployed)`);
    expect(text).not.toContain("batch 2 of 4");
    expect(text).toContain("skipping step 'after': its run condition is not met");
    // Each agent of the first batch logged in its own lane; none of a later batch logged anything.
    for (const name of first) {
      expect(
        lines.filter((line) => line.step === `deploy on ${name}` && line.text === `hello from ${name}`),
        name,
      ).toHaveLength(1);
    }
    expect(
      lines.find((line) => line.step === `deploy on ${FAILING}` && line.text === `${FAILING} breaks`),
    ).toBeTruthy();
    for (const name of rest)
      expect(
        lines.filter((line) => line.step === `deploy on ${name}`),
        name,
      ).toEqual([]);
  });

  it("with a 100 % window every one of the twenty agents ran the step, in one batch", async () => {
    const directory = tempDir("ferry-fleet-100-");
    chmodSync(directory, 0o777);
    const { taskId } = await deploy([markingStep(directory, "100%")]);
    const task = await test.waitForTask(taskId, 180_000);
    const lines = await logOf(taskId);
    expect(task.state, lines.map((line) => line.text).join("\n")).toBe("succeeded");
    expect(markers(directory)).toEqual(Object.fromEntries(NAMES.map((name) => [name, addressOf(name)])));
    expect(lines.map((line) => line.text)).toContain(`batch 1 of 1: ${NAMES.join(", ")}`);
    for (const name of NAMES) {
      expect(
        lines.filter((line) => line.step === `deploy on ${name}` && line.text === `hello from ${name}`),
        name,
      ).toHaveLength(1);
    }
  });
});

async function waitUntil(
  condition: () => boolean | Promise<boolean>,
  timeoutMs: number,
  detail: () => string = () => "",
): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!(await condition())) {
    if (Date.now() > deadline) throw new Error(`condition not met within ${timeoutMs} ms ${detail()}`);
    await sleep(200);
  }
}
