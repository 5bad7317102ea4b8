import { existsSync, readdirSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { setTimeout as sleep } from "node:timers/promises";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { startTestServer, type TestServer } from "./helpers/server.js";

interface LogLine {
  line: number;
  level: string;
  step: string | null;
  text: string;
}

const secret = "Sup3r-S3cret-canary";
const multiLineSecret = "first-line-of-key\nsecond-line-of-key";
const marker = `/tmp/ferry-pwned-${process.pid}`;

describe("deployments with script steps (real processes, SQLite)", () => {
  let test: TestServer;

  const logOf = async (taskId: string) =>
    (await test.call<{ lines: LogLine[] }>("GET", `/api/v1/tasks/${taskId}/log`)).body.lines;

  beforeAll(async () => {
    rmSync(marker, { force: true });
    test = await startTestServer();
    for (const name of ["dev", "test", "prod"]) await test.call("POST", "/api/v1/environments", { name });
    await test.call("POST", "/api/v1/lifecycles", {
      name: "default",
      phases: [{ environments: ["dev"], autoDeploy: true }, { environments: ["test"] }, { environments: ["prod"] }],
    });
    await test.call("POST", "/api/v1/projects", { name: "shop", lifecycle: "default" });
    const variables = [
      { name: "Greeting", value: "hello from everywhere" },
      { name: "Greeting", value: "hello prod", scope: { environments: ["prod"] } },
      { name: "DbPassword", value: secret, sensitive: true },
      { name: "Key", value: multiLineSecret, sensitive: true },
      { name: "Nasty", value: `$(touch ${marker}); rm -rf /tmp/nothing-here \`touch ${marker}\`` },
    ];
    for (const variable of variables) {
      const { status } = await test.call("POST", "/api/v1/projects/shop/variables", variable);
      expect(status).toBe(201);
    }
    const process = await test.call("PUT", "/api/v1/projects/shop/process", {
      steps: [
        {
          name: "greet",
          kind: "script",
          config: {
            script: [
              'echo "greeting: $GREETING on $ENV_NAME"',
              'echo "password: $DB_PASSWORD"',
              // biome-ignore lint/suspicious/noTemplateCurlyInString: bash parameter expansion, not JavaScript
              'printf "split: %s" "${DB_PASSWORD:0:6}"; printf "%s\\n" "${DB_PASSWORD:6}"',
              'echo "key: $KEY"',
              'echo "nasty: $NASTY" "$1"',
              'echo "port=8080" >> "$FERRY_OUTPUT"',
            ].join("\n"),
            arguments: ["#{Nasty}"],
            env: {
              GREETING: "#{Greeting}",
              ENV_NAME: "#{Ferry.Environment.Name}",
              DB_PASSWORD: "#{DbPassword}",
              KEY: "#{Key}",
              NASTY: "#{Nasty}",
            },
          },
        },
        {
          name: "use output",
          kind: "script",
          config: { script: 'echo "previous port: $PORT"', env: { PORT: "#{Ferry.Step[greet].Output.port}" } },
        },
      ],
    });
    expect(process.status).toBe(200);
  });
  afterAll(async () => {
    await test?.close();
    rmSync(marker, { force: true });
  });

  it("creates a release that auto-deploys to dev, runs the steps and masks secrets", async () => {
    const created = await test.call<{ version: string; deployments: { taskId: string; environment: string }[] }>(
      "POST",
      "/api/v1/projects/shop/releases",
      { version: "1.0.0", notes: "first" },
    );
    expect(created.status).toBe(201);
    expect(created.body.deployments.map((deployment) => deployment.environment)).toEqual(["dev"]);
    const taskId = created.body.deployments[0]?.taskId ?? "";
    const task = await test.waitForTask(taskId);
    const lines = await logOf(taskId);
    const text = lines.map((line) => line.text).join("\n");
    expect(task.state, text).toBe("succeeded");
    expect(text).toContain("greeting: hello from everywhere on dev");
    expect(text).toContain("previous port: 8080");
    expect(text).toContain("password: ********");
    for (const part of [secret, "first-line-of-key", "second-line-of-key"]) expect(text).not.toContain(part);
    expect(lines.some((line) => line.level === "step" && line.text.startsWith("✔ greet"))).toBe(true);
  });

  it("passes hostile variable values to scripts without executing them", async () => {
    expect(existsSync(marker)).toBe(false);
    const { body } = await test.call<{ items: { id: string }[] }>("GET", "/api/v1/tasks?limit=1");
    const text = (await logOf(body.items[0]?.id ?? "")).map((line) => line.text).join("\n");
    expect(text).toContain(`nasty: $(touch ${marker}); rm -rf`);
  });

  it("refuses to deploy to prod before test, naming the lifecycle rule", async () => {
    const refused = await test.call<{ type: string; detail: string }>("POST", "/api/v1/projects/shop/deployments", {
      release: "1.0.0",
      environment: "prod",
    });
    expect(refused.status).toBe(409);
    expect(refused.body.detail).toBe(
      "lifecycle 'default' requires phase 'test' first: deploy this release to 'test' before 'prod'",
    );
  });

  it("auto-deploys through consecutive auto-deploy phases", async () => {
    await test.call("POST", "/api/v1/lifecycles", {
      name: "chain",
      phases: [
        { environments: ["dev"], autoDeploy: true },
        { environments: ["test"], autoDeploy: true },
      ],
    });
    await test.call("POST", "/api/v1/projects", { name: "chained", lifecycle: "chain" });
    await test.call("PUT", "/api/v1/projects/chained/process", {
      steps: [{ name: "hi", kind: "script", config: { script: "echo hi" } }],
    });
    const created = await test.call<{ deployments: { taskId: string }[] }>(
      "POST",
      "/api/v1/projects/chained/releases",
      {
        version: "1.0.0",
      },
    );
    expect((await test.waitForTask(created.body.deployments[0]?.taskId ?? "")).state).toBe("succeeded");
    for (let attempt = 0; ; attempt++) {
      const tasks = await test.call<{ items: { title: string; state: string }[] }>("GET", "/api/v1/tasks?limit=5");
      const toTest = tasks.body.items.find((task) => task.title === "Deploy chained 1.0.0 to test");
      if (toTest?.state === "succeeded") break;
      if (attempt > 200) throw new Error(`the auto-deploy to test did not succeed: ${JSON.stringify(toTest)}`);
      await new Promise((resolve) => setTimeout(resolve, 50));
    }
  });

  it("promotes the same release to test and then prod, with prod's scoped value", async () => {
    for (const environment of ["test", "prod"]) {
      const queued = await test.call<{ taskId: string }>("POST", "/api/v1/projects/shop/deployments", {
        release: "1.0.0",
        environment,
      });
      expect(queued.status).toBe(201);
      expect((await test.waitForTask(queued.body.taskId)).state).toBe("succeeded");
      if (environment === "prod") {
        const text = (await logOf(queued.body.taskId)).map((line) => line.text).join("\n");
        expect(text).toContain("greeting: hello prod on prod");
      }
    }
  });

  it("plans a deployment without running it, masking sensitive values", async () => {
    const plan = await test.call<{
      steps: { name: string; runs: boolean; actions: string[] }[];
      variables: { name: string; value: string }[];
    }>("GET", "/api/v1/projects/shop/plan?release=1.0.0&environment=prod");
    expect(plan.status).toBe(200);
    expect(plan.body.steps.map((step) => [step.name, step.runs])).toEqual([
      ["greet", true],
      ["use output", true],
    ]);
    const values = Object.fromEntries(plan.body.variables.map((variable) => [variable.name, variable.value]));
    expect(values).toMatchObject({ Greeting: "hello prod", DbPassword: "********", "Ferry.Environment.Name": "prod" });
    expect(JSON.stringify(plan.body)).not.toContain(secret);
  });

  it("promotes what the previous phase runs and rolls back to the last known good release", async () => {
    await test.call("POST", "/api/v1/projects/shop/releases", { version: "1.1.0" });
    const tasks = await test.call<{ items: { id: string }[] }>("GET", "/api/v1/tasks?limit=1");
    await test.waitForTask(tasks.body.items[0]?.id ?? "");
    const promoted = await test.call<{ release: string; taskId: string }>("POST", "/api/v1/projects/shop/promotions", {
      to: "test",
    });
    expect(promoted.status).toBe(201);
    expect(promoted.body.release).toBe("1.1.0");
    expect((await test.waitForTask(promoted.body.taskId)).state).toBe("succeeded");

    const rolledBack = await test.call<{ release: string; taskId: string }>("POST", "/api/v1/projects/shop/rollbacks", {
      environment: "test",
    });
    expect(rolledBack.status).toBe(201);
    expect(rolledBack.body.release).toBe("1.0.0");
    expect((await test.waitForTask(rolledBack.body.taskId)).state).toBe("succeeded");

    const nothingBefore = await test.call<{ detail: string }>("POST", "/api/v1/projects/shop/promotions", {
      to: "dev",
    });
    expect(nothingBefore.status).toBe(409);
    expect(nothingBefore.body.detail).toMatch(/first phase/);
  });

  it("never changes a release when variables change, unless its variables are re-snapshotted on purpose", async () => {
    const variables = await test.call<{ items: { id: string; name: string; scope: { environments: string[] } }[] }>(
      "GET",
      "/api/v1/projects/shop/variables",
    );
    const greeting = variables.body.items.find(
      (variable) => variable.name === "Greeting" && variable.scope.environments.length === 0,
    );
    await test.call("PATCH", `/api/v1/projects/shop/variables/${greeting?.id}`, { value: "hello, changed" });
    const before = await test.call<{ steps: { name: string }[]; variables: { name: string; value: string }[] }>(
      "GET",
      "/api/v1/projects/shop/plan?release=1.0.0&environment=dev",
    );
    expect(before.body.variables.find((variable) => variable.name === "Greeting")?.value).toBe("hello from everywhere");

    const updated = await test.call<{ variablesUpdatedBy: string | null; steps: { name: string }[] }>(
      "POST",
      "/api/v1/projects/shop/releases/1.0.0/variables-snapshot",
    );
    expect(updated.status).toBe(200);
    expect(updated.body.variablesUpdatedBy).toBe("admin (FERRY_ADMIN_API_KEY)");
    expect(updated.body.steps.map((step) => step.name)).toEqual(["greet", "use output"]);
    const after = await test.call<{ variables: { name: string; value: string }[] }>(
      "GET",
      "/api/v1/projects/shop/plan?release=1.0.0&environment=dev",
    );
    expect(after.body.variables.find((variable) => variable.name === "Greeting")?.value).toBe("hello, changed");
    await test.call("PATCH", `/api/v1/projects/shop/variables/${greeting?.id}`, { value: "hello from everywhere" });
    await test.call("POST", "/api/v1/projects/shop/releases/1.0.0/variables-snapshot");
  });

  it("streams a task's log over SSE until it ends", async () => {
    const created = await test.call<{ deployments: { taskId: string }[] }>("POST", "/api/v1/projects/shop/releases", {
      version: "1.0.1",
    });
    const taskId = created.body.deployments[0]?.taskId ?? "";
    const response = await fetch(new URL(`/api/v1/tasks/${taskId}/log?follow=1`, test.server.url), {
      headers: { authorization: `Bearer ${test.apiKey}` },
    });
    expect(response.headers.get("content-type")).toMatch(/^text\/event-stream/);
    const stream = await response.text();
    expect(stream).toContain("event: line");
    expect(stream).toMatch(/event: end\ndata: \{"state":"succeeded"\}/);
    expect(stream).not.toContain(secret);
  });

  it("fails a deployment whose step fails and reports the step", async () => {
    await test.call("PUT", "/api/v1/projects/shop/process", {
      steps: [
        { name: "boom", kind: "script", config: { script: "echo about to fail; exit 3" } },
        { name: "never", kind: "script", config: { script: "echo should not run" } },
        { name: "on failure", kind: "script", condition: "failure", config: { script: "echo cleaning up" } },
      ],
    });
    const created = await test.call<{ deployments: { taskId: string }[] }>("POST", "/api/v1/projects/shop/releases", {
      version: "1.0.2",
    });
    const taskId = created.body.deployments[0]?.taskId ?? "";
    const task = await test.waitForTask(taskId);
    expect(task.state).toBe("failed");
    expect(task.error).toBe("step 'boom' failed: the script exited with code 3");
    const text = (await logOf(taskId)).map((line) => line.text).join("\n");
    expect(text).toContain("cleaning up");
    expect(text).not.toContain("should not run");
  });

  it("goes on past a failing optional step, runs a step when its variable condition holds, and 'always' after a failure", async () => {
    for (const variable of [
      { name: "RunExtras", value: "true" },
      { name: "SkipThis", value: "False" },
      { name: "Region", value: "eu" },
    ]) {
      expect((await test.call("POST", "/api/v1/projects/shop/variables", variable)).status).toBe(201);
    }
    const saved = await test.call("PUT", "/api/v1/projects/shop/process", {
      steps: [
        { name: "optional", kind: "script", required: false, config: { script: "echo optional going; exit 4" } },
        { name: "after optional", kind: "script", config: { script: "echo ran after the optional failure" } },
        { name: "extras", kind: "script", condition: { variable: "RunExtras" }, config: { script: "echo extras ran" } },
        {
          name: "skipped",
          kind: "script",
          condition: { variable: "SkipThis" },
          config: { script: "echo SHOULD-NOT-RUN-1" },
        },
        {
          name: "in eu",
          kind: "script",
          condition: { variable: 'Region == "eu"' },
          config: { script: "echo eu ran" },
        },
        {
          name: "in us",
          kind: "script",
          condition: { variable: 'Region == "us"' },
          config: { script: "echo SHOULD-NOT-RUN-2" },
        },
        { name: "boom", kind: "script", config: { script: "echo failing for real; exit 3" } },
        { name: "after boom", kind: "script", config: { script: "echo SHOULD-NOT-RUN-3" } },
        { name: "always", kind: "script", condition: "always", config: { script: "echo always ran" } },
      ],
    });
    expect(saved.status, JSON.stringify(saved.body)).toBe(200);
    const created = await test.call<{ deployments: { taskId: string }[] }>("POST", "/api/v1/projects/shop/releases", {
      version: "1.0.3",
    });
    const taskId = created.body.deployments[0]?.taskId ?? "";
    const task = await test.waitForTask(taskId);
    const text = (await logOf(taskId)).map((line) => line.text).join("\n");
    // Only the required step's failure fails the deployment; the optional one is a warning.
    expect(task.state, text).toBe("failed");
    expect(task.error).toBe("step 'boom' failed: the script exited with code 3");
    expect(text).toContain("optional step 'optional' failed (the script exited with code 4); continuing");
    for (const ran of ["ran after the optional failure", "extras ran", "eu ran", "failing for real", "always ran"]) {
      expect(text).toContain(ran);
    }
    expect(text).toContain("skipping step 'skipped': its run condition is not met");
    expect(text).toContain("skipping step 'in us': its run condition is not met");
    expect(text).toContain("skipping step 'after boom': its run condition is not met");
    expect(text).not.toMatch(/SHOULD-NOT-RUN/);
  });

  it("validates step configs by their kind", async () => {
    const response = await test.call<{ errors: { pointer: string }[] }>("PUT", "/api/v1/projects/shop/process", {
      steps: [
        { name: "a", kind: "script", config: { script: "", timeoutSeconds: -1 } },
        { name: "b", kind: "teleport" },
      ],
    });
    expect(response.status).toBe(400);
    expect(response.body.errors.map((issue) => issue.pointer)).toEqual(
      expect.arrayContaining(["/steps/0/config/script", "/steps/0/config/timeoutSeconds", "/steps/1/kind"]),
    );
  });
});

describe("approvals and guided failure", () => {
  let test: TestServer;
  const flag = `/tmp/ferry-guided-${process.pid}`;

  const waitForDecision = async (taskId: string) => {
    for (let attempt = 0; attempt < 200; attempt++) {
      const { body } = await test.call<{ decision: string | null; prompt: string; allowed: string[] }[]>(
        "GET",
        `/api/v1/tasks/${taskId}/decisions`,
      );
      const open = body.find((decision) => decision.decision === null);
      const task = await test.call<{ state: string }>("GET", `/api/v1/tasks/${taskId}`);
      if (open && task.body.state === "waiting") return open;
      await new Promise((resolve) => setTimeout(resolve, 25));
    }
    throw new Error(`task ${taskId} never asked for a decision`);
  };
  const deploy = async (version: string, guidedFailure = false) => {
    await test.call("POST", "/api/v1/projects/app/releases", { version });
    const queued = await test.call<{ taskId: string }>("POST", "/api/v1/projects/app/deployments", {
      release: version,
      environment: "dev",
      guidedFailure,
    });
    expect(queued.status).toBe(201);
    return queued.body.taskId;
  };

  beforeAll(async () => {
    rmSync(flag, { force: true });
    test = await startTestServer();
    await test.call("POST", "/api/v1/environments", { name: "dev" });
    await test.call("POST", "/api/v1/lifecycles", { name: "one", phases: [{ environments: ["dev"] }] });
    await test.call("POST", "/api/v1/projects", { name: "app", lifecycle: "one" });
  });
  afterAll(async () => {
    await test?.close();
    rmSync(flag, { force: true });
  });

  it("waits for an approval and goes on when approved, or fails with the reason when rejected", async () => {
    await test.call("PUT", "/api/v1/projects/app/process", {
      steps: [
        { name: "sign-off", kind: "approval", config: { instructions: "Check #{Ferry.Release.Number} on staging" } },
        { name: "after", kind: "script", config: { script: "echo approved and running" } },
      ],
    });
    const approved = await deploy("1.0.0");
    const question = await waitForDecision(approved);
    expect(question).toMatchObject({ prompt: "Check 1.0.0 on staging", allowed: ["approve", "reject"] });
    const answer = await test.call("POST", `/api/v1/tasks/${approved}/decisions`, {
      decision: "approve",
      comment: "ok",
    });
    expect(answer.status).toBe(200);
    expect((await test.waitForTask(approved)).state).toBe("succeeded");

    const rejected = await deploy("1.0.1");
    await waitForDecision(rejected);
    const wrong = await test.call<{ detail: string }>("POST", `/api/v1/tasks/${rejected}/decisions`, {
      decision: "retry",
    });
    expect(wrong.status).toBe(409);
    await test.call("POST", `/api/v1/tasks/${rejected}/decisions`, { decision: "reject", comment: "not today" });
    const task = await test.waitForTask(rejected);
    expect(task.state).toBe("failed");
    expect(task.error).toBe("step 'sign-off' failed: rejected by admin (FERRY_ADMIN_API_KEY): not today");
  });

  it("lets a person retry, skip or abort a failed step under guided failure", async () => {
    await test.call("PUT", "/api/v1/projects/app/process", {
      steps: [
        { name: "flaky", kind: "script", config: { script: `test -f ${flag} || { echo not yet; exit 1; }` } },
        { name: "after", kind: "script", config: { script: "echo after flaky" } },
      ],
    });
    const retried = await deploy("2.0.0", true);
    expect((await waitForDecision(retried)).allowed).toEqual(["retry", "skip", "abort"]);
    writeFileSync(flag, "ready");
    await test.call("POST", `/api/v1/tasks/${retried}/decisions`, { decision: "retry" });
    expect((await test.waitForTask(retried)).state).toBe("succeeded");

    rmSync(flag, { force: true });
    const skipped = await deploy("2.0.1", true);
    await waitForDecision(skipped);
    await test.call("POST", `/api/v1/tasks/${skipped}/decisions`, { decision: "skip" });
    expect((await test.waitForTask(skipped)).state).toBe("succeeded");

    const aborted = await deploy("2.0.2", true);
    await waitForDecision(aborted);
    await test.call("POST", `/api/v1/tasks/${aborted}/decisions`, { decision: "abort" });
    expect((await test.waitForTask(aborted)).state).toBe("failed");
  });

  it("cancels a running script by killing its whole process group", async () => {
    await test.call("PUT", "/api/v1/projects/app/process", {
      steps: [{ name: "busy", kind: "script", config: { script: "sleep 300 & sleep 300 & echo started; wait" } }],
    });
    const taskId = await deploy("4.0.0");
    const processes = () =>
      readdirSync("/proc")
        .filter((entry) => /^\d+$/.test(entry))
        .filter((entry) => {
          try {
            return readFileSync(`/proc/${entry}/environ`, "latin1").split("\0").includes(`FERRY_TASK_ID=${taskId}`);
          } catch {
            return false;
          }
        });
    for (let attempt = 0; processes().length < 3; attempt++) {
      if (attempt > 200) throw new Error("the script's processes never started");
      await new Promise((resolve) => setTimeout(resolve, 25));
    }
    await test.call("POST", `/api/v1/tasks/${taskId}/cancel`);
    expect((await test.waitForTask(taskId)).state).toBe("cancelled");
    expect(processes()).toEqual([]);
    // The clean-up asks a traffic router which colours are live only when one is in use:
    // it never starts a `ferry proxy` for a project without blue/green.
    await sleep(500);
    expect(existsSync(join(test.dataDir, "proxy", "proxy.pid"))).toBe(false);
  });

  it("masks sensitive values in a task's error and in the question it asks", async () => {
    await test.call("POST", "/api/v1/projects/app/variables", {
      name: "Token",
      value: "tok-Secret-123",
      sensitive: true,
    });
    await test.call("PUT", "/api/v1/projects/app/process", {
      steps: [
        { name: "ask", kind: "approval", config: { instructions: "Is #{Token} right?" } },
        {
          name: "call",
          kind: "http-test",
          config: { url: "http://127.0.0.1:9/#{Token}", timeoutMs: 500 },
        },
      ],
    });
    const taskId = await deploy("5.0.0");
    const question = await waitForDecision(taskId);
    expect(question.prompt).toBe("Is ******** right?");
    await test.call("POST", `/api/v1/tasks/${taskId}/decisions`, { decision: "approve" });
    const task = await test.waitForTask(taskId);
    expect(task.state).toBe("failed");
    expect(JSON.stringify(task)).not.toContain("tok-Secret-123");
    const decisions = await test.call("GET", `/api/v1/tasks/${taskId}/decisions`);
    expect(JSON.stringify(decisions.body)).not.toContain("tok-Secret-123");
  });

  it("stops a script at its timeout even when a background job outlives bash", async () => {
    await test.call("PUT", "/api/v1/projects/app/process", {
      steps: [{ name: "bg", kind: "script", config: { script: "sleep 60 & echo started", timeoutSeconds: 1 } }],
    });
    const taskId = await deploy("6.0.0");
    const task = await test.waitForTask(taskId, 15_000);
    expect(task.state).toBe("failed");
    expect(task.error).toBe("step 'bg' failed: the script ran longer than 1 s and was stopped");
  });

  it("cancels a task that is waiting for a decision", async () => {
    await test.call("PUT", "/api/v1/projects/app/process", {
      steps: [{ name: "sign-off", kind: "approval", config: { instructions: "wait" } }],
    });
    const taskId = await deploy("3.0.0");
    await waitForDecision(taskId);
    const cancelled = await test.call("POST", `/api/v1/tasks/${taskId}/cancel`);
    expect(cancelled.status).toBe(200);
    expect((await test.waitForTask(taskId)).state).toBe("cancelled");
  });
});
