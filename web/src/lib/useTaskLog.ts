import { useEffect, useRef, useState } from "react";
import { api, query } from "../api/client";
import type { TaskLogLine, TaskState } from "../api/types";
import { LogModel } from "./logModel";

export type StreamStatus = "connecting" | "streaming" | "reconnecting" | "ended";

/** GET /api/v1/tasks/:task/log: a page of stored lines; `next` null when there are no more now. */
interface TaskLogPage {
  lines: TaskLogLine[];
  next: number | null;
}

/**
 * Follows a task's log into a LogModel: the stored lines in pages (GET
 * /api/v1/tasks/:task/log?after=N), then the stream of the rest (…/log?follow=1&after=N).
 *
 * Reconnections are ours, not the browser's: its automatic retry would ask again from the
 * position in the URL, and the server would send lines the page already has (the bug
 * Argo CD's log viewer still has). After any error the stream is closed and reopened with
 * `after=` the last line received, and a line at or below that number is dropped, so a
 * line shows once whatever the network does.
 */
export function useTaskLog(taskId: string, enabled: boolean) {
  const model = useRef(new LogModel());
  const [version, setVersion] = useState(0);
  const [status, setStatus] = useState<StreamStatus>("connecting");
  const [endState, setEndState] = useState<TaskState | undefined>();
  const [reconnections, setReconnections] = useState(0);

  useEffect(() => {
    if (!enabled) return;
    const log = new LogModel();
    model.current = log;
    setVersion((value) => value + 1);
    setStatus("connecting");
    setEndState(undefined);
    let last = 0;
    let source: EventSource | undefined;
    let retry: ReturnType<typeof setTimeout> | undefined;
    let frame: number | undefined;
    let failures = 0;
    let stopped = false;
    // Lines arrive in bursts: render at most once per frame.
    const publish = () => {
      frame ??= requestAnimationFrame(() => {
        frame = undefined;
        setVersion((value) => value + 1);
      });
    };
    const fail = () => {
      if (stopped) return;
      failures++;
      setStatus("reconnecting");
      setReconnections((count) => count + 1);
      retry = setTimeout(() => void open(), Math.min(10_000, 250 * 2 ** failures));
    };
    // What is stored already comes in pages of up to 10,000 lines (one event per line is
    // slow for a long log: 200,000 lines took 11 s); the stream then follows from the last.
    const catchUp = async () => {
      for (;;) {
        const page = await api<TaskLogPage>("GET", `/tasks/${encodeURIComponent(taskId)}/log${query({ after: last })}`);
        if (stopped) return;
        for (const line of page.lines) {
          if (line.line <= last) continue;
          last = line.line;
          log.append(line);
        }
        publish();
        if (page.next === null) return;
      }
    };
    const open = async () => {
      try {
        await catchUp();
      } catch {
        fail();
        return;
      }
      if (stopped) return;
      source = new EventSource(`/api/v1/tasks/${encodeURIComponent(taskId)}/log?follow=1&after=${last}`);
      source.onopen = () => {
        failures = 0;
        setStatus("streaming");
      };
      source.addEventListener("line", (event) => {
        const line = JSON.parse((event as MessageEvent<string>).data) as TaskLogLine;
        if (line.line <= last) return;
        last = line.line;
        log.append(line);
        publish();
      });
      source.addEventListener("end", (event) => {
        const { state } = JSON.parse((event as MessageEvent<string>).data) as { state: TaskState };
        source?.close();
        stopped = true;
        setEndState(state);
        setStatus("ended");
        publish();
      });
      source.onerror = () => {
        source?.close();
        fail();
      };
    };
    void open();
    return () => {
      stopped = true;
      clearTimeout(retry);
      if (frame !== undefined) cancelAnimationFrame(frame);
      source?.close();
    };
  }, [taskId, enabled]);

  return { model: model.current, version, status, endState, reconnections };
}
