import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { findNamed } from "../src/store/common.js";
import { startTestApp, type TestApp } from "./helpers/app.js";
import { dialects } from "./helpers/databases.js";

/** Hours after 2026-01-01T00:00Z as an ISO time. */
const at = (hours: number) => new Date(Date.UTC(2026, 0, 1) + hours * 3_600_000).toISOString();

/*
 * The history of src/domain/dora.test.ts (worked out by hand there), stored as real rows:
 * releases with their creation times, deployment tasks with their outcomes and end times.
 */
const releaseHours: Record<string, number> = { r1: -4, r2: 24, r3: 48, r4: 96, r5: 168 };
const prodHistory: [release: string, kind: string, state: string, finishedHour: number][] = [
  ["r1", "deploy", "succeeded", -2],
  ["r1", "deploy", "succeeded", 1],
  ["r2", "promote", "succeeded", 26],
  ["r1", "rollback", "succeeded", 27],
  ["r3", "deploy", "failed", 52],
  ["r3", "deploy", "cancelled", 53],
  ["r3", "deploy", "succeeded", 58],
  ["r4", "auto", "succeeded", 108],
  ["r5", "deploy", "interrupted", 169],
  ["r5", "deploy", "failed", 170],
  ["r4", "rollback", "succeeded", 171],
  ["r5", "deploy", "succeeded", 216],
  ["r4", "rollback", "failed", 217],
  ["r4", "rollback", "succeeded", 246],
  ["r5", "deploy", "succeeded", 264],
];

async function seed(test: TestApp): Promise<void> {
  for (const name of ["staging", "prod"])
    await test.app.inject({ method: "POST", url: "/api/v1/environments", headers: test.auth, payload: { name } });
  await test.app.inject({
    method: "POST",
    url: "/api/v1/lifecycles",
    headers: test.auth,
    payload: { name: "default", phases: [{ environments: ["staging"] }, { environments: ["prod"] }] },
  });
  await test.app.inject({
    method: "POST",
    url: "/api/v1/projects",
    headers: test.auth,
    payload: { name: "shop", lifecycle: "default" },
  });
  const { db } = test.database.context;
  const project = await findNamed(db, "projects", "shop");
  const prod = await findNamed(db, "environments", "prod");
  const staging = await findNamed(db, "environments", "staging");
  for (const [version, hour] of Object.entries(releaseHours)) {
    await db
      .insertInto("releases")
      .values({
        id: `rel_${version}`,
        project_id: project.id,
        version,
        notes: "",
        snapshot: "{}",
        created_by: "test",
        created_at: at(hour),
        variables_updated_at: null,
        variables_updated_by: null,
      })
      .execute();
  }
  const history = [
    ...prodHistory.map((entry) => ({ entry, environmentId: prod.id })),
    { entry: ["r2", "deploy", "succeeded", 25] as const, environmentId: staging.id },
  ];
  for (const [index, { entry, environmentId }] of history.entries()) {
    const [release, kind, state, hour] = entry;
    const taskId = `task_dora_${index}`;
    await db
      .insertInto("tasks")
      .values({
        id: taskId,
        sequence: 10_000 + index,
        kind: "deployment",
        state,
        title: `Deploy shop ${release}`,
        project_id: project.id,
        environment_id: environmentId,
        payload: "{}",
        result: null,
        error: null,
        created_by: "test",
        created_at: at(hour - 0.5),
        started_at: at(hour - 0.25),
        finished_at: at(hour),
        lease_owner: null,
        lease_expires_at: null,
        cancel_requested: 0,
        log_lines: 0,
        log_bytes: 0,
      })
      .execute();
    await db
      .insertInto("deployments")
      .values({
        id: `dep_dora_${index}`,
        project_id: project.id,
        release_id: `rel_${release}`,
        environment_id: environmentId,
        task_id: taskId,
        created_at: at(hour - 0.5),
        kind,
      })
      .execute();
  }
}

describe.each(dialects)("GET /api/v1/dora on %s", (dialect) => {
  let test: TestApp;
  const get = (query: string) => test.app.inject({ method: "GET", url: `/api/v1/dora?${query}`, headers: test.auth });

  beforeAll(async () => {
    test = await startTestApp(dialect);
    await seed(test);
  });
  afterAll(async () => {
    await test?.close();
  });

  it("matches the hand-computed figures of the seeded history", async () => {
    const response = await get(`project=shop&environment=prod&from=${at(0)}&to=${at(240)}`);
    expect(response.statusCode).toBe(200);
    expect(response.json()).toEqual({
      from: "2026-01-01T00:00:00.000Z",
      to: "2026-01-11T00:00:00.000Z",
      series: [
        {
          project: "shop",
          environment: "prod",
          deploymentFrequency: { deployments: 5, perDay: 0.5 },
          leadTime: { releases: 4, medianSeconds: 39_600, meanSeconds: 64_800 },
          changeFailureRate: { changes: 8, failures: 5, rate: 0.625 },
          timeToRestore: { incidents: 4, restored: 4, medianSeconds: 14_400, meanSeconds: 35_100 },
        },
      ],
    });
  });

  it("lists each environment separately, in environment order, when none is given", async () => {
    const response = await get(`project=shop&from=${encodeURIComponent("2026-01-01T01:00:00+01:00")}&to=${at(240)}`);
    expect(response.statusCode).toBe(200);
    const body = response.json() as {
      from: string;
      series: { environment: string; deploymentFrequency: { deployments: number } }[];
    };
    expect(body.from).toBe("2026-01-01T00:00:00.000Z");
    expect(body.series.map((series) => [series.environment, series.deploymentFrequency.deployments])).toEqual([
      ["staging", 1],
      ["prod", 5],
    ]);
  });

  it("answers a pair without deployments with zeros, and refuses bad windows and unknown names", async () => {
    await test.app.inject({
      method: "POST",
      url: "/api/v1/environments",
      headers: test.auth,
      payload: { name: "dev" },
    });
    const empty = await get("project=shop&environment=dev");
    expect(empty.statusCode).toBe(200);
    expect((empty.json() as { series: unknown[] }).series).toEqual([
      {
        project: "shop",
        environment: "dev",
        deploymentFrequency: { deployments: 0, perDay: 0 },
        leadTime: { releases: 0, medianSeconds: null, meanSeconds: null },
        changeFailureRate: { changes: 0, failures: 0, rate: null },
        timeToRestore: { incidents: 0, restored: 0, medianSeconds: null, meanSeconds: null },
      },
    ]);
    expect((await get(`from=${at(10)}&to=${at(5)}`)).statusCode).toBe(400);
    expect((await get("from=yesterday")).statusCode).toBe(400);
    expect((await get("project=nope")).statusCode).toBe(404);
    expect((await test.app.inject({ method: "GET", url: "/api/v1/dora" })).statusCode).toBe(401);
  });
});
