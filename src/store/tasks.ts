import { type Kysely, type SelectQueryBuilder, sql } from "kysely";
import type { Reach } from "../domain/access.js";
import type { Paging } from "../domain/common.js";
import { ConflictError, NotFoundError } from "../domain/errors.js";
import { fitLogLine, MAX_LOG_LINE_BYTES } from "../domain/logLines.js";
import { type Task, type TaskLogLevel, type TaskLogLine, type TaskState, taskSchema } from "../domain/tasks.js";
import { type Executor, newId, nowIso, reachCondition, toPage } from "./common.js";
import type { DialectName } from "./db.js";
import type { Database, TaskRow } from "./schema.js";

/*
 * The task queue's SQL. Correctness rests on three rules:
 *  1. A task is claimed by a conditional UPDATE (… WHERE state = 'queued') whose row
 *     count says whether this claimer won; on PostgreSQL the candidate rows are also read
 *     FOR UPDATE SKIP LOCKED so claimers on several nodes do not queue behind each other.
 *  2. A task may start only when it holds every lock it requested (rows in task_locks,
 *     each with the owner's lease) and no earlier queued task requested one of them in a
 *     conflicting mode: deployments to one environment run one at a time, in the order they
 *     were queued. A lock is exclusive, or shared (ADR 0068): shared holders of a key run
 *     together, an exclusive holder runs alone; a shared request queued after a waiting
 *     exclusive one waits behind it, so a stream of runbook runs cannot starve a deployment.
 *  3. Claims and locks expire unless the owner's heartbeat extends them; an expired
 *     running task is marked interrupted by whoever notices first (conditional UPDATE).
 */

const ACTIVE_STATES = ["running", "waiting"] as const;

export function toTask(row: TaskRow): Task {
  return taskSchema.parse({
    id: row.id,
    kind: row.kind,
    state: row.state,
    title: row.title,
    project: row.project_id,
    environment: row.environment_id,
    error: row.error,
    result: row.result === null ? null : JSON.parse(row.result),
    createdBy: row.created_by,
    createdAt: row.created_at,
    startedAt: row.started_at,
    finishedAt: row.finished_at,
    cancelRequested: row.cancel_requested === 1,
    logLines: Number(row.log_lines),
  });
}

export interface NewTask {
  kind: string;
  title: string;
  projectId?: string | undefined;
  environmentId?: string | undefined;
  payload: unknown;
  /** Locks the task must hold alone to run, e.g. "deploy:<project>:<environment>", "target:<id>". */
  lockKeys: readonly string[];
  /**
   * Locks the task holds beside other shared holders but never beside an exclusive one
   * (a runbook run's hold on its environment's deployment lock). A key also in lockKeys is exclusive.
   */
  sharedLockKeys?: readonly string[] | undefined;
  createdBy: string;
  /** Who started it, as principalOf gives it; an approval with separation of duties refuses them. */
  createdByPrincipal?: string | null | undefined;
  /**
   * Rows that belong with the task (a deployment's), written in the same transaction: no
   * runner, list or crash ever sees the task without them.
   */
  alongside?: ((trx: Executor, taskId: string) => Promise<void>) | undefined;
}

export async function enqueueTask(db: Kysely<Database>, input: NewTask): Promise<TaskRow> {
  return db.transaction().execute(async (trx) => {
    // Row-locks the counter: concurrent enqueues get consecutive sequence numbers in commit order.
    const { value } = await trx
      .updateTable("counters")
      .set((eb) => ({ value: eb("value", "+", 1) }))
      .where("name", "=", "task")
      .returning("value")
      .executeTakeFirstOrThrow();
    const row: TaskRow = {
      id: newId("task"),
      sequence: Number(value),
      kind: input.kind,
      state: "queued",
      title: input.title,
      project_id: input.projectId ?? null,
      environment_id: input.environmentId ?? null,
      payload: JSON.stringify(input.payload),
      result: null,
      error: null,
      created_by: input.createdBy,
      created_by_principal: input.createdByPrincipal ?? null,
      created_at: nowIso(),
      started_at: null,
      finished_at: null,
      lease_owner: null,
      lease_expires_at: null,
      cancel_requested: 0,
      log_lines: 0,
      log_bytes: 0,
    };
    await trx.insertInto("tasks").values(row).execute();
    const exclusive = new Set(input.lockKeys);
    const requests = [
      ...[...exclusive].map((lockKey) => ({ task_id: row.id, lock_key: lockKey, shared: 0 })),
      ...[...new Set(input.sharedLockKeys ?? [])]
        .filter((lockKey) => !exclusive.has(lockKey))
        .map((lockKey) => ({ task_id: row.id, lock_key: lockKey, shared: 1 })),
    ];
    if (requests.length > 0) await trx.insertInto("task_lock_requests").values(requests).execute();
    await input.alongside?.(trx, row.id);
    return row;
  });
}

const isoAfter = (milliseconds: number) => new Date(Date.now() + milliseconds).toISOString();

/**
 * Claims up to `capacity` queued tasks for `owner`, oldest first, skipping tasks whose
 * locks are held or wanted by an earlier queued task. Returns the claimed rows.
 */
export async function claimTasks(
  db: Kysely<Database>,
  dialect: DialectName,
  options: { owner: string; capacity: number; leaseMs: number },
): Promise<TaskRow[]> {
  if (options.capacity <= 0) return [];
  return db.transaction().execute(async (trx) => {
    let query = trx.selectFrom("tasks").selectAll().where("state", "=", "queued").orderBy("sequence").limit(100);
    if (dialect === "postgres") query = query.forUpdate().skipLocked();
    const candidates = await query.execute();
    if (candidates.length === 0) return [];
    // One read of the candidates' lock requests: a claim used to ask twice per candidate,
    // and a queue of 100 deployments to one environment made every claim 200 queries long
    // on the event loop. The candidates are the oldest queued tasks, so every queued task
    // earlier than one of them is among them.
    const keysOf = new Map<string, LockRequest[]>();
    const requests = await trx
      .selectFrom("task_lock_requests")
      .select(["task_id", "lock_key", "shared"])
      .where(
        "task_id",
        "in",
        candidates.map((task) => task.id),
      )
      .execute();
    for (const request of requests) {
      keysOf.set(request.task_id, [
        ...(keysOf.get(request.task_id) ?? []),
        { key: request.lock_key, shared: Number(request.shared) === 1 },
      ]);
    }
    // Keys an earlier task that stays queued wants, and whether it wants one exclusively: a
    // later task wanting one in a conflicting mode waits its turn (two shared wants do not
    // conflict; any other pair does).
    const wantedEarlier = new Map<string, "shared" | "exclusive">();
    const conflictsWithEarlier = (request: LockRequest) => {
      const wanted = wantedEarlier.get(request.key);
      return wanted !== undefined && (wanted === "exclusive" || !request.shared);
    };
    const claimed: TaskRow[] = [];
    for (const task of candidates) {
      if (claimed.length >= options.capacity) break;
      const now = nowIso();
      const expires = isoAfter(options.leaseMs);
      const keys = keysOf.get(task.id) ?? [];
      if (keys.length > 0) {
        const waits =
          keys.some(conflictsWithEarlier) || !(await acquireLocks(trx, dialect, task.id, keys, options.owner, expires));
        if (waits) {
          for (const request of keys) {
            if (wantedEarlier.get(request.key) !== "exclusive") {
              wantedEarlier.set(request.key, request.shared ? "shared" : "exclusive");
            }
          }
          continue;
        }
      }
      const updated = await trx
        .updateTable("tasks")
        .set({ state: "running", lease_owner: options.owner, lease_expires_at: expires, started_at: now })
        .where("id", "=", task.id)
        .where("state", "=", "queued")
        .executeTakeFirst();
      if (Number(updated.numUpdatedRows) !== 1) {
        await trx.deleteFrom("task_locks").where("task_id", "=", task.id).execute();
        continue;
      }
      // Requests order queued tasks only; this one holds its locks now.
      await trx.deleteFrom("task_lock_requests").where("task_id", "=", task.id).execute();
      claimed.push({
        ...task,
        state: "running",
        lease_owner: options.owner,
        lease_expires_at: expires,
        started_at: now,
      });
    }
    return claimed;
  });
}

interface LockRequest {
  key: string;
  shared: boolean;
}

/**
 * Takes every lock or none: an exclusive one when nobody holds its key, a shared one when
 * only shared holders do. A held lock is never taken over here, even when its lease
 * expired: its task may still be running on a slow node. Only interruptExpiredTasks frees
 * it, after marking that task interrupted, so an exclusive holder never has company.
 *
 * The check and the insert must not interleave with another claimer's for the same key:
 * the primary key (key, task) no longer refuses a second holder by itself. On PostgreSQL a
 * transaction-scoped advisory lock per key serialises claimers on every node (keys taken in
 * sorted order, so two claimers never wait for each other in a cycle); SQLite has one
 * writer, and one node, whose transactions run one at a time on its one connection.
 */
async function acquireLocks(
  trx: Executor,
  dialect: DialectName,
  taskId: string,
  requests: readonly LockRequest[],
  owner: string,
  expires: string,
): Promise<boolean> {
  const sorted = [...requests].sort((a, b) => (a.key < b.key ? -1 : a.key > b.key ? 1 : 0));
  for (const request of sorted) {
    if (dialect === "postgres") {
      await sql`select pg_advisory_xact_lock(hashtextextended(${request.key}, 0))`.execute(trx);
    }
    const holders = await trx
      .selectFrom("task_locks")
      .select(["task_id", "shared"])
      .where("lock_key", "=", request.key)
      .execute();
    const free = holders.every((holder) => holder.task_id !== taskId && request.shared && Number(holder.shared) === 1);
    if (free) {
      await trx
        .insertInto("task_locks")
        .values({
          lock_key: request.key,
          task_id: taskId,
          owner,
          lease_expires_at: expires,
          shared: request.shared ? 1 : 0,
        })
        .execute();
      continue;
    }
    await trx.deleteFrom("task_locks").where("task_id", "=", taskId).execute();
    return false;
  }
  return true;
}

/**
 * Extends the leases of the owner's active tasks and their locks. Returns the tasks the
 * owner still holds, with their cancel flags (a cancel may come through another node).
 */
export async function renewLeases(
  db: Kysely<Database>,
  options: { owner: string; taskIds: readonly string[]; leaseMs: number },
): Promise<{ id: string; cancelRequested: boolean }[]> {
  if (options.taskIds.length === 0) return [];
  const now = nowIso();
  const expires = isoAfter(options.leaseMs);
  return db.transaction().execute(async (trx) => {
    // A lease that already expired is not renewed: another node may be interrupting the
    // task right now, and its runner must stop rather than carry on beside a successor.
    await trx
      .updateTable("tasks")
      .set({ lease_expires_at: expires })
      .where("id", "in", options.taskIds)
      .where("lease_owner", "=", options.owner)
      .where("state", "in", ACTIVE_STATES)
      .where("lease_expires_at", ">=", now)
      .execute();
    await trx
      .updateTable("task_locks")
      .set({ lease_expires_at: expires })
      .where("owner", "=", options.owner)
      .where("task_id", "in", options.taskIds)
      .execute();
    const held = await trx
      .selectFrom("tasks")
      .select(["id", "cancel_requested"])
      .where("id", "in", options.taskIds)
      .where("lease_owner", "=", options.owner)
      .where("state", "in", ACTIVE_STATES)
      .where("lease_expires_at", "=", expires)
      .execute();
    return held.map((row) => ({ id: row.id, cancelRequested: row.cancel_requested === 1 }));
  });
}

/** Moves an owned active task between running and waiting (for an approval or a decision). */
export async function setActiveState(
  db: Kysely<Database>,
  taskId: string,
  owner: string,
  state: "running" | "waiting",
): Promise<boolean> {
  const updated = await db
    .updateTable("tasks")
    .set({ state })
    .where("id", "=", taskId)
    .where("lease_owner", "=", owner)
    .where("state", "in", ACTIVE_STATES)
    .executeTakeFirst();
  return Number(updated.numUpdatedRows) === 1;
}

/** Records the outcome of an owned task and releases its locks. False when the claim was lost. */
export async function finishTask(
  db: Kysely<Database>,
  taskId: string,
  owner: string,
  outcome: { state: "succeeded" | "failed" | "cancelled" | "interrupted"; result?: unknown; error?: string },
): Promise<boolean> {
  return db.transaction().execute(async (trx) => {
    const updated = await trx
      .updateTable("tasks")
      .set({
        state: outcome.state,
        finished_at: nowIso(),
        result: outcome.result === undefined ? null : JSON.stringify(outcome.result),
        error: outcome.error ?? null,
        lease_owner: null,
        lease_expires_at: null,
      })
      .where("id", "=", taskId)
      .where("lease_owner", "=", owner)
      .where("state", "in", ACTIVE_STATES)
      .executeTakeFirst();
    if (Number(updated.numUpdatedRows) !== 1) return false;
    await trx.deleteFrom("task_locks").where("task_id", "=", taskId).execute();
    return true;
  });
}

/**
 * Cancels a task: a queued one at once; a running or waiting one by raising its flag,
 * which its runner sees (directly, or through the next heartbeat on another node).
 */
export async function requestCancel(db: Kysely<Database>, taskId: string): Promise<TaskState> {
  const cancelledQueued = await db.transaction().execute(async (trx) => {
    const queued = await trx
      .updateTable("tasks")
      .set({ state: "cancelled", finished_at: nowIso(), error: "cancelled before it started" })
      .where("id", "=", taskId)
      .where("state", "=", "queued")
      .executeTakeFirst();
    if (Number(queued.numUpdatedRows) !== 1) return false;
    await trx.deleteFrom("task_lock_requests").where("task_id", "=", taskId).execute();
    return true;
  });
  if (cancelledQueued) return "cancelled";
  const active = await db
    .updateTable("tasks")
    .set({ cancel_requested: 1 })
    .where("id", "=", taskId)
    .where("state", "in", ACTIVE_STATES)
    .executeTakeFirst();
  if (Number(active.numUpdatedRows) === 1) return "running";
  const task = await getTaskRow(db, taskId);
  throw new ConflictError(`task ${taskId} already ended (${task.state}); there is nothing to cancel`);
}

/**
 * Marks active tasks whose lease expired as interrupted and frees their locks. Returns
 * the rows this call interrupted (each exactly once, even with several nodes sweeping).
 */
export async function interruptExpiredTasks(db: Kysely<Database>): Promise<TaskRow[]> {
  const now = nowIso();
  const expired = await db
    .selectFrom("tasks")
    .selectAll()
    .where("state", "in", ACTIVE_STATES)
    .where("lease_expires_at", "<", now)
    .execute();
  const interrupted: TaskRow[] = [];
  for (const task of expired) {
    const won = await db.transaction().execute(async (trx) => {
      const updated = await trx
        .updateTable("tasks")
        .set({
          state: "interrupted",
          finished_at: now,
          error: "the server running this task stopped before it finished",
          lease_owner: null,
          lease_expires_at: null,
        })
        .where("id", "=", task.id)
        .where("state", "in", ACTIVE_STATES)
        .where("lease_expires_at", "<", now)
        .executeTakeFirst();
      if (Number(updated.numUpdatedRows) !== 1) return false;
      await trx.deleteFrom("task_locks").where("task_id", "=", task.id).execute();
      // In the same transaction, so whoever sees the state also sees why.
      await appendLogLines(trx, task.id, [
        {
          at: now,
          level: "error",
          step: null,
          text: `task interrupted: the server running it stopped (its lease expired at ${task.lease_expires_at}); locks released`,
        },
      ]);
      return true;
    });
    if (won) interrupted.push(task);
  }
  return interrupted;
}

export async function getTaskRow(db: Executor, taskId: string): Promise<TaskRow> {
  const row = await db.selectFrom("tasks").selectAll().where("id", "=", taskId).executeTakeFirst();
  if (!row) throw new NotFoundError(`no task '${taskId}'; list them with 'ferry task list'`);
  return row;
}

interface TaskFilter {
  projectId?: string | undefined;
  states?: readonly TaskState[] | undefined;
  /** Only tasks of pairs the caller may view (src/domain/access.ts); everything when left out or unlimited. */
  visible?: Reach | undefined;
}

export async function listTasks(db: Kysely<Database>, paging: Paging, { visible, ...filter }: TaskFilter = {}) {
  let query = db.selectFrom("tasks");
  const boxes = visible?.boxes;
  if (boxes) query = query.where((eb) => reachCondition(eb, boxes, "project_id", "environment_id"));
  if (filter.projectId) query = query.where("project_id", "=", filter.projectId);
  if (filter.states && filter.states.length > 0) query = query.where("state", "in", filter.states);
  const rows = await query.selectAll().orderBy("sequence", "desc").limit(paging.limit).offset(paging.offset).execute();
  const total = (boxes ? undefined : await countFromStateCounts(db, filter)) ?? (await countRowsOf(query));
  return toPage(rows.map(toTask), total, paging);
}

async function countRowsOf(query: SelectQueryBuilder<Database, "tasks", object>): Promise<number> {
  const { count } = await query.select((eb) => eb.fn.countAll<number | string>().as("count")).executeTakeFirstOrThrow();
  return Number(count);
}

/**
 * The number of tasks in the given states (all when none are given) without counting
 * them: an exact count reads every matching index entry, over 50 ms at a million tasks on
 * either database, on every page of the list. task_counts holds the tasks per state, kept
 * exact by triggers in the transaction that inserts, updates or deletes the tasks
 * (migration 0013_task_counts). Undefined when any other filter is set: the counts know
 * nothing but the state, so the caller counts the rows.
 */
async function countFromStateCounts(db: Kysely<Database>, filter: TaskFilter): Promise<number | undefined> {
  const { states, ...others } = filter;
  if (Object.values(others).some((value) => value !== undefined && value !== "")) return undefined;
  let query = db.selectFrom("task_counts").select((eb) => eb.fn.sum<number | string | null>("n").as("total"));
  if (states && states.length > 0) query = query.where("state", "in", states);
  const { total } = await query.executeTakeFirstOrThrow();
  return Number(total ?? 0);
}

export interface NewLogLine {
  at: string;
  level: TaskLogLevel;
  step: string | null;
  text: string;
}

/**
 * Appends lines to a task's log. Line numbers are allocated from the task row in the same
 * transaction, so the runner and a recovering node can both write without colliding.
 */
export async function appendLogLines(db: Executor, taskId: string, lines: readonly NewLogLine[]) {
  if (lines.length === 0) return;
  const bytes = lines.reduce((total, line) => total + Buffer.byteLength(line.text), 0);
  const append = async (trx: Executor) => {
    const { log_lines: last } = await trx
      .updateTable("tasks")
      .set((eb) => ({
        log_lines: eb("log_lines", "+", lines.length),
        log_bytes: eb("log_bytes", "+", bytes),
      }))
      .where("id", "=", taskId)
      .returning("log_lines")
      .executeTakeFirstOrThrow();
    const first = Number(last) - lines.length + 1;
    // One statement with the whole batch as one JSON parameter: a flush holds thousands
    // of lines, and a row of bound values each costs more to build, prepare and bind than
    // the database spends inserting it.
    const rows = JSON.stringify(lines.map((line) => [line.at, line.level, line.step, line.text]));
    const insert =
      dialectOf(trx) === "postgres"
        ? sql`insert into task_logs (task_id, line, at, level, step, text)
            select ${taskId}, ${first - 1}::integer + entry.number, entry.value ->> 0, entry.value ->> 1, entry.value ->> 2, entry.value ->> 3
            from json_array_elements(${rows}::json) with ordinality as entry(value, number)`
        : sql`insert into task_logs (task_id, line, at, level, step, text)
            select ${taskId}, ${first} + key, value ->> 0, value ->> 1, value ->> 2, value ->> 3
            from json_each(${rows})`;
    await insert.execute(trx);
  };
  await (db.isTransaction ? append(db) : db.transaction().execute(append));
}

/** The executor's dialect, told by how it writes a parameter ("?" in SQLite, "$1" in PostgreSQL). */
function dialectOf(db: Executor): DialectName {
  return sql`${0}`.compile(db).sql.startsWith("$") ? "postgres" : "sqlite";
}

/** Lines of a task's log after some line, and whether more are stored after them. */
export interface LogPage {
  lines: TaskLogLine[];
  more: boolean;
}

export interface LogReadOptions {
  /** Lines after this one. */
  afterLine: number;
  /** Most lines. */
  limit: number;
  /**
   * Most bytes the lines take as JSON (each line object, and a comma), 1 MiB unless given.
   * The first line is always included, so a reader always gets on; it is at most 64 KiB of
   * text, 384 KiB as JSON.
   */
  maxBytes?: number;
}

const DEFAULT_READ_BYTES = 1024 * 1024;

/**
 * Reads a page of a task's log, bounded in lines and in bytes as JSON (a line of control
 * characters is six times its length as JSON: 15 MB of them made a 90 MB answer).
 *
 * Lines stored before lines were capped may be longer than MAX_LOG_LINE_BYTES: they are
 * read only up to one character more than fits, and cut with the mark as they would be
 * now. The database stops sending lines once what it sent would exceed the budget
 * (counted in characters, which is never more than their bytes as JSON), so a page of
 * long lines is not read into memory in full to find where it ends: it sends one line
 * beyond the one that starts past the budget, which tells the page there are more.
 */
export async function readLogPage(db: Kysely<Database>, taskId: string, options: LogReadOptions): Promise<LogPage> {
  const maxBytes = options.maxBytes ?? DEFAULT_READ_BYTES;
  // A cut line is at least MAX_LOG_LINE_BYTES - 3 bytes as JSON: counting at most that many
  // characters of a line keeps the count below its bytes.
  const counted = sql<number>`length(substr(text, 1, ${sql.lit(MAX_LOG_LINE_BYTES - 3)}))`;
  const candidates = db
    .selectFrom("task_logs")
    .select([
      "line",
      "at",
      "level",
      "step",
      sql<string>`substr(text, 1, ${sql.lit(MAX_LOG_LINE_BYTES + 1)})`.as("text"),
      // Characters of the lines before the previous one: a line is sent while the one before it starts within the budget.
      sql<number>`coalesce(sum(${counted}) over (order by line rows between unbounded preceding and 2 preceding), 0)`.as(
        "before_previous",
      ),
    ])
    .where("task_id", "=", taskId)
    .where("line", ">", options.afterLine)
    .orderBy("line")
    .limit(options.limit + 1);
  const rows = await db
    .selectFrom(candidates.as("candidates"))
    .select(["line", "at", "level", "step", "text"])
    .where("before_previous", "<", maxBytes)
    .orderBy("line")
    .execute();
  const lines: TaskLogLine[] = [];
  let bytes = 0;
  for (const row of rows) {
    if (lines.length === options.limit) break;
    const line: TaskLogLine = {
      line: Number(row.line),
      at: row.at,
      level: row.level as TaskLogLevel,
      step: row.step,
      text: fitLogLine(row.text),
    };
    const size = Buffer.byteLength(JSON.stringify(line)) + 1;
    if (lines.length > 0 && bytes + size > maxBytes) break;
    lines.push(line);
    bytes += size;
  }
  return { lines, more: rows.length > lines.length };
}

/** The lines of readLogPage. */
export async function readLogLines(
  db: Kysely<Database>,
  taskId: string,
  options: LogReadOptions,
): Promise<TaskLogLine[]> {
  return (await readLogPage(db, taskId, options)).lines;
}
