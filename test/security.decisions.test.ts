import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { dialects } from "./helpers/databases.js";
import { startTestServerOn, type TestServer } from "./helpers/server.js";

/**
 * Issue 11, findings 1 and 2 and separation of duties, as the attack pass ran them against
 * a real server with several users and roles (real engine, real HTTP; SQLite and PostgreSQL):
 *
 * - a deployer whose deployment an approver rejected answers `skip`, to push it through;
 * - a deployer skips a failing smoke test so that the release may go on to the next phase;
 * - a release manager approves their own deployment;
 * - a person who may edit the process of dev only adds a step that runs in prod.
 */
describe.each(dialects)("decisions and process scope on %s", (dialect) => {
  let test: TestServer;
  const keys: Record<string, string> = {};

  const admin = async (method: string, path: string, body?: unknown) => {
    const response = await test.call(method, path, body);
    expect(response.status, `${method} ${path}: ${JSON.stringify(response.body)}`).toBeLessThan(300);
    return response.body as Record<string, unknown>;
  };
  const as = async (user: string, method: string, path: string, body?: unknown) => {
    const response = await fetch(`${test.server.url}${path}`, {
      method,
      headers: {
        authorization: `Bearer ${keys[user]}`,
        ...(body !== undefined && { "content-type": "application/json" }),
      },
      ...(body !== undefined && { body: JSON.stringify(body) }),
    });
    return { status: response.status, body: (await response.json()) as Record<string, unknown> };
  };
  /** Waits until the task asks a question of this kind; returns the open question. */
  const waitForQuestion = async (taskId: string, kind: string) => {
    const deadline = Date.now() + 20_000;
    while (Date.now() < deadline) {
      const { body } = await test.call<Array<Record<string, unknown>>>("GET", `/api/v1/tasks/${taskId}/decisions`);
      const open = body.find((decision) => decision.kind === kind && decision.decision === null);
      if (open) return open;
      const task = await test.call("GET", `/api/v1/tasks/${taskId}`);
      if (["succeeded", "failed", "cancelled", "interrupted"].includes(String(task.body.state))) {
        throw new Error(`task ${taskId} ended ${String(task.body.state)} without asking a ${kind} question`);
      }
      await new Promise((resolve) => setTimeout(resolve, 100));
    }
    throw new Error(`task ${taskId} asked no ${kind} question in time`);
  };
  const process = (steps: unknown[]) => ({ steps });
  const release = async (project: string, version: string) =>
    admin("POST", `/api/v1/projects/${project}/releases`, { version });

  beforeAll(async () => {
    test = await startTestServerOn(dialect);
    for (const name of ["dev", "test", "prod"]) await admin("POST", "/api/v1/environments", { name });
    await admin("POST", "/api/v1/lifecycles", {
      name: "strict",
      phases: [{ environments: ["dev"] }, { environments: ["test"] }, { environments: ["prod"] }],
    });
    await admin("POST", "/api/v1/lifecycles", {
      name: "lenient",
      phases: [
        { environments: ["dev"] },
        { environments: ["test"], acceptSkippedSteps: true },
        { environments: ["prod"] },
      ],
    });
    await admin("POST", "/api/v1/lifecycles", {
      name: "four-eyes",
      phases: [
        { environments: ["dev"] },
        { environments: ["test"], separateApprover: true },
        { environments: ["prod"] },
      ],
    });
    for (const [name, lifecycle] of [
      ["shop", "strict"],
      ["lenient-shop", "lenient"],
      ["audited-shop", "four-eyes"],
    ]) {
      await admin("POST", "/api/v1/projects", { name, lifecycle });
    }
    for (const username of ["dana", "rita", "rob", "eddie"]) {
      await admin("POST", "/api/v1/users", { username, password: `${username}-long-password` });
      keys[username] = String(
        (await admin("POST", "/api/v1/api-keys", { name: `${username} cli`, user: username })).key,
      );
    }
    keys.rita2 = String((await admin("POST", "/api/v1/api-keys", { name: "rita laptop", user: "rita" })).key);
    await admin("POST", "/api/v1/teams", { name: "developers", members: ["dana"], roles: [{ role: "deployer" }] });
    await admin("POST", "/api/v1/teams", {
      name: "release managers",
      members: ["rita", "rob"],
      roles: [{ role: "release-manager" }],
    });
    await admin("POST", "/api/v1/teams", {
      name: "dev editors",
      members: ["eddie"],
      roles: [
        { role: "project-editor", environments: ["dev"] },
        { role: "deployer", environments: ["dev"] },
      ],
    });
  });
  afterAll(async () => {
    await test?.close();
  });

  it("a rejected approval is final: the task fails at once, and no skip or retry can bring it back", async () => {
    await admin(
      "PUT",
      "/api/v1/projects/shop/process",
      process([
        { name: "approve", kind: "approval", config: { instructions: "ship it?" } },
        { name: "ship", kind: "script", config: { script: "echo shipped" } },
      ]),
    );
    await release("shop", "1.0.0");
    const started = await as("dana", "POST", "/api/v1/projects/shop/deployments", {
      release: "1.0.0",
      environment: "dev",
      guidedFailure: true,
    });
    expect(started.status).toBe(201);
    const taskId = String(started.body.taskId);
    await waitForQuestion(taskId, "approval");
    expect(
      (await as("rita", "POST", `/api/v1/tasks/${taskId}/decisions`, { decision: "reject", comment: "no" })).status,
    ).toBe(200);
    const task = await test.waitForTask(taskId);
    expect(task.state).toBe("failed");
    expect(String(task.error)).toContain("rejected by rita");
    // Guided failure asked nothing after the rejection: there is nothing to skip.
    const decisions = await test.call<Array<Record<string, unknown>>>("GET", `/api/v1/tasks/${taskId}/decisions`);
    expect(decisions.body.map((decision) => decision.kind)).toEqual(["approval"]);
    const skip = await as("dana", "POST", `/api/v1/tasks/${taskId}/decisions`, { decision: "skip" });
    expect(skip.status).toBe(403);
    // Not even someone who may resolve failed steps can bring it back: nothing is waiting.
    for (const decision of ["skip", "retry"]) {
      const byManager = await as("rob", "POST", `/api/v1/tasks/${taskId}/decisions`, { decision });
      expect(byManager.status).toBe(409);
    }
    expect((await test.call("GET", `/api/v1/tasks/${taskId}`)).body.state).toBe("failed");
    const log = await test.call<{ lines: Array<{ text: string }> }>("GET", `/api/v1/tasks/${taskId}/log`);
    expect(log.body.lines.map((line) => line.text).join("\n")).not.toContain("shipped");
    // The release did not reach dev, so test refuses it.
    const next = await as("rita", "POST", "/api/v1/projects/shop/deployments", {
      release: "1.0.0",
      environment: "test",
    });
    expect(next.status).toBe(409);
  });

  it("skipping a failed required step needs resolveFailures, and the skip does not count for the lifecycle", async () => {
    await admin(
      "PUT",
      "/api/v1/projects/shop/process",
      process([
        { name: "smoke test", kind: "script", config: { script: "echo smoke test failed; exit 1" } },
        { name: "after", kind: "script", config: { script: "echo after the smoke test" } },
      ]),
    );
    await release("shop", "1.1.0");
    const started = await as("dana", "POST", "/api/v1/projects/shop/deployments", {
      release: "1.1.0",
      environment: "dev",
      guidedFailure: true,
    });
    const taskId = String(started.body.taskId);
    await waitForQuestion(taskId, "failure");
    // The deployer may deploy, not override what the process says must pass.
    const byDeployer = await as("dana", "POST", `/api/v1/tasks/${taskId}/decisions`, { decision: "skip" });
    expect(byDeployer.status).toBe(403);
    expect(String(byDeployer.body.detail)).toContain("resolveFailures");
    expect((await as("dana", "POST", `/api/v1/tasks/${taskId}/decisions`, { decision: "retry" })).status).toBe(403);
    // A release manager may skip it: the deployment finishes, marked as such.
    expect((await as("rob", "POST", `/api/v1/tasks/${taskId}/decisions`, { decision: "skip" })).status).toBe(200);
    const task = await test.waitForTask(taskId);
    expect(task.state).toBe("succeeded");
    const log = await test.call<{ lines: Array<{ text: string }> }>("GET", `/api/v1/tasks/${taskId}/log`);
    const text = log.body.lines.map((line) => line.text).join("\n");
    expect(text).toContain("after the smoke test");
    expect(text).toContain("does not count as a success for lifecycle 'strict'");
    // So the release may not go on to test, and promote finds nothing in dev to promote.
    const next = await as("rob", "POST", "/api/v1/projects/shop/deployments", {
      release: "1.1.0",
      environment: "test",
    });
    expect(next.status).toBe(409);
    expect(String(next.body.detail)).toContain("dev");
    const promoted = await as("rob", "POST", "/api/v1/projects/shop/promotions", { to: "test" });
    expect(promoted.status).toBe(409);
  });

  it("a deployer may abort a failed step, and a phase that accepts skipped steps lets the release progress", async () => {
    await admin(
      "PUT",
      "/api/v1/projects/lenient-shop/process",
      process([{ name: "flaky", kind: "script", config: { script: "exit 3" } }]),
    );
    await release("lenient-shop", "2.0.0");
    // dev does not accept skips: the skipped deployment does not count there.
    const inDev = await as("dana", "POST", "/api/v1/projects/lenient-shop/deployments", {
      release: "2.0.0",
      environment: "dev",
      guidedFailure: true,
    });
    const devTask = String(inDev.body.taskId);
    await waitForQuestion(devTask, "failure");
    expect((await as("dana", "POST", `/api/v1/tasks/${devTask}/decisions`, { decision: "abort" })).status).toBe(200);
    expect((await test.waitForTask(devTask)).state).toBe("failed");

    // A clean deployment to dev (the step passes now the process changed), then test skips and counts.
    await admin(
      "PUT",
      "/api/v1/projects/lenient-shop/process",
      process([
        {
          name: "flaky",
          kind: "script",
          config: { script: 'test "$FERRY_ENV" != test', env: { FERRY_ENV: "#{Ferry.Environment.Name}" } },
        },
      ]),
    );
    await release("lenient-shop", "2.1.0");
    const dev = await admin("POST", "/api/v1/projects/lenient-shop/deployments", {
      release: "2.1.0",
      environment: "dev",
    });
    expect((await test.waitForTask(String(dev.taskId))).state).toBe("succeeded");
    const inTest = await as("rob", "POST", "/api/v1/projects/lenient-shop/deployments", {
      release: "2.1.0",
      environment: "test",
      guidedFailure: true,
    });
    const testTask = String(inTest.body.taskId);
    await waitForQuestion(testTask, "failure");
    expect((await as("rob", "POST", `/api/v1/tasks/${testTask}/decisions`, { decision: "skip" })).status).toBe(200);
    expect((await test.waitForTask(testTask)).state).toBe("succeeded");
    const prod = await as("rob", "POST", "/api/v1/projects/lenient-shop/deployments", {
      release: "2.1.0",
      environment: "prod",
    });
    expect(prod.status).toBe(201);
    expect((await test.waitForTask(String(prod.body.taskId))).state).toBe("succeeded");
  });

  it("separation of duties: whoever started the deployment cannot approve it, with any of their keys", async () => {
    await admin(
      "PUT",
      "/api/v1/projects/audited-shop/process",
      process([
        // In dev the step asks for it; in test the phase's default does.
        {
          name: "four eyes",
          kind: "approval",
          environments: ["dev"],
          config: { instructions: "check", separateApprover: true },
        },
        { name: "phase default", kind: "approval", environments: ["test"], config: { instructions: "check" } },
        { name: "own approval allowed", kind: "approval", environments: ["prod"], config: { instructions: "check" } },
      ]),
    );
    await release("audited-shop", "3.0.0");
    for (const environment of ["dev", "test"]) {
      const started = await as("rita", "POST", "/api/v1/projects/audited-shop/deployments", {
        release: "3.0.0",
        environment,
      });
      expect(started.status).toBe(201);
      const taskId = String(started.body.taskId);
      await waitForQuestion(taskId, "approval");
      for (const key of ["rita", "rita2"]) {
        const own = await as(key, "POST", `/api/v1/tasks/${taskId}/decisions`, { decision: "approve" });
        expect(own.status, `${key} in ${environment}`).toBe(403);
        expect(String(own.body.detail)).toContain("separation of duties");
      }
      expect((await as("rob", "POST", `/api/v1/tasks/${taskId}/decisions`, { decision: "approve" })).status).toBe(200);
      const task = await test.waitForTask(taskId);
      expect(task.state).toBe("succeeded");
    }
    // Without the option, one's own approval stands (the default, as before).
    const started = await as("rita", "POST", "/api/v1/projects/audited-shop/deployments", {
      release: "3.0.0",
      environment: "prod",
    });
    const taskId = String(started.body.taskId);
    await waitForQuestion(taskId, "approval");
    expect((await as("rita", "POST", `/api/v1/tasks/${taskId}/decisions`, { decision: "approve" })).status).toBe(200);
    expect((await test.waitForTask(taskId)).state).toBe("succeeded");
  });

  it("a rejection by the deployer themself is allowed: refusing one's own deployment is always safe", async () => {
    const started = await as("rita", "POST", "/api/v1/projects/audited-shop/deployments", {
      release: "3.0.0",
      environment: "dev",
    });
    const taskId = String(started.body.taskId);
    await waitForQuestion(taskId, "approval");
    expect((await as("rita", "POST", `/api/v1/tasks/${taskId}/decisions`, { decision: "reject" })).status).toBe(200);
    expect((await test.waitForTask(taskId)).state).toBe("failed");
  });

  it("editProcess on dev alone may change dev-only steps, never a step that runs in prod or everywhere", async () => {
    // A project of its own, with a step that runs everywhere: nothing here depends on earlier tests.
    await admin("POST", "/api/v1/projects", { name: "edited-shop", lifecycle: "strict" });
    await admin("PUT", "/api/v1/projects/edited-shop/process", {
      steps: [{ name: "hello", kind: "script", config: { script: "echo hello" } }],
    });
    const current = await admin("GET", "/api/v1/projects/edited-shop/process");
    const steps = current.steps as Array<Record<string, unknown>>;
    const prodStep = {
      name: "exfiltrate",
      kind: "script",
      environments: ["prod"],
      config: { script: 'echo "$SECRET" | rev > /tmp/stolen' },
    };
    const withProd = await as("eddie", "PUT", "/api/v1/projects/edited-shop/process", { steps: [...steps, prodStep] });
    expect(withProd.status).toBe(403);
    expect(String(withProd.body.detail)).toContain("'prod'");
    const everywhere = await as("eddie", "PUT", "/api/v1/projects/edited-shop/process", {
      steps: [...steps, { ...prodStep, environments: [] }],
    });
    expect(everywhere.status).toBe(403);
    expect(String(everywhere.body.detail)).toContain("every environment");
    // Excluding prod still runs in every other environment, those created later too.
    const allButProd = await as("eddie", "PUT", "/api/v1/projects/edited-shop/process", {
      steps: [...steps, { ...prodStep, environments: [], excludeEnvironments: ["prod"] }],
    });
    expect(allButProd.status).toBe(403);
    // An environment that does not exist yet could be created (or renamed to) later.
    const planted = await as("eddie", "PUT", "/api/v1/projects/edited-shop/process", {
      steps: [...steps, { ...prodStep, environments: ["production"] }],
    });
    expect(planted.status).toBe(403);
    expect(String(planted.body.detail)).toContain("every environment");
    // A step changed that runs everywhere is a change for prod too.
    const changed = await as("eddie", "PUT", "/api/v1/projects/edited-shop/process", {
      steps: steps.map((step, index) => (index === 0 ? { ...step, required: false } : step)),
    });
    expect(changed.status).toBe(403);
    const unchanged = await admin("GET", "/api/v1/projects/edited-shop/process");
    expect(unchanged.steps).toEqual(steps);

    // A dev-only step is theirs to add, change and remove.
    const devStep = { name: "dev seed", kind: "script", environments: ["dev"], config: { script: "echo seeding dev" } };
    expect(
      (await as("eddie", "PUT", "/api/v1/projects/edited-shop/process", { steps: [...steps, devStep] })).status,
    ).toBe(200);
    const devChanged = { ...devStep, config: { script: "echo seeding dev again" } };
    expect(
      (await as("eddie", "PUT", "/api/v1/projects/edited-shop/process", { steps: [...steps, devChanged] })).status,
    ).toBe(200);
    // Moving it to prod is a change in prod.
    const moved = await as("eddie", "PUT", "/api/v1/projects/edited-shop/process", {
      steps: [...steps, { ...devChanged, environments: ["prod"] }],
    });
    expect(moved.status).toBe(403);
    expect((await as("eddie", "PUT", "/api/v1/projects/edited-shop/process", { steps })).status).toBe(200);
  });

  it("a script on the server's host runs as a uid of its task's own that cannot read the data directory", async () => {
    await admin(
      "PUT",
      "/api/v1/projects/shop/process",
      process([
        {
          name: "probe",
          kind: "script",
          config: {
            script: [
              'echo "uid=$(id -u)"',
              'if cat "$DATA_DIR/master.key" >/dev/null 2>&1; then echo "master key: READ"; else echo "master key: refused"; fi',
              'if ls "$DATA_DIR" >/dev/null 2>&1; then echo "data dir: LISTED"; else echo "data dir: refused"; fi',
              'echo "ok" > "$FERRY_OUTPUT"',
            ].join("\n"),
            env: { DATA_DIR: test.dataDir },
          },
        },
      ]),
    );
    await release("shop", "9.0.0");
    const started = await admin("POST", "/api/v1/projects/shop/deployments", { release: "9.0.0", environment: "dev" });
    const task = await test.waitForTask(String(started.taskId));
    const log = await test.call<{ lines: Array<{ text: string }> }>(
      "GET",
      `/api/v1/tasks/${String(started.taskId)}/log`,
    );
    const text = log.body.lines.map((line) => line.text).join("\n");
    expect(task.state, text).toBe("succeeded");
    const uid = Number(/uid=(\d+)/.exec(text)?.[1]);
    // Not root, not a system account: the default range of per-task uids.
    expect(uid).toBeGreaterThanOrEqual(2_000_000_000);
    expect(text).toContain("master key: refused");
    expect(text).toContain("data dir: refused");
  });

  it("a dev task's script cannot read the environment of a prod task's script running at the same time", async () => {
    await admin("POST", "/api/v1/lifecycles", {
      name: "flat",
      phases: [{ environments: ["dev", "test", "prod"] }],
    });
    await admin("POST", "/api/v1/projects", { name: "neighbours", lifecycle: "flat" });
    await admin(
      "PUT",
      "/api/v1/projects/neighbours/process",
      process([
        {
          name: "holds a secret",
          kind: "script",
          environments: ["prod"],
          config: { script: 'echo "prod started"; sleep 6', env: { MARKER: "prod-only-marker-7f3a" } },
        },
        {
          name: "looks around",
          kind: "script",
          environments: ["dev"],
          config: {
            script: [
              'readable=$(grep -l -a "prod-only-marker-7f3a" /proc/[0-9]*/environ 2>/dev/null | wc -l)',
              'echo "readable environments of the prod task: $readable"',
            ].join("\n"),
          },
        },
      ]),
    );
    await release("neighbours", "1.0.0");
    const prod = await admin("POST", "/api/v1/projects/neighbours/deployments", {
      release: "1.0.0",
      environment: "prod",
    });
    const prodTask = String(prod.taskId);
    const deadline = Date.now() + 20_000;
    for (;;) {
      const log = await test.call<{ lines: Array<{ text: string }> }>("GET", `/api/v1/tasks/${prodTask}/log`);
      if (log.body.lines.some((line) => line.text === "prod started")) break;
      if (Date.now() > deadline) throw new Error("the prod script did not start");
      await new Promise((resolve) => setTimeout(resolve, 100));
    }
    const dev = await admin("POST", "/api/v1/projects/neighbours/deployments", {
      release: "1.0.0",
      environment: "dev",
    });
    const devTask = String(dev.taskId);
    expect((await test.waitForTask(devTask)).state).toBe("succeeded");
    const devLog = await test.call<{ lines: Array<{ text: string }> }>("GET", `/api/v1/tasks/${devTask}/log`);
    expect(devLog.body.lines.map((line) => line.text)).toContain("readable environments of the prod task: 0");
    // The prod task was still running: the check was made while its process held the value.
    expect((await test.call("GET", `/api/v1/tasks/${prodTask}`)).body.state).toBe("running");
    expect((await test.waitForTask(prodTask)).state).toBe("succeeded");
  });
});
