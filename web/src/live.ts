import { type QueryClient, useQueryClient } from "@tanstack/react-query";
import { useEffect, useSyncExternalStore } from "react";
import type { TaskChange } from "./api/types";

/*
 * One Server-Sent Events connection per tab (GET /api/v1/dashboard/events?follow=1) tells
 * every page which tasks changed; pages refetch what shows them. The server sends the
 * active tasks first on every (re)connection, so nothing missed while disconnected stays
 * stale: a reconnection refetches what is on screen.
 */

type Listener = (changes: TaskChange[], reconnected: boolean) => void;
export type LiveStatus = "connecting" | "live" | "reconnecting";

const listeners = new Set<Listener>();
const statusListeners = new Set<() => void>();
let status: LiveStatus = "connecting";

function setStatus(next: LiveStatus): void {
  if (status === next) return;
  status = next;
  for (const listener of statusListeners) listener();
}

/** Keeps the connection open while the signed-in layout is shown. */
export function useLiveConnection(): void {
  const client = useQueryClient();
  useEffect(() => {
    let source: EventSource | undefined;
    let retry: ReturnType<typeof setTimeout> | undefined;
    let stopped = false;
    let opened = false;
    const open = () => {
      setStatus(opened ? "reconnecting" : "connecting");
      source = new EventSource("/api/v1/dashboard/events?follow=1");
      let first = true;
      source.addEventListener("tasks", (event) => {
        const { tasks } = JSON.parse((event as MessageEvent<string>).data) as { tasks: TaskChange[] };
        const reconnected = first && opened;
        first = false;
        opened = true;
        setStatus("live");
        refresh(client, tasks, reconnected);
        for (const listener of listeners) listener(tasks, reconnected);
      });
      source.onerror = () => {
        setStatus("reconnecting");
        first = true;
        // The browser retries by itself after a dropped connection; after a refusal (the
        // session ended, the server restarted) the source is closed and we open a new one.
        if (source?.readyState === EventSource.CLOSED && !stopped) {
          retry = setTimeout(open, 3000);
        }
      };
    };
    open();
    return () => {
      stopped = true;
      clearTimeout(retry);
      source?.close();
    };
  }, [client]);
}

/** What the pages show about tasks goes stale when they change: refetch the queries that show them. */
function refresh(client: QueryClient, tasks: TaskChange[], reconnected: boolean): void {
  if (reconnected) {
    void client.invalidateQueries({ predicate: (query) => query.queryKey[0] !== "session" });
    return;
  }
  if (tasks.length === 0) return;
  for (const task of tasks) {
    void client.invalidateQueries({ queryKey: ["task", task.taskId] });
  }
  void client.invalidateQueries({ queryKey: ["progression"] });
  void client.invalidateQueries({ queryKey: ["tasks"] });
  if (tasks.some((task) => task.kind === "runbook")) void client.invalidateQueries({ queryKey: ["runbooks"] });
}

/** Calls `listener` with every batch of changed tasks (and after a reconnection). */
export function useTaskChanges(listener: Listener): void {
  useEffect(() => {
    listeners.add(listener);
    return () => {
      listeners.delete(listener);
    };
  }, [listener]);
}

export function useLiveStatus(): LiveStatus {
  return useSyncExternalStore(
    (listener) => {
      statusListeners.add(listener);
      return () => statusListeners.delete(listener);
    },
    () => status,
    () => status,
  );
}
