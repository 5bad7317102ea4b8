import type { Kysely } from "kysely";
import { ConflictError, ForbiddenError } from "../domain/errors.js";
import { newId, nowIso, parseJsonList } from "./common.js";
import type { Database, TaskDecisionRow } from "./schema.js";

export interface Decision {
  id: string;
  taskId: string;
  kind: string;
  prompt: string;
  allowed: string[];
  decision: string | null;
  comment: string | null;
  decidedBy: string | null;
  createdAt: string;
  decidedAt: string | null;
}

function toDecision(row: TaskDecisionRow): Decision {
  return {
    id: row.id,
    taskId: row.task_id,
    kind: row.kind,
    prompt: row.prompt,
    allowed: parseJsonList(row.allowed),
    decision: row.decision,
    comment: row.comment,
    decidedBy: row.decided_by,
    createdAt: row.created_at,
    decidedAt: row.decided_at,
  };
}

export async function openDecision(
  db: Kysely<Database>,
  taskId: string,
  question: { kind: string; prompt: string; allowed: readonly string[]; excludedPrincipal?: string | null | undefined },
): Promise<string> {
  const id = newId("dec");
  await db
    .insertInto("task_decisions")
    .values({
      id,
      task_id: taskId,
      kind: question.kind,
      prompt: question.prompt,
      allowed: JSON.stringify(question.allowed),
      decision: null,
      comment: null,
      decided_by: null,
      excluded_principal: question.excludedPrincipal ?? null,
      created_at: nowIso(),
      decided_at: null,
    })
    .execute();
  return id;
}

export async function getDecision(db: Kysely<Database>, id: string): Promise<Decision> {
  return toDecision(await db.selectFrom("task_decisions").selectAll().where("id", "=", id).executeTakeFirstOrThrow());
}

export async function listDecisions(db: Kysely<Database>, taskId: string): Promise<Decision[]> {
  const rows = await db
    .selectFrom("task_decisions")
    .selectAll()
    .where("task_id", "=", taskId)
    .orderBy("created_at")
    .execute();
  return rows.map(toDecision);
}

/**
 * Answers the task's open question. The conditional UPDATE (decision IS NULL) makes the
 * first answer win when two people answer at once.
 */
export async function decide(
  db: Kysely<Database>,
  taskId: string,
  answer: { decision: string; comment?: string | undefined; decidedBy: string; principal?: string | null | undefined },
): Promise<Decision> {
  // Only a task still waiting can be answered (not one cancelled or interrupted meanwhile).
  const open = await db
    .selectFrom("task_decisions as d")
    .innerJoin("tasks as t", "t.id", "d.task_id")
    .selectAll("d")
    .where("d.task_id", "=", taskId)
    .where("d.decision", "is", null)
    .where("t.state", "=", "waiting")
    .executeTakeFirst();
  if (!open) throw new ConflictError(`task ${taskId} is not waiting for a decision`);
  const allowed = parseJsonList(open.allowed);
  if (!allowed.includes(answer.decision)) {
    throw new ConflictError(`the task is waiting for ${allowed.join(", ")}; '${answer.decision}' does not answer it`);
  }
  // Separation of duties: whoever started the deployment may reject it, never approve it,
  // with any of their keys or sessions (the principal is the user, not the credential).
  if (
    answer.decision === "approve" &&
    open.excluded_principal !== null &&
    open.excluded_principal === answer.principal
  ) {
    throw new ForbiddenError(
      "you started this deployment, and this approval needs someone else (separation of duties): ask another approver",
    );
  }
  const updated = await db
    .updateTable("task_decisions")
    .set({
      decision: answer.decision,
      comment: answer.comment ?? null,
      decided_by: answer.decidedBy,
      decided_at: nowIso(),
    })
    .where("id", "=", open.id)
    .where("decision", "is", null)
    .executeTakeFirst();
  if (Number(updated.numUpdatedRows) !== 1) throw new ConflictError("someone else answered this decision first");
  return getDecision(db, open.id);
}

/** What a withdrawn question's `decision` says (TaskContext.waitForDecision's `withdraw`). */
const WITHDRAWN = "withdrawn";

/**
 * Closes an open question nobody answered, because the task no longer needs the answer. False
 * when someone answered it first: the conditional UPDATE lets only one of the two win.
 */
export async function withdrawDecision(db: Kysely<Database>, id: string, reason: string): Promise<boolean> {
  const updated = await db
    .updateTable("task_decisions")
    .set({ decision: WITHDRAWN, comment: reason, decided_by: "ferry", decided_at: nowIso() })
    .where("id", "=", id)
    .where("decision", "is", null)
    .executeTakeFirst();
  return Number(updated.numUpdatedRows) === 1;
}
