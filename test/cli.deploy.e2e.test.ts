import { connect, createServer, type Server, type Socket } from "node:net";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import {
  apiRequest,
  expectSuccess,
  type FerryServer,
  isolatedEnv,
  parseJson,
  runFerry,
  startFerry,
  testAdminKey,
  trackedResources,
  waitFor,
} from "./helpers/cli.js";

/**
 * End to end: releases, deployments and tasks through the real `bin/ferry` (built by
 * globalSetup), run as separate processes against a real `ferry server` on a free port.
 * Deployments run real script steps (bash) on the server's host.
 */

/** Log lines as the CLI prints them: HH:MM:SS [step] text. */
const LOG_LINE = /^\d\d:\d\d:\d\d( \[[^\]]+\])? /;

const { startServerInNewHome, cleanUp } = trackedResources("ferry-cli-deploy-e2e-");

afterAll(async () => {
  await cleanUp();
});

/**
 * A TCP relay in front of the server whose open connections the test can cut, as a
 * network failure would, while the server and the CLI both keep running.
 */
async function startRelay(
  targetPort: number,
): Promise<{ url: string; connections(): number; cut(): void; close(): Promise<void> }> {
  const open = new Set<Socket>();
  let connections = 0;
  const relay: Server = createServer((client) => {
    connections += 1;
    const upstream = connect(targetPort, "127.0.0.1");
    for (const socket of [client, upstream]) {
      open.add(socket);
      socket.on("close", () => open.delete(socket));
      socket.on("error", () => {
        client.destroy();
        upstream.destroy();
      });
    }
    client.pipe(upstream).pipe(client);
  });
  const port = await new Promise<number>((resolve) => {
    relay.listen(0, "127.0.0.1", () => {
      const address = relay.address();
      resolve(typeof address === "object" && address ? address.port : 0);
    });
  });
  return {
    url: `http://127.0.0.1:${port}`,
    connections: () => connections,
    cut: () => {
      for (const socket of open) socket.destroy();
    },
    close: () =>
      new Promise((resolve) => {
        for (const socket of open) socket.destroy();
        relay.close(() => resolve());
      }),
  };
}

async function api(server: FerryServer, apiKey: string, method: "POST" | "PUT", path: string, body: unknown) {
  const response = await apiRequest(`${server.url}${path}`, apiKey, method, body);
  expect(response.ok, `${method} ${path}: ${await response.clone().text()}`).toBe(true);
}

/** A project on the shared lifecycle whose process is the given steps. */
async function createProject(server: FerryServer, apiKey: string, name: string, steps: unknown[]): Promise<void> {
  await api(server, apiKey, "POST", "/api/v1/projects", { name, lifecycle: "default" });
  await api(server, apiKey, "PUT", `/api/v1/projects/${name}/process`, { steps });
}

const script = (name: string, text: string) => ({
  name,
  kind: "script",
  config: { script: text, env: { ENV: "#{Ferry.Environment.Name}" } },
});

interface DeploymentJson {
  deploymentId: string;
  taskId: string;
  project: string;
  release: string;
  environment: string;
  state: string;
  error: string | null;
}

describe("ferry release / deploy / promote / rollback / plan / task against a ferry server", () => {
  let server: FerryServer;
  let home: string;
  const adminKey = testAdminKey();
  const cliEnv = (url = server.url) => isolatedEnv(home, { FERRY_URL: url, FERRY_API_KEY: adminKey });
  const cli = (args: string[]) => runFerry(args, cliEnv());

  beforeAll(async () => {
    ({ home, server } = await startServerInNewHome(adminKey));
    for (const name of ["dev", "test", "prod"]) {
      await api(server, adminKey, "POST", "/api/v1/environments", { name });
    }
    await api(server, adminKey, "POST", "/api/v1/lifecycles", {
      name: "default",
      phases: [{ environments: ["dev"], autoDeploy: true }, { environments: ["test"] }, { environments: ["prod"] }],
    });
    await createProject(server, adminKey, "shop", [script("hello", "echo hello from $ENV")]);
  });
  afterAll(async () => {
    await server?.stop();
  });

  it("creates a release, deploys it to dev and follows the log (--deploy-to an auto-deploy env deploys once)", async () => {
    const result = await cli([
      "release",
      "create",
      "--project",
      "shop",
      "--version",
      "1.0.0",
      "--deploy-to",
      "dev",
      "--wait",
    ]);
    expectSuccess(result);
    expect(result.stdout).toMatch(/^\d\d:\d\d:\d\d \[hello\] hello from dev$/m);
    expect(result.stdout).toMatch(/^\d\d:\d\d:\d\d \[hello\] ▶ hello$/m);
    expect(result.stdout).toContain("shop 1.0.0 → dev");

    // dev auto-deploys: --deploy-to dev must not have queued a second deployment.
    const tasks = parseJson<{ title: string; state: string }[]>(await cli(["task", "list", "--json"]));
    expect(tasks.filter((task) => task.title === "Deploy shop 1.0.0 to dev")).toEqual([
      expect.objectContaining({ state: "succeeded" }),
    ]);
  });

  it("refuses to deploy to prod before test, with the lifecycle rule (exit 1)", async () => {
    const result = await cli(["deploy", "--project", "shop", "--release", "1.0.0", "--env", "prod", "--wait"]);
    expect(result.code).toBe(1);
    expect(result.stderr).toContain("lifecycle 'default' requires phase");
    expect(result.stderr).toContain("before 'prod'");
    expect(result.stdout).toBe("");
  });

  it("promotes to test and waits for it", async () => {
    const result = await cli(["promote", "--project", "shop", "--to", "test", "--wait"]);
    expectSuccess(result);
    expect(result.stdout).toContain("hello from test");
    expect(result.stdout).toContain("shop 1.0.0 → test: succeeded");
  });

  it("prints one JSON object with --wait --json, and the task's log afterwards", async () => {
    const result = await cli([
      "deploy",
      "--project",
      "shop",
      "--release",
      "1.0.0",
      "--env",
      "prod",
      "--wait",
      "--json",
    ]);
    expectSuccess(result);
    const outcome = parseJson<DeploymentJson>(result);
    expect(outcome).toEqual({
      deploymentId: expect.any(String),
      taskId: expect.any(String),
      project: "shop",
      release: "1.0.0",
      environment: "prod",
      state: "succeeded",
      error: null,
    });

    const logs = await cli(["task", "logs", outcome.taskId]);
    expectSuccess(logs);
    const lines = logs.stdout.trimEnd().split("\n");
    expect(lines.every((line) => LOG_LINE.test(line))).toBe(true);
    expect(lines).toEqual(
      expect.arrayContaining([
        expect.stringMatching(/ \[hello\] ▶ hello$/),
        expect.stringMatching(/ \[hello\] hello from prod$/),
        expect.stringMatching(/ \[hello\] ✔ hello \(/),
      ]),
    );
    // --follow on a finished task prints the same lines and ends.
    const followed = await cli(["task", "logs", outcome.taskId, "--follow"]);
    expectSuccess(followed);
    expect(followed.stdout).toBe(logs.stdout);
    expect(followed.stderr).toContain("succeeded");

    const shown = parseJson<{ id: string; state: string }>(await cli(["task", "show", outcome.taskId, "--json"]));
    expect(shown).toMatchObject({ id: outcome.taskId, state: "succeeded" });
  });

  it("plans a deployment: steps, actions and variables", async () => {
    const result = await cli(["plan", "--project", "shop", "--release", "1.0.0", "--env", "test"]);
    expectSuccess(result);
    expect(result.stdout).toContain("Plan: shop 1.0.0 → test");
    expect(result.stdout).toMatch(/1\. hello \(script\) on \(server\)/);
    expect(result.stdout).toMatch(/Ferry\.Environment\.Name +test/);

    const plan = parseJson<{ steps: { name: string; runs: boolean }[] }>(
      await cli(["plan", "--project", "shop", "--release", "1.0.0", "--env", "test", "--json"]),
    );
    expect(plan.steps).toEqual([expect.objectContaining({ name: "hello", runs: true })]);
  });

  it("lists and shows releases; rolls dev back to the previous release", async () => {
    expectSuccess(
      await cli(["release", "create", "--project", "shop", "--version", "1.1.0", "--notes", "second", "--wait"]),
    );
    const releases = parseJson<{ version: string; notes: string }[]>(
      await cli(["release", "list", "--project", "shop", "--json"]),
    );
    expect(releases.map((release) => release.version)).toEqual(["1.1.0", "1.0.0"]);
    const shown = await cli(["release", "show", "--project", "shop", "1.1.0"]);
    expectSuccess(shown);
    expect(shown.stdout).toMatch(/notes: +second/);

    const rollback = await cli(["rollback", "--project", "shop", "--env", "dev", "--wait", "--json"]);
    expectSuccess(rollback);
    expect(parseJson<DeploymentJson>(rollback)).toMatchObject({
      release: "1.0.0",
      environment: "dev",
      state: "succeeded",
    });
  });

  it("exits 1 on a failing step, with the task's error and last log lines on stderr", async () => {
    await createProject(server, adminKey, "broken", [
      script("migrate", 'echo "about to fail in $ENV"; echo "disk full" >&2; exit 3'),
    ]);
    // dev auto-deploys the new release; --wait follows that deployment.
    const result = await cli(["release", "create", "--project", "broken", "--version", "0.1.0", "--wait"]);
    expect(result.code).toBe(1);
    expect(result.stdout).toContain("[migrate] about to fail in dev");
    expect(result.stderr).toContain("broken 0.1.0 → dev failed");
    expect(result.stderr).toContain("the script exited with code 3");
    expect(result.stderr).toMatch(/last \d+ log lines/);
    expect(result.stderr).toMatch(/\[migrate\] about to fail in dev/);
    expect(result.stderr).toMatch(/\[migrate\] disk full/);

    const json = await cli(["deploy", "--project", "broken", "--release", "0.1.0", "--env", "dev", "--wait", "--json"]);
    expect(json.code).toBe(1);
    const outcome = parseJson<DeploymentJson>(json);
    expect(outcome).toMatchObject({ environment: "dev", state: "failed" });
    expect(outcome.error).toContain("exited with code 3");
    expect(json.stderr).toContain("disk full");
  });

  it("approves and rejects a waiting deployment with task approve / reject", async () => {
    await createProject(server, adminKey, "gated", [
      { name: "sign-off", kind: "approval", config: { instructions: "check #{Ferry.Environment.Name}" } },
      script("after", "echo approved, going on in $ENV"),
    ]);
    const taskIdOf = (output: string) => /following task (\S+)/.exec(output)?.[1] ?? "";

    const approved = startFerry(["release", "create", "--project", "gated", "--version", "1", "--wait"], cliEnv());
    await waitFor(() => approved.stdout().includes("waiting for a decision"), "the approval prompt in the log");
    const missing = await cli(["task", "approve", "no-such-task"]);
    expect(missing.code).toBe(1);
    expectSuccess(await cli(["task", "approve", taskIdOf(approved.stdout()), "--comment", "looks good"]));
    const approvedResult = await approved.done;
    expectSuccess(approvedResult);
    expect(approvedResult.stdout).toContain("approved, going on in dev");

    const rejected = startFerry(["release", "create", "--project", "gated", "--version", "2", "--wait"], cliEnv());
    await waitFor(() => rejected.stdout().includes("waiting for a decision"), "the second approval prompt");
    const taskId = taskIdOf(rejected.stdout());
    expectSuccess(await cli(["task", "reject", taskId, "--comment", "not today"]));
    const rejectedResult = await rejected.done;
    expect(rejectedResult.code).toBe(1);
    expect(rejectedResult.stderr).toContain("not today");
    // The task no longer waits: a second answer is refused.
    const again = await cli(["task", "approve", taskId]);
    expect(again.code).toBe(1);
    expect(again.stderr).toContain("not waiting for a decision");
  });

  it("lists tasks by state and rejects an unknown state (exit 2)", async () => {
    const failed = parseJson<{ state: string; title: string }[]>(
      await cli(["task", "list", "--state", "failed", "--json"]),
    );
    expect(failed.length).toBeGreaterThan(0);
    expect(failed.every((task) => task.state === "failed")).toBe(true);
    const unknown = await cli(["task", "list", "--state", "done"]);
    expect(unknown.code).toBe(2);
  });

  it("keeps following a log when the connection drops, without losing or repeating lines", async () => {
    await createProject(server, adminKey, "slow", [script("pause", "echo first; sleep 2; echo second")]);
    const created = parseJson<{ deployments: { taskId: string }[] }>(
      await cli(["release", "create", "--project", "slow", "--version", "1", "--json"]),
    );
    const taskId = created.deployments[0]?.taskId ?? "";
    const relay = await startRelay(server.port);
    try {
      const follower = startFerry(["task", "logs", taskId, "--follow"], cliEnv(relay.url));
      await waitFor(() => follower.stdout().includes("[pause] first"), "the first line through the relay");
      relay.cut();
      const result = await follower.done;
      expectSuccess(result);
      expect(relay.connections()).toBeGreaterThan(1);
      expect(result.stdout.match(/\[pause\] first$/gm)).toHaveLength(1);
      expect(result.stdout.match(/\[pause\] second$/gm)).toHaveLength(1);
      expect(result.stdout).toMatch(/✔ pause/);
    } finally {
      await relay.close();
    }
  });
});
