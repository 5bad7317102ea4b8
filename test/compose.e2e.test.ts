import { execFile } from "node:child_process";
import { randomBytes } from "node:crypto";
import { mkdtemp, rm, writeFile } from "node:fs/promises";
import http from "node:http";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { setTimeout as sleep } from "node:timers/promises";
import { promisify } from "node:util";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { DockerRuntime } from "../src/runtimes/docker.js";
import { buildComposeAppImage, buildPostgresImage, nodeInImage } from "./helpers/composeImages.js";
import { type DemoImage, removeImages } from "./helpers/images.js";
import { startLoad } from "./helpers/load.js";
import { type ProxyProcess, startProxyProcess } from "./helpers/proxy.js";
import { startRegistry, type TestRegistry } from "./helpers/registry.js";
import { startTestServer, type TestServer } from "./helpers/server.js";

const execFileAsync = promisify(execFile);

interface Inspected {
  Id: string;
  Name: string;
  Config: { Image: string; Env: string[]; Cmd: string[] | null; Labels: Record<string, string>; Healthcheck?: unknown };
  HostConfig: { NanoCpus: number; Memory: number; RestartPolicy: { Name: string } };
  Mounts: { Type: string; Name?: string; Source: string; Destination: string; RW: boolean }[];
  NetworkSettings: { Networks: Record<string, { Aliases: string[] | null }> };
}

/**
 * The compose step through everything real: a Ferry server deploying a Compose application
 * (a Node.js web app behind a route, a worker, PostgreSQL 15 with a named volume) to dev and
 * prod on this host's Docker engine, images pulled by digest from a docker-registry process,
 * traffic through a `ferry proxy` process; Debian's docker-compose brings the same file up
 * as the reference.
 */
describe("compose step: a web app, a worker and PostgreSQL with a volume (real Docker, registry, proxy, docker-compose)", () => {
  const docker = new DockerRuntime();
  const suffix = randomBytes(3).toString("hex");
  const projectName = `cmp-${suffix}`;
  const hostOf = (environment: string) => `${environment}.${projectName}.test`;
  let registry: TestRegistry;
  let proxy: ProxyProcess;
  let test: TestServer;
  let v1: DemoImage & { tagged: string };
  let v2: DemoImage & { tagged: string };
  let postgresImage: string;
  let projectSlug: string;
  let composeDirectory: string;
  const referenceProject = `ferryref${suffix}`;

  /** The Compose file: templates in quoted values; the app's image written without a tag (the release pins it). */
  const composeFile = (appImage: string, greeting = "#{Greeting}", host = "#{Ferry.Environment.Slug}.PROJECT.test") =>
    `
services:
  db:
    image: ${postgresImage}
    volumes: ["data:/var/lib/postgresql/data"]
    healthcheck:
      test: ["CMD", "/usr/lib/postgresql/15/bin/pg_isready", "-h", "127.0.0.1"]
      interval: 500ms
      timeout: 2s
      retries: 60
    deploy: { resources: { limits: { memory: 256m } } }
  web:
    image: ${appImage}
    environment:
      GREETING: "${greeting}"
    depends_on:
      db: { condition: service_healthy }
    deploy: { resources: { limits: { cpus: "0.5", memory: 128m } } }
    x-ferry:
      route: { host: "${host.replace("PROJECT", projectName)}", port: 8080 }
      blueGreen:
        healthCheck: { path: /health, intervalMs: 200, timeoutMs: 1000, deadlineSeconds: 30 }
        drainSeconds: 5
  worker:
    image: ${appImage}
    command: ["${nodeInImage()}", "/app/worker.js"]
    environment: ["GREETING=${greeting}"]
    depends_on:
      db: { condition: service_healthy }
    restart: unless-stopped
volumes:
  data: {}
`;

  const logText = async (taskId: string) =>
    (await test.call<{ lines: { text: string }[] }>("GET", `/api/v1/tasks/${taskId}/log`)).body.lines
      .map((line) => line.text)
      .join("\n");

  const finished = async (taskId: string) => {
    const task = await test.waitForTask(taskId, 180_000);
    return { taskId, state: task.state, log: await logText(taskId) };
  };

  const createRelease = async (version: string, tag: string) => {
    const created = await test.call<{ deployments: { taskId: string }[] }>(
      "POST",
      `/api/v1/projects/${projectSlug}/releases`,
      { version, images: { app: tag } },
    );
    expect(created.status, JSON.stringify(created.body)).toBe(201);
    return created.body.deployments[0]?.taskId;
  };

  const deploy = async (version: string, environment: string) => {
    const queued = await test.call<{ taskId: string }>("POST", `/api/v1/projects/${projectSlug}/deployments`, {
      release: version,
      environment,
    });
    expect(queued.status, JSON.stringify(queued.body)).toBe(201);
    return finished(queued.body.taskId);
  };

  const request = (environment: string, path = "/") =>
    new Promise<string>((resolve, reject) => {
      const sent = http.get(
        { host: "127.0.0.1", port: proxy.port, path, headers: { host: hostOf(environment) }, timeout: 5000 },
        (response) => {
          const chunks: Buffer[] = [];
          response.on("data", (chunk: Buffer) => chunks.push(chunk));
          response.on("end", () => resolve(Buffer.concat(chunks).toString().trim()));
        },
      );
      sent.on("error", reject);
    });

  const containersOf = async (environment: string) => {
    const listed = await docker.listByLabel("ferry.compose.project", `${projectSlug}-${environment}`);
    return listed.filter((container) => container.state === "running");
  };
  const inspect = async (id: string) =>
    (JSON.parse((await execFileAsync("docker", ["inspect", id])).stdout) as Inspected[])[0] as Inspected;
  const serviceContainer = async (environment: string, service: string) => {
    const running = (await containersOf(environment)).filter(
      (container) => container.labels["ferry.compose.service"] === service,
    );
    return running;
  };

  beforeAll(async () => {
    registry = await startRegistry();
    [v1, v2, postgresImage] = await Promise.all([
      buildComposeAppImage({ registryUrl: registry.url, repository: "compose/app", version: "1.0.0" }),
      buildComposeAppImage({ registryUrl: registry.url, repository: "compose/app", version: "1.0.1" }),
      buildPostgresImage(),
    ]);
    proxy = await startProxyProcess();
    test = await startTestServer({ traffic: proxy.traffic });
    await test.call("POST", "/api/v1/feeds", { name: "local", url: registry.url });
    for (const name of ["dev", "prod"]) await test.call("POST", "/api/v1/environments", { name });
    await test.call("POST", "/api/v1/lifecycles", {
      name: "compose",
      phases: [{ environments: ["dev"], autoDeploy: true }, { environments: ["prod"] }],
    });
    const project = await test.call<{ slug: string }>("POST", "/api/v1/projects", {
      name: projectName,
      lifecycle: "compose",
    });
    projectSlug = project.body.slug;
    for (const [environment, value] of [
      ["dev", "hello from dev"],
      ["prod", "welcome to prod"],
    ] as const) {
      const created = await test.call("POST", `/api/v1/projects/${projectSlug}/variables`, {
        name: "Greeting",
        value,
        scope: { environments: [environment] },
      });
      expect(created.status, JSON.stringify(created.body)).toBe(201);
    }
    const registryHost = new URL(registry.url).host;
    const saved = await test.call("PUT", `/api/v1/projects/${projectSlug}/process`, {
      images: [{ name: "app", feed: "local", repository: "compose/app" }],
      // The Compose file as a template file of the step (ADR 0051: ferry apply captures it from
      // beside ferry.yml), each environment's values rendered into it at deployment.
      steps: [
        {
          name: "app",
          kind: "compose",
          files: [{ file: "docker-compose.yml", content: composeFile(`${registryHost}/compose/app`) }],
          config: { composeFile: "docker-compose.yml" },
        },
      ],
    });
    expect(saved.status, JSON.stringify(saved.body)).toBe(200);
    composeDirectory = await mkdtemp(join(tmpdir(), "ferry-compose-reference-"));
  }, 300_000);

  afterAll(async () => {
    await execFileAsync("docker-compose", ["-p", referenceProject, "down", "-v"], { cwd: composeDirectory }).catch(
      () => {},
    );
    for (const environment of ["dev", "prod"]) {
      const all = await docker.listByLabel("ferry.compose.project", `${projectSlug}-${environment}`).catch(() => []);
      for (const container of all) await docker.stopAndRemove(container.id, { stopTimeoutSeconds: 0 }).catch(() => {});
      for (const network of await docker.listNetworksByLabel(
        "ferry.compose.project",
        `${projectSlug}-${environment}`,
      )) {
        await docker.removeNetwork(network.name).catch(() => {});
      }
      for (const volume of await docker.listVolumesByLabel("ferry.compose.project", `${projectSlug}-${environment}`)) {
        await docker.removeVolume(volume.name).catch(() => {});
      }
    }
    await test?.close();
    await proxy?.stop();
    await registry?.stop();
    await removeImages([v1?.reference, v2?.reference, postgresImage].filter((image): image is string => !!image));
    if (composeDirectory) await rm(composeDirectory, { recursive: true, force: true });
  }, 120_000);

  it("refuses a Compose key it does not support when the process is saved, naming it", async () => {
    const refused = await test.call<{ errors: { pointer: string; detail: string }[] }>(
      "PUT",
      `/api/v1/projects/${projectSlug}/process`,
      {
        steps: [
          {
            name: "app",
            kind: "compose",
            config: { compose: "services:\n  web:\n    image: app\n    privileged: true\n" },
          },
        ],
      },
    );
    expect(refused.status).toBe(400);
    expect(refused.body.errors).toContainEqual({
      pointer: "/steps/0/config/compose/services/web/privileged",
      detail: expect.stringContaining("'privileged' is valid Compose but not supported"),
    });
    // The same in a template file of the step: the pointer leads into the file's content.
    const fromFile = await test.call<{ errors: { pointer: string; detail: string }[] }>(
      "PUT",
      `/api/v1/projects/${projectSlug}/process`,
      {
        steps: [
          {
            name: "app",
            kind: "compose",
            files: [{ file: "compose.yml", content: "services:\n  web:\n    image: app\n    privileged: true\n" }],
            config: { composeFile: "compose.yml" },
          },
        ],
      },
    );
    expect(fromFile.status).toBe(400);
    expect(fromFile.body.errors).toContainEqual({
      pointer: "/steps/0/files/0/content/services/web/privileged",
      detail: expect.stringContaining("'privileged' is valid Compose but not supported"),
    });
  });

  it("deploys to dev and prod with each environment's values, the app's image pinned to the release's digest", async () => {
    const devTask = await createRelease("1.0.0", "1.0.0");
    const dev = await finished(devTask ?? "");
    expect(dev.state, dev.log).toBe("succeeded");
    expect(dev.log).toContain(`is the release's image app: ${v1.reference}`);
    expect(await request("dev")).toBe("greeting hello from dev version 1.0.0");
    expect(await request("dev", "/db")).toBe("db reachable");

    const prod = await deploy("1.0.0", "prod");
    expect(prod.state, prod.log).toBe("succeeded");
    expect(await request("prod")).toBe("greeting welcome to prod version 1.0.0");
    expect(await request("dev")).toBe("greeting hello from dev version 1.0.0");

    for (const environment of ["dev", "prod"]) {
      const [web] = await serviceContainer(environment, "web");
      const [worker] = await serviceContainer(environment, "worker");
      expect((await inspect(web?.id ?? "")).Config.Image).toBe(v1.reference);
      expect((await inspect(worker?.id ?? "")).Config.Image).toBe(v1.reference);
      // The worker reaches the database by its service name on the application's own network.
      const { stdout } = await execFileAsync("docker", ["logs", "--tail", "3", worker?.name ?? ""]);
      expect(stdout).toContain(
        `worker 1.0.0 greeting ${environment === "dev" ? "hello from dev" : "welcome to prod"} db reachable`,
      );
    }
    // Each environment is its own Compose project: its own network and its own database volume.
    const volumes = await docker.listVolumesByLabel("ferry.project", projectSlug);
    expect(volumes.map((volume) => volume.name).sort()).toEqual([
      `${projectSlug}-dev_data`,
      `${projectSlug}-prod_data`,
    ]);
  }, 300_000);

  it("a new release under 16 keep-alive connections on the routed service fails no request, and the database is not recreated", async () => {
    const [dbBefore] = await serviceContainer("dev", "db");
    const [workerBefore] = await serviceContainer("dev", "worker");
    const load = startLoad({ port: proxy.port, host: hostOf("dev"), connections: 16 });
    let result: Awaited<ReturnType<typeof load.stop>>;
    let deployment: Awaited<ReturnType<typeof finished>>;
    try {
      deployment = await finished((await createRelease("1.0.1", "1.0.1")) ?? "");
      // Keep the load on after the switch too: the old colour's drain must not cut anyone.
      await sleep(1000);
    } finally {
      result = await load.stop();
    }
    expect(deployment.state, deployment.log).toBe("succeeded");
    expect(result.failures, result.failures.slice(0, 5).join("\n")).toEqual([]);
    expect(result.requests).toBeGreaterThan(100);
    expect(result.bodies.get("greeting hello from dev version 1.0.1")).toBeGreaterThan(0);
    expect(await request("dev")).toBe("greeting hello from dev version 1.0.1");

    const [dbAfter] = await serviceContainer("dev", "db");
    const [workerAfter] = await serviceContainer("dev", "worker");
    expect(dbAfter?.id).toBe(dbBefore?.id);
    expect(deployment.log).toMatch(/service db: definition unchanged; container \S+ kept \(not recreated\)/);
    // The worker's image changed with the release: it was recreated.
    expect(workerAfter?.id).not.toBe(workerBefore?.id);
    expect((await inspect(workerAfter?.id ?? "")).Config.Image).toBe(v2.reference);
    // prod still runs the release it was given.
    expect(await request("prod")).toBe("greeting welcome to prod version 1.0.0");
  }, 300_000);

  it("rolls dev back: the routed service re-switches to its retained colour under load, the database is kept", async () => {
    const [dbBefore] = await serviceContainer("dev", "db");
    const load = startLoad({ port: proxy.port, host: hostOf("dev"), connections: 16 });
    let back: Awaited<ReturnType<typeof finished>>;
    let result: Awaited<ReturnType<typeof load.stop>>;
    try {
      const rolled = await test.call<{ taskId: string }>("POST", `/api/v1/projects/${projectSlug}/rollbacks`, {
        environment: "dev",
      });
      expect(rolled.status, JSON.stringify(rolled.body)).toBe(201);
      back = await finished(rolled.body.taskId);
    } finally {
      result = await load.stop();
    }
    expect(back.state, back.log).toBe("succeeded");
    expect(result.failures, result.failures.slice(0, 5).join("\n")).toEqual([]);
    expect(back.log).toMatch(/colour \S+-web-\S+ of release 1\.0\.0 is retained: starting it \(no pull\)/);
    expect(await request("dev")).toBe("greeting hello from dev version 1.0.0");
    const [dbAfter] = await serviceContainer("dev", "db");
    expect(dbAfter?.id).toBe(dbBefore?.id);
    const [worker] = await serviceContainer("dev", "worker");
    expect((await inspect(worker?.id ?? "")).Config.Image).toBe(v1.reference);
  }, 300_000);

  it("a release whose routed service never becomes healthy leaves the live colour serving and the database untouched", async () => {
    const registryHost = new URL(registry.url).host;
    const [dbBefore] = await serviceContainer("dev", "db");
    const broken = composeFile(`${registryHost}/compose/app`)
      // The app answers 200 on /health: a check that wants 204 never passes.
      .replace("path: /health", "path: /health, expectedStatus: 204")
      .replace("deadlineSeconds: 30", "deadlineSeconds: 3");
    const saved = await test.call("PUT", `/api/v1/projects/${projectSlug}/process`, {
      images: [{ name: "app", feed: "local", repository: "compose/app" }],
      steps: [{ name: "app", kind: "compose", config: { compose: broken } }],
    });
    expect(saved.status, JSON.stringify(saved.body)).toBe(200);
    const load = startLoad({ port: proxy.port, host: hostOf("dev"), connections: 4 });
    let deployment: Awaited<ReturnType<typeof finished>>;
    let result: Awaited<ReturnType<typeof load.stop>>;
    try {
      deployment = await finished((await createRelease("1.0.2", "1.0.0")) ?? "");
    } finally {
      result = await load.stop();
    }
    expect(deployment.state, deployment.log).toBe("failed");
    expect(deployment.log).toContain("did not answer HTTP 204 on /health");
    expect(deployment.log).toContain("keeps serving");
    expect(result.failures, result.failures.slice(0, 5).join("\n")).toEqual([]);
    expect(await request("dev")).toBe("greeting hello from dev version 1.0.0");
    const [dbAfter] = await serviceContainer("dev", "db");
    expect(dbAfter?.id).toBe(dbBefore?.id);
    // Only the live colour (1.0.0, rolled back to) and the retained one (1.0.1): the failed one was removed.
    const webColours = (await docker.listByLabel("ferry.compose.project", `${projectSlug}-dev`)).filter(
      (container) => container.labels["ferry.compose.service"] === "web",
    );
    expect(webColours.map((colour) => colour.labels["ferry.release"]).sort()).toEqual(["1.0.0", "1.0.1"]);
  }, 300_000);

  it("gives the same services, networks, environment and mounts as docker-compose with the same file", async () => {
    // The file as prod's deployment rendered it, the app pinned as the release pinned it.
    await writeFile(
      join(composeDirectory, "docker-compose.yml"),
      composeFile(v1.reference, "welcome to prod", "prod.PROJECT.test"),
    );
    await execFileAsync("docker-compose", ["-p", referenceProject, "up", "-d"], {
      cwd: composeDirectory,
      timeout: 180_000,
    });
    const referenceIds = (
      await execFileAsync("docker", ["ps", "-q", "--filter", `label=com.docker.compose.project=${referenceProject}`])
    ).stdout
      .trim()
      .split("\n")
      .filter(Boolean);
    const comparable = (container: Inspected) => ({
      service:
        container.Config.Labels["com.docker.compose.service"] ?? container.Config.Labels["ferry.compose.service"],
      image: container.Config.Image,
      environment: [...container.Config.Env].sort(),
      command: container.Config.Cmd,
      healthcheck: container.Config.Healthcheck ?? null,
      cpus: container.HostConfig.NanoCpus,
      memory: container.HostConfig.Memory,
      // docker-compose leaves the policy's name empty for "no restart", Ferry writes "no": the engine treats both alike.
      restart: container.HostConfig.RestartPolicy.Name || "no",
      mounts: container.Mounts.map((mount) => ({
        type: mount.Type,
        // Volume names carry the project name, which differs: the part after it must not.
        volume: mount.Name?.replace(/^.*?_/, ""),
        destination: mount.Destination,
        writable: mount.RW,
      })),
      // Each service joins one network of its project, under its service name.
      networks: Object.entries(container.NetworkSettings.Networks).map(([name, network]) => ({
        network: name.replace(/^.*?_/, ""),
        aliasedAsService: (network.Aliases ?? []).includes(
          container.Config.Labels["com.docker.compose.service"] ??
            container.Config.Labels["ferry.compose.service"] ??
            "",
        ),
      })),
    });
    const reference = (await Promise.all(referenceIds.map(inspect))).map(comparable);
    const ours = (await Promise.all((await containersOf("prod")).map((container) => inspect(container.id)))).map(
      comparable,
    );
    const byService = (entries: ReturnType<typeof comparable>[]) =>
      [...entries].sort((a, b) => String(a.service).localeCompare(String(b.service)));
    expect(byService(ours)).toEqual(byService(reference));
    expect(ours.map((entry) => entry.service).sort()).toEqual(["db", "web", "worker"]);
  }, 300_000);

  it("compose-down in a runbook removes containers and networks, keeps the database's volume", async () => {
    const created = await test.call("POST", `/api/v1/projects/${projectSlug}/runbooks`, {
      name: "Down",
      process: { steps: [{ name: "down", kind: "compose-down", config: {} }] },
    });
    expect(created.status, JSON.stringify(created.body)).toBe(201);
    await test.call("POST", `/api/v1/projects/${projectSlug}/runbooks/down/publish`);
    const run = await test.call<{ taskId: string }>("POST", `/api/v1/projects/${projectSlug}/runbooks/down/runs`, {
      environment: "dev",
    });
    expect(run.status, JSON.stringify(run.body)).toBe(201);
    const done = await finished(run.body.taskId);
    expect(done.state, done.log).toBe("succeeded");
    expect(await docker.listByLabel("ferry.compose.project", `${projectSlug}-dev`)).toEqual([]);
    expect(await docker.listNetworksByLabel("ferry.compose.project", `${projectSlug}-dev`)).toEqual([]);
    expect((await docker.listVolumesByLabel("ferry.compose.project", `${projectSlug}-dev`)).map((v) => v.name)).toEqual(
      [`${projectSlug}-dev_data`],
    );
    // prod is another Compose project: untouched.
    expect(await request("prod")).toBe("greeting welcome to prod version 1.0.0");
  }, 120_000);
});
