import { randomBytes } from "node:crypto";
import { rmSync } from "node:fs";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { ProcessRuntime } from "../src/runtimes/process.js";
import { startNginx, type TestNginx } from "./helpers/nginx.js";
import { buildProcessApp, type ProcessApp } from "./helpers/processApp.js";
import { processAppStep } from "./helpers/processService.js";
import { createAutoDeployedProject, startTestServer, type TestServer } from "./helpers/server.js";

interface Created {
  deployments: { taskId: string }[];
}

/**
 * Canary stages need a router that can split traffic by weight (ADR 0049): with a real
 * nginx as the server's router, a blue/green step with `canary` fails before it starts a
 * colour, naming the field and what to do, and nothing users see changes.
 */
describe("canary stages on the nginx router (real nginx, server and supervisors)", () => {
  const projectName = `cng-${randomBytes(3).toString("hex")}`;
  let nginx: TestNginx;
  let test: TestServer;
  let app: ProcessApp;
  let processes: ProcessRuntime;
  let projectSlug: string;

  beforeAll(async () => {
    app = await buildProcessApp();
    nginx = await startNginx();
    test = await startTestServer({ traffic: { driver: "nginx", nginx: nginx.options } });
    processes = new ProcessRuntime({ directory: join(test.server.deployments.workRoot, "processes") });
    ({ projectSlug } = await createAutoDeployedProject(
      test,
      { lifecycle: "cng", project: projectName },
      { name: "AppDirectory", value: app.directory },
    ));
  }, 120_000);

  afterAll(async () => {
    if (projectSlug) await processes.removeByLabel("ferry.project", projectSlug);
    const workRoot = test?.server.deployments.workRoot;
    await test?.close();
    if (workRoot) rmSync(workRoot, { recursive: true, force: true });
    await nginx?.stop();
    await app?.remove();
  });

  it("refuses the canary before starting anything, naming blueGreen.canary and the builtin proxy", async () => {
    const saved = await test.call("PUT", `/api/v1/projects/${projectSlug}/process`, {
      steps: [
        processAppStep(`${projectName}.test`, {
          blueGreen: {
            healthCheck: { path: "/health", intervalMs: 100, deadlineSeconds: 4 },
            canary: { steps: [{ weight: 10, pauseSeconds: 5 }, { weight: 100 }] },
          },
        }),
      ],
    });
    expect(saved.status, JSON.stringify(saved.body)).toBe(200);
    const created = await test.call<Created>("POST", `/api/v1/projects/${projectSlug}/releases`, { version: "1.0.0" });
    expect(created.status, JSON.stringify(created.body)).toBe(201);
    const taskId = created.body.deployments[0]?.taskId ?? "";
    const task = await test.waitForTask(taskId, 60_000);
    const log = (await test.call<{ lines: { text: string }[] }>("GET", `/api/v1/tasks/${taskId}/log`)).body.lines
      .map((line) => line.text)
      .join("\n");
    expect(task.state, log).toBe("failed");
    expect(log).toContain(
      "blueGreen.canary: the nginx router cannot send a share of the traffic to the new colour; canary stages need the builtin proxy or HAProxy (FERRY_ROUTER=builtin or haproxy, or a target router with driver: builtin or haproxy)",
    );
    expect(log).not.toContain("starting colour");
    expect(await processes.listByLabel("ferry.project", projectSlug)).toEqual([]);
  });
});
