import { randomBytes } from "node:crypto";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
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
          config: { image: "#{Image}", ports: [{ container: 8080 }], settleSeconds: 0.5, memoryMb: 64 },
        },
      ],
    });
    expect(put.status, JSON.stringify(put.body)).toBe(200);
  }, 120_000);

  afterAll(async () => {
    await docker.removeByLabel("ferry.project", project).catch(() => {});
    await test?.close();
    await registry?.stop();
    if (image) await removeImages([image.reference]);
    if (home) rmSync(home, { recursive: true, force: true });
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

    expectSuccess(await cli(["env", "delete", slug]));
    expect(await docker.listByLabel("ferry.env", slug)).toEqual([]);
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

  it("a plain environment is not torn down: deleting one in use is refused as before", async () => {
    const result = await cli(["env", "delete", `dev-${suffix}`]);
    expect(result.code).not.toBe(0);
    expect(result.stderr).toMatch(/is used by lifecycle/);
  });
});
