import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { decide, getDecision, listDecisions, openDecision, withdrawDecision } from "../src/store/decisions.js";
import { claimTasks, enqueueTask, setActiveState } from "../src/store/tasks.js";
import { dialects, openTestDatabase, type TestDatabase } from "./helpers/databases.js";

/**
 * A question a step withdraws (ADR 0071: a canary's figures went over its thresholds while it
 * waited for an approval), on SQLite and PostgreSQL: it is closed with the reason and can no
 * longer be answered, and an answer given first wins over the withdrawal.
 */
describe.each(dialects)("withdrawn decisions on %s", (dialect) => {
  let database: TestDatabase;
  const db = () => database.context.db;

  /** A task claimed and waiting, with an open approval question. */
  const waitingTask = async (owner: string) => {
    const task = await enqueueTask(db(), {
      kind: "deployment",
      title: "canary",
      payload: {},
      lockKeys: [],
      createdBy: "someone",
    });
    const claimed = await claimTasks(db(), dialect, { owner, capacity: 1, leaseMs: 60_000 });
    expect(claimed.map((row) => row.id)).toEqual([task.id]);
    expect(await setActiveState(db(), task.id, owner, "waiting")).toBe(true);
    const id = await openDecision(db(), task.id, {
      kind: "approval",
      prompt: "look at the 20 % figures",
      allowed: ["approve", "reject"],
    });
    return { taskId: task.id, id };
  };

  beforeAll(async () => {
    database = await openTestDatabase(dialect);
  });
  afterAll(async () => {
    await database?.dispose();
  });

  it("closes an open question as withdrawn by ferry, with the reason; answering it afterwards is a conflict", async () => {
    const { taskId, id } = await waitingTask("node-1");
    expect(await withdrawDecision(db(), id, "the canary went over its thresholds")).toBe(true);
    const withdrawn = await getDecision(db(), id);
    const late = await decide(db(), taskId, { decision: "approve", decidedBy: "alice" }).catch((error: Error) => error);

    expect(withdrawn).toMatchObject({
      decision: "withdrawn",
      decidedBy: "ferry",
      comment: "the canary went over its thresholds",
    });
    expect(withdrawn.decidedAt).not.toBeNull();
    expect(late).toBeInstanceOf(Error);
    expect((late as Error).message).toContain("is not waiting for a decision");
    expect((await listDecisions(db(), taskId)).map((decision) => decision.decision)).toEqual(["withdrawn"]);
  });

  it("leaves a question answered first as it was: the answer wins", async () => {
    const { taskId, id } = await waitingTask("node-2");
    await decide(db(), taskId, { decision: "approve", decidedBy: "alice" });
    expect(await withdrawDecision(db(), id, "too late")).toBe(false);
    expect(await getDecision(db(), id)).toMatchObject({ decision: "approve", decidedBy: "alice", comment: null });
  });
});
