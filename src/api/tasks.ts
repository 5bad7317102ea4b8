import { z } from "zod";
import { pageSchema, pagingSchema } from "../domain/common.js";
import { isTerminal, type TaskState, taskLogLineSchema, taskSchema, taskStates } from "../domain/tasks.js";
import type { TaskEngine } from "../engine/engine.js";
import type { StoreContext } from "../store/common.js";
import { listDecisions } from "../store/decisions.js";
import { getTaskRow, listTasks, readLogLines, toTask } from "../store/tasks.js";
import { defineRoute, pathParams, type RouteSpec } from "./route.js";

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

/** How often a follower re-reads the log when no event arrives (lines written by another node). */
const FOLLOW_POLL_MS = 1000;

export function taskRoutes(context: StoreContext, engine: TaskEngine): RouteSpec[] {
  const { db } = context;
  return [
    defineRoute({
      method: "GET",
      path: "/api/v1/tasks",
      tag: "Tasks",
      summary: "List tasks, newest first",
      query: taskListQuerySchema,
      response: pageSchema(taskSchema),
      handler: ({ query }) => listTasks(db, query, { states: query.state ? [query.state] : undefined }),
    }),
    defineRoute({
      method: "GET",
      path: "/api/v1/tasks/:task",
      tag: "Tasks",
      summary: "Show a task",
      params: pathParams("task"),
      response: taskSchema,
      handler: async ({ params }) => toTask(await getTaskRow(db, params.task)),
    }),
    defineRoute({
      method: "POST",
      path: "/api/v1/tasks/:task/cancel",
      tag: "Tasks",
      summary: "Cancel a task (a running one stops its step and cleans up)",
      params: pathParams("task"),
      response: taskSchema,
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
      params: pathParams("task"),
      response: z.array(decisionSchema),
      handler: async ({ params }) => listDecisions(db, (await getTaskRow(db, params.task)).id),
    }),
    defineRoute({
      method: "POST",
      path: "/api/v1/tasks/:task/decisions",
      tag: "Tasks",
      summary: "Answer a waiting task: approve / reject an approval, retry / skip / abort a failed step",
      params: pathParams("task"),
      body: z.strictObject({
        decision: z.enum(["approve", "reject", "retry", "skip", "abort"]),
        comment: z.string().max(2000).optional(),
      }),
      response: decisionSchema,
      handler: async ({ params, body, request }) =>
        engine.decide(params.task, { ...body, decidedBy: request.identity?.name ?? "unknown" }),
    }),
    defineRoute({
      method: "GET",
      path: "/api/v1/tasks/:task/log",
      tag: "Tasks",
      summary: "A task's log; with follow=1, a Server-Sent Events stream of lines until the task ends",
      params: pathParams("task"),
      query: logQuerySchema,
      response: z.object({ state: z.enum(taskStates), lines: z.array(taskLogLineSchema) }),
      handler: async ({ params, query, reply, request }) => {
        const task = await getTaskRow(db, params.task);
        if (query.follow === "0") {
          const lines = await readLogLines(db, task.id, { afterLine: query.after, limit: 10_000 });
          return { state: task.state, lines };
        }
        reply.hijack();
        const response = reply.raw;
        response.writeHead(200, {
          "content-type": "text/event-stream; charset=utf-8",
          "cache-control": "no-cache",
          connection: "keep-alive",
          "x-accel-buffering": "no",
        });
        // Headers now, and a comment line every 15 s while a step is quiet, so a follower
        // (and any proxy in between) can tell a quiet task from a dead connection.
        response.flushHeaders();
        const keepAlive = setInterval(() => response.write(": keep-alive\n\n"), 15_000);
        let after = query.after;
        let closed = false;
        let pending = false;
        let again = false;
        let timer: NodeJS.Timeout | undefined;
        const send = (event: string, data: unknown, id?: number) =>
          response.write(`${id === undefined ? "" : `id: ${id}\n`}event: ${event}\ndata: ${JSON.stringify(data)}\n\n`);
        const stop = () => {
          closed = true;
          clearInterval(keepAlive);
          clearTimeout(timer);
          engine.events.off("log", onEvent);
          engine.events.off("state", onEvent);
        };
        // Reads new lines and, once the task has ended and everything is sent, ends the stream.
        const pump = async (): Promise<void> => {
          if (closed) return;
          if (pending) {
            // Lines arrived while reading: read once more when this round ends.
            again = true;
            return;
          }
          pending = true;
          try {
            for (;;) {
              const state = (await getTaskRow(db, task.id)).state as TaskState;
              const lines = await readLogLines(db, task.id, { afterLine: after, limit: 1000 });
              for (const line of lines) send("line", line, line.line);
              after = lines.at(-1)?.line ?? after;
              if (lines.length === 1000) continue;
              if (isTerminal(state)) {
                send("end", { state });
                stop();
                response.end();
              }
              break;
            }
          } catch (error) {
            request.log.error({ err: error }, "log stream failed");
            stop();
            response.end();
          } finally {
            pending = false;
          }
          if (again && !closed) {
            again = false;
            return pump();
          }
          if (!closed) {
            clearTimeout(timer);
            timer = setTimeout(() => void pump(), FOLLOW_POLL_MS);
          }
        };
        const onEvent = (taskId: string) => {
          if (taskId === task.id) void pump();
        };
        engine.events.on("log", onEvent);
        engine.events.on("state", onEvent);
        request.raw.on("close", stop);
        await pump();
        return undefined;
      },
    }),
  ];
}
