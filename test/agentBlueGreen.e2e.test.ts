import { type ChildProcess, spawn } from "node:child_process";
import { randomBytes } from "node:crypto";
import { chmodSync, existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { setTimeout as sleep } from "node:timers/promises";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { ProcessRuntime } from "../src/runtimes/process.js";
import { FERRY } from "./helpers/cli.js";
import { buildDemoImage, type DemoImage, removeImages } from "./helpers/images.js";
import { buildProcessApp, type ProcessApp } from "./helpers/processApp.js";
import { startRegistry, type TestRegistry } from "./helpers/registry.js";
import {
  commandLinesContaining,
  createAutoProd,
  PROXY_PORT,
  remoteProcessStep,
  served,
  underLoad,
} from "./helpers/remoteHosts.js";
import { startTestServer, type TestServer, taskLogText } from "./helpers/server.js";
import { type SshHosts, startSshHosts } from "./helpers/sshHosts.js";

/**
 * Blue/green on an agent target (issue 12; ADRs 0030, 0031, 0035), on real parts: a real
 * `ferry agent` in a network namespace with its own dockerd, dialling out to a real server;
 * the host's `ferry proxy`, started through the agent; containers on the host's engine and
 * supervised processes of the host's process runtime. 16 keep-alive clients send requests
 * to the host's proxy the whole time; every failed request fails the test.
 */

/** Per-task uids of the agent (running as root): a host service must never run as one. */
const PER_TASK_UIDS = "2000300000-2000300099";

interface Created {
  deployments: { taskId: string }[];
}

/** The real uid a process runs as (/proc/PID/status). */
function uidOf(pid: number): number {
  const line = readFileSync(`/proc/${pid}/status`, "utf8")
    .split("\n")
    .find((text) => text.startsWith("Uid:"));
  return Number(line?.split(/\s+/)[1]);
}

describe("blue/green on an agent target with its host router (real agent, dockerd, supervisors, ferry proxy; under load)", {
  timeout: 400_000,
}, () => {
  let registry: TestRegistry;
  let hosts: SshHosts;
  let test: TestServer;
  let v1: DemoImage;
  let v2: DemoImage;
  let app: ProcessApp;
  let agent: ChildProcess | undefined;
  let agentOutput = "";
  const suffix = randomBytes(3).toString("hex");
  const targetName = `agent-bg-${suffix}`;
  const temporary = mkdtempSync(join(tmpdir(), "ferry-agent-bg-"));
  const stateDir = join(temporary, "agent");
  const workDir = join(temporary, "work");
  const proxyState = join(temporary, "proxy");
  let projects = 0;

  const address = () => hosts.hosts[0]?.address ?? "";
  const logText = (taskId: string) => taskLogText(test.call, taskId);
  const finished = async (taskId: string) => {
    const task = await test.waitForTask(taskId, 180_000);
    return { taskId, state: task.state, log: await logText(taskId) };
  };
  /** A project auto-deployed to prod whose one step is `step` on the agent's role; `set` changes what the next release runs. */
  const newProject = async (step: (routeHost: string) => Record<string, unknown>, variable: string, first: string) => {
    const project = await test.call<{ slug: string }>("POST", "/api/v1/projects", {
      name: `abg-${suffix}-${++projects}`,
      lifecycle: "auto",
    });
    expect(project.status).toBe(201);
    const slug = project.body.slug;
    const routeHost = `${slug}.test`;
    const created = await test.call<{ id: string }>("POST", `/api/v1/projects/${slug}/variables`, {
      name: variable,
      value: first,
    });
    expect(created.status, JSON.stringify(created.body)).toBe(201);
    const saved = await test.call("PUT", `/api/v1/projects/${slug}/process`, { steps: [step(routeHost)] });
    expect(saved.status, JSON.stringify(saved.body)).toBe(200);
    const release = async (version: string, value: string) => {
      await test.call("PATCH", `/api/v1/projects/${slug}/variables/${created.body.id}`, { value });
      const made = await test.call<Created>("POST", `/api/v1/projects/${slug}/releases`, { version });
      expect(made.status, JSON.stringify(made.body)).toBe(201);
      return finished(made.body.deployments[0]?.taskId ?? "");
    };
    const rollback = async () => {
      const rolled = await test.call<{ taskId: string }>("POST", `/api/v1/projects/${slug}/rollbacks`, {
        environment: "prod",
      });
      expect(rolled.status, JSON.stringify(rolled.body)).toBe(201);
      return finished(rolled.body.taskId);
    };
    return { slug, routeHost, release, rollback };
  };

  /** Deploys `first`, then `second` under load, then rolls back under load: 0 failed requests throughout. */
  const switchAndRollBack = async (
    project: Awaited<ReturnType<typeof newProject>>,
    first: { version: string; value: string; body: string },
    second: { version: string; value: string; body: string },
  ) => {
    const initial = await project.release(first.version, first.value);
    expect(initial.state, initial.log).toBe("succeeded");
    expect(initial.log).toContain(`web on ${targetName}`);
    expect(await served(address(), project.routeHost)).toBe(first.body);

    const { result: next, seen } = await underLoad(address(), project.routeHost, () =>
      project.release(second.version, second.value),
    );
    expect(next.state, next.log).toBe("succeeded");
    expect(seen.failures).toEqual([]);
    expect(seen.bodies.get(first.body)).toBeGreaterThan(0);
    expect(seen.bodies.get(second.body)).toBeGreaterThan(0);
    expect(await served(address(), project.routeHost)).toBe(second.body);

    const { result: back, seen: duringRollback } = await underLoad(address(), project.routeHost, () =>
      project.rollback(),
    );
    expect(back.state, back.log).toBe("succeeded");
    expect(duringRollback.failures).toEqual([]);
    expect(back.log).toMatch(new RegExp(`of release ${first.version.replaceAll(".", "\\.")} is retained`));
    expect(await served(address(), project.routeHost)).toBe(first.body);
  };

  beforeAll(async () => {
    registry = await startRegistry();
    [v1, v2, app] = await Promise.all([
      buildDemoImage({ registryUrl: registry.url, repository: `agentbg/app-${suffix}`, version: "2.0.1" }),
      buildDemoImage({ registryUrl: registry.url, repository: `agentbg/app-${suffix}`, version: "2.0.2" }),
      buildProcessApp(),
    ]);
    hosts = await startSshHosts(1, { engines: 1, registries: [registry.url] });
    const host = hosts.hosts[0];
    if (!host?.engine) throw new Error("no host with an engine");
    const gateway = host.address.replace(/\.2$/, ".1");
    host.exec("ip", ["route", "add", "default", "via", gateway]);
    test = await startTestServer({ host: gateway });
    await createAutoProd(test);
    const token = await test.call<{ token: string }>("POST", "/api/v1/agent-tokens", {});
    expect(token.status).toBe(201);
    const tokenFile = join(temporary, "token");
    writeFileSync(tokenFile, token.body.token, { mode: 0o600 });
    // The work root is the agent's (0711): the instances' account (nobody) passes through to its own directory.
    mkdirSync(workDir, { mode: 0o711 });
    chmodSync(temporary, 0o711);
    agent = spawn(
      "ip",
      [
        "netns",
        "exec",
        host.namespace,
        process.execPath,
        FERRY,
        "agent",
        "--server",
        test.server.url,
        "--state-dir",
        stateDir,
        "--work-dir",
        workDir,
        "--run-as-uids",
        PER_TASK_UIDS,
        "--docker-socket",
        host.engine.socket,
        "--token-file",
        tokenFile,
        "--name",
        targetName,
        "--environments",
        "prod",
        "--roles",
        "web",
        "--runtimes",
        "docker,process",
      ],
      { stdio: ["ignore", "pipe", "pipe"] },
    );
    agent.stdout?.on("data", (chunk: Buffer) => {
      agentOutput += chunk.toString();
    });
    agent.stderr?.on("data", (chunk: Buffer) => {
      agentOutput += chunk.toString();
    });
    const deadline = Date.now() + 30_000;
    for (;;) {
      const state = (await test.call<{ agent: { state: string } | null }>("GET", `/api/v1/targets/${targetName}`)).body
        .agent?.state;
      if (state === "connected") break;
      if (Date.now() > deadline) throw new Error(`the agent did not connect: ${agentOutput}`);
      await sleep(200);
    }
    const router = await test.call("PATCH", `/api/v1/targets/${targetName}`, {
      router: { driver: "builtin", listen: `0.0.0.0:${PROXY_PORT}`, stateDir: proxyState },
    });
    expect(router.status, JSON.stringify(router.body)).toBe(200);
  }, 300_000);

  afterAll(async () => {
    await test?.close().catch(() => undefined);
    agent?.kill("SIGTERM");
    const pidFile = join(proxyState, "proxy.pid");
    if (existsSync(pidFile)) {
      try {
        process.kill(Number(readFileSync(pidFile, "utf8").trim()), "SIGTERM");
      } catch {
        // Gone.
      }
    }
    const scoped = new ProcessRuntime({ directory: join(workDir, "processes", targetName) });
    for (const instance of await scoped.listByLabel("ferry.target", targetName).catch(() => [])) {
      await scoped.stopAndRemove(instance.name, { stopTimeoutSeconds: 0 }).catch(() => false);
    }
    await hosts?.close();
    await registry?.stop();
    await removeImages([v1?.reference, v2?.reference].filter((reference) => reference !== undefined));
    await app?.remove();
    rmSync(temporary, { recursive: true, force: true });
  });

  it("containers: switch under load with 0 failed requests and a rollback; the proxy runs as the agent's account, not a task's", async () => {
    const project = await newProject(
      (routeHost) => ({
        name: "web",
        kind: "container",
        roles: ["web"],
        config: {
          strategy: "blueGreen",
          image: "#{Image}",
          route: { host: routeHost, port: 8080 },
          blueGreen: {
            healthCheck: { path: "/health", intervalMs: 200, timeoutMs: 2000, deadlineSeconds: 30 },
            drainSeconds: 3,
            keepPreviousRunning: true,
          },
          settleSeconds: 0.5,
          stopTimeoutSeconds: 5,
        },
      }),
      "Image",
      v1.reference,
    );
    await switchAndRollBack(
      project,
      { version: "2.0.1", value: v1.reference, body: "version 2.0.1" },
      { version: "2.0.2", value: v2.reference, body: "version 2.0.2" },
    );
    // The colours ran on the host's own engine.
    const names = hosts.hosts[0]?.engine
      ?.docker(["ps", "-a", "--filter", `label=ferry.project=${project.slug}`, "--format", "{{.Names}}"])
      .split("\n")
      .filter(Boolean);
    expect(names?.length).toBeGreaterThan(0);
    // The router is a host service: it runs as the agent's own account (root here), never as a
    // per-task uid that a task's clean-up would end.
    const proxyPid = Number(readFileSync(join(proxyState, "proxy.pid"), "utf8").trim());
    expect(uidOf(proxyPid)).toBe(0);
  });

  it("supervised processes: switch under load with 0 failed requests and a rollback, the instances in the agent's work root", async () => {
    const project = await newProject(
      (routeHost) => remoteProcessStep(routeHost, { env: { API_TOKEN: "#{ApiToken}" } }),
      "AppDirectory",
      app.directory,
    );
    const secret = `s3cret-${randomBytes(12).toString("hex")}`;
    const token = await test.call("POST", `/api/v1/projects/${project.slug}/variables`, {
      name: "ApiToken",
      value: secret,
      sensitive: true,
    });
    expect(token.status, JSON.stringify(token.body)).toBe(201);
    await switchAndRollBack(
      project,
      { version: "3.0.1", value: app.directory, body: "version 3.0.1" },
      { version: "3.0.2", value: app.directory, body: "version 3.0.2" },
    );
    // The sensitive value reached the apps through the agent, and no command line on the machine.
    expect(commandLinesContaining(secret)).toEqual([]);
    expect(agentOutput).not.toContain(secret);
    const instances = new ProcessRuntime({ directory: join(workDir, "processes", targetName) });
    const listed = await instances.listByLabel("ferry.project", project.slug);
    const running = listed.filter((instance) => instance.state === "running");
    expect(running.map((instance) => instance.labels["ferry.release"]).sort()).toEqual(["3.0.1", "3.0.2"]);
    // The app runs as nobody (the agent is root and gives tasks uids of their own: an
    // instance outlives its task), its supervisor as the agent's account.
    for (const instance of running) {
      const status = await instances.inspect(instance.name);
      expect(uidOf(status?.pid ?? 0)).not.toBe(0);
      expect(uidOf(status?.pid ?? 0)).toBeLessThan(2_000_300_000);
    }
  });
});
