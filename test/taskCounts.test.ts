import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { type TaskState, taskStates } from "../src/domain/tasks.js";
import {
  claimTasks,
  enqueueTask,
  finishTask,
  interruptExpiredTasks,
  listTasks,
  requestCancel,
  setActiveState,
} from "../src/store/tasks.js";
import { dialects, openTestDatabase, type TestDatabase } from "./helpers/databases.js";

const page = { limit: 1, offset: 0 };

describe.each(dialects)("task list totals on %s", (dialect) => {
  let database: TestDatabase;
  const db = () => database.store.db;

  beforeAll(async () => {
    database = await openTestDatabase(dialect);
  });
  afterAll(async () => {
    await database?.dispose();
  });

  const enqueue = (title: string) =>
    enqueueTask(db(), { kind: "test", title, payload: {}, lockKeys: [], createdBy: "test" });
  const claim = (owner: string, capacity: number) => claimTasks(db(), dialect, { owner, capacity, leaseMs: 60_000 });

  /** The totals the list reports (from the per-state counts) against the rows counted one by one. */
  async function expectExactTotals(expected: Partial<Record<TaskState, number>>) {
    const rows = await db()
      .selectFrom("tasks")
      .select((eb) => ["state", eb.fn.countAll<number | string>().as("count")])
      .groupBy("state")
      .execute();
    const counted = Object.fromEntries(rows.map((row) => [row.state, Number(row.count)]));
    const all = Object.values(expected).reduce((sum, count) => sum + count, 0);
    expect(counted).toEqual(Object.fromEntries(Object.entries(expected).filter(([, count]) => count > 0)));
    expect((await listTasks(db(), page)).total).toBe(all);
    for (const state of taskStates) {
      expect((await listTasks(db(), page, { states: [state] })).total, state).toBe(expected[state] ?? 0);
    }
    expect((await listTasks(db(), page, { states: ["succeeded", "failed"] })).total).toBe(
      (expected.succeeded ?? 0) + (expected.failed ?? 0),
    );
  }

  it("stays exact through enqueue, claim, waiting, every outcome, interruption and deletion", async () => {
    await expectExactTotals({});
    const tasks = [];
    for (let index = 0; index < 7; index++) tasks.push(await enqueue(`task ${index}`));
    await expectExactTotals({ queued: 7 });

    const claimed = await claim("engine_a", 5);
    expect(claimed).toHaveLength(5);
    await expectExactTotals({ queued: 2, running: 5 });

    const [first, second, third, fourth, fifth] = claimed.map((task) => task.id);
    expect(await setActiveState(db(), String(first), "engine_a", "waiting")).toBe(true);
    await expectExactTotals({ queued: 2, running: 4, waiting: 1 });
    expect(await setActiveState(db(), String(first), "engine_a", "running")).toBe(true);
    await expectExactTotals({ queued: 2, running: 5 });

    expect(await finishTask(db(), String(first), "engine_a", { state: "succeeded", result: {} })).toBe(true);
    expect(await finishTask(db(), String(second), "engine_a", { state: "failed", error: "broke" })).toBe(true);
    expect(await finishTask(db(), String(third), "engine_a", { state: "cancelled" })).toBe(true);
    // A claim already lost changes nothing, and neither may the counts.
    expect(await finishTask(db(), String(first), "engine_a", { state: "failed" })).toBe(false);
    await expectExactTotals({ queued: 2, running: 2, succeeded: 1, failed: 1, cancelled: 1 });

    const queued = tasks.filter((task) => !claimed.some((row) => row.id === task.id));
    expect(await requestCancel(db(), String(queued[0]?.id))).toBe("cancelled");
    // Cancelling a running task only raises its flag: its state (and the counts) stay.
    expect(await requestCancel(db(), String(fourth))).toBe("running");
    await expectExactTotals({ queued: 1, running: 2, succeeded: 1, failed: 1, cancelled: 2 });

    // The server running the last two died: their leases ran out.
    await db()
      .updateTable("tasks")
      .set({ lease_expires_at: new Date(Date.now() - 1000).toISOString() })
      .where("id", "in", [String(fourth), String(fifth)])
      .execute();
    expect(await interruptExpiredTasks(db())).toHaveLength(2);
    await expectExactTotals({ queued: 1, succeeded: 1, failed: 1, cancelled: 2, interrupted: 2 });

    // Deletion (a retention job, an operator's clean-up) is counted too.
    await db().deleteFrom("tasks").where("state", "in", ["cancelled", "failed"]).execute();
    await expectExactTotals({ queued: 1, succeeded: 1, interrupted: 2 });
    await db().deleteFrom("tasks").execute();
    await expectExactTotals({});
  });

  it("stays exact with concurrent enqueues and claims, and with rows written around the store", async () => {
    await Promise.all(Array.from({ length: 20 }, (_, index) => enqueue(`concurrent ${index}`)));
    const claims = await Promise.all([claim("engine_a", 4), claim("engine_b", 4), claim("engine_c", 4)]);
    const running = claims.flat();
    expect(new Set(running.map((task) => task.id)).size).toBe(running.length);
    await Promise.all(
      running.map((task, index) =>
        finishTask(db(), task.id, String(task.lease_owner), { state: index % 2 === 0 ? "succeeded" : "failed" }),
      ),
    );
    const finished = running.length;
    await expectExactTotals({
      queued: 20 - finished,
      succeeded: Math.ceil(finished / 2),
      failed: Math.floor(finished / 2),
    });

    // A fixture or bulk load inserting many tasks in one statement, without the store.
    const now = new Date().toISOString();
    await db()
      .insertInto("tasks")
      .values(
        Array.from({ length: 30 }, (_, index) => ({
          id: `task_bulk${index}`,
          sequence: 1000 + index,
          kind: "deployment",
          state: index < 10 ? "succeeded" : "interrupted",
          title: `bulk ${index}`,
          project_id: null,
          environment_id: null,
          payload: "{}",
          result: null,
          error: null,
          created_by: "test",
          created_at: now,
          started_at: null,
          finished_at: null,
          lease_owner: null,
          lease_expires_at: null,
          cancel_requested: 0,
          log_lines: 0,
          log_bytes: 0,
        })),
      )
      .execute();
    await expectExactTotals({
      queued: 20 - finished,
      succeeded: Math.ceil(finished / 2) + 10,
      failed: Math.floor(finished / 2),
      interrupted: 20,
    });
  });

  it("counts the rows when a filter other than the state is set", async () => {
    const project = "prj_counted";
    await enqueueTask(db(), {
      kind: "test",
      title: "in a project",
      projectId: project,
      payload: {},
      lockKeys: [],
      createdBy: "test",
    });
    expect((await listTasks(db(), page, { projectId: project })).total).toBe(1);
    expect((await listTasks(db(), page, { projectId: project, states: ["queued"] })).total).toBe(1);
    expect((await listTasks(db(), page, { projectId: project, states: ["succeeded"] })).total).toBe(0);
  });
});
