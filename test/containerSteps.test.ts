import { execFileSync } from "node:child_process";
import { randomBytes } from "node:crypto";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { DockerRuntime, removeTaskContainers } from "../src/runtimes/docker.js";
import { defaultOutboundPolicy } from "../src/security/outboundGuard.js";
import { buildDemoImage, type DemoImage, removeImages } from "./helpers/images.js";
import { freePort, startRegistry, type TestRegistry } from "./helpers/registry.js";
import { startTestServer, type TestServer } from "./helpers/server.js";

interface LogLine {
  level: string;
  text: string;
}

interface Created {
  deployments: { taskId: string }[];
}

const greetingSecret = "greeting-canary-Zq81";

/**
 * Everything here is real: images built with `docker import`, pushed to a docker-registry
 * process, pulled by digest by the container step through the engine API, probed over
 * HTTP. Names are unique per run (project slug, host port) so this file can run beside
 * others; afterAll removes every container labelled with this run's project.
 */
describe("container, health-check and http-test steps (real Docker engine and registry)", () => {
  const docker = new DockerRuntime();
  const projectName = `ct-${randomBytes(4).toString("hex")}`;
  let registry: TestRegistry;
  let test: TestServer;
  let v1: DemoImage;
  let v2: DemoImage;
  let hostPort: number;
  let imageVariableId: string;
  let projectSlug: string;
  let containerName: string;

  const logText = async (taskId: string) =>
    (await test.call<{ lines: LogLine[] }>("GET", `/api/v1/tasks/${taskId}/log`)).body.lines
      .map((line) => line.text)
      .join("\n");

  const release = async (version: string) => {
    const created = await test.call<Created>("POST", `/api/v1/projects/${projectSlug}/releases`, { version });
    expect(created.status).toBe(201);
    const taskId = created.body.deployments[0]?.taskId ?? "";
    const task = await test.waitForTask(taskId);
    return { taskId, task, log: await logText(taskId) };
  };

  const answer = async (path = "/") => {
    const response = await fetch(`http://127.0.0.1:${hostPort}${path}`, { signal: AbortSignal.timeout(5_000) });
    return { status: response.status, text: await response.text() };
  };

  const webStep = (extra: Record<string, unknown> = {}) => ({
    name: "web",
    kind: "container",
    config: {
      image: "#{Image}",
      env: { GREETING: "#{Greeting}" },
      ports: [{ host: hostPort, container: 8080 }],
      cpus: 0.5,
      memoryMb: 64,
      settleSeconds: 1,
      stopTimeoutSeconds: 5,
      ...extra,
    },
  });
  const healthStep = (path: string, deadlineSeconds: number) => ({
    name: "health",
    kind: "health-check",
    config: {
      url: `http://127.0.0.1:#{Ferry.Step[web].Output.hostPort}${path}`,
      intervalMs: 200,
      timeoutMs: 1_000,
      deadlineSeconds,
      containerName: "#{Ferry.Step[web].Output.containerName}",
    },
  });
  const smokeStep = {
    name: "smoke",
    kind: "http-test",
    config: {
      url: "http://127.0.0.1:#{Ferry.Step[web].Output.hostPort.8080}/",
      headers: { "x-ferry-release": "#{Ferry.Release.Number}" },
      assertions: {
        status: 200,
        bodyContains: ["version #{Ferry.Release.Number}"],
        bodyMatches: "^version \\d+\\.\\d+\\.\\d+\\n$",
        headers: { "content-type": "text/html" },
      },
    },
  };
  const setProcess = async (steps: unknown[]) => {
    const response = await test.call("PUT", `/api/v1/projects/${projectSlug}/process`, { steps });
    expect(response.status, JSON.stringify(response.body)).toBe(200);
  };

  beforeAll(async () => {
    registry = await startRegistry();
    [v1, v2] = await Promise.all([
      buildDemoImage({ registryUrl: registry.url, repository: "demo/app", version: "1.0.1" }),
      buildDemoImage({ registryUrl: registry.url, repository: "demo/app", version: "1.0.2" }),
    ]);
    hostPort = await freePort();
    // The outbound guard at its defaults (no FERRY_OUTBOUND_ALLOW): the health check and the
    // HTTP test call 127.0.0.1 at a port a step output gives, which the process wrote.
    test = await startTestServer({ outbound: defaultOutboundPolicy });
    await test.call("POST", "/api/v1/environments", { name: "dev" });
    await test.call("POST", "/api/v1/lifecycles", {
      name: "default",
      phases: [{ environments: ["dev"], autoDeploy: true }],
    });
    const project = await test.call<{ slug: string }>("POST", "/api/v1/projects", {
      name: projectName,
      lifecycle: "default",
    });
    expect(project.status).toBe(201);
    projectSlug = project.body.slug;
    containerName = `ferry-${projectSlug}-dev`;
    const image = await test.call<{ id: string }>("POST", `/api/v1/projects/${projectSlug}/variables`, {
      name: "Image",
      value: v1.reference,
    });
    imageVariableId = image.body.id;
    await test.call("POST", `/api/v1/projects/${projectSlug}/variables`, {
      name: "Greeting",
      value: greetingSecret,
      sensitive: true,
    });
    await setProcess([webStep(), healthStep("/health", 10), smokeStep]);
  });

  afterAll(async () => {
    if (projectSlug) await docker.removeByLabel("ferry.project", projectSlug);
    await test?.close();
    await registry?.stop();
    await removeImages([v1?.reference, v2?.reference].filter((reference) => reference !== undefined));
  });

  it("pulls the release's image by digest, starts it with limits, and passes the health check and HTTP test", async () => {
    const { task, log } = await release("1.0.1");
    expect(task.state, log).toBe("succeeded");
    expect(await answer()).toEqual({ status: 200, text: "version 1.0.1\n" });
    expect(log).toContain(`pulling ${v1.reference} (anonymously)`);
    expect(log).toContain("healthy: HTTP 200");
    expect(log).toContain('✔ body contains "version 1.0.1"');
    expect(log).toContain('✔ header content-type contains "text/html"');

    const containers = await docker.listByLabel("ferry.project", projectSlug);
    expect(containers.map((container) => container.name)).toEqual([containerName]);
    expect(containers[0]?.labels).toMatchObject({ "ferry.env": "dev", "ferry.release": "1.0.1", "ferry.step": "web" });
    const [inspected] = JSON.parse(
      execFileSync("docker", ["container", "inspect", containerName], { encoding: "utf8" }),
    );
    expect(inspected.HostConfig.NanoCpus).toBe(500_000_000);
    expect(inspected.HostConfig.Memory).toBe(64 * 1024 * 1024);
    expect(inspected.HostConfig.PortBindings["8080/tcp"]).toEqual([
      { HostIp: "127.0.0.1", HostPort: String(hostPort) },
    ]);
    expect(inspected.Config.Image).toBe(v1.reference);
  });

  it("recreates the container for the next release", async () => {
    const before = await docker.inspectContainer(containerName);
    const patched = await test.call("PATCH", `/api/v1/projects/${projectSlug}/variables/${imageVariableId}`, {
      value: v2.reference,
    });
    expect(patched.status).toBe(200);
    const { task, log } = await release("1.0.2");
    expect(task.state, log).toBe("succeeded");
    expect(await answer()).toEqual({ status: 200, text: "version 1.0.2\n" });
    expect(log).toContain(`stopping and removing the previous container ${containerName}`);
    const containers = await docker.listByLabel("ferry.project", projectSlug);
    expect(containers).toHaveLength(1);
    expect(containers[0]?.id).not.toBe(before?.id);
    expect(containers[0]?.labels["ferry.release"]).toBe("1.0.2");
  });

  it("fails a health check that never passes at its deadline, with the container's last log lines, and removes the container", async () => {
    await setProcess([webStep(), healthStep("/wrong", 3), smokeStep]);
    const started = Date.now();
    const { taskId, task, log } = await release("1.0.3");
    expect(task.state, log).toBe("failed");
    expect(task.error).toMatch(
      /^step 'health' failed: http:\/\/127\.0\.0\.1:\d+\/wrong did not answer HTTP 200 within 3 s/,
    );
    // 3 s of probing, plus the container step (pull skipped: the digest is on the host) and the 1 s settle.
    expect(Date.now() - started).toBeLessThan(12_000);
    expect(log).toContain("is already on this host (pinned by digest): not pulling");
    expect(log).toContain("probe 1: HTTP 404");
    expect(log).toContain(`last 20 log lines of container ${containerName}:`);
    expect(log).toContain("url:/wrong");
    expect(log).toContain("response:404");
    expect(log).not.toContain(greetingSecret);
    expect(log).not.toContain("✔ status is 200");

    // Issue 11: the unhealthy new container kept answering after the deployment failed. The
    // health check removes it; recreate had removed the old one before it started, and says so.
    expect(log).toContain(
      `removed container ${containerName}: it failed its health check. The previous container was already removed before it started`,
    );
    expect(await docker.listByLabel("ferry.project", projectSlug)).toEqual([]);
    await expect(answer()).rejects.toThrow();
    // Nothing the task started is left for the engine's clean-up.
    expect(await removeTaskContainers(taskId)).toEqual([]);
  });

  it("fails a container that exits while settling, with its log, and removes it", async () => {
    await setProcess([webStep({ env: { GREETING: "#{Greeting}", CRASH: "missing DATABASE_URL" } }), smokeStep]);
    const { task, log } = await release("1.0.4");
    expect(task.state, log).toBe("failed");
    expect(task.error).toMatch(
      new RegExp(`^step 'web' failed: container ${containerName} exited within 1 s of starting`),
    );
    expect(log).toMatch(new RegExp(`last \\d+ log lines of container ${containerName}:`));
    expect(log).toContain("crashing on purpose: missing DATABASE_URL");
    // The container's log is masked like everything else in the task log.
    expect(log).toContain("demo app 1.0.2 starting (greeting: ********)");
    expect(log).not.toContain(greetingSecret);
    expect(log).not.toContain("▶ smoke");
    expect(await docker.listByLabel("ferry.project", projectSlug)).toEqual([]);
  });

  it("refuses image references and names that could smuggle options, before anything runs", async () => {
    const refused = await test.call<{ errors: { pointer: string }[] }>(
      "PUT",
      `/api/v1/projects/${projectSlug}/process`,
      {
        steps: [
          {
            name: "a",
            kind: "container",
            config: { image: "x", strategy: "blue-green", ports: [{ container: 70000 }] },
          },
          { name: "b", kind: "health-check", config: { url: "http://x", expectedStatus: 42 } },
          { name: "c", kind: "http-test", config: { url: "http://x", assertions: { bodyMatches: "(" } } },
        ],
      },
    );
    expect(refused.status).toBe(400);
    expect(refused.body.errors.map((issue) => issue.pointer)).toEqual(
      expect.arrayContaining([
        "/steps/0/config/strategy",
        "/steps/0/config/ports/0/container",
        "/steps/1/config/expectedStatus",
        "/steps/2/config/assertions/bodyMatches",
      ]),
    );

    await setProcess([webStep({ image: "--privileged", name: "#{Ferry.Release.Number}" })]);
    const { task } = await release("1.0.5");
    expect(task.state).toBe("failed");
    expect(task.error).toContain("'--privileged' is not an image reference");
    await setProcess([webStep({ name: "-v=/:/host" })]);
    const second = await release("1.0.6");
    expect(second.task.error).toContain("'-v=/:/host' is not a container name");
    expect(await docker.listByLabel("ferry.project", projectSlug)).toEqual([]);
  });
});
