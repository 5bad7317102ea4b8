import { setTimeout as sleep } from "node:timers/promises";
import { apiRequest } from "./cli.js";

/** Task states that do not change any more. */
export const TERMINAL = ["succeeded", "failed", "cancelled", "interrupted"];

/**
 * The API of a `ferry server` process that a crash test kills and restarts on one port
 * (read at each call: the test picks it before the first start).
 */
export function crashTestClient(port: () => number, apiKey: string) {
  const call = async <T = Record<string, unknown>>(method: string, path: string, body?: unknown) => {
    const response = await apiRequest(`http://127.0.0.1:${port()}${path}`, apiKey, method, body);
    return { status: response.status, body: (await response.json()) as T };
  };
  /** Waits until the task is terminal; an interrupted one also until its clean-up has finished. */
  const waitForTerminal = async (taskId: string, timeoutMs = 30_000) => {
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      const { body } = await call<{ state: string }>("GET", `/api/v1/tasks/${taskId}`);
      if (body.state === "interrupted") {
        // The state changes first, then the clean-up runs; wait for its last line.
        const log = await call<{ lines: { text: string }[] }>("GET", `/api/v1/tasks/${taskId}/log`);
        if (log.body.lines.some((line) => line.text === "clean-up after the interruption finished")) return body.state;
      } else if (TERMINAL.includes(body.state)) {
        return body.state;
      }
      if (Date.now() > deadline) throw new Error(`task ${taskId} is still ${body.state}`);
      await sleep(50);
    }
  };
  return { call, waitForTerminal };
}
