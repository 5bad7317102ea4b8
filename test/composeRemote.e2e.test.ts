import { randomBytes } from "node:crypto";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { setTimeout as sleep } from "node:timers/promises";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { DockerRuntime } from "../src/runtimes/docker.js";
import { FERRY } from "./helpers/cli.js";
import { buildComposeAppImage, nodeInImage } from "./helpers/composeImages.js";
import { type DemoImage, removeImages } from "./helpers/images.js";
import { startLoad } from "./helpers/load.js";
import { startRegistry, type TestRegistry } from "./helpers/registry.js";
import { createAutoProd, PROXY_PORT, served as servedBy } from "./helpers/remoteHosts.js";
import { startTestServer, type TestServer } from "./helpers/server.js";
import { type SshHosts, startSshHosts } from "./helpers/sshHosts.js";

/**
 * The compose step on a remote target (issue 16 part 6, ADR 0050), on real parts: a namespace
 * host with its own sshd, its own dockerd (pulling from the test registry over its link) and
 * its own `ferry proxy`, which Ferry starts and switches there through the SSH transport. The
 * Compose application (a routed web service, a worker and a store service whose definition
 * never changes) is brought up on the host's engine, none of it on this machine's; a new
 * release under 16 keep-alive connections to the host's proxy fails no request, and the
 * unchanged service's container is kept.
 */

interface Created {
  deployments: { taskId: string }[];
}

describe("compose step over SSH on a host with its own engine and router (real sshd, dockerd, registry, ferry proxy; under load)", {
  timeout: 600_000,
}, () => {
  let registry: TestRegistry;
  let hosts: SshHosts;
  let test: TestServer;
  let v1: DemoImage & { tagged: string };
  let v2: DemoImage & { tagged: string };
  let store: DemoImage & { tagged: string };
  const stateRoot = mkdtempSync(join(tmpdir(), "ferry-compose-remote-"));
  const suffix = randomBytes(3).toString("hex");
  const projectName = `cmpr-${suffix}`;
  let slug = "";
  const routeHost = () => `${slug}.test`;

  const host = () => {
    const first = hosts.hosts[0];
    if (!first?.engine) throw new Error("no host with an engine");
    return { ...first, engine: first.engine };
  };

  const logText = async (taskId: string) =>
    (await test.call<{ lines: { text: string }[] }>("GET", `/api/v1/tasks/${taskId}/log`)).body.lines
      .map((line) => line.text)
      .join("\n");
  const finished = async (taskId: string) => {
    const task = await test.waitForTask(taskId, 300_000);
    return { taskId, state: task.state, log: await logText(taskId) };
  };
  const release = async (version: string, tag: string) => {
    const created = await test.call<Created>("POST", `/api/v1/projects/${slug}/releases`, {
      version,
      images: { app: tag },
    });
    expect(created.status, JSON.stringify(created.body)).toBe(201);
    return finished(created.body.deployments[0]?.taskId ?? "");
  };

  /** What the host's proxy answers for the application's route (trimmed body). */
  const served = () => servedBy(host().address, routeHost());

  /** The running containers of the application's services on the host's engine: "service id". */
  const servicesOnHost = () =>
    host()
      .engine.docker([
        "ps",
        "--filter",
        `label=ferry.compose.project=${slug}-prod`,
        "--format",
        '{{.Label "ferry.compose.service"}} {{.ID}}',
      ])
      .split("\n")
      .filter(Boolean)
      .sort();
  const containerOf = (service: string) =>
    servicesOnHost()
      .filter((line) => line.startsWith(`${service} `))
      .map((line) => line.split(" ")[1]);

  beforeAll(async () => {
    registry = await startRegistry();
    [v1, v2, store] = await Promise.all([
      buildComposeAppImage({ registryUrl: registry.url, repository: `compose-remote/app-${suffix}`, version: "1.0.0" }),
      buildComposeAppImage({ registryUrl: registry.url, repository: `compose-remote/app-${suffix}`, version: "1.0.1" }),
      // Another repository, not the release's image: the store's definition never changes.
      buildComposeAppImage({ registryUrl: registry.url, repository: `compose-remote/store-${suffix}`, version: "1" }),
    ]);
    [hosts, test] = await Promise.all([
      startSshHosts(1, { engines: 1, registries: [registry.url] }),
      startTestServer(),
    ]);
    const registryHost = new URL(registry.url).host;
    expect((await test.call("POST", "/api/v1/feeds", { name: "local", url: registry.url })).status).toBe(201);
    await createAutoProd(test);
    const first = host();
    const target = await test.call("POST", "/api/v1/targets", {
      name: `compose-host-${suffix}`,
      environments: ["prod"],
      roles: ["app"],
      transport: "ssh",
      ssh: { host: first.address, user: "root", privateKey: hosts.privateKey, hostKey: first.fingerprint },
      router: {
        driver: "builtin",
        listen: `0.0.0.0:${PROXY_PORT}`,
        stateDir: join(stateRoot, "proxy"),
        command: FERRY,
      },
    });
    expect(target.status, JSON.stringify(target.body)).toBe(201);
    const project = await test.call<{ slug: string }>("POST", "/api/v1/projects", {
      name: projectName,
      lifecycle: "auto",
    });
    expect(project.status, JSON.stringify(project.body)).toBe(201);
    slug = project.body.slug;
    expect(
      (await test.call("POST", `/api/v1/projects/${slug}/variables`, { name: "Greeting", value: "hello remote" }))
        .status,
    ).toBe(201);
    const appImage = `${registryHost}/compose-remote/app-${suffix}`;
    const compose = `
services:
  store:
    image: ${store.tagged}
    environment: { GREETING: store }
  web:
    image: ${appImage}
    environment:
      GREETING: "#{Greeting}"
      DB_HOST: store
    depends_on: [store]
    deploy: { resources: { limits: { cpus: "0.5", memory: 128m } } }
    x-ferry:
      route: { host: "${slug}.test", port: 8080 }
      blueGreen:
        healthCheck: { path: /health, intervalMs: 200, timeoutMs: 2000, deadlineSeconds: 60 }
        drainSeconds: 5
  worker:
    image: ${appImage}
    command: ["${nodeInImage()}", "/app/worker.js"]
    environment: ["GREETING=#{Greeting}"]
    depends_on: [store]
    restart: unless-stopped
`;
    const saved = await test.call("PUT", `/api/v1/projects/${slug}/process`, {
      images: [{ name: "app", feed: "local", repository: `compose-remote/app-${suffix}` }],
      steps: [{ name: "app", kind: "compose", roles: ["app"], config: { compose } }],
    });
    expect(saved.status, JSON.stringify(saved.body)).toBe(200);
  }, 400_000);

  afterAll(async () => {
    await test?.close().catch(() => undefined);
    await hosts?.close();
    await registry?.stop();
    await removeImages([v1?.reference, v2?.reference, store?.reference].filter((reference) => reference !== undefined));
    rmSync(stateRoot, { recursive: true, force: true });
  }, 120_000);

  it("deploys on the host's engine through SSH, then a new release under load fails no request and keeps the unchanged service", async () => {
    const first = await release("1.0.0", "1.0.0");
    expect(first.state, first.log).toBe("succeeded");
    expect(await served()).toBe("greeting hello remote version 1.0.0");
    // Every service runs on the host's own engine, none on this machine's.
    expect(servicesOnHost().map((line) => line.split(" ")[0])).toEqual(["store", "web", "worker"]);
    expect(await new DockerRuntime().listByLabel("ferry.project", slug)).toEqual([]);
    const storeBefore = containerOf("store");
    const workerBefore = containerOf("worker");

    const load = startLoad({ address: host().address, port: PROXY_PORT, host: routeHost(), connections: 16 });
    let second: Awaited<ReturnType<typeof finished>>;
    let seen: Awaited<ReturnType<typeof load.stop>>;
    try {
      while (load.completed() < 50) await sleep(20);
      second = await release("1.0.1", "1.0.1");
      // The load goes on after the switch: the old colour's drain must cut no one.
      const after = load.completed();
      while (load.completed() < after + 50) await sleep(20);
    } finally {
      seen = await load.stop();
    }
    expect(second.state, second.log).toBe("succeeded");
    expect(seen.failures, seen.failures.slice(0, 5).join("\n")).toEqual([]);
    expect(seen.bodies.get("greeting hello remote version 1.0.0")).toBeGreaterThan(0);
    expect(seen.bodies.get("greeting hello remote version 1.0.1")).toBeGreaterThan(0);
    expect(await served()).toBe("greeting hello remote version 1.0.1");
    expect(second.log).toMatch(/service store: definition unchanged; container \S+ kept \(not recreated\)/);
    expect(containerOf("store")).toEqual(storeBefore);
    // The worker's image changed with the release: recreated, on the host.
    expect(containerOf("worker")).not.toEqual(workerBefore);
    expect(containerOf("worker")).toHaveLength(1);
  });
});
