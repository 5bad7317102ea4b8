import { execFileSync } from "node:child_process";
import { randomBytes } from "node:crypto";
import { mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { DockerRuntime } from "../src/runtimes/docker.js";
import { buildDemoImage, type DemoImage, removeImages } from "./helpers/images.js";
import { type ProcessAppService, processAppStep, startProcessAppService } from "./helpers/processService.js";
import { type ProxyProcess, startProxyProcess } from "./helpers/proxy.js";
import { startRegistry, type TestRegistry } from "./helpers/registry.js";
import { createAutoDeployedProject, startTestServer, type TestServer } from "./helpers/server.js";

/**
 * The `collect-logs` step (issue 14 part 6, ADR 0037) against a real blue/green deployment:
 * two releases of a real image (pulled from a docker-registry by the Docker engine) switched
 * by a real `ferry proxy`, the old colour retained; a runbook's collect-logs step returns one
 * .tar.gz artifact holding the logs of both colours, which `tar` itself reads.
 */
describe("collect-logs on a blue/green service (real Docker, registry, proxy, server)", { timeout: 240_000 }, () => {
  const docker = new DockerRuntime();
  const projectName = `logs-${randomBytes(3).toString("hex")}`;
  let registry: TestRegistry;
  let proxy: ProxyProcess;
  let test: TestServer;
  let v1: DemoImage;
  let v2: DemoImage;
  let projectSlug: string;
  let imageVariableId: string;
  const temporary: string[] = [];

  const webStep = {
    name: "web",
    kind: "container",
    config: {
      strategy: "blueGreen",
      image: "#{Image}",
      route: { host: `${projectName}.test`, port: 8080 },
      blueGreen: {
        healthCheck: { path: "/health", intervalMs: 200, timeoutMs: 1000, deadlineSeconds: 10 },
        drainSeconds: 1,
        keepPreviousRunning: true,
      },
      settleSeconds: 0.5,
      stopTimeoutSeconds: 5,
    },
  };

  async function deploy(version: string, image: DemoImage) {
    await test.call("PATCH", `/api/v1/projects/${projectSlug}/variables/${imageVariableId}`, {
      value: image.reference,
    });
    const created = await test.call<{ deployments: { taskId: string }[] }>(
      "POST",
      `/api/v1/projects/${projectSlug}/releases`,
      { version },
    );
    expect(created.status, JSON.stringify(created.body)).toBe(201);
    const task = await test.waitForTask(created.body.deployments[0]?.taskId ?? "", 120_000);
    expect(task.state, JSON.stringify(task)).toBe("succeeded");
  }

  beforeAll(async () => {
    registry = await startRegistry();
    [v1, v2] = await Promise.all([
      buildDemoImage({ registryUrl: registry.url, repository: "logs/app", version: "1.0.1" }),
      buildDemoImage({ registryUrl: registry.url, repository: "logs/app", version: "1.0.2" }),
    ]);
    proxy = await startProxyProcess();
    test = await startTestServer({ traffic: proxy.traffic });
    ({ projectSlug, variableId: imageVariableId } = await createAutoDeployedProject(
      test,
      { lifecycle: "logs", project: projectName },
      { name: "Image", value: v1.reference },
    ));
    const saved = await test.call("PUT", `/api/v1/projects/${projectSlug}/process`, { steps: [webStep] });
    expect(saved.status, JSON.stringify(saved.body)).toBe(200);
  }, 180_000);

  afterAll(async () => {
    // The colours first, as the blue/green tests do: the server then closes at once.
    if (projectSlug) await docker.removeByLabel("ferry.project", projectSlug).catch(() => undefined);
    await test?.close();
    await proxy?.stop();
    await registry?.stop();
    await removeImages([v1?.reference, v2?.reference].filter((reference): reference is string => !!reference));
    for (const directory of temporary) rmSync(directory, { recursive: true, force: true });
  }, 180_000);

  it("returns one archive holding the logs of both colours", async () => {
    await deploy("1.0.1", v1);
    await deploy("1.0.2", v2);
    const colours = (await docker.listByLabel("ferry.project", projectSlug)).filter(
      (container) => container.labels["ferry.env"] === "prod",
    );
    expect(colours.map((container) => container.labels["ferry.release"]).sort()).toEqual(["1.0.1", "1.0.2"]);

    const runbook = await test.call<{ slug: string }>("POST", `/api/v1/projects/${projectSlug}/runbooks`, {
      name: "Collect logs",
      process: { steps: [{ name: "logs", kind: "collect-logs", config: { since: "1h", tail: 1000 } }] },
    });
    expect(runbook.status, JSON.stringify(runbook.body)).toBe(201);
    await test.call("POST", `/api/v1/projects/${projectSlug}/runbooks/${runbook.body.slug}/publish`);
    const run = await test.call<{ taskId: string }>(
      "POST",
      `/api/v1/projects/${projectSlug}/runbooks/${runbook.body.slug}/runs`,
      { environment: "prod" },
    );
    expect(run.status, JSON.stringify(run.body)).toBe(201);
    const task = await test.waitForTask(run.body.taskId, 60_000);
    expect(task.state, JSON.stringify(task)).toBe("succeeded");

    const artifacts = (
      await test.call<{ id: string; name: string; sha256: string }[]>(
        "GET",
        `/api/v1/tasks/${run.body.taskId}/artifacts`,
      )
    ).body;
    expect(artifacts).toHaveLength(1);
    expect(artifacts[0]?.name).toMatch(new RegExp(`^logs-${projectSlug}-prod-server-\\d{8}T\\d{6}Z\\.tar\\.gz$`));
    const response = await fetch(new URL(`/api/v1/artifacts/${artifacts[0]?.id}/content`, test.server.url), {
      headers: { authorization: `Bearer ${test.apiKey}` },
    });
    expect(response.status).toBe(200);
    const directory = mkdtempSync(join(tmpdir(), "ferry-collected-"));
    temporary.push(directory);
    const archive = join(directory, "logs.tar.gz");
    writeFileSync(archive, Buffer.from(await response.arrayBuffer()));
    // GNU tar reads it: the archive is a real one, not just bytes that look like it.
    execFileSync("tar", ["-xzf", archive, "-C", directory]);
    const logs = readdirSync(join(directory, "containers")).map((file) =>
      readFileSync(join(directory, "containers", file), "utf8"),
    );
    expect(logs).toHaveLength(2);
    expect(logs.some((text) => text.includes("demo app 1.0.1 starting"))).toBe(true);
    expect(logs.some((text) => text.includes("demo app 1.0.2 starting"))).toBe(true);
    // Each line carries the engine's time.
    expect(logs.join("")).toMatch(/^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d+Z demo app/m);
    const manifest = readFileSync(join(directory, "MANIFEST.txt"), "utf8");
    for (const colour of colours) expect(manifest).toContain(`container ${colour.name}: `);
    expect(manifest).toContain("release 1.0.1");
    expect(manifest).toContain("release 1.0.2");
  });
});

/**
 * The same for supervised processes (the process runtime, no Docker): two releases of a
 * Node.js app switched blue/green by a real `ferry proxy`, the previous colour kept running;
 * the archive holds both processes' logs, and its manifest says `since` could not filter them.
 */
describe("collect-logs on a blue/green process service (real supervisors, proxy, server)", { timeout: 240_000 }, () => {
  const projectName = `plogs-${randomBytes(3).toString("hex")}`;
  let service: ProcessAppService;
  let test: TestServer;
  let projectSlug: string;
  const temporary: string[] = [];

  beforeAll(async () => {
    service = await startProcessAppService({ lifecycle: "plogs", project: projectName });
    ({ test, projectSlug } = service);
    const saved = await test.call("PUT", `/api/v1/projects/${projectSlug}/process`, {
      steps: [
        processAppStep(`${projectName}.test`, {
          blueGreen: {
            healthCheck: { path: "/health", intervalMs: 100, timeoutMs: 1000, deadlineSeconds: 10 },
            drainSeconds: 1,
            keepPreviousRunning: true,
          },
          settleSeconds: 0.3,
          stopTimeoutSeconds: 5,
        }),
      ],
    });
    expect(saved.status, JSON.stringify(saved.body)).toBe(200);
  }, 180_000);

  afterAll(async () => {
    await service?.close();
    for (const directory of temporary) rmSync(directory, { recursive: true, force: true });
  }, 120_000);

  it("returns one archive holding the logs of both colours' processes", async () => {
    for (const version of ["2.0.1", "2.0.2"]) {
      const created = await test.call<{ deployments: { taskId: string }[] }>(
        "POST",
        `/api/v1/projects/${projectSlug}/releases`,
        { version },
      );
      expect(created.status, JSON.stringify(created.body)).toBe(201);
      const task = await test.waitForTask(created.body.deployments[0]?.taskId ?? "", 120_000);
      expect(task.state, JSON.stringify(task)).toBe("succeeded");
    }
    const runbook = await test.call<{ slug: string }>("POST", `/api/v1/projects/${projectSlug}/runbooks`, {
      name: "Collect logs",
      process: { steps: [{ name: "logs", kind: "collect-logs", config: { since: "1h" } }] },
    });
    expect(runbook.status, JSON.stringify(runbook.body)).toBe(201);
    await test.call("POST", `/api/v1/projects/${projectSlug}/runbooks/${runbook.body.slug}/publish`);
    const run = await test.call<{ taskId: string }>(
      "POST",
      `/api/v1/projects/${projectSlug}/runbooks/${runbook.body.slug}/runs`,
      { environment: "prod" },
    );
    const task = await test.waitForTask(run.body.taskId, 60_000);
    expect(task.state, JSON.stringify(task)).toBe("succeeded");
    const [artifact] = (await test.call<{ id: string }[]>("GET", `/api/v1/tasks/${run.body.taskId}/artifacts`)).body;
    const response = await fetch(new URL(`/api/v1/artifacts/${artifact?.id}/content`, test.server.url), {
      headers: { authorization: `Bearer ${test.apiKey}` },
    });
    const directory = mkdtempSync(join(tmpdir(), "ferry-collected-"));
    temporary.push(directory);
    writeFileSync(join(directory, "logs.tar.gz"), Buffer.from(await response.arrayBuffer()));
    execFileSync("tar", ["-xzf", join(directory, "logs.tar.gz"), "-C", directory]);
    const logs = readdirSync(join(directory, "processes")).map((file) =>
      readFileSync(join(directory, "processes", file), "utf8"),
    );
    expect(logs).toHaveLength(2);
    expect(logs.some((text) => text.includes("process app 2.0.1 starting"))).toBe(true);
    expect(logs.some((text) => text.includes("process app 2.0.2 starting"))).toBe(true);
    expect(readFileSync(join(directory, "MANIFEST.txt"), "utf8")).toContain("a process's log has no times");
  });
});
