import { z } from "zod";
import type { Permission } from "../domain/access.js";
import { pageSchema, pagingSchema } from "../domain/common.js";
import { taskRunbookRunSchema } from "../domain/runbooks.js";
import { type Task, taskLogLineSchema, taskSchema, taskStates } from "../domain/tasks.js";
import type { TaskEngine } from "../engine/engine.js";
import { principalOf } from "../store/apiKeys.js";
import type { StoreContext } from "../store/common.js";
import { listDecisions } from "../store/decisions.js";
import { runbookRunOfTask } from "../store/runbooks.js";
import { getTaskRow, listTasks, readLogPage, toTask } from "../store/tasks.js";
import { openEventStream } from "./eventStream.js";
import { TaskLogFeeds } from "./logFeed.js";
import { defineRoute, pathParams, type RouteSpec } from "./route.js";

/** Most lines, and most bytes of lines as JSON, in one answer of GET …/log (docs/api.md). */
const LOG_PAGE_LINES = 10_000;
const LOG_PAGE_BYTES = 1024 * 1024;

const logQuerySchema = z.strictObject({
  /** Return lines after this line number (0 = from the start). */
  after: z.coerce.number().int().min(0).default(0),
  /** 1: stream as Server-Sent Events until the task ends. */
  follow: z.enum(["0", "1"]).default("0"),
});

const taskListQuerySchema = pagingSchema.extend({
  state: z.enum(taskStates).optional(),
});

const decisionSchema = z.object({
  id: z.string(),
  taskId: z.string(),
  kind: z.string(),
  prompt: z.string(),
  allowed: z.array(z.string()),
  decision: z.string().nullable(),
  comment: z.string().nullable(),
  decidedBy: z.string().nullable(),
  createdAt: z.string(),
  decidedAt: z.string().nullable(),
});

/** The permission an answer to a waiting task needs. */
function decisionPermission(
  decision: "approve" | "reject" | "retry" | "skip" | "exclude" | "abort",
  kind: string,
): Permission {
  switch (decision) {
    case "approve":
    case "reject":
      return "approve";
    case "retry":
    case "skip":
    case "exclude":
      return "resolveFailures";
    case "abort":
      return startPermission(kind);
    default: {
      const unknown: never = decision;
      throw new Error(`no permission for decision ${String(unknown)}`);
    }
  }
}

/** The permission that starts a task of the kind, which also stops it. */
function startPermission(kind: string): Permission {
  return kind === "runbook" ? "runRunbooks" : "deploy";
}

/** What a cancellation changes about a task. */
function cancelFields(task: Task): Record<string, unknown> {
  return { state: task.state, cancelRequested: task.cancelRequested };
}

export function taskRoutes(context: StoreContext, engine: TaskEngine): RouteSpec[] {
  const { db } = context;
  // Followers of one task share one reader of its new lines (see TaskLogFeeds).
  const feeds = new TaskLogFeeds(db, engine.events);
  return [
    defineRoute({
      method: "GET",
      path: "/api/v1/tasks",
      tag: "Tasks",
      summary: "List tasks, newest first",
      query: taskListQuerySchema,
      response: pageSchema(taskSchema),
      access: { kind: "filtered" },
      handler: ({ query, access }) =>
        listTasks(db, query, { states: query.state ? [query.state] : undefined, visible: access.reach("view") }),
    }),
    defineRoute({
      method: "GET",
      path: "/api/v1/tasks/:task",
      tag: "Tasks",
      summary: "Show a task (a runbook run's also says what it ran: runbook, version, parameters)",
      access: { kind: "task", permission: "view", task: (params) => params.task },
      params: pathParams("task"),
      response: taskSchema.extend({ runbookRun: taskRunbookRunSchema.optional() }),
      handler: async ({ params }) => {
        const task = toTask(await getTaskRow(db, params.task));
        const runbookRun = task.kind === "runbook" ? await runbookRunOfTask(context, task.id) : undefined;
        return { ...task, ...(runbookRun && { runbookRun }) };
      },
    }),
    defineRoute({
      method: "POST",
      path: "/api/v1/tasks/:task/cancel",
      tag: "Tasks",
      summary: "Cancel a task (a running one stops its step and cleans up)",
      // Stopping a task is part of starting it: a runbook run's needs runRunbooks, others deploy.
      access: { kind: "task", permission: ({ task }) => startPermission(task.kind), task: (params) => params.task },
      params: pathParams("task"),
      response: taskSchema,
      audit: {
        action: "task.cancel",
        before: async ({ params }) => toTask(await getTaskRow(db, params.task)),
        change: ({ before, result }) => {
          const task = result as Task;
          return {
            resource: { type: "task", id: task.id, name: task.title },
            before: before === undefined ? undefined : cancelFields(before as Task),
            after: cancelFields(task),
          };
        },
      },
      handler: async ({ params }) => {
        await engine.cancel(params.task);
        return toTask(await getTaskRow(db, params.task));
      },
    }),
    defineRoute({
      method: "GET",
      path: "/api/v1/tasks/:task/decisions",
      tag: "Tasks",
      summary: "The questions a task asked (approvals, guided failures) and their answers",
      access: { kind: "task", permission: "view", task: (params) => params.task },
      params: pathParams("task"),
      response: z.array(decisionSchema),
      handler: async ({ params }) => listDecisions(db, (await getTaskRow(db, params.task)).id),
    }),
    defineRoute({
      method: "POST",
      path: "/api/v1/tasks/:task/decisions",
      tag: "Tasks",
      summary:
        "Answer a waiting task: approve / reject an approval, retry / skip / abort a failed step, or exclude the target it failed on",
      // Approvals need approve. Retrying, skipping or excluding a failed target overrides what the process
      // says must pass, so it needs its own permission; aborting (stopping the deployment)
      // is part of deploying.
      access: {
        kind: "task",
        permission: ({ body, task }) => decisionPermission(body.decision, task.kind),
        task: (params) => params.task,
      },
      params: pathParams("task"),
      body: z.strictObject({
        decision: z.enum(["approve", "reject", "retry", "skip", "exclude", "abort"]),
        comment: z.string().max(2000).optional(),
      }),
      response: decisionSchema,
      audit: {
        action: "task.decide",
        change: ({ result }) => {
          const decision = result as z.infer<typeof decisionSchema>;
          return {
            resource: { type: "task", id: decision.taskId, name: decision.prompt },
            after: { kind: decision.kind, decision: decision.decision, comment: decision.comment },
          };
        },
      },
      handler: async ({ params, body, request }) =>
        engine.decide(params.task, {
          ...body,
          decidedBy: request.identity?.name ?? "unknown",
          principal: request.identity ? principalOf(request.identity) : null,
        }),
    }),
    defineRoute({
      method: "GET",
      path: "/api/v1/tasks/:task/log",
      tag: "Tasks",
      summary: "A task's log; with follow=1, a Server-Sent Events stream of lines until the task ends",
      // Decided before the stream opens: a follower of a task it may not view gets 404, never a stream.
      access: { kind: "task", permission: "view", task: (params) => params.task },
      params: pathParams("task"),
      query: logQuerySchema,
      response: z.object({
        state: z.enum(taskStates),
        lines: z.array(taskLogLineSchema),
        next: z
          .number()
          .int()
          .nullable()
          .describe("more lines are stored: ask again with after=next; null when these are all there are now"),
      }),
      handler: async ({ params, query, reply, request }) => {
        const task = await getTaskRow(db, params.task);
        if (query.follow === "0") {
          const page = await readLogPage(db, task.id, {
            afterLine: query.after,
            limit: LOG_PAGE_LINES,
            maxBytes: LOG_PAGE_BYTES,
          });
          const next = page.more ? (page.lines.at(-1)?.line ?? query.after) : null;
          return { state: task.state, lines: page.lines, next };
        }
        const response = openEventStream(reply);
        // Headers now (a comment line follows every 15 s while a step is quiet), so a
        // follower and any proxy in between can tell a quiet task from a dead connection.
        response.flushHeaders();
        const stop = feeds.follow(
          task.id,
          { after: query.after, storedLines: Number(task.log_lines) },
          response,
          (error) => request.log.error({ err: error }, "log stream failed"),
        );
        response.on("close", stop);
        return undefined;
      },
    }),
  ];
}
