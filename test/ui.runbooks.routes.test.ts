import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { callExpecting } from "./helpers/api.js";
import { dialects } from "./helpers/databases.js";
import { startTestServerOn, type TestServer } from "./helpers/server.js";

/*
 * What the dashboard's runbook pages need from the API, through a real server on SQLite and
 * PostgreSQL: the published version's own process and parameters beside a changed draft
 * (a run form must offer the published parameters), the last run of each runbook in each
 * environment the caller may view, runs a page at a time, and a runbook run's task saying
 * which runbook, version and parameters it ran — sensitive values masked.
 */

type Body = Record<string, unknown>;
interface RunSummary {
  runId: string;
  taskId: string;
  environment: string;
  version: number | null;
  state: string;
  createdAt: string;
  finishedAt: string | null;
  parameters: Record<string, string>;
}

describe.each(dialects)("runbook API for the dashboard (%s)", (dialect) => {
  let test: TestServer;
  let stagingOnlyKey = "";

  function admin<T = Body>(method: string, path: string, body?: unknown, status?: number): Promise<T> {
    return callExpecting<T>(test, method, path, body, status);
  }

  async function run(runbook: string, body: Body): Promise<{ taskId: string; runId: string }> {
    const created = await admin<{ taskId: string; runId: string }>(
      "POST",
      `/api/v1/projects/shop/runbooks/${runbook}/runs`,
      body,
      201,
    );
    await test.waitForTask(created.taskId);
    return created;
  }

  beforeAll(async () => {
    test = await startTestServerOn(dialect);
    for (const name of ["staging", "prod"]) await admin("POST", "/api/v1/environments", { name });
    await admin("POST", "/api/v1/lifecycles", { name: "standard", phases: [{ environments: ["staging", "prod"] }] });
    await admin("POST", "/api/v1/projects", { name: "shop", lifecycle: "standard" });
    await admin("POST", "/api/v1/targets", { name: "db-1", environments: ["staging", "prod"], roles: ["db"] });
    await admin("POST", "/api/v1/users", { username: "sam", password: "sam-long-password" });
    await admin("POST", "/api/v1/teams", {
      name: "staging operators",
      members: ["sam"],
      roles: [{ role: "runbook-consumer", projects: ["shop"], environments: ["staging"] }],
    });
    stagingOnlyKey = String((await admin("POST", "/api/v1/api-keys", { name: "sam key", user: "sam" })).key);

    await admin("POST", "/api/v1/projects/shop/runbooks", {
      name: "Flush cache",
      description: "Empties a cache",
      process: {
        steps: [{ name: "flush", kind: "script", config: { script: 'echo "flushing $1"', arguments: ["#{Region}"] } }],
      },
      parameters: [
        { name: "Region", type: "choice", choices: ["eu", "us"] },
        { name: "Token", sensitive: true, required: false },
      ],
    });
    await admin("POST", "/api/v1/projects/shop/runbooks/flush-cache/publish");
    await admin("POST", "/api/v1/projects/shop/runbooks", {
      name: "Never run",
      process: { steps: [{ name: "noop", kind: "script", config: { script: "true" } }] },
    });
  }, 90_000);

  afterAll(async () => {
    await test?.close();
  });

  it("shows the published version's process and parameters beside a draft that changed them", async () => {
    await admin("PATCH", "/api/v1/projects/shop/runbooks/flush-cache", {
      parameters: [{ name: "Region", type: "choice", choices: ["eu", "us", "ap"] }],
      process: { steps: [{ name: "flush-all", kind: "script", config: { script: "echo all" } }] },
    });
    const runbook = await admin<Body & { published: Body; parameters: Body[] }>(
      "GET",
      "/api/v1/projects/shop/runbooks/flush-cache",
    );
    expect(runbook.draftChanged).toBe(true);
    expect(runbook.parameters).toHaveLength(1);
    expect(runbook.published).toMatchObject({
      version: 1,
      description: "Empties a cache",
      process: { steps: [{ name: "flush" }] },
      parameters: [
        { name: "Region", type: "choice", choices: ["eu", "us"] },
        { name: "Token", sensitive: true },
      ],
      environments: [],
      overlapDeployments: false,
      overlapItself: false,
    });
    // The snapshot's variables (sealed values) are no part of the answer.
    expect(runbook.published).not.toHaveProperty("variables");
    const unpublished = await admin<Body>("GET", "/api/v1/projects/shop/runbooks/never-run");
    expect(unpublished.published).toBeNull();
  });

  it("lists each runbook's last run per environment the caller may view, and pages its runs", async () => {
    const first = await run("flush-cache", { environment: "staging", parameters: { Region: "eu" } });
    const newest = await run("flush-cache", {
      environment: "staging",
      parameters: { Region: "us", Token: "tok-7c1f-secret" },
      targets: ["db-1"],
    });
    const inProd = await run("flush-cache", { environment: "prod", parameters: { Region: "eu" } });

    const list = await admin<(Body & { slug: string; lastRuns: RunSummary[] })[]>(
      "GET",
      "/api/v1/projects/shop/runbooks",
    );
    const flush = list.find((runbook) => runbook.slug === "flush-cache");
    expect(flush?.lastRuns.map((each) => [each.environment, each.taskId])).toEqual([
      ["prod", inProd.taskId],
      ["staging", newest.taskId],
    ]);
    const latest = flush?.lastRuns[1];
    expect(latest).toMatchObject({ state: "succeeded", version: 1, parameters: { Region: "us", Token: "********" } });
    expect(Date.parse(latest?.finishedAt ?? "")).toBeGreaterThanOrEqual(Date.parse(latest?.createdAt ?? ""));
    expect(list.find((runbook) => runbook.slug === "never-run")?.lastRuns).toEqual([]);
    expect(JSON.stringify(list)).not.toContain("tok-7c1f-secret");

    // Someone who may view staging only sees staging's last run, and staging's runs.
    const limited = await fetch(new URL("/api/v1/projects/shop/runbooks", test.server.url), {
      headers: { authorization: `Bearer ${stagingOnlyKey}` },
    });
    expect(limited.status).toBe(200);
    const seen = (await limited.json()) as { slug: string; lastRuns: RunSummary[] }[];
    expect(seen.find((runbook) => runbook.slug === "flush-cache")?.lastRuns.map((each) => each.environment)).toEqual([
      "staging",
    ]);
    const limitedRuns = await fetch(
      new URL("/api/v1/projects/shop/runbooks/flush-cache/runs?limit=2", test.server.url),
      {
        headers: { authorization: `Bearer ${stagingOnlyKey}` },
      },
    );
    // The reach is part of the query: two staging runs fill the page, although prod's is newer.
    expect(((await limitedRuns.json()) as RunSummary[]).map((each) => each.taskId)).toEqual([
      newest.taskId,
      first.taskId,
    ]);

    // Pages, newest first.
    const pageOne = await admin<RunSummary[]>("GET", "/api/v1/projects/shop/runbooks/flush-cache/runs?limit=2");
    const pageTwo = await admin<RunSummary[]>(
      "GET",
      "/api/v1/projects/shop/runbooks/flush-cache/runs?limit=2&offset=2",
    );
    expect([...pageOne, ...pageTwo].map((each) => each.taskId)).toEqual([inProd.taskId, newest.taskId, first.taskId]);
    const bad = await test.call<Body>("GET", "/api/v1/projects/shop/runbooks/flush-cache/runs?offset=-1");
    expect(bad.status).toBe(400);
    expect(JSON.stringify(bad.body)).toContain("offset");
  }, 60_000);

  it("says on a runbook run's task which runbook, version, targets and parameters it ran, sensitive ones masked", async () => {
    const created = await run("flush-cache", {
      environment: "staging",
      parameters: { Region: "eu", Token: "tok-99aa-secret" },
      targets: ["db-1"],
    });
    const task = await admin<Body>("GET", `/api/v1/tasks/${created.taskId}`);
    expect(task.kind).toBe("runbook");
    expect(task.runbookRun).toEqual({
      runId: created.runId,
      taskId: created.taskId,
      runbook: "flush-cache",
      runbookName: "Flush cache",
      environment: "staging",
      version: 1,
      parameters: { Region: "eu", Token: "********" },
      freezeOverride: null,
      targets: ["db-1"],
      // Run by a person, not a schedule.
      cause: null,
      scheduledFor: null,
    });
    expect(JSON.stringify(task)).not.toContain("tok-99aa-secret");

    // A draft run says so (version null); a deployment's task has no runbookRun.
    const draft = await run("flush-cache", { environment: "staging", parameters: { Region: "ap" }, draft: true });
    expect((await admin<{ runbookRun: Body }>("GET", `/api/v1/tasks/${draft.taskId}`)).runbookRun).toMatchObject({
      version: null,
      targets: null,
      parameters: { Region: "ap" },
    });
    await admin("PUT", "/api/v1/projects/shop/process", {
      steps: [{ name: "deploy", kind: "script", config: { script: "echo deployed" } }],
    });
    await admin("POST", "/api/v1/projects/shop/releases", { version: "1.0.0" });
    const deployment = await admin<{ taskId: string }>("POST", "/api/v1/projects/shop/deployments", {
      release: "1.0.0",
      environment: "staging",
    });
    expect(await admin<Body>("GET", `/api/v1/tasks/${deployment.taskId}`)).not.toHaveProperty("runbookRun");
    await test.waitForTask(deployment.taskId);
  }, 60_000);
});
