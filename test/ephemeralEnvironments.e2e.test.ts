import { execFileSync } from "node:child_process";
import { randomBytes } from "node:crypto";
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { setTimeout as sleep } from "node:timers/promises";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { DockerRuntime } from "../src/runtimes/docker.js";
import { expectSuccess, isolatedEnv, runFerry } from "./helpers/cli.js";
import { buildDemoImage, type DemoImage, removeImages } from "./helpers/images.js";
import { startRegistry, type TestRegistry } from "./helpers/registry.js";
import { startTestServer, type TestServer } from "./helpers/server.js";

const docker = new DockerRuntime();

/**
 * Ephemeral environments (ADR 0045) with the real Docker engine, a real registry, the real
 * server and the `ferry` CLI: what a deployment started there is found by its
 * `ferry.env` label and removed by `ferry env delete` or when the TTL runs out.
 */
describe("ephemeral environments (real Docker engine, registry, server and CLI)", () => {
  let registry: TestRegistry;
  let image: DemoImage;
  let test: TestServer;
  let home = "";
  const suffix = randomBytes(3).toString("hex");
  const project = `eph-${suffix}`;
  const cli = (args: string[]) =>
    runFerry(args, isolatedEnv(home, { FERRY_URL: test.server.url, FERRY_API_KEY: test.apiKey }));

  /** Creates an ephemeral environment in the project's lifecycle beside `dev`, and deploys the release there. */
  const deployTo = async (slug: string, version: string, ttl?: number) => {
    expectSuccess(
      await cli(["env", "create", slug, "--ephemeral", ...(ttl === undefined ? [] : ["--ttl-minutes", String(ttl)])]),
    );
    const lifecycle = await test.call<{ phases: { name: string; environments: string[] }[] }>(
      "GET",
      `/api/v1/lifecycles/${project}`,
    );
    const phases = lifecycle.body.phases.map((phase) => ({
      name: phase.name,
      environments: [...phase.environments, slug],
    }));
    expect((await test.call("PATCH", `/api/v1/lifecycles/${project}`, { phases })).status).toBe(200);
    expect((await test.call("POST", `/api/v1/projects/${project}/releases`, { version })).status).toBe(201);
    const created = await test.call<{ taskId: string }>("POST", `/api/v1/projects/${project}/deployments`, {
      release: version,
      environment: slug,
    });
    expect(created.status, JSON.stringify(created.body)).toBe(201);
    const task = await test.waitForTask(created.body.taskId, 120_000);
    expect(task.state).toBe("succeeded");
    const running = await docker.listByLabel("ferry.env", slug);
    expect(running.map((container) => container.state)).toEqual(["running"]);
  };

  beforeAll(async () => {
    home = mkdtempSync(join(tmpdir(), "ferry-eph-home-"));
    registry = await startRegistry();
    image = await buildDemoImage({ registryUrl: registry.url, repository: `eph/app-${suffix}`, version: "1.0.0" });
    test = await startTestServer();
    await test.call("POST", "/api/v1/environments", { name: `dev-${suffix}` });
    await test.call("POST", "/api/v1/lifecycles", { name: project, phases: [{ environments: [`dev-${suffix}`] }] });
    expect((await test.call("POST", "/api/v1/projects", { name: project, lifecycle: project })).status).toBe(201);
    await test.call("POST", `/api/v1/projects/${project}/variables`, { name: "Image", value: image.reference });
    const put = await test.call("PUT", `/api/v1/projects/${project}/process`, {
      steps: [
        {
          name: "web",
          kind: "container",
          config: {
            image: "#{Image}",
            ports: [{ container: 8080 }],
            settleSeconds: 0.5,
            memoryMb: 64,
            // A named volume per environment, which the engine creates with the container.
            volumes: [{ source: "data-#{Ferry.Environment.Name}", target: "/data" }],
          },
        },
      ],
    });
    expect(put.status, JSON.stringify(put.body)).toBe(200);
  }, 120_000);

  afterAll(async () => {
    for (const owner of [project, `br-${suffix}`]) {
      await docker.removeByLabel("ferry.project", owner).catch(() => {});
      await docker.removeResourcesByLabel("ferry.project", owner).catch(() => {});
    }
    await test?.close();
    await registry?.stop();
    if (image) await removeImages([image.reference]);
    if (home) rmSync(home, { recursive: true, force: true });
    rmSync(join(tmpdir(), `ferry-eph-go-${suffix}`), { force: true });
  });

  it("refuses a TTL on an environment that is not ephemeral, and a TTL out of range, naming the field", async () => {
    const notEphemeral = await test.call<{ errors: { pointer: string; detail: string }[] }>(
      "POST",
      "/api/v1/environments",
      { name: `x-${suffix}`, ttlMinutes: 30 },
    );
    expect(notEphemeral.status).toBe(400);
    expect(notEphemeral.body.errors).toEqual([
      {
        pointer: "/ttlMinutes",
        detail: "only an ephemeral environment has a ttlMinutes: set ephemeral: true, or leave ttlMinutes out",
      },
    ]);
    const zero = await test.call<{ errors: { pointer: string; detail: string }[] }>("POST", "/api/v1/environments", {
      name: `x-${suffix}`,
      ephemeral: true,
      ttlMinutes: 0,
    });
    expect(zero.status).toBe(400);
    expect(zero.body.errors).toEqual([{ pointer: "/ttlMinutes", detail: "ttlMinutes must be at least 1" }]);
    const usage = await cli(["env", "create", `x-${suffix}`, "--ephemeral", "--ttl-minutes", "soon"]);
    expect(usage.code).toBe(2);
    expect(usage.stderr).toMatch(/give the minutes after the last deployment/);
  });

  it("ferry env delete tears down what was deployed there and leaves nothing labelled with it", async () => {
    const slug = `feature-a-${suffix}`;
    await deployTo(slug, "1.0.1");
    const shown = await cli(["env", "show", slug]);
    expect(shown.stdout, shown.stdout).toMatch(/ephemeral:\s+yes \(until deleted\)/);
    // The container's named volume carries the environment's labels, not the task's.
    const volumes = await docker.listVolumesByLabel("ferry.env", slug);
    expect(volumes.map((volume) => [volume.name, volume.labels])).toEqual([
      [`data-${slug}`, { "ferry.project": project, "ferry.env": slug }],
    ]);

    expectSuccess(await cli(["env", "delete", slug]));
    expect(await docker.listByLabel("ferry.env", slug)).toEqual([]);
    expect(await docker.listVolumesByLabel("ferry.env", slug)).toEqual([]);
    expect((await test.call("GET", `/api/v1/environments/${slug}`)).status).toBe(404);
    const lifecycle = await test.call<{ phases: { environments: string[] }[] }>("GET", `/api/v1/lifecycles/${project}`);
    expect(lifecycle.body.phases[0]?.environments).toEqual([`dev-${suffix}`]);
  }, 180_000);

  it("an ephemeral environment past its TTL is torn down by the server's sweep, and audited", async () => {
    const slug = `feature-b-${suffix}`;
    await deployTo(slug, "1.0.2", 30);
    const sweeper = test.server.ephemeralEnvironments;
    // Not yet: its last deployment was just now.
    await sweeper.sweep(new Date());
    expect((await docker.listByLabel("ferry.env", slug)).length).toBe(1);
    // The clock 31 minutes on: the TTL has run out.
    await sweeper.sweep(new Date(Date.now() + 31 * 60_000));
    expect(await docker.listByLabel("ferry.env", slug)).toEqual([]);
    expect((await test.call("GET", `/api/v1/environments/${slug}`)).status).toBe(404);
    const audit = await test.call<{ items: { action: string; resource: { name: string }; diff: unknown }[] }>(
      "GET",
      "/api/v1/audit?action=environment.expire",
    );
    const entry = audit.body.items.find((item) => item.resource.name === slug);
    expect(JSON.stringify(entry?.diff)).toMatch(/torn down 30 min after its last deployment: removed docker ferry-/);
  }, 180_000);

  it("two branches' pipelines at once, each in an ephemeral environment outside the lifecycle: any release goes there, both run in parallel on their own names, networks, volumes and ports, and each tear-down removes its containers, networks and volumes", async () => {
    const branches = `br-${suffix}`;
    // In the system's temporary directory: local work may run as another user, who cannot read the CLI's home.
    const go = join(tmpdir(), `ferry-eph-go-${suffix}`);
    expect((await test.call("POST", "/api/v1/projects", { name: branches, lifecycle: project })).status).toBe(201);
    await test.call("POST", `/api/v1/projects/${branches}/variables`, { name: "Image", value: image.reference });
    const put = await test.call("PUT", `/api/v1/projects/${branches}/process`, {
      steps: [
        {
          name: "functional",
          kind: "isolated",
          config: {
            limits: { cpus: 0.5, memoryMb: 48, pids: 128 },
            services: [
              {
                name: "web",
                image: "#{Image}",
                port: 8080,
                healthCheck: { path: "/health", intervalMs: 200, deadlineSeconds: 60 },
              },
            ],
            steps: [
              {
                name: "smoke",
                kind: "http-test",
                config: { url: "#{Ferry.Isolated.Url}/", assertions: { status: 200, bodyContains: ["version 1.0.0"] } },
              },
              {
                // Both groups wait here until the test has seen them run side by side.
                name: "barrier",
                kind: "script",
                config: {
                  script:
                    'for i in $(seq 1 900); do [ -e "$GO" ] && exit 0; sleep 0.2; done; echo "never released"; exit 1',
                  env: { GO: go },
                },
              },
            ],
          },
        },
        {
          name: "app",
          kind: "compose",
          config: {
            compose:
              'services:\n  web:\n    image: "#{Image}"\n    ports: ["8080"]\n    volumes: ["data:/data"]\n    networks: [backend]\nnetworks:\n  backend: {}\nvolumes:\n  data: {}\n',
          },
        },
      ],
    });
    expect(put.status, JSON.stringify(put.body)).toBe(200);
    const slugs = [`branch-a-${suffix}`, `branch-b-${suffix}`];
    for (const slug of slugs) expectSuccess(await cli(["env", "create", slug, "--ephemeral"]));
    // A plain environment outside the lifecycle still refuses, and says how to make it take releases.
    await test.call("POST", "/api/v1/environments", { name: `plain-${suffix}` });
    // Each branch's own release, never deployed to the lifecycle's environments.
    const versions = ["1.1.0-a", "1.1.0-b"];
    for (const version of versions) {
      expect((await test.call("POST", `/api/v1/projects/${branches}/releases`, { version })).status).toBe(201);
    }
    const refused = await test.call<{ detail: string }>("POST", `/api/v1/projects/${branches}/deployments`, {
      release: "1.1.0-a",
      environment: `plain-${suffix}`,
    });
    expect(refused.status).toBe(409);
    expect(refused.body.detail).toContain(`is not in lifecycle '${project}'; add it to a phase, make it ephemeral`);
    expectSuccess(await cli(["env", "delete", `plain-${suffix}`]));

    const tasks = await Promise.all(
      slugs.map(async (slug, index) => {
        const created = await test.call<{ taskId: string }>("POST", `/api/v1/projects/${branches}/deployments`, {
          release: versions[index],
          environment: slug,
        });
        expect(created.status, JSON.stringify(created.body)).toBe(201);
        return created.body.taskId;
      }),
    );
    // Both isolated groups run at the same moment (each waits at its barrier).
    let running: { name: string; network: string; port: string | undefined; env: string | undefined }[] = [];
    for (let attempt = 0; ; attempt++) {
      const containers = (await docker.listByLabel("ferry.project", branches)).filter(
        (container) => container.labels["ferry.service"] === "web" && container.state === "running",
      );
      if (new Set(containers.map((container) => container.labels["ferry.task"])).size === 2) {
        running = containers.map((container) => {
          const inspected = JSON.parse(
            execFileSync("docker", ["container", "inspect", container.id], { encoding: "utf8" }),
          )[0] as {
            Name: string;
            NetworkSettings: {
              Networks: Record<string, unknown>;
              Ports: Record<string, { HostPort: string }[] | null>;
            };
          };
          return {
            name: inspected.Name,
            network: Object.keys(inspected.NetworkSettings.Networks).join(","),
            port: inspected.NetworkSettings.Ports["8080/tcp"]?.[0]?.HostPort,
            env: container.labels["ferry.env"],
          };
        });
        break;
      }
      if (attempt > 1200) throw new Error("the two branches' groups never ran at the same time");
      await sleep(100);
    }
    expect(running.map((container) => container.env).sort()).toEqual([...slugs].sort());
    expect(new Set(running.map((container) => container.name)).size).toBe(2);
    expect(new Set(running.map((container) => container.network)).size).toBe(2);
    expect(new Set(running.map((container) => container.port)).size).toBe(2);
    writeFileSync(go, "go");
    for (const taskId of tasks) expect((await test.waitForTask(taskId, 180_000)).state).toBe("succeeded");

    // Each branch's application: its own container, host port, network and volume.
    const apps = await Promise.all(
      slugs.map(async (slug) => ({
        containers: await docker.listByLabel("ferry.env", slug),
        networks: await docker.listNetworksByLabel("ferry.env", slug),
        volumes: await docker.listVolumesByLabel("ferry.env", slug),
      })),
    );
    for (const app of apps) {
      expect(app.containers.map((container) => container.state)).toEqual(["running"]);
      expect(app.networks.length).toBe(1);
      expect(app.volumes.length).toBe(1);
    }
    const names = apps.flatMap((app) => [
      ...app.containers.map((container) => container.name),
      ...app.networks.map((network) => network.name),
      ...app.volumes.map((volume) => volume.name),
    ]);
    expect(new Set(names).size).toBe(6);

    for (const slug of slugs) {
      expectSuccess(await cli(["env", "delete", slug]));
      expect(await docker.listByLabel("ferry.env", slug)).toEqual([]);
      expect(await docker.listNetworksByLabel("ferry.env", slug)).toEqual([]);
      expect(await docker.listVolumesByLabel("ferry.env", slug)).toEqual([]);
      expect((await test.call("GET", `/api/v1/environments/${slug}`)).status).toBe(404);
    }
  }, 400_000);

  it("a plain environment is not torn down: deleting one in use is refused as before", async () => {
    const result = await cli(["env", "delete", `dev-${suffix}`]);
    expect(result.code).not.toBe(0);
    expect(result.stderr).toMatch(/is used by lifecycle/);
  });
});
