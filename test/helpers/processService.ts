import { rmSync } from "node:fs";
import { join } from "node:path";
import { ProcessRuntime } from "../../src/runtimes/process.js";
import { buildProcessApp, type ProcessApp } from "./processApp.js";
import { type ProxyProcess, startProxyProcess } from "./proxy.js";
import { createAutoDeployedProject, startTestServer, type TestServer } from "./server.js";

/**
 * The `web` process step that runs the test app (processApp.ts) copied from the project's
 * AppDirectory variable, blue/green behind `host`, its APP_VERSION the release number;
 * `config` adds to its fields (blueGreen, settleSeconds, limits…).
 */
export function processAppStep(host: string, config: Record<string, unknown> = {}) {
  return {
    name: "web",
    kind: "process",
    config: {
      strategy: "blueGreen",
      command: "node",
      args: ["server.js"],
      copyFrom: "#{AppDirectory}",
      env: { APP_VERSION: "#{Ferry.Release.Number}" },
      route: { host },
      ...config,
    },
  };
}

/** A real server behind a real `ferry proxy`, with a project that auto-deploys to prod and the test app to run. */
export interface ProcessAppService {
  app: ProcessApp;
  proxy: ProxyProcess;
  test: TestServer;
  /** The server's process runtime, to look at what it started. */
  processes: ProcessRuntime;
  projectSlug: string;
  /** Removes the project's processes, stops the server and the proxy, and deletes their files and the app. */
  close(): Promise<void>;
}

export async function startProcessAppService(names: {
  lifecycle: string;
  project: string;
}): Promise<ProcessAppService> {
  const app = await buildProcessApp();
  const proxy = await startProxyProcess();
  const test = await startTestServer({ traffic: proxy.traffic });
  const processes = new ProcessRuntime({ directory: join(test.server.deployments.workRoot, "processes") });
  const { projectSlug } = await createAutoDeployedProject(test, names, { name: "AppDirectory", value: app.directory });
  return {
    app,
    proxy,
    test,
    processes,
    projectSlug,
    async close() {
      await processes.removeByLabel("ferry.project", projectSlug).catch(() => undefined);
      const workRoot = test.server.deployments.workRoot;
      await test.close();
      rmSync(workRoot, { recursive: true, force: true });
      await proxy.stop();
      await app.remove();
    },
  };
}
