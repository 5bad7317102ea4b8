import { randomBytes } from "node:crypto";
import { rmSync } from "node:fs";
import http from "node:http";
import { join } from "node:path";
import { setTimeout as sleep } from "node:timers/promises";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { ProcessRuntime } from "../../src/runtimes/process.js";
import type { TrafficSettings } from "../../src/traffic/routers.js";
import { type RunningLoad, startLoad } from "./load.js";
import { buildProcessApp, type ProcessApp } from "./processApp.js";
import { processAppStep } from "./processService.js";
import { cookieVisitor } from "./routerDriver.js";
import { createAutoDeployedProject, startTestServer, type TestServer, taskLogText } from "./server.js";

interface Created {
  deployments: { taskId: string }[];
}

/** The router under test, started for the whole scenario: where it listens and how the server drives it. */
export interface CanaryRouter {
  readonly port: number;
  readonly traffic: TrafficSettings;
  stop(): Promise<void>;
}

/**
 * Canary stages of a blue/green step (issue 17 part 4, ADR 0049 and 0053), end to end: a real
 * Ferry server deploys a Node.js app as supervised processes, a real router (`ferry proxy`,
 * HAProxy) splits the traffic, and keep-alive clients send requests through it the whole
 * time: cookie-less ones (each request a new visitor: they measure the share) and visitors
 * that keep the router's cookie as a browser does.
 */
export function describeCanary(spec: {
  title: string;
  /** Of the project's name. */
  prefix: string;
  /** The name of the router's stickiness cookie on a route. */
  cookieName(route: string): string;
  startRouter(): Promise<CanaryRouter>;
}): void {
  describe(spec.title, () => {
    const projectName = `${spec.prefix}-${randomBytes(3).toString("hex")}`;
    const host = `${projectName}.test`;
    let proxy: CanaryRouter;
    let test: TestServer;
    let processes: ProcessRuntime;
    let app: ProcessApp;
    let failing: ProcessApp;
    let projectSlug: string;
    let appVariableId: string;
    const loads: RunningLoad[] = [];

    const webStep = (canary: Record<string, unknown> | undefined) =>
      processAppStep(host, {
        limits: { openFiles: 4096 },
        blueGreen: {
          healthCheck: { path: "/health", intervalMs: 100, timeoutMs: 1000, deadlineSeconds: 4 },
          drainSeconds: 10,
          retain: 2,
          ...(canary !== undefined && { canary }),
        },
        settleSeconds: 0.3,
        stopTimeoutSeconds: 5,
      });

    const logText = (taskId: string) => taskLogText(test.call, taskId);

    /** Creates a release running the app in `directory`; the task of its auto-deployment (not awaited). */
    const startRelease = async (version: string, directory: ProcessApp, canary?: Record<string, unknown>) => {
      const saved = await test.call("PUT", `/api/v1/projects/${projectSlug}/process`, { steps: [webStep(canary)] });
      expect(saved.status, JSON.stringify(saved.body)).toBe(200);
      await test.call("PATCH", `/api/v1/projects/${projectSlug}/variables/${appVariableId}`, {
        value: directory.directory,
      });
      const created = await test.call<Created>("POST", `/api/v1/projects/${projectSlug}/releases`, { version });
      expect(created.status, JSON.stringify(created.body)).toBe(201);
      return created.body.deployments[0]?.taskId ?? "";
    };

    const finished = async (taskId: string) => {
      const task = await test.waitForTask(taskId, 120_000);
      return { state: task.state, log: await logText(taskId) };
    };

    /** The task's open decision, once it waits for one. */
    const openDecision = async (taskId: string) => {
      const deadline = Date.now() + 60_000;
      while (Date.now() < deadline) {
        const { body } = await test.call<{ id: string; decision: string | null; prompt: string }[]>(
          "GET",
          `/api/v1/tasks/${taskId}/decisions`,
        );
        const open = body.find((decision) => decision.decision === null);
        const task = await test.call<{ state: string }>("GET", `/api/v1/tasks/${taskId}`);
        if (open && task.body.state === "waiting") return open;
        if (!["queued", "running", "waiting"].includes(task.body.state)) {
          throw new Error(`task ${taskId} ended (${task.body.state}) before asking:\n${await logText(taskId)}`);
        }
        await sleep(100);
      }
      throw new Error(`task ${taskId} never asked for a decision`);
    };

    /** Share (per cent) of the new version's answers among `requests` cookie-less requests. */
    const measuredShare = async (version: string, requests: number) => {
      const load = startLoad({ port: proxy.port, host, connections: 16 });
      loads.push(load);
      while (load.completed() < requests) await sleep(50);
      const result = await load.stop();
      expect(result.failures).toEqual([]);
      return ((result.bodies.get(`version ${version}`) ?? 0) / result.requests) * 100;
    };

    beforeAll(async () => {
      [app, failing] = await Promise.all([buildProcessApp(), buildProcessApp({ errorEvery: 20 })]);
      proxy = await spec.startRouter();
      test = await startTestServer({ traffic: proxy.traffic });
      processes = new ProcessRuntime({ directory: join(test.server.deployments.workRoot, "processes") });
      ({ projectSlug, variableId: appVariableId } = await createAutoDeployedProject(
        test,
        { lifecycle: "cny", project: projectName },
        { name: "AppDirectory", value: app.directory },
      ));
      const first = await finished(await startRelease("1.0.0", app));
      expect(first.state, first.log).toBe("succeeded");
    }, 180_000);

    afterAll(async () => {
      for (const load of loads) await load.stop();
      if (projectSlug) await processes.removeByLabel("ferry.project", projectSlug);
      const workRoot = test?.server.deployments.workRoot;
      await test?.close();
      if (workRoot) rmSync(workRoot, { recursive: true, force: true });
      await proxy?.stop();
      await Promise.all([app, failing].map((directory) => directory?.remove()));
    });

    it("goes 10 % → 50 % → 100 % under load: the measured share is within ±3 points of each weight, cookie holders only ever move to the new colour, 0 failed requests", async () => {
      const visitors = startVisitors(proxy.port, host, spec.cookieName(`${projectSlug}-prod`), 40);
      const load = startLoad({ port: proxy.port, host, connections: 8 });
      loads.push(load);
      const taskId = await startRelease("1.1.0", app, {
        steps: [
          { weight: 10, approval: { instructions: "look at the 10 % figures" } },
          { weight: 50, approval: { instructions: "look at the 50 % figures" } },
          { weight: 100 },
        ],
      });
      const shares: Record<number, number> = {};
      for (const weight of [10, 50]) {
        const decision = await openDecision(taskId);
        expect(decision.prompt).toContain(`at ${weight} %`);
        // 4,000 requests: at 50 % one standard deviation of the share is 0.8 points.
        shares[weight] = await measuredShare("1.1.0", 4_000);
        const approved = await test.call("POST", `/api/v1/tasks/${taskId}/decisions`, { decision: "approve" });
        expect(approved.status, JSON.stringify(approved.body)).toBeLessThan(300);
      }
      const done = await finished(taskId);
      expect(done.state, done.log).toBe("succeeded");
      const after = await measuredShare("1.1.0", 500);
      const seen = await load.stop();
      const visited = await visitors.stop();

      expect(Math.abs((shares[10] ?? 0) - 10), `share at 10 %: ${shares[10]}`).toBeLessThanOrEqual(3);
      expect(Math.abs((shares[50] ?? 0) - 50), `share at 50 %: ${shares[50]}`).toBeLessThanOrEqual(3);
      expect(after).toBe(100);
      expect(seen.failures).toEqual([]);
      expect(visited.failures).toEqual([]);
      // A visitor with its cookie never goes back from the new version to the old one.
      for (const sequence of visited.sequences) {
        const firstNew = sequence.indexOf("version 1.1.0");
        if (firstNew !== -1) expect(sequence.slice(firstNew)).not.toContain("version 1.0.0");
      }
      // Some visitors were on the new version before the switch, and most stayed on the old one at 10 %.
      expect(
        visited.sequences.some((sequence) => sequence[0] === "version 1.1.0" || sequence.at(-1) !== sequence[0]),
      ).toBe(true);
      expect(done.log).toMatch(/canary stage 1 of 3 \(10 %\): 10 % of the visitors of route \S+ go to colour/);
      expect(done.log).toMatch(/canary stage 1 of 3 \(10 %\): new colour: \d+ request\(s\), 5xx 0\.0 %/);
      expect(done.log).toMatch(/canary stage 2 of 3 \(50 %\): new colour: \d+ request\(s\), 5xx 0\.0 %/);
      expect(done.log).toContain("canary: every stage passed");
      expect(done.log).toMatch(/switched route \S+ to colour ferry-\S+-prod-1\.1\.0-\w+/);
    }, 300_000);

    it("a release returning 5 % errors at the first stage is switched back to 0 % automatically: 0 failed requests for visitors on the stable colour, figures in the task log", async () => {
      const visitors = startVisitors(proxy.port, host, spec.cookieName(`${projectSlug}-prod`), 40);
      const load = startLoad({ port: proxy.port, host, connections: 8 });
      loads.push(load);
      const taskId = await startRelease("1.2.0", failing, {
        steps: [{ weight: 10, pauseSeconds: 120 }, { weight: 100 }],
        analysis: { minRequests: 100 },
      });
      const done = await finished(taskId);
      // Once switched back, the old version serves every request.
      const after = await measuredShare("1.1.0", 500);
      const seen = await load.stop();
      const visited = await visitors.stop();

      expect(done.state, done.log).toBe("failed");
      expect(after).toBe(100);
      expect(done.log).toMatch(
        /canary stage 1 of 2 \(10 %\): new colour: \d+ request\(s\), 5xx [4-6]\.\d %, connection errors 0\.0 %, p99 ≤ \d+ ms; stable colour: \d+ request\(s\), 5xx 0\.0 %/,
      );
      expect(done.log).toMatch(/canary: switched route \S+ back to 0 % on colour ferry-\S+-prod-1\.2\.0-\w+ in \d+ ms/);
      expect(done.log).toMatch(/was over the thresholds \(5xx ratio [4-6]\.\d % against 0\.0 % on the stable colour/);
      expect(done.log).not.toContain("every stage passed");
      // The only failures anyone saw are the new release's own 500s; visitors on the stable colour saw none.
      expect(seen.failures.length).toBeGreaterThan(0);
      for (const failure of seen.failures) expect(failure).toBe("HTTP 500: error 1.2.0\n");
      const stableVisitors = visited.sequences.filter((sequence) => !sequence.some((body) => body.includes("1.2.0")));
      expect(stableVisitors.length).toBeGreaterThan(20);
      expect(visited.failuresOf(stableVisitors)).toEqual([]);
      // The new colour is gone; 1.1.0 keeps running.
      const running = (await processes.listByLabel("ferry.project", projectSlug)).filter(
        (instance) => instance.state === "running",
      );
      expect(running.map((instance) => instance.labels["ferry.release"])).toEqual(["1.1.0"]);
    }, 300_000);

    it("a canary cancelled while it waits for an approval is taken out of the route: its colour is removed, 0 failed requests", async () => {
      const load = startLoad({ port: proxy.port, host, connections: 8 });
      loads.push(load);
      const taskId = await startRelease("1.3.0", app, {
        steps: [{ weight: 30, approval: { instructions: "look" } }, { weight: 100 }],
      });
      await openDecision(taskId);
      const during = await measuredShare("1.3.0", 1_000);
      const cancelled = await test.call("POST", `/api/v1/tasks/${taskId}/cancel`);
      expect(cancelled.status, JSON.stringify(cancelled.body)).toBeLessThan(300);
      const done = await finished(taskId);
      const after = await measuredShare("1.1.0", 500);
      const seen = await load.stop();

      expect(done.state, done.log).toBe("cancelled");
      expect(during).toBeGreaterThan(10);
      expect(after).toBe(100);
      expect(seen.failures).toEqual([]);
      expect(done.log).toMatch(/canary: route \S+ back to 0 % on colour ferry-\S+-prod-1\.3\.0-\w+/);
      const running = (await processes.listByLabel("ferry.project", projectSlug)).filter(
        (instance) => instance.state === "running",
      );
      expect(running.map((instance) => instance.labels["ferry.release"])).toEqual(["1.1.0"]);
    }, 300_000);

    it("a stage waiting for an approval is judged meanwhile: a release returning 5 % errors is switched back to 0 % and its question withdrawn, 0 failed requests for stable visitors", async () => {
      const visitors = startVisitors(proxy.port, host, spec.cookieName(`${projectSlug}-prod`), 40);
      const load = startLoad({ port: proxy.port, host, connections: 8 });
      loads.push(load);
      const taskId = await startRelease("1.4.0", failing, {
        steps: [{ weight: 20, approval: { instructions: "look at the 20 % figures" } }, { weight: 100 }],
        analysis: { minRequests: 100 },
      });
      // Nobody answers: the figures alone end the stage.
      const done = await finished(taskId);
      const after = await measuredShare("1.1.0", 500);
      const seen = await load.stop();
      const visited = await visitors.stop();
      const { body: decisions } = await test.call<{ decision: string | null; decidedBy: string; comment: string }[]>(
        "GET",
        `/api/v1/tasks/${taskId}/decisions`,
      );
      const lateAnswer = await test.call("POST", `/api/v1/tasks/${taskId}/decisions`, { decision: "approve" });

      expect(done.state, done.log).toBe("failed");
      expect(after).toBe(100);
      // The question was asked, then withdrawn by Ferry with the reason; it cannot be answered any more.
      expect(decisions).toHaveLength(1);
      expect(decisions[0]?.decision).toBe("withdrawn");
      expect(decisions[0]?.decidedBy).toBe("ferry");
      expect(decisions[0]?.comment).toMatch(/went over its thresholds at 20 % \(5xx ratio [4-6]\.\d % against 0\.0 %/);
      expect(lateAnswer.status).toBe(409);
      expect(done.log).toContain("waiting for a decision: look at the 20 % figures");
      expect(done.log).toContain(
        "canary stage 1 of 2 (20 %): over the thresholds while it waited for an approval; the question is withdrawn",
      );
      expect(done.log).toMatch(
        /canary stage 1 of 2 \(20 %\): new colour: \d+ request\(s\), 5xx [4-6]\.\d %, connection errors 0\.0 %, p99 ≤ \d+ ms; stable colour: \d+ request\(s\), 5xx 0\.0 %/,
      );
      expect(done.log).toMatch(/canary: switched route \S+ back to 0 % on colour ferry-\S+-prod-1\.4\.0-\w+ in \d+ ms/);
      expect(done.log).not.toContain("every stage passed");
      for (const failure of seen.failures) expect(failure).toBe("HTTP 500: error 1.4.0\n");
      const stableVisitors = visited.sequences.filter((sequence) => !sequence.some((body) => body.includes("1.4.0")));
      expect(stableVisitors.length).toBeGreaterThan(20);
      expect(visited.failuresOf(stableVisitors)).toEqual([]);
      const running = (await processes.listByLabel("ferry.project", projectSlug)).filter(
        (instance) => instance.state === "running",
      );
      expect(running.map((instance) => instance.labels["ferry.release"])).toEqual(["1.1.0"]);
    }, 300_000);

    it("timed stages (a pause, no approval) go on by themselves under load: no question asked, every stage logged with its figures, 100 % on the new colour, 0 failed requests", async () => {
      const load = startLoad({ port: proxy.port, host, connections: 8 });
      loads.push(load);
      const started = Date.now();
      const taskId = await startRelease("1.5.0", app, {
        steps: [{ weight: 20, pauseSeconds: 3 }, { weight: 50, pauseSeconds: 2 }, { weight: 100 }],
      });
      const done = await finished(taskId);
      const elapsedMs = Date.now() - started;
      const after = await measuredShare("1.5.0", 500);
      const seen = await load.stop();
      const { body: decisions } = await test.call<unknown[]>("GET", `/api/v1/tasks/${taskId}/decisions`);

      expect(done.state, done.log).toBe("succeeded");
      expect(decisions).toEqual([]);
      expect(elapsedMs).toBeGreaterThanOrEqual(5_000);
      expect(after).toBe(100);
      expect(seen.failures).toEqual([]);
      // Both stages sent a share of the load to the new version before the switch.
      expect(seen.bodies.get("version 1.5.0") ?? 0).toBeGreaterThan(0);
      expect(seen.bodies.get("version 1.1.0") ?? 0).toBeGreaterThan(0);
      expect(done.log).toMatch(
        /canary stage 1 of 3 \(20 %\): 20 % of the visitors of route \S+ go to colour .*; 3 s until 50 %/,
      );
      expect(done.log).toMatch(
        /canary stage 2 of 3 \(50 %\): 50 % of the visitors of route \S+ go to colour .*; 2 s until 100 %/,
      );
      expect(done.log).toMatch(/canary stage 1 of 3 \(20 %\): new colour: \d+ request\(s\), 5xx 0\.0 %/);
      expect(done.log).toMatch(/canary stage 2 of 3 \(50 %\): new colour: \d+ request\(s\), 5xx 0\.0 %/);
      expect(done.log).not.toContain("waiting for a decision");
      expect(done.log).toContain("canary: every stage passed");
    }, 300_000);
  });
}

/**
 * Visitors that keep the proxy's bucket cookie, as browsers do, each sending one request after
 * another on its own keep-alive connection; what each one saw, in order.
 */
function startVisitors(port: number, host: string, cookieName: string, count: number) {
  let running = true;
  const sequences: string[][] = Array.from({ length: count }, () => []);
  const failures: string[] = [];
  const failed = new Set<string[]>();
  const visit = async (sequence: string[]) => {
    const agent = new http.Agent({ keepAlive: true, maxSockets: 1 });
    const visitor = cookieVisitor(port, host, cookieName, agent, { timeoutMs: 30_000 });
    while (running) {
      try {
        const reply = await visitor();
        sequence.push(reply.body.trim());
        if (reply.status !== 200) {
          failures.push(`HTTP ${reply.status}: ${reply.body}`);
          failed.add(sequence);
        }
      } catch (error) {
        failures.push((error as Error).message);
        failed.add(sequence);
      }
      // A visitor clicks now and then; the cookie-less load keeps the proxy busy meanwhile.
      await sleep(20);
    }
    agent.destroy();
  };
  const done = Promise.all(sequences.map(visit));
  return {
    async stop() {
      running = false;
      await done;
      return {
        sequences,
        failures,
        failuresOf: (subset: string[][]) => subset.filter((sequence) => failed.has(sequence)),
      };
    },
  };
}
