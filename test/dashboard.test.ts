import { setTimeout as sleep } from "node:timers/promises";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { dialects } from "./helpers/databases.js";
import { startTestServerOn, type TestServer } from "./helpers/server.js";

interface Deployment {
  deploymentId: string;
  taskId: string;
  release: string;
  state: string;
  createdAt: string;
  startedAt: string | null;
  finishedAt: string | null;
}

interface Dashboard {
  generatedAt: string;
  environments: { id: string; slug: string; name: string }[];
  items: {
    project: { id: string; slug: string; name: string };
    lifecycle: string;
    environments: { environment: string; inLifecycle: boolean; latest: Deployment | null; live: Deployment | null }[];
  }[];
  total: number;
  limit: number;
  offset: number;
}

describe.each(dialects)("dashboard on %s", (dialect) => {
  let test: TestServer;

  const dashboard = async (query = "") => {
    const response = await test.call<Dashboard>("GET", `/api/v1/dashboard${query}`);
    expect(response.status, JSON.stringify(response.body)).toBe(200);
    return response.body;
  };
  const row = (body: Dashboard, project: string) => {
    const found = body.items.find((item) => item.project.slug === project);
    if (!found) throw new Error(`project ${project} is not on the dashboard: ${JSON.stringify(body.items)}`);
    return Object.fromEntries(found.environments.map((cell) => [cell.environment, cell]));
  };
  const release = async (project: string, version: string, steps: unknown[]) => {
    expect((await test.call("PUT", `/api/v1/projects/${project}/process`, { steps })).status).toBe(200);
    const created = await test.call<{ deployments: { taskId: string }[] }>(
      "POST",
      `/api/v1/projects/${project}/releases`,
      { version },
    );
    expect(created.status).toBe(201);
    // The first phase auto-deploys: the dev deployment's task.
    return created.body.deployments[0]?.taskId ?? "";
  };
  const waitForState = async (taskId: string, state: string) => {
    for (let attempt = 0; attempt < 600; attempt++) {
      const { body } = await test.call<{ state: string }>("GET", `/api/v1/tasks/${taskId}`);
      if (body.state === state) return;
      await sleep(50);
    }
    throw new Error(`task ${taskId} never became ${state}`);
  };

  const echo = [{ name: "deploy", kind: "script", config: { script: "echo deploying" } }];

  beforeAll(async () => {
    test = await startTestServerOn(dialect);
    for (const name of ["dev", "test", "prod"]) await test.call("POST", "/api/v1/environments", { name });
    await test.call("POST", "/api/v1/lifecycles", {
      name: "default",
      phases: [{ environments: ["dev"], autoDeploy: true }, { environments: ["test"] }, { environments: ["prod"] }],
    });
    await test.call("POST", "/api/v1/lifecycles", { name: "test only", phases: [{ environments: ["test"] }] });
    for (const name of ["shop", "api", "tool"]) {
      expect((await test.call("POST", "/api/v1/projects", { name, lifecycle: "default" })).status).toBe(201);
    }

    // shop: 1.0.0 succeeds in dev and test; 1.1.0 fails in dev; 1.2.0 waits for an approval in dev.
    expect((await test.waitForTask(await release("shop", "1.0.0", echo))).state).toBe("succeeded");
    const toTest = await test.call<{ taskId: string }>("POST", "/api/v1/projects/shop/deployments", {
      release: "1.0.0",
      environment: "test",
    });
    expect((await test.waitForTask(toTest.body.taskId)).state).toBe("succeeded");
    const failing = [{ name: "deploy", kind: "script", config: { script: "exit 3" } }];
    expect((await test.waitForTask(await release("shop", "1.1.0", failing))).state).toBe("failed");

    // tool: deployed to dev, then moved to a lifecycle without dev.
    expect((await test.waitForTask(await release("tool", "0.1.0", echo))).state).toBe("succeeded");
    expect((await test.call("PATCH", "/api/v1/projects/tool", { lifecycle: "test-only" })).status).toBe(200);
  });
  afterAll(async () => {
    await test?.close();
  });

  it("refuses a call without an API key", async () => {
    const response = await fetch(new URL("/api/v1/dashboard", test.server.url));
    expect(response.status).toBe(401);
    expect(await response.json()).toMatchObject({ type: "urn:ferry:problem:unauthenticated" });
  });

  it("shows the live release apart from a newer failed deployment, and empty cells", async () => {
    const body = await dashboard();
    expect(body.total).toBe(3);
    expect(body.environments.map((environment) => environment.slug)).toEqual(["dev", "test", "prod"]);
    expect(body.items.map((item) => item.project.slug)).toEqual(["api", "shop", "tool"]);

    const shop = row(body, "shop");
    expect(shop.dev).toMatchObject({
      inLifecycle: true,
      latest: { release: "1.1.0", state: "failed" },
      live: { release: "1.0.0", state: "succeeded" },
    });
    expect(shop.dev?.latest?.finishedAt).not.toBeNull();
    expect(shop.test).toMatchObject({ latest: { release: "1.0.0", state: "succeeded" }, live: { release: "1.0.0" } });
    expect(shop.test?.latest?.deploymentId).toBe(shop.test?.live?.deploymentId);
    expect(shop.prod).toEqual({ environment: "prod", inLifecycle: true, latest: null, live: null });

    const api = row(body, "api");
    expect(Object.keys(api)).toEqual(["dev", "test", "prod"]);
    expect(Object.values(api).every((cell) => cell.latest === null && cell.live === null)).toBe(true);
  });

  it("keeps an environment the project deployed to after its lifecycle dropped it", async () => {
    const tool = row(await dashboard(), "tool");
    expect(Object.keys(tool)).toEqual(["dev", "test"]);
    expect(tool.dev).toMatchObject({ inLifecycle: false, live: { release: "0.1.0" } });
    expect(tool.test).toMatchObject({ inLifecycle: true, latest: null, live: null });
  });

  it("shows a deployment waiting for approval, then cancelled, without moving the live release", async () => {
    const approval = [{ name: "approve", kind: "approval", config: { instructions: "check the shop" } }];
    const taskId = await release("shop", "1.2.0", approval);
    await waitForState(taskId, "waiting");
    expect(row(await dashboard(), "shop").dev).toMatchObject({
      latest: { release: "1.2.0", state: "waiting", taskId, finishedAt: null },
      live: { release: "1.0.0" },
    });
    expect((await test.call("POST", `/api/v1/tasks/${taskId}/cancel`)).status).toBe(200);
    await test.waitForTask(taskId);
    expect(row(await dashboard(), "shop").dev).toMatchObject({
      latest: { release: "1.2.0", state: "cancelled" },
      live: { release: "1.0.0" },
    });
  });

  it("filters by project and environment, and pages by project name", async () => {
    const onlyShop = await dashboard("?project=shop");
    expect(onlyShop.total).toBe(1);
    expect(onlyShop.items.map((item) => item.project.slug)).toEqual(["shop"]);

    const onlyTest = await dashboard("?environment=test");
    expect(onlyTest.environments.map((environment) => environment.slug)).toEqual(["test"]);
    expect(onlyTest.items.map((item) => item.environments.map((cell) => cell.environment))).toEqual([
      ["test"],
      ["test"],
      ["test"],
    ]);
    expect(row(onlyTest, "shop").test).toMatchObject({ live: { release: "1.0.0" } });

    const second = await dashboard("?limit=1&offset=1");
    expect(second).toMatchObject({ total: 3, limit: 1, offset: 1 });
    expect(second.items.map((item) => item.project.slug)).toEqual(["shop"]);
  });

  it("says which filter names nothing", async () => {
    const response = await test.call<{ type: string; errors: { pointer: string; in: string }[] }>(
      "GET",
      "/api/v1/dashboard?project=nope&environment=test",
    );
    expect(response.status).toBe(400);
    expect(response.body.errors).toEqual([expect.objectContaining({ pointer: "/project", in: "query" })]);
  });

  it("ignores tasks that are not deployments, and the task list still counts every task", async () => {
    const counted = async () => {
      const { body } = await test.call<{ items: unknown[]; total: number }>("GET", "/api/v1/tasks?limit=500");
      expect(body.total).toBe(body.items.length);
      return body.total;
    };
    const before = await counted();
    const shop = await test.call<{ id: string }>("GET", "/api/v1/projects/shop");
    const dev = await test.call<{ id: string }>("GET", "/api/v1/environments/dev");
    // Written around the engine, as a fixture would: the task counter does not know this row.
    await test.server.store.db
      .insertInto("tasks")
      .values({
        id: "task_fixture_runbook",
        sequence: 100_000,
        kind: "runbook",
        state: "succeeded",
        title: "Back up the shop database",
        project_id: shop.body.id,
        environment_id: dev.body.id,
        payload: "{}",
        result: null,
        error: null,
        created_by: "test",
        created_at: new Date().toISOString(),
        started_at: new Date().toISOString(),
        finished_at: new Date().toISOString(),
        lease_owner: null,
        lease_expires_at: null,
        cancel_requested: 0,
        log_lines: 0,
        log_bytes: 0,
      })
      .execute();
    expect(await counted()).toBe(before + 1);
    expect(row(await dashboard(), "shop").dev).toMatchObject({
      latest: { release: "1.2.0", state: "cancelled" },
      live: { release: "1.0.0" },
    });
  });

  it("skips a deployment task whose deployment row is not written yet", async () => {
    const shop = await test.call<{ id: string }>("GET", "/api/v1/projects/shop");
    const environment = await test.call<{ id: string }>("GET", "/api/v1/environments/test");
    // The moment between queueing a deployment's task and inserting its row, frozen.
    await test.server.store.db
      .insertInto("tasks")
      .values({
        id: "task_fixture_unrecorded",
        sequence: 100_001,
        kind: "deployment",
        state: "failed",
        title: "Deploy shop to test",
        project_id: shop.body.id,
        environment_id: environment.body.id,
        payload: "{}",
        result: null,
        error: "deployment was not recorded",
        created_by: "test",
        created_at: new Date().toISOString(),
        started_at: null,
        finished_at: new Date().toISOString(),
        lease_owner: null,
        lease_expires_at: null,
        cancel_requested: 0,
        log_lines: 0,
        log_bytes: 0,
      })
      .execute();
    expect(row(await dashboard(), "shop").test).toMatchObject({
      latest: { release: "1.0.0", state: "succeeded" },
      live: { release: "1.0.0" },
    });
  });

  it("is described in the OpenAPI document", async () => {
    const { body } = await test.call<{ paths: Record<string, unknown> }>("GET", "/api/v1/openapi.json");
    expect(body.paths).toHaveProperty(["/api/v1/dashboard", "get"]);
  });
});
