import { setTimeout as sleep } from "node:timers/promises";
import { pino } from "pino";
import { afterAll, afterEach, beforeAll, describe, expect, it } from "vitest";
import { z } from "zod";
import type { TaskState } from "../src/domain/tasks.js";
import { TaskEngine } from "../src/engine/engine.js";
import { TaskFailure, type TaskKind } from "../src/engine/types.js";
import { enqueueTask, getTaskRow, readLogLines } from "../src/store/tasks.js";
import { dialects, openTestDatabase, type TestDatabase } from "./helpers/databases.js";

const logger = pino({ level: process.env.TEST_LOG_LEVEL ?? "silent" });

/** A task kind for exercising the engine: sleeps, records when it ran, can fail or hang. */
function recordingKind() {
  const events: { id: string; label: string; event: "start" | "end" }[] = [];
  const cleaned: string[] = [];
  const kind: TaskKind<{ label: string; sleepMs: number; fail?: boolean }> = {
    kind: "test",
    payload: z.object({ label: z.string(), sleepMs: z.number(), fail: z.boolean().optional() }),
    async run(context, payload) {
      events.push({ id: context.taskId, label: payload.label, event: "start" });
      await context.log.step("work", async () => {
        context.log.info(`working on ${payload.label}`);
        await sleep(payload.sleepMs, undefined, { signal: context.signal });
      });
      events.push({ id: context.taskId, label: payload.label, event: "end" });
      if (payload.fail) throw new TaskFailure(`${payload.label} was told to fail`);
      return { label: payload.label };
    },
    async cleanup(taskId) {
      cleaned.push(taskId);
    },
  };
  return { kind, events, cleaned };
}

async function waitForState(database: TestDatabase, taskId: string, states: TaskState[], timeoutMs = 10_000) {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const row = await getTaskRow(database.store.db, taskId);
    if (states.includes(row.state as TaskState)) return row;
    if (Date.now() > deadline) throw new Error(`task ${taskId} stayed ${row.state}, wanted ${states.join("/")}`);
    await sleep(20);
  }
}

describe.each(dialects)("task engine on %s", (dialect) => {
  let database: TestDatabase;
  const engines: TaskEngine[] = [];
  const startEngine = async (kind: TaskKind, options: { concurrency?: number; leaseMs?: number } = {}) => {
    const engine = new TaskEngine({
      db: database.store.db,
      dialect,
      kinds: [kind as TaskKind],
      logger,
      pollMs: 50,
      leaseMs: options.leaseMs ?? 3000,
      concurrency: options.concurrency ?? 4,
      taskLog: { flushIntervalMs: 20 },
    });
    await engine.start();
    engines.push(engine);
    return engine;
  };

  beforeAll(async () => {
    database = await openTestDatabase(dialect);
  });
  // A test that fails before it stops its engine must not leave it claiming the next test's tasks.
  afterEach(async () => {
    for (const engine of engines.splice(0)) await engine.stop(1000);
  });
  afterAll(async () => {
    await database?.dispose();
  });

  it("runs a task to success with its log, step boundaries and result", async () => {
    const { kind } = recordingKind();
    const engine = await startEngine(kind as TaskKind);
    const task = await engine.enqueue({
      kind: "test",
      title: "one",
      payload: { label: "one", sleepMs: 10 },
      lockKeys: [],
      createdBy: "test",
    });
    const row = await waitForState(database, task.id, ["succeeded", "failed"]);
    expect(row.state).toBe("succeeded");
    expect(JSON.parse(row.result ?? "null")).toEqual({ label: "one" });
    const lines = await readLogLines(database.store.db, task.id, { afterLine: 0, limit: 100 });
    expect(lines.map((line) => [line.level, line.step, line.text.replace(/\(\d+ ms\)/, "(…)")])).toEqual([
      ["step", "work", "▶ work"],
      ["info", "work", "working on one"],
      ["step", "work", "✔ work (…)"],
      ["info", null, "task succeeded"],
    ]);
    expect(lines.map((line) => line.line)).toEqual([1, 2, 3, 4]);
    await engine.stop(1000);
  });

  it("runs 20 tasks wanting the same lock one at a time, in the order they were queued", async () => {
    const { kind, events } = recordingKind();
    const engine = await startEngine(kind as TaskKind, { concurrency: 4 });
    const tasks = await Promise.all(
      Array.from({ length: 20 }, (_, index) =>
        engine.enqueue({
          kind: "test",
          title: `deploy ${index}`,
          payload: { label: String(index), sleepMs: 15 },
          lockKeys: ["deploy:shop:prod"],
          createdBy: "test",
        }),
      ),
    );
    for (const task of tasks) await waitForState(database, task.id, ["succeeded"]);
    // Strictly alternating start/end: never two at once.
    expect(events.map((event) => event.event)).toEqual(Array.from({ length: 40 }, (_, i) => (i % 2 ? "end" : "start")));
    const sequenceOf = new Map<string, number>();
    for (const task of tasks) sequenceOf.set(task.id, (await getTaskRow(database.store.db, task.id)).sequence);
    const started = events.filter((event) => event.event === "start").map((event) => sequenceOf.get(event.id) ?? -1);
    expect(started).toEqual([...started].sort((a, b) => a - b));
    await engine.stop(1000);
  });

  it("runs tasks with different locks side by side, up to its concurrency", async () => {
    // Each task holds on until three run at once (or 10 s pass): a loaded machine that is slow
    // to claim the third cannot make the first two finish before it starts.
    let running = 0;
    let most = 0;
    const kind: TaskKind<{ label: string }> = {
      kind: "test",
      payload: z.object({ label: z.string() }),
      async run(context) {
        running += 1;
        most = Math.max(most, running);
        const deadline = Date.now() + 10_000;
        while (most < 3 && Date.now() < deadline) await sleep(10, undefined, { signal: context.signal });
        await sleep(50, undefined, { signal: context.signal });
        running -= 1;
        return null;
      },
    };
    const engine = await startEngine(kind as TaskKind, { concurrency: 3 });
    const tasks = await Promise.all(
      ["dev", "test", "prod", "qa", "uat", "perf"].map((environment) =>
        engine.enqueue({
          kind: "test",
          title: environment,
          payload: { label: environment },
          lockKeys: [`deploy:shop:${environment}`],
          createdBy: "test",
        }),
      ),
    );
    for (const task of tasks) await waitForState(database, task.id, ["succeeded"], 30_000);
    expect(most).toBe(3);
    await engine.stop(1000);
  });

  it("caps a task's log with an explicit truncation marker", async () => {
    const chatty: TaskKind<{ lines: number }> = {
      kind: "test",
      payload: z.object({ lines: z.number() }),
      async run(context, payload) {
        for (let index = 0; index < payload.lines; index++) context.log.info(`line ${index} ${"x".repeat(90)}`);
        return null;
      },
    };
    const engine = new TaskEngine({
      db: database.store.db,
      dialect,
      kinds: [chatty as TaskKind],
      logger,
      pollMs: 50,
      taskLog: { flushIntervalMs: 20, maxBytes: 10_000 },
    });
    await engine.start();
    engines.push(engine);
    const task = await engine.enqueue({
      kind: "test",
      title: "chatty",
      payload: { lines: 1000 },
      lockKeys: [],
      createdBy: "t",
    });
    await waitForState(database, task.id, ["succeeded"]);
    const lines = await readLogLines(database.store.db, task.id, { afterLine: 0, limit: 10_000 });
    expect(lines.length).toBeLessThan(120);
    expect(lines.at(-1)?.text).toBe("[log truncated: this task reached its 10000-byte log limit]");
    await engine.stop(1000);
  });

  it("records a failure with its reason", async () => {
    const { kind } = recordingKind();
    const engine = await startEngine(kind as TaskKind);
    const task = await engine.enqueue({
      kind: "test",
      title: "bad",
      payload: { label: "bad", sleepMs: 1, fail: true },
      lockKeys: ["x"],
      createdBy: "test",
    });
    const row = await waitForState(database, task.id, ["failed"]);
    expect(row.error).toBe("bad was told to fail");
    const lines = await readLogLines(database.store.db, task.id, { afterLine: 0, limit: 100 });
    expect(lines.at(-1)?.text).toBe("task failed: bad was told to fail");
    await engine.stop(1000);
  });

  it("cancels a queued task at once and a running one with clean-up, freeing its lock", async () => {
    const { kind, cleaned } = recordingKind();
    const engine = await startEngine(kind as TaskKind, { concurrency: 1 });
    const running = await engine.enqueue({
      kind: "test",
      title: "long",
      payload: { label: "long", sleepMs: 60_000 },
      lockKeys: ["deploy:shop:dev"],
      createdBy: "test",
    });
    const queued = await engine.enqueue({
      kind: "test",
      title: "next",
      payload: { label: "next", sleepMs: 1 },
      lockKeys: ["deploy:shop:dev"],
      createdBy: "test",
    });
    await waitForState(database, running.id, ["running"]);
    expect(await engine.cancel(queued.id)).toBe("cancelled");
    await engine.cancel(running.id);
    const row = await waitForState(database, running.id, ["cancelled"]);
    expect(row.error).toBe("cancelled by a user");
    expect(cleaned).toContain(running.id);
    const locks = await database.store.db.selectFrom("task_locks").selectAll().execute();
    expect(locks).toEqual([]);
    // Nor do their lock requests stay behind (they order queued tasks only).
    const requests = await database.store.db
      .selectFrom("task_lock_requests")
      .select("task_id")
      .where("task_id", "in", [running.id, queued.id])
      .execute();
    expect(requests).toEqual([]);
    await expect(engine.cancel(running.id)).rejects.toThrow(/already ended/);
    await engine.stop(1000);
  });

  it("interrupts a task whose server died, frees its locks, cleans up, and lets the next task run", async () => {
    const { kind, cleaned } = recordingKind();
    // A task claimed by an engine that then died: its lease ran out and nobody renews it.
    const orphan = await enqueueTask(database.store.db, {
      kind: "test",
      title: "orphan",
      payload: { label: "orphan", sleepMs: 1 },
      lockKeys: ["deploy:shop:prod"],
      createdBy: "test",
    });
    const expired = new Date(Date.now() - 1000).toISOString();
    await database.store.db
      .updateTable("tasks")
      .set({ state: "running", lease_owner: "engine_dead", lease_expires_at: expired, started_at: expired })
      .where("id", "=", orphan.id)
      .execute();
    await database.store.db
      .insertInto("task_locks")
      .values({ lock_key: "deploy:shop:prod", task_id: orphan.id, owner: "engine_dead", lease_expires_at: expired })
      .execute();
    const engine = await startEngine(kind as TaskKind);
    const interrupted = await waitForState(database, orphan.id, ["interrupted"]);
    expect(interrupted.error).toMatch(/server running this task stopped/);
    expect(cleaned).toContain(orphan.id);
    const lines = await readLogLines(database.store.db, orphan.id, { afterLine: 0, limit: 10 });
    expect(lines.map((line) => line.text).join("\n")).toMatch(/task interrupted: the server running it stopped/);

    const next = await engine.enqueue({
      kind: "test",
      title: "after",
      payload: { label: "after", sleepMs: 1 },
      lockKeys: ["deploy:shop:prod"],
      createdBy: "test",
    });
    expect((await waitForState(database, next.id, ["succeeded", "failed"])).state).toBe("succeeded");
    await engine.stop(1000);
  });

  it("never runs a task twice when several engines share the queue", async () => {
    const { kind, events } = recordingKind();
    const first = await startEngine(kind as TaskKind, { concurrency: 3 });
    const second = await startEngine(kind as TaskKind, { concurrency: 3 });
    const tasks = await Promise.all(
      Array.from({ length: 30 }, (_, index) =>
        (index % 2 ? first : second).enqueue({
          kind: "test",
          title: `t${index}`,
          payload: { label: String(index), sleepMs: 5 },
          lockKeys: [],
          createdBy: "test",
        }),
      ),
    );
    for (const task of tasks) await waitForState(database, task.id, ["succeeded"]);
    const starts = events.filter((event) => event.event === "start").map((event) => event.id);
    expect(starts.length).toBe(30);
    expect(new Set(starts).size).toBe(30);
    await first.stop(1000);
    await second.stop(1000);
  });
});
