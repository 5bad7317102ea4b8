import { setTimeout as sleep } from "node:timers/promises";
import { pino } from "pino";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { z } from "zod";
import type { TaskState } from "../src/domain/tasks.js";
import { TaskEngine } from "../src/engine/engine.js";
import type { TaskKind } from "../src/engine/types.js";
import { claimTasks, enqueueTask, finishTask, getTaskRow } from "../src/store/tasks.js";
import { dialects, openTestDatabase, type TestDatabase } from "./helpers/databases.js";

/**
 * Shared locks (ADR 0068) in the task queue, on SQLite and PostgreSQL: tasks sharing a key
 * run together, an exclusive holder of it runs alone, a shared request queued behind a
 * waiting exclusive one waits its turn (runbook runs cannot starve a deployment), and two
 * claimers racing on PostgreSQL never give an exclusive holder company.
 */

const logger = pino({ level: process.env.TEST_LOG_LEVEL ?? "silent" });

/** A kind whose tasks run until the test opens their gate; records who was running when. */
function gatedKind() {
  const running = new Set<string>();
  const overlaps: string[][] = [];
  const gates = new Map<string, () => void>();
  const kind: TaskKind<{ label: string }> = {
    kind: "gated",
    payload: z.object({ label: z.string() }),
    async run(context, { label }) {
      running.add(label);
      overlaps.push([...running].sort());
      await new Promise<void>((resolve, reject) => {
        gates.set(label, resolve);
        context.signal.addEventListener("abort", () => reject(new Error("cancelled")), { once: true });
      });
      running.delete(label);
      return { label };
    },
  };
  return { kind, running, overlaps, open: (label: string) => gates.get(label)?.() };
}

async function waitFor<T>(what: string, check: () => Promise<T | undefined> | T | undefined, timeoutMs = 15_000) {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const value = await check();
    if (value !== undefined && value !== false) return value;
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await sleep(20);
  }
}

describe.each(dialects)("shared task locks on %s", (dialect) => {
  let database: TestDatabase;
  const engines: TaskEngine[] = [];

  beforeAll(async () => {
    database = await openTestDatabase(dialect);
  });
  afterAll(async () => {
    for (const engine of engines) await engine.stop(1000);
    await database?.dispose();
  });

  const stateOf = async (taskId: string) => (await getTaskRow(database.store.db, taskId)).state as TaskState;

  it("runs shared holders together, an exclusive one alone, and queues a later shared request behind a waiting exclusive one", async () => {
    const { kind, running, overlaps, open } = gatedKind();
    const engine = new TaskEngine({
      db: database.store.db,
      dialect,
      kinds: [kind as TaskKind],
      logger,
      pollMs: 30,
      leaseMs: 5000,
      concurrency: 6,
      taskLog: { flushIntervalMs: 20 },
    });
    await engine.start();
    engines.push(engine);
    const enqueue = (label: string, locks: { lockKeys?: string[]; sharedLockKeys?: string[] }) =>
      engine.enqueue({
        kind: "gated",
        title: label,
        payload: { label },
        lockKeys: locks.lockKeys ?? [],
        sharedLockKeys: locks.sharedLockKeys,
        createdBy: "test",
      });
    const environmentLock = "deploy:shop:prod";

    // Two runbook runs share the environment's deployment lock: both run at once.
    const backup = await enqueue("backup", { sharedLockKeys: [environmentLock], lockKeys: ["runbook:backup:prod"] });
    const logs = await enqueue("logs", { sharedLockKeys: [environmentLock], lockKeys: ["runbook:logs:prod"] });
    await waitFor("both runbook runs running", () => running.has("backup") && running.has("logs"));

    // A deployment wants it exclusively: it waits for both.
    const deployment = await enqueue("deployment", { lockKeys: [environmentLock, "target:web-1"] });
    // A third runbook run, queued after the deployment, waits behind it though its lock is
    // shared with the two running: otherwise a stream of runs would starve the deployment.
    const late = await enqueue("late", { sharedLockKeys: [environmentLock], lockKeys: ["runbook:late:prod"] });
    // Another run of "backup" itself waits for the first (its own lock is exclusive).
    const backupAgain = await enqueue("backup-again", {
      sharedLockKeys: [environmentLock],
      lockKeys: ["runbook:backup:prod"],
    });
    // A task on another environment's lock is not held up by any of this.
    const elsewhere = await enqueue("elsewhere", { lockKeys: ["deploy:shop:staging"] });
    await waitFor("the other environment's task running", () => running.has("elsewhere"));
    await sleep(300);
    for (const task of [deployment, late, backupAgain]) expect(await stateOf(task.id)).toBe("queued");

    open("backup");
    await waitFor("backup finished", async () => (await stateOf(backup.id)) === "succeeded");
    await sleep(200);
    // One shared holder left: the deployment still waits, and so does everything behind it.
    for (const task of [deployment, late, backupAgain]) expect(await stateOf(task.id)).toBe("queued");

    open("logs");
    await waitFor("the deployment running", () => running.has("deployment"));
    expect(await stateOf(logs.id)).toBe("succeeded");
    await sleep(200);
    expect(await stateOf(late.id)).toBe("queued");
    expect(await stateOf(backupAgain.id)).toBe("queued");

    open("deployment");
    await waitFor("both later runbook runs running", () => running.has("late") && running.has("backup-again"));
    open("late");
    open("backup-again");
    open("elsewhere");
    for (const task of [deployment, late, backupAgain, elsewhere]) {
      await waitFor(`${task.title} finished`, async () => (await stateOf(task.id)) === "succeeded");
    }

    // The deployment never ran beside a runbook run of its environment.
    for (const moment of overlaps.filter((labels) => labels.includes("deployment"))) {
      expect(moment.filter((label) => label !== "elsewhere")).toEqual(["deployment"]);
    }
    expect(overlaps).toContainEqual(["backup", "elsewhere", "logs"]);
    const locks = await database.store.db.selectFrom("task_locks").selectAll().execute();
    expect(locks).toEqual([]);
    await engine.stop(1000);
  }, 60_000);

  it("never lets two claimers racing give an exclusive holder company", async () => {
    const db = database.store.db;
    for (let round = 0; round < 12; round += 1) {
      const key = `deploy:race:${round}`;
      const exclusiveFirst = round % 2 === 0;
      const shared = () =>
        enqueueTask(db, {
          kind: "gated",
          title: "shared",
          payload: { label: "s" },
          lockKeys: [],
          sharedLockKeys: [key],
          createdBy: "test",
        });
      const exclusive = () =>
        enqueueTask(db, {
          kind: "gated",
          title: "exclusive",
          payload: { label: "e" },
          lockKeys: [key],
          createdBy: "test",
        });
      const first = exclusiveFirst ? await exclusive() : await shared();
      const second = exclusiveFirst ? await shared() : await exclusive();
      const claimed = (
        await Promise.all(
          ["claimer-a", "claimer-b"].map((owner) => claimTasks(db, dialect, { owner, capacity: 1, leaseMs: 60_000 })),
        )
      ).flat();
      const ours = claimed.filter((task) => task.id === first.id || task.id === second.id);
      // Exactly the first-queued one runs; the other waits for it, whichever claimer got it.
      expect(ours.map((task) => task.id)).toEqual([first.id]);
      const holders = await db
        .selectFrom("task_locks")
        .select(["task_id", "shared"])
        .where("lock_key", "=", key)
        .execute();
      expect(holders.map((holder) => holder.task_id)).toEqual([first.id]);
      for (const task of claimed) {
        await finishTask(db, task.id, String(task.lease_owner), { state: "succeeded" });
      }
      const next = await claimTasks(db, dialect, { owner: "claimer-a", capacity: 5, leaseMs: 60_000 });
      expect(next.map((task) => task.id)).toContain(second.id);
      for (const task of next) await finishTask(db, task.id, "claimer-a", { state: "succeeded" });
    }
  }, 60_000);
});
