import { execFileSync } from "node:child_process";
import { randomBytes } from "node:crypto";
import { existsSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { setTimeout as sleep } from "node:timers/promises";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { DockerRuntime } from "../src/runtimes/docker.js";
import { apiRequest, type FerryServer, isolatedEnv, testAdminKey, trackedResources } from "./helpers/cli.js";
import { buildDemoImage, type DemoImage, removeImages } from "./helpers/images.js";
import { freePort, startRegistry, type TestRegistry } from "./helpers/registry.js";
import { startTestServer, type TestServer } from "./helpers/server.js";

const docker = new DockerRuntime();
const { makeTemporaryDirectory, startFerryServer, cleanUp } = trackedResources("ferry-isolated-");

/** What Docker holds labelled with the task: containers, networks and volumes, by name. */
function labelledWith(taskId: string): { containers: string[]; networks: string[]; volumes: string[] } {
  const list = (kind: "container" | "network" | "volume") =>
    execFileSync(
      "docker",
      [kind, "ls", ...(kind === "container" ? ["-a"] : []), "-q", "--filter", `label=ferry.task=${taskId}`],
      { encoding: "utf8" },
    )
      .split("\n")
      .filter((line) => line.trim() !== "");
  return { containers: list("container"), networks: list("network"), volumes: list("volume") };
}
const nothing = { containers: [], networks: [], volumes: [] };

interface Inspected {
  Name: string;
  Config: { Labels: Record<string, string> };
  HostConfig: {
    NanoCpus: number;
    Memory: number;
    MemorySwap: number;
    PidsLimit: number;
    PortBindings: Record<string, { HostIp: string; HostPort: string }[]>;
  };
  NetworkSettings: { Networks: Record<string, unknown>; Ports: Record<string, { HostPort: string }[] | null> };
}
function inspect(id: string): Inspected {
  return (
    JSON.parse(execFileSync("docker", ["container", "inspect", id], { encoding: "utf8" })) as Inspected[]
  )[0] as Inspected;
}

/** A script step inside a group that waits until `file` exists (the test lets both pipelines go at once). */
const barrierStep = (file: string) => ({
  name: "barrier",
  kind: "script",
  config: {
    script: 'for i in $(seq 1 900); do [ -e "$GO" ] && exit 0; sleep 0.2; done; echo "never released"; exit 1',
    env: { GO: file },
  },
});

const webService = {
  name: "web",
  image: "#{Image}",
  port: 8080,
  healthCheck: { path: "/health", intervalMs: 200, deadlineSeconds: 60 },
  volumes: [{ target: "/data" }],
};
const limits = { cpus: 0.5, memoryMb: 48, pids: 128 };
const smoke = (expected: string) => ({
  name: "smoke",
  kind: "http-test",
  config: { url: "#{Ferry.Isolated.Url}/", assertions: { status: 200, bodyContains: [expected] } },
});
const fromInside = {
  name: "from-inside",
  kind: "run-container",
  config: {
    image: "#{Image}",
    command: ["/bin/busybox", "wget", "-q", "-O", "-", "#{Ferry.Isolated.Service[web].InternalUrl}/"],
    timeoutSeconds: 60,
  },
};
const promote = { name: "promote", kind: "script", config: { script: "echo promoting the release" } };

/**
 * Isolated test groups (ADR 0045) against the real Docker engine and a real registry: the
 * release's image (busybox httpd, built by `docker import`) deployed on a network of the
 * task's own with limits, tested over HTTP from the host and from a container inside the
 * network, and everything the task made removed, found by its label.
 */
describe("isolated test groups (real Docker engine and registry)", () => {
  let registry: TestRegistry;
  let image: DemoImage;
  let test: TestServer;
  const project = `iso-${randomBytes(3).toString("hex")}`;
  const go = join(tmpdir(), `ferry-iso-go-${randomBytes(4).toString("hex")}`);

  const logText = async (taskId: string) =>
    (await test.call<{ lines: { text: string }[] }>("GET", `/api/v1/tasks/${taskId}/log`)).body.lines
      .map((line) => line.text)
      .join("\n");
  const setProcess = async (steps: unknown[]) => {
    const response = await test.call("PUT", `/api/v1/projects/${project}/process`, { steps });
    expect(response.status, JSON.stringify(response.body)).toBe(200);
  };
  let releases = 0;
  const release = async () => {
    releases += 1;
    const version = `1.0.${releases}`;
    expect((await test.call("POST", `/api/v1/projects/${project}/releases`, { version })).status).toBe(201);
    return version;
  };
  const deploy = async (version: string, environment: string) => {
    const created = await test.call<{ taskId: string }>("POST", `/api/v1/projects/${project}/deployments`, {
      release: version,
      environment,
    });
    expect(created.status, JSON.stringify(created.body)).toBe(201);
    return created.body.taskId;
  };

  beforeAll(async () => {
    registry = await startRegistry();
    image = await buildDemoImage({ registryUrl: registry.url, repository: `iso/app-${project}`, version: "1.0.0" });
    test = await startTestServer();
    for (const name of ["dev-a", "dev-b"]) await test.call("POST", "/api/v1/environments", { name });
    await test.call("POST", "/api/v1/lifecycles", { name: project, phases: [{ environments: ["dev-a", "dev-b"] }] });
    expect((await test.call("POST", "/api/v1/projects", { name: project, lifecycle: project })).status).toBe(201);
    await test.call("POST", `/api/v1/projects/${project}/variables`, { name: "Image", value: image.reference });
  }, 120_000);

  afterAll(async () => {
    await docker.removeByLabel("ferry.project", project).catch(() => {});
    rmSync(go, { force: true });
    await test?.close();
    await registry?.stop();
    if (image) await removeImages([image.reference]);
  });

  it("refuses a group with a field that is wrong, naming it", async () => {
    const response = await test.call<{ errors: { pointer: string; detail: string }[] }>(
      "PUT",
      `/api/v1/projects/${project}/process`,
      {
        steps: [
          {
            name: "functional",
            kind: "isolated",
            config: {
              limits: { memoryMb: 2 },
              services: [{ name: "Web", image: "#{Image}", healthCheck: { path: "/health" } }],
              steps: [{ name: "smoke", kind: "http-test", roles: ["web"], config: {} }],
            },
          },
        ],
      },
    );
    expect(response.status).toBe(400);
    const pointers = response.body.errors.map((error) => `${error.pointer}: ${error.detail}`).join("\n");
    expect(pointers).toContain("/steps/0/config/limits/memoryMb: memoryMb must be at least 6");
    expect(pointers).toContain("/steps/0/config/services/0/name: use up to 31 lowercase letters");
    expect(pointers).toContain("/steps/0/config/services/0/healthCheck: a health check needs the service's port");
    expect(pointers).toContain(
      "/steps/0/config/steps/0/roles: a step inside an isolated group runs on the group's target",
    );
    expect(pointers).toMatch(/\/steps\/0\/config\/steps\/0\/config\/url: /);
  });

  it("two pipelines of the project at once: both succeed in parallel, on their own names, networks and ports, with limits, and leave nothing", async () => {
    await setProcess([
      {
        name: "functional",
        kind: "isolated",
        config: { limits, services: [webService], steps: [smoke("version 1.0.0"), fromInside, barrierStep(go)] },
      },
      promote,
    ]);
    const version = await release();
    const tasks = await Promise.all([deploy(version, "dev-a"), deploy(version, "dev-b")]);

    // Both groups' services run at the same moment (each group waits at its barrier): they are parallel.
    let running: Inspected[] = [];
    for (let attempt = 0; ; attempt++) {
      const containers = (await docker.listByLabel("ferry.project", project)).filter(
        (container) => container.labels["ferry.service"] === "web" && container.state === "running",
      );
      if (new Set(containers.map((container) => container.labels["ferry.task"])).size === 2) {
        running = containers.map((container) => inspect(container.id));
        break;
      }
      if (attempt > 1200) throw new Error("the two groups' services never ran at the same time");
      await sleep(100);
    }
    expect(running.map((container) => container.Config.Labels["ferry.task"]).sort()).toEqual([...tasks].sort());
    const names = running.map((container) => container.Name);
    const networks = running.map((container) => Object.keys(container.NetworkSettings.Networks).join(","));
    const ports = running.map((container) => container.NetworkSettings.Ports["8080/tcp"]?.[0]?.HostPort);
    expect(new Set(names).size).toBe(2);
    expect(new Set(networks).size).toBe(2);
    expect(new Set(ports).size).toBe(2);
    for (const container of running) {
      expect(container.HostConfig.NanoCpus).toBe(500_000_000);
      expect(container.HostConfig.Memory).toBe(48 * 1024 * 1024);
      expect(container.HostConfig.MemorySwap).toBe(48 * 1024 * 1024);
      expect(container.HostConfig.PidsLimit).toBe(128);
      expect(container.HostConfig.PortBindings["8080/tcp"]?.[0]?.HostIp).toBe("127.0.0.1");
    }
    for (const taskId of tasks) {
      const made = labelledWith(taskId);
      expect(made.networks.length).toBe(1);
      expect(made.volumes.length).toBe(1);
    }

    writeFileSync(go, "go");
    const finished = await Promise.all(tasks.map((taskId) => test.waitForTask(taskId, 120_000)));
    for (const [index, task] of finished.entries()) {
      const log = await logText(tasks[index] as string);
      expect(task.state, log).toBe("succeeded");
      expect(log).toContain('✔ body contains "version 1.0.0"');
      expect(log).toContain("version 1.0.0"); // the run-container's wget output, from inside the network
      expect(log).toContain("promoting the release");
      expect(labelledWith(tasks[index] as string)).toEqual(nothing);
    }
  }, 240_000);

  it("a failing functional test stops the deployment before promotion and leaves nothing labelled with the task", async () => {
    await setProcess([
      {
        name: "functional",
        kind: "isolated",
        config: { limits, services: [webService], steps: [smoke("version 9.9.9")] },
      },
      promote,
    ]);
    const taskId = await deploy(await release(), "dev-a");
    const task = await test.waitForTask(taskId, 120_000);
    const log = await logText(taskId);
    expect(task.state, log).toBe("failed");
    expect(String(task.error)).toMatch(/step 'functional' failed: isolated group: step 'smoke' failed/);
    expect(log).not.toContain("promoting the release");
    expect(log).toMatch(/removed container ferry-iso-.*-web/);
    expect(labelledWith(taskId)).toEqual(nothing);
  }, 180_000);

  it("a test container that allocates beyond its memory limit is killed and the step says so (OOMKilled)", async () => {
    await setProcess([
      {
        name: "functional",
        kind: "isolated",
        config: {
          limits: { ...limits, memoryMb: 24 },
          services: [webService],
          steps: [
            {
              name: "greedy",
              kind: "run-container",
              // dd's 64 MiB buffer, filled from /dev/zero: far beyond 24 MiB with no swap.
              config: {
                image: "#{Image}",
                command: ["/bin/busybox", "dd", "if=/dev/zero", "of=/dev/null", "bs=64M", "count=1"],
              },
            },
          ],
        },
      },
      promote,
    ]);
    const taskId = await deploy(await release(), "dev-b");
    const task = await test.waitForTask(taskId, 120_000);
    const log = await logText(taskId);
    expect(task.state, log).toBe("failed");
    expect(String(task.error)).toMatch(
      /step 'greedy' failed: container ferry-iso-\S+ was killed for going beyond its memory limit of 24 MiB \(OOMKilled/,
    );
    expect(log).not.toContain("promoting the release");
    expect(labelledWith(taskId)).toEqual(nothing);
  }, 180_000);

  it("a cancelled deployment's group is removed too", async () => {
    const never = join(tmpdir(), `ferry-iso-never-${randomBytes(4).toString("hex")}`);
    await setProcess([
      { name: "functional", kind: "isolated", config: { limits, services: [webService], steps: [barrierStep(never)] } },
    ]);
    const taskId = await deploy(await release(), "dev-a");
    for (let attempt = 0; labelledWith(taskId).containers.length === 0; attempt++) {
      if (attempt > 1200) throw new Error("the group never started");
      await sleep(100);
    }
    // The service is up and the barrier waits: cancel now.
    for (let attempt = 0; !(await logText(taskId)).includes("barrier"); attempt++) {
      if (attempt > 1200) throw new Error("the barrier never started");
      await sleep(100);
    }
    expect((await test.call("POST", `/api/v1/tasks/${taskId}/cancel`)).status).toBeLessThan(300);
    const task = await test.waitForTask(taskId, 60_000);
    expect(task.state).toBe("cancelled");
    expect(labelledWith(taskId)).toEqual(nothing);
    expect(existsSync(never)).toBe(false);
  }, 180_000);
});

/**
 * The server is killed (SIGKILL) while a group's services run: nothing runs the group's own
 * removal, so the restarted server's clean-up of the interrupted task removes its
 * containers, network and volume by the task's label.
 */
describe("a server killed during an isolated group (real processes, Docker)", () => {
  const apiKey = testAdminKey();
  let registry: TestRegistry | undefined;
  let image: DemoImage | undefined;
  let server: FerryServer | undefined;
  let dataDir = "";
  let port = 0;
  const project = `isokill-${randomBytes(3).toString("hex")}`;

  const start = async () => {
    server = await startFerryServer({
      dataDir,
      env: isolatedEnv(dataDir, { FERRY_ADMIN_API_KEY: apiKey, FERRY_TASK_LEASE_SECONDS: "2" }),
      port,
    });
  };
  const call = async <T = Record<string, unknown>>(method: string, path: string, body?: unknown) => {
    const response = await apiRequest(`http://127.0.0.1:${port}${path}`, apiKey, method, body);
    return { status: response.status, body: (await response.json()) as T };
  };

  beforeAll(async () => {
    registry = await startRegistry();
    image = await buildDemoImage({ registryUrl: registry.url, repository: `iso/kill-${project}`, version: "1.0.0" });
    dataDir = await makeTemporaryDirectory();
    port = await freePort();
    await start();
    await call("POST", "/api/v1/environments", { name: "dev" });
    await call("POST", "/api/v1/lifecycles", { name: project, phases: [{ environments: ["dev"] }] });
    await call("POST", "/api/v1/projects", { name: project, lifecycle: project });
    await call("POST", `/api/v1/projects/${project}/variables`, { name: "Image", value: image.reference });
  }, 120_000);
  afterAll(async () => {
    server?.process.kill("SIGKILL");
    await docker.removeByLabel("ferry.project", project).catch(() => {});
    await registry?.stop();
    if (image) await removeImages([image.reference]);
    await cleanUp();
  });

  it("the restart's clean-up removes the group's containers, network and volume", async () => {
    const never = join(tmpdir(), `ferry-iso-never-${randomBytes(4).toString("hex")}`);
    const put = await call("PUT", `/api/v1/projects/${project}/process`, {
      steps: [
        {
          name: "functional",
          kind: "isolated",
          config: { limits, services: [webService], steps: [barrierStep(never)] },
        },
      ],
    });
    expect(put.status, JSON.stringify(put.body)).toBe(200);
    await call("POST", `/api/v1/projects/${project}/releases`, { version: "1.0.0" });
    const queued = await call<{ taskId: string }>("POST", `/api/v1/projects/${project}/deployments`, {
      release: "1.0.0",
      environment: "dev",
    });
    const taskId = queued.body.taskId;
    for (let attempt = 0; labelledWith(taskId).containers.length === 0; attempt++) {
      if (attempt > 1200) throw new Error("the group never started");
      await sleep(100);
    }
    const made = labelledWith(taskId);
    expect(made.networks.length).toBe(1);
    expect(made.volumes.length).toBe(1);

    server?.process.kill("SIGKILL");
    await new Promise((resolve) => server?.process.once("exit", resolve));
    expect(labelledWith(taskId).containers.length).toBeGreaterThan(0); // left by the crash

    await start();
    for (let attempt = 0; ; attempt++) {
      const log = await call<{ lines: { text: string }[] }>("GET", `/api/v1/tasks/${taskId}/log`);
      if (log.body.lines.some((line) => line.text.includes("clean-up after the interruption finished"))) break;
      if (attempt > 600) throw new Error("clean-up never finished");
      await sleep(100);
    }
    const task = await call<{ state: string }>("GET", `/api/v1/tasks/${taskId}`);
    expect(task.body.state).toBe("interrupted");
    expect(labelledWith(taskId)).toEqual(nothing);
  }, 180_000);
});
