import type { EventEmitter } from "node:events";
import type { ServerResponse } from "node:http";
import type { Kysely } from "kysely";
import { z } from "zod";
import { type Reach, reaches } from "../domain/access.js";
import { dashboardQuerySchema, dashboardSchema } from "../domain/dashboard.js";
import { taskStates } from "../domain/tasks.js";
import type { TaskEngine } from "../engine/engine.js";
import type { StoreContext } from "../store/common.js";
import { getDashboard } from "../store/dashboard.js";
import type { Database } from "../store/schema.js";
import { openEventStream } from "./eventStream.js";
import { defineRoute, type RouteSpec } from "./route.js";

/** One changed task as the live stream tells it: enough to refetch what shows it. */
const taskChangeSchema = z.object({
  taskId: z.string(),
  kind: z.string(),
  state: z.enum(taskStates),
  project: z.string().nullable().describe("project id"),
  environment: z.string().nullable().describe("environment id"),
});

const eventsQuerySchema = z.strictObject({
  /** 1: keep the connection open as Server-Sent Events and tell every change after the active tasks. */
  follow: z.enum(["0", "1"]).default("0"),
});

/** Most active tasks listed at once (newest first): the rest show when they change. */
const ACTIVE_LIMIT = 500;

/** Changes that arrive within this window go out as one `tasks` event (a deployment emits several at once). */
const BATCH_MS = 200;
/** A comment this often, so a client and any proxy can tell a quiet stream from a dead one. */
const KEEP_ALIVE_MS = 15_000;

/** The overview a person opens first: what runs where, and what is happening now. */
export function dashboardRoutes(context: StoreContext, engine?: TaskEngine): RouteSpec[] {
  const routes = [
    defineRoute({
      method: "GET",
      path: "/api/v1/dashboard",
      tag: "Dashboard",
      summary:
        "Projects × environments: the live release, the newest deployment and its state (paged by project, by name)",
      query: dashboardQuerySchema,
      response: dashboardSchema,
      access: { kind: "filtered" },
      handler: ({ query, access }) => getDashboard(context, query, access.reach("view")),
    }),
  ];
  if (engine === undefined) return routes;
  routes.push(
    defineRoute({
      method: "GET",
      path: "/api/v1/dashboard/events",
      tag: "Dashboard",
      summary:
        "The active tasks (queued, running, waiting) the caller may view; with follow=1, Server-Sent Events: `tasks` with those, then a `tasks` event for each batch of tasks that changed state or got an answer",
      access: { kind: "filtered" },
      query: eventsQuerySchema,
      response: z.object({ tasks: z.array(taskChangeSchema) }),
      handler: async ({ query, access, reply, request }) => {
        const visible = access.reach("view");
        const active = await activeTasks(context.db, visible);
        if (query.follow === "0") return { tasks: active };
        const response = openEventStream(reply);
        // The first event is sent at once: what the client shows may have changed while it was
        // connecting (or reconnecting), so it refetches then, and afterwards on each event.
        response.write(`retry: 3000\n${taskEvent(active)}`);
        const stop = streamTaskChanges(context.db, engine.events, visible, response, (error) =>
          request.log.error({ err: error }, "dashboard event stream failed"),
        );
        response.on("close", stop);
        return undefined;
      },
    }),
  );
  return routes;
}

/**
 * Tells one client about task changes on this node's engine (state changes and answers to a
 * task's question), batched, filtered by what the client may view. With several nodes a
 * client hears only its own node's tasks at once; the dashboard also refetches on a timer.
 */
function streamTaskChanges(
  db: Kysely<Database>,
  events: EventEmitter,
  visible: Reach,
  output: ServerResponse,
  onError: (error: unknown) => void,
): () => void {
  const pending = new Set<string>();
  let timer: NodeJS.Timeout | undefined;
  let closed = false;
  const onChange = (taskId: string) => {
    pending.add(taskId);
    timer ??= setTimeout(() => void flush(), BATCH_MS);
  };
  const flush = async () => {
    const ids = [...pending];
    pending.clear();
    try {
      const rows = await db
        .selectFrom("tasks")
        .select(["id", "kind", "state", "project_id", "environment_id"])
        .where("id", "in", ids)
        .execute();
      const tasks = rows.filter((row) => reaches(visible, row.project_id, row.environment_id)).map(toTaskChange);
      if (!closed && tasks.length > 0) output.write(taskEvent(tasks));
    } catch (error) {
      onError(error);
    } finally {
      timer = undefined;
      if (pending.size > 0 && !closed) timer = setTimeout(() => void flush(), BATCH_MS);
    }
  };
  const keepAlive = setInterval(() => output.write(": keep-alive\n\n"), KEEP_ALIVE_MS);
  events.on("state", onChange);
  events.on("decision", onChange);
  return () => {
    closed = true;
    clearInterval(keepAlive);
    clearTimeout(timer);
    events.off("state", onChange);
    events.off("decision", onChange);
  };
}

type TaskChange = z.infer<typeof taskChangeSchema>;

function taskEvent(tasks: readonly TaskChange[]): string {
  return `event: tasks\ndata: ${JSON.stringify({ tasks })}\n\n`;
}

function toTaskChange(row: {
  id: string;
  kind: string;
  state: string;
  project_id: string | null;
  environment_id: string | null;
}): TaskChange {
  return {
    taskId: row.id,
    kind: row.kind,
    state: row.state as TaskChange["state"],
    project: row.project_id,
    environment: row.environment_id,
  };
}

/** Queued, running and waiting tasks the caller may view, newest first (the tasks_by_state index). */
async function activeTasks(db: Kysely<Database>, visible: Reach): Promise<TaskChange[]> {
  const rows = await db
    .selectFrom("tasks")
    .select(["id", "kind", "state", "project_id", "environment_id"])
    .where("state", "in", ["queued", "running", "waiting"])
    .orderBy("sequence", "desc")
    .limit(ACTIVE_LIMIT)
    .execute();
  return rows.filter((row) => reaches(visible, row.project_id, row.environment_id)).map(toTaskChange);
}
