import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { callExpecting } from "./helpers/api.js";
import { dialects } from "./helpers/databases.js";
import { startTestServerOn, type TestServer } from "./helpers/server.js";

/**
 * Issue 14, parts 1, 2 and 4, through a real server (HTTP, task engine, local script steps)
 * on SQLite and PostgreSQL: published snapshots versus drafts, parameters checked before
 * anything is queued, sensitive parameters masked everywhere, deployment freezes and their
 * audited override, and the runbook consumer role.
 */

type Body = Record<string, unknown>;

describe.each(dialects)("runbooks (%s)", (dialect) => {
  let test: TestServer;
  const keys: Record<string, string> = {};

  function admin<T = Body>(method: string, path: string, body?: unknown, status?: number): Promise<T> {
    return callExpecting<T>(test, method, path, body, status);
  }

  /** A request with another user's key. */
  async function as(user: string, method: string, path: string, body?: unknown) {
    const response = await fetch(new URL(path, test.server.url), {
      method,
      headers: {
        authorization: `Bearer ${keys[user]}`,
        ...(body !== undefined && { "content-type": "application/json" }),
      },
      ...(body !== undefined && { body: JSON.stringify(body) }),
    });
    const text = await response.text();
    return { status: response.status, body: (text ? JSON.parse(text) : undefined) as Body, text };
  }

  async function logOf(taskId: string): Promise<string> {
    const page = await admin<{ lines: { text: string }[] }>("GET", `/api/v1/tasks/${taskId}/log`);
    return page.lines.map((line) => line.text).join("\n");
  }

  async function taskCount(): Promise<number> {
    return (await admin<{ total: number }>("GET", "/api/v1/tasks?limit=1")).total;
  }

  async function auditText(): Promise<string> {
    const response = await fetch(new URL("/api/v1/audit/export", test.server.url), {
      headers: { authorization: `Bearer ${test.apiKey}` },
    });
    expect(response.status).toBe(200);
    return response.text();
  }

  /** Runs a runbook as the admin and waits for its task; returns the run and its log. */
  async function run(runbook: string, body: Body) {
    const created = await admin<Body>("POST", `/api/v1/projects/shop/runbooks/${runbook}/runs`, body, 201);
    const task = await test.waitForTask(String(created.taskId));
    return { created, task, log: await logOf(String(created.taskId)) };
  }

  beforeAll(async () => {
    test = await startTestServerOn(dialect);
    for (const name of ["staging", "prod"]) await admin("POST", "/api/v1/environments", { name });
    await admin("POST", "/api/v1/lifecycles", { name: "standard", phases: [{ environments: ["staging", "prod"] }] });
    await admin("POST", "/api/v1/projects", { name: "shop", lifecycle: "standard" });
    await admin("PUT", "/api/v1/projects/shop/process", {
      steps: [{ name: "deploy", kind: "script", config: { script: "echo deployed" } }],
    });
    await admin("POST", "/api/v1/projects/shop/releases", { version: "1.0.0" });
    await admin("POST", "/api/v1/projects/shop/variables", { name: "Greeting", value: "hello from the project" });

    for (const [user, role] of [
      ["casey", "runbook-consumer"],
      ["dana", "deployer"],
    ] as const) {
      await admin("POST", "/api/v1/users", { username: user, password: `${user}-long-password` });
      await admin("POST", "/api/v1/teams", {
        name: `${user} team`,
        members: [user],
        roles: [{ role, projects: ["shop"] }],
      });
      keys[user] = String((await admin("POST", "/api/v1/api-keys", { name: `${user} key`, user })).key);
    }
  }, 90_000);

  afterAll(async () => {
    await test?.close();
  });

  it("runs the published snapshot: draft edits change nothing until published, and publishing is audited", async () => {
    const created = await admin<Body>(
      "POST",
      "/api/v1/projects/shop/runbooks",
      {
        name: "Say version",
        process: {
          steps: [
            { name: "say", kind: "script", config: { script: 'echo "version one: $G"', env: { G: "#{Greeting}" } } },
          ],
        },
      },
      201,
    );
    expect(created).toMatchObject({ slug: "say-version", published: null, draftChanged: true });

    // Nothing published yet: a run is refused, naming what to do.
    const refused = await test.call<Body>("POST", "/api/v1/projects/shop/runbooks/say-version/runs", {
      environment: "staging",
    });
    expect(refused.status).toBe(400);
    expect(String(refused.body.detail)).toContain("never been published");

    const published = await admin<Body>("POST", "/api/v1/projects/shop/runbooks/say-version/publish");
    expect(published).toMatchObject({ published: { version: 1 }, draftChanged: false });

    await admin("PATCH", "/api/v1/projects/shop/runbooks/say-version", {
      process: { steps: [{ name: "say", kind: "script", config: { script: "echo version two" } }] },
    });
    // The project's variable changes too: the published snapshot keeps the value it had.
    const variables = await admin<{ items: { id: string; name: string }[] }>("GET", "/api/v1/projects/shop/variables");
    const greeting = variables.items.find((variable) => variable.name === "Greeting");
    await admin("PATCH", `/api/v1/projects/shop/variables/${greeting?.id}`, { value: "changed later" });

    const first = await run("say-version", { environment: "staging" });
    expect(first.task.state).toBe("succeeded");
    expect(first.created.version).toBe(1);
    expect(first.log).toContain("version one: hello from the project");
    expect(first.log).not.toContain("version two");

    // An editor may run the draft explicitly.
    const draft = await run("say-version", { environment: "staging", draft: true });
    expect(draft.created.version).toBeNull();
    expect(draft.log).toContain("version two");

    await admin("POST", "/api/v1/projects/shop/runbooks/say-version/publish");
    const second = await run("say-version", { environment: "staging" });
    expect(second.created.version).toBe(2);
    expect(second.log).toContain("version two");

    const audit = await auditText();
    const publishes = audit
      .split("\n")
      .filter((line) => line.includes('"runbook.publish"') && line.includes("shop/say-version"));
    expect(publishes).toHaveLength(2);
  }, 60_000);

  it("refuses a parameter that fails validation before any task is queued, naming it", async () => {
    await admin("POST", "/api/v1/projects/shop/runbooks", {
      name: "Resize",
      environments: ["staging", "prod"],
      parameters: [
        { name: "Count", type: "number", min: 1, max: 5 },
        { name: "Mode", type: "choice", choices: ["fast", "safe"], default: "safe" },
        { name: "Reason", type: "string", pattern: "[a-z ]+" },
        { name: "DryRun", type: "boolean", default: false },
      ],
      process: {
        steps: [
          {
            name: "resize",
            kind: "script",
            config: { script: 'echo "resize to $1 ($2, $3)"', arguments: ["#{Count}", "#{Mode}", "#{DryRun}"] },
          },
        ],
      },
    });
    await admin("POST", "/api/v1/projects/shop/runbooks/resize/publish");
    const before = await taskCount();

    const bad = await test.call<{ detail: string; errors: { pointer: string; detail: string }[] }>(
      "POST",
      "/api/v1/projects/shop/runbooks/resize/runs",
      { environment: "staging", parameters: { Count: "9", Mode: "reckless", Unknown: "x" } },
    );
    expect(bad.status).toBe(400);
    const pointers = bad.body.errors.map((error) => error.pointer).sort();
    expect(pointers).toEqual(["/parameters/Count", "/parameters/Mode", "/parameters/Reason", "/parameters/Unknown"]);
    expect(bad.body.errors.find((error) => error.pointer === "/parameters/Count")?.detail).toContain(
      "above the maximum 5",
    );
    expect(bad.body.errors.find((error) => error.pointer === "/parameters/Reason")?.detail).toContain("required");
    expect(bad.body.detail).toContain("nothing was queued");
    expect(await taskCount()).toBe(before);

    const good = await run("resize", { environment: "staging", parameters: { Count: 3, Reason: "more load" } });
    expect(good.task.state).toBe("succeeded");
    expect(good.log).toContain("resize to 3 (safe, false)");
    expect(good.created.parameters).toEqual({ Count: "3", Mode: "safe", Reason: "more load", DryRun: "false" });
  }, 60_000);

  it("never shows a sensitive parameter in a log, an answer or an audit entry", async () => {
    const secret = "hunter2-sensitive-parameter-value";
    await admin("POST", "/api/v1/projects/shop/runbooks", {
      name: "Rotate",
      parameters: [{ name: "Password", sensitive: true, pattern: "[a-z0-9-]+" }],
      process: {
        steps: [
          {
            name: "rotate",
            kind: "script",
            config: {
              // Split across two writes: the masker still hides it.
              script:
                'printf "new password is %s" "$(printf %s "$PW" | head -c 10)"; printf %s "$PW" | tail -c +11; echo',
              env: { PW: "#{Password}" },
            },
          },
        ],
      },
    });
    await admin("POST", "/api/v1/projects/shop/runbooks/rotate/publish");

    // A refused value is not quoted back either.
    const refused = await test.call<Body>("POST", "/api/v1/projects/shop/runbooks/rotate/runs", {
      environment: "staging",
      parameters: { Password: "NOT VALID sensitive-value" },
    });
    expect(refused.status).toBe(400);
    expect(JSON.stringify(refused.body)).toContain("/parameters/Password");
    expect(JSON.stringify(refused.body)).not.toContain("NOT VALID");

    const rotated = await run("rotate", { environment: "staging", parameters: { Password: secret } });
    expect(rotated.task.state).toBe("succeeded");
    expect(rotated.created.parameters).toEqual({ Password: "********" });
    expect(rotated.log).toContain("new password is ");
    expect(rotated.log).not.toContain(secret);
    expect(JSON.stringify(rotated.task)).not.toContain(secret);
    expect(await auditText()).not.toContain(secret);
    const task = await test.call("GET", `/api/v1/tasks/${rotated.created.taskId}`);
    expect(JSON.stringify(task.body)).not.toContain(secret);
    const runs = await admin<Body[]>("GET", "/api/v1/projects/shop/runbooks/rotate/runs");
    expect(runs).toHaveLength(1);
    expect(runs[0]).toMatchObject({
      runId: rotated.created.runId,
      state: "succeeded",
      parameters: { Password: "********" },
    });
    expect(JSON.stringify(runs)).not.toContain(secret);
  }, 60_000);

  it("refuses deployments during a freeze, naming it; an override needs its permission and a reason, and is audited", async () => {
    const now = Date.now();
    await admin("POST", "/api/v1/projects/shop/freezes", {
      name: "Year-end freeze",
      description: "no changes over the holidays",
      environments: ["prod"],
      window: {
        kind: "once",
        from: new Date(now - 3_600_000).toISOString(),
        until: new Date(now + 3_600_000).toISOString(),
      },
    });

    const refused = await test.call<Body>("POST", "/api/v1/projects/shop/deployments", {
      release: "1.0.0",
      environment: "prod",
    });
    expect(refused.status).toBe(409);
    expect(String(refused.body.detail)).toContain("deployment freeze 'Year-end freeze' is in effect");

    // Deploying elsewhere is untouched.
    const staging = await admin<Body>("POST", "/api/v1/projects/shop/deployments", {
      release: "1.0.0",
      environment: "staging",
    });
    expect((await test.waitForTask(String(staging.taskId))).state).toBe("succeeded");

    // A deployer may deploy to prod, but not override a freeze.
    const withoutPermission = await as("dana", "POST", "/api/v1/projects/shop/deployments", {
      release: "1.0.0",
      environment: "prod",
      freezeOverride: "urgent fix",
    });
    expect(withoutPermission.status).toBe(403);
    expect(withoutPermission.text).toContain("overrideFreezes");

    const emptyReason = await test.call<Body>("POST", "/api/v1/projects/shop/deployments", {
      release: "1.0.0",
      environment: "prod",
      freezeOverride: "  ",
    });
    expect(emptyReason.status).toBe(400);
    expect(JSON.stringify(emptyReason.body)).toContain("/freezeOverride");

    const overridden = await admin<Body>("POST", "/api/v1/projects/shop/deployments", {
      release: "1.0.0",
      environment: "prod",
      freezeOverride: "security fix CVE-2026-0001",
    });
    expect(overridden.freezeOverride).toEqual({ freeze: "Year-end freeze", reason: "security fix CVE-2026-0001" });
    expect((await test.waitForTask(String(overridden.taskId))).state).toBe("succeeded");
    const entry = (await auditText())
      .split("\n")
      .find((line) => line.includes('"deployment.create"') && line.includes("CVE-2026-0001"));
    expect(entry).toContain("Year-end freeze");

    // This freeze leaves runbooks alone; one that says so refuses them too.
    const allowed = await run("say-version", { environment: "prod" });
    expect(allowed.task.state).toBe("succeeded");
    await admin("POST", "/api/v1/projects/shop/freezes", {
      name: "Datacenter move",
      environments: ["prod"],
      runbooks: true,
      window: {
        kind: "weekly",
        days: ["mon", "tue", "wed", "thu", "fri", "sat", "sun"],
        at: "00:00",
        durationMinutes: 1440,
      },
      timeZone: "Europe/Berlin",
    });
    const runRefused = await test.call<Body>("POST", "/api/v1/projects/shop/runbooks/say-version/runs", {
      environment: "prod",
    });
    expect(runRefused.status).toBe(409);
    expect(String(runRefused.body.detail)).toContain("deployment freeze 'Datacenter move'");
    const runOverridden = await run("say-version", { environment: "prod", freezeOverride: "backup before the move" });
    expect(runOverridden.task.state).toBe("succeeded");
    expect(runOverridden.log).toContain("freeze overridden: Datacenter move: backup before the move");
    // The override is in the run's audit entry: who, the freeze and the reason.
    const runEntry = (await auditText())
      .split("\n")
      .find((line) => line.includes('"runbook.run"') && line.includes("backup before the move"));
    expect(runEntry).toContain("Datacenter move");
    expect(runEntry).toContain(String(runOverridden.created.runId));
    const runsListed = await admin<Body[]>("GET", "/api/v1/projects/shop/runbooks/say-version/runs");
    expect(runsListed.find((listed) => listed.runId === runOverridden.created.runId)).toMatchObject({
      freezeOverride: "Datacenter move: backup before the move",
    });
    await admin("DELETE", "/api/v1/projects/shop/freezes/Datacenter move", undefined, 204);
    await admin("DELETE", "/api/v1/projects/shop/freezes/Year-end freeze", undefined, 204);
  }, 60_000);

  it("lets a runbook consumer run published runbooks, and nothing else", async () => {
    const ran = await as("casey", "POST", "/api/v1/projects/shop/runbooks/say-version/runs", { environment: "prod" });
    expect(ran.status, ran.text).toBe(201);
    expect((await test.waitForTask(String(ran.body.taskId))).state).toBe("succeeded");

    const deploy = await as("casey", "POST", "/api/v1/projects/shop/deployments", {
      release: "1.0.0",
      environment: "staging",
    });
    expect(deploy.status).toBe(403);
    const edit = await as("casey", "PATCH", "/api/v1/projects/shop/runbooks/say-version", { description: "mine" });
    expect(edit.status).toBe(403);
    const publish = await as("casey", "POST", "/api/v1/projects/shop/runbooks/say-version/publish");
    expect(publish.status).toBe(403);
    const draft = await as("casey", "POST", "/api/v1/projects/shop/runbooks/say-version/runs", {
      environment: "prod",
      draft: true,
    });
    expect(draft.status).toBe(403);
    expect(draft.text).toContain("editRunbooks");
    const process = await as("casey", "PUT", "/api/v1/projects/shop/process", { steps: [] });
    expect(process.status).toBe(403);

    // A runbook that runs only in some environments refuses the others, naming the field.
    const elsewhere = await as("casey", "POST", "/api/v1/projects/shop/runbooks/resize/runs", {
      environment: "nowhere",
      parameters: { Count: 1, Reason: "x" },
    });
    expect(elsewhere.status).toBe(404);
  }, 60_000);
  it("runs a step on the environment's targets by role, or only on the targets a run names", async () => {
    for (const name of ["db-1", "db-2"]) {
      await admin("POST", "/api/v1/targets", { name, environments: ["staging"], roles: ["db"] });
    }
    await admin("POST", "/api/v1/projects/shop/runbooks", {
      name: "Per host",
      process: {
        steps: [
          {
            name: "vacuum",
            kind: "script",
            roles: ["db"],
            config: { script: 'echo "vacuum on $HOST"', env: { HOST: "#{Ferry.Target.Name}" } },
          },
        ],
      },
    });
    await admin("POST", "/api/v1/projects/shop/runbooks/per-host/publish");
    const everywhere = await run("per-host", { environment: "staging" });
    expect(everywhere.log).toContain("vacuum on db-1");
    expect(everywhere.log).toContain("vacuum on db-2");
    const one = await run("per-host", { environment: "staging", targets: ["db-2"] });
    expect(one.log).toContain("vacuum on db-2");
    expect(one.log).not.toContain("vacuum on db-1");
    const unknown = await test.call<Body>("POST", "/api/v1/projects/shop/runbooks/per-host/runs", {
      environment: "staging",
      targets: ["db-9"],
    });
    expect(unknown.status).toBe(400);
    expect(JSON.stringify(unknown.body)).toContain("/targets/0");
  }, 60_000);

  it("waits for a deployment to the environment unless the runbook may overlap it; a consumer cancels a run", async () => {
    await admin("POST", "/api/v1/projects", { name: "gate", lifecycle: "standard" });
    await admin("PUT", "/api/v1/projects/gate/process", {
      steps: [{ name: "hold", kind: "approval", config: { instructions: "hold the environment" } }],
    });
    await admin("POST", "/api/v1/projects/gate/releases", { version: "1.0.0" });
    const deployment = await admin<Body>("POST", "/api/v1/projects/gate/deployments", {
      release: "1.0.0",
      environment: "staging",
    });
    const waitForState = async (taskId: string, state: string) => {
      for (let attempt = 0; attempt < 300; attempt += 1) {
        const task = await admin<Body>("GET", `/api/v1/tasks/${taskId}`);
        if (task.state === state) return;
        await new Promise((resolve) => setTimeout(resolve, 50));
      }
      throw new Error(`task ${taskId} never became ${state}`);
    };
    await waitForState(String(deployment.taskId), "waiting");

    for (const [name, overlapDeployments] of [
      ["Careful", false],
      ["Harmless", true],
    ] as const) {
      await admin("POST", "/api/v1/projects/gate/runbooks", {
        name,
        overlapDeployments,
        process: { steps: [{ name: "say", kind: "script", config: { script: `echo ${name}` } }] },
      });
      await admin("POST", `/api/v1/projects/gate/runbooks/${name.toLowerCase()}/publish`);
    }
    const careful = await admin<Body>("POST", "/api/v1/projects/gate/runbooks/careful/runs", {
      environment: "staging",
    });
    const harmless = await admin<Body>("POST", "/api/v1/projects/gate/runbooks/harmless/runs", {
      environment: "staging",
    });
    expect((await test.waitForTask(String(harmless.taskId))).state).toBe("succeeded");
    expect((await admin<Body>("GET", `/api/v1/tasks/${careful.taskId}`)).state).toBe("queued");

    await admin("POST", `/api/v1/tasks/${deployment.taskId}/decisions`, { decision: "reject" });
    expect((await test.waitForTask(String(deployment.taskId))).state).toBe("failed");
    expect((await test.waitForTask(String(careful.taskId))).state).toBe("succeeded");

    // A runbook consumer stops a run of theirs (cancel needs runRunbooks on a run's task).
    await admin("POST", "/api/v1/projects/shop/runbooks", {
      name: "Slow",
      process: { steps: [{ name: "sleep", kind: "script", config: { script: "sleep 60" } }] },
    });
    await admin("POST", "/api/v1/projects/shop/runbooks/slow/publish");
    const slow = await as("casey", "POST", "/api/v1/projects/shop/runbooks/slow/runs", { environment: "prod" });
    expect(slow.status, slow.text).toBe(201);
    await waitForState(String(slow.body.taskId), "running");
    const cancelled = await as("casey", "POST", `/api/v1/tasks/${slow.body.taskId}/cancel`);
    expect(cancelled.status, cancelled.text).toBe(200);
    expect((await test.waitForTask(String(slow.body.taskId))).state).toBe("cancelled");
  }, 90_000);

  it("asks what to do when a step of a run with guided failure fails: a retry runs it again, and the run succeeds", async () => {
    const marker = `/tmp/ferry-guided-${dialect}-${Date.now()}`;
    await admin("POST", "/api/v1/projects/shop/runbooks", {
      name: "Flaky",
      process: {
        steps: [
          {
            name: "flaky",
            kind: "script",
            config: {
              script:
                'if [ -f "$MARK" ]; then echo "second try works"; rm -f "$MARK"; else touch "$MARK"; echo "first try fails"; exit 3; fi',
              env: { MARK: marker },
            },
          },
          { name: "after", kind: "script", config: { script: "echo after the flaky step" } },
        ],
      },
    });
    await admin("POST", "/api/v1/projects/shop/runbooks/flaky/publish");
    const queued = await admin<Body>(
      "POST",
      "/api/v1/projects/shop/runbooks/flaky/runs",
      { environment: "staging", guidedFailure: true },
      201,
    );
    const taskId = String(queued.taskId);
    let open: Body | undefined;
    for (let attempt = 0; attempt < 400 && !open; attempt += 1) {
      const decisions = await admin<Body[]>("GET", `/api/v1/tasks/${taskId}/decisions`);
      const task = await admin<Body>("GET", `/api/v1/tasks/${taskId}`);
      open = task.state === "waiting" ? decisions.find((decision) => decision.decision === null) : undefined;
      if (!open) await new Promise((resolve) => setTimeout(resolve, 50));
    }
    expect(open, "the run asks what to do").toBeDefined();
    expect(open?.allowed).toEqual(["retry", "skip", "abort"]);
    // A runbook consumer may not retry (resolveFailures), only the ones allowed to resolve failures.
    const byConsumer = await as("casey", "POST", `/api/v1/tasks/${taskId}/decisions`, { decision: "retry" });
    expect(byConsumer.status).toBe(403);
    await admin("POST", `/api/v1/tasks/${taskId}/decisions`, { decision: "retry", comment: "try again" });
    const task = await test.waitForTask(taskId);
    const log = await logOf(taskId);
    expect(task.state, log).toBe("succeeded");
    expect(log).toContain("first try fails");
    expect(log).toContain("second try works");
    expect(log).toContain("after the flaky step");
  }, 60_000);

  it("runs two runbooks that may not overlap deployments side by side; a deployment waits for both (a shared lock)", async () => {
    const waitForState = async (taskId: string, state: string) => {
      for (let attempt = 0; attempt < 300; attempt += 1) {
        const task = await admin<Body>("GET", `/api/v1/tasks/${taskId}`);
        if (task.state === state) return;
        await new Promise((resolve) => setTimeout(resolve, 50));
      }
      throw new Error(`task ${taskId} never became ${state}`);
    };
    const holds: Record<string, string> = {};
    for (const name of ["Hold one", "Hold two"]) {
      await admin("POST", "/api/v1/projects/gate/runbooks", {
        name,
        process: { steps: [{ name: "hold", kind: "approval", config: { instructions: `${name} holds` } }] },
      });
      const slug = name.toLowerCase().replace(" ", "-");
      await admin("POST", `/api/v1/projects/gate/runbooks/${slug}/publish`);
      const queued = await admin<Body>("POST", `/api/v1/projects/gate/runbooks/${slug}/runs`, { environment: "prod" });
      holds[slug] = String(queued.taskId);
    }
    // Both hold the environment's deployment lock at once, each waiting for its approval.
    await waitForState(String(holds["hold-one"]), "waiting");
    await waitForState(String(holds["hold-two"]), "waiting");
    const deployment = await admin<Body>("POST", "/api/v1/projects/gate/deployments", {
      release: "1.0.0",
      environment: "prod",
    });
    await new Promise((resolve) => setTimeout(resolve, 500));
    expect((await admin<Body>("GET", `/api/v1/tasks/${deployment.taskId}`)).state).toBe("queued");
    await admin("POST", `/api/v1/tasks/${holds["hold-one"]}/decisions`, { decision: "approve" });
    expect((await test.waitForTask(String(holds["hold-one"]))).state).toBe("succeeded");
    await new Promise((resolve) => setTimeout(resolve, 500));
    expect((await admin<Body>("GET", `/api/v1/tasks/${deployment.taskId}`)).state).toBe("queued");
    await admin("POST", `/api/v1/tasks/${holds["hold-two"]}/decisions`, { decision: "approve" });
    expect((await test.waitForTask(String(holds["hold-two"]))).state).toBe("succeeded");
    // The deployment's own approval step: it runs now, alone.
    await waitForState(String(deployment.taskId), "waiting");
    await admin("POST", `/api/v1/tasks/${deployment.taskId}/decisions`, { decision: "reject" });
    expect((await test.waitForTask(String(deployment.taskId))).state).toBe("failed");
  }, 90_000);
});
