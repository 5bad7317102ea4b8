import { commandLinesContaining } from "./remoteHosts.js";
import type { TestServer } from "./server.js";

/**
 * Creates a runbook of these steps in the project, publishes it and runs it in the
 * environment through the API, as a user would; its task's final state and log text.
 * With `watch`, the machine's command lines are read every 25 ms while it runs: `exposed`
 * holds each one that showed one of those secrets.
 */
export async function runRunbook(
  test: TestServer,
  project: string,
  runbook: {
    name: string;
    steps: Record<string, unknown>[];
    environment?: string;
    timeoutMs?: number;
    watch?: readonly string[];
  },
): Promise<{ taskId: string; state: unknown; log: string; exposed: string[] }> {
  const call = async <T>(method: string, path: string, body?: unknown): Promise<T> => {
    const response = await test.call<T>(method, path, body);
    if (response.status >= 300)
      throw new Error(`${method} ${path}: ${response.status} ${JSON.stringify(response.body)}`);
    return response.body;
  };
  const created = await call<{ slug: string }>("POST", `/api/v1/projects/${project}/runbooks`, {
    name: runbook.name,
    process: { steps: runbook.steps },
  });
  await call("POST", `/api/v1/projects/${project}/runbooks/${created.slug}/publish`);
  const run = await call<{ taskId: string }>("POST", `/api/v1/projects/${project}/runbooks/${created.slug}/runs`, {
    environment: runbook.environment ?? "prod",
  });
  const exposed: string[] = [];
  let watching = (runbook.watch ?? []).length > 0;
  const watcher = (async () => {
    while (watching) {
      for (const secret of runbook.watch ?? []) exposed.push(...commandLinesContaining(secret));
      await new Promise((resolve) => setTimeout(resolve, 25));
    }
  })();
  let task: Record<string, unknown>;
  try {
    task = await test.waitForTask(run.taskId, runbook.timeoutMs ?? 120_000);
  } finally {
    watching = false;
    await watcher;
  }
  const log = await call<{ lines: { text: string }[] }>("GET", `/api/v1/tasks/${run.taskId}/log`);
  return { taskId: run.taskId, state: task.state, log: log.lines.map((line) => line.text).join("\n"), exposed };
}
