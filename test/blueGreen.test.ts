import { randomBytes } from "node:crypto";
import http from "node:http";
import { setTimeout as sleep } from "node:timers/promises";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { DockerRuntime } from "../src/runtimes/docker.js";
import { defaultOutboundPolicy } from "../src/security/outboundGuard.js";
import { EtcdClient } from "../src/traffic/etcd.js";
import type { TrafficSettings } from "../src/traffic/routers.js";
import { startEtcd, type TestEtcd } from "./helpers/etcd.js";
import { haproxyStateDir } from "./helpers/haproxy.js";
import { buildDemoImage, type DemoImage, removeImages } from "./helpers/images.js";
import { type RunningLoad, startLoad } from "./helpers/load.js";
import { startNginx } from "./helpers/nginx.js";
import { type ProxyProcess, startProxyProcess } from "./helpers/proxy.js";
import { startRegistry, type TestRegistry } from "./helpers/registry.js";
import { createAutoDeployedProject, startTestServer, type TestServer } from "./helpers/server.js";

interface Created {
  deployments: { taskId: string }[];
}

/**
 * Blue/green through everything real: images pulled from a docker-registry process by the
 * Docker engine, a `ferry proxy` process switching traffic, a Ferry server running the
 * deployments, and 16 keep-alive clients sending requests through the proxy the whole
 * time. Every failed request the clients see fails the test.
 */
/** The traffic side: a `ferry proxy` process, a real nginx driven by the nginx Router, or a HAProxy the haproxy Router starts and owns. */
interface Front {
  port: number;
  traffic: TrafficSettings;
  stop(): Promise<void>;
}

const fronts: Record<"builtin" | "nginx" | "haproxy", () => Promise<Front>> = {
  builtin: async () => {
    const proxy = await startProxyProcess();
    return { port: proxy.port, traffic: proxy.traffic, stop: () => proxy.stop() };
  },
  nginx: async () => {
    const nginx = await startNginx();
    return { port: nginx.port, traffic: { driver: "nginx", nginx: nginx.options }, stop: () => nginx.stop() };
  },
  haproxy: async () => {
    const haproxy = await haproxyStateDir();
    return { port: haproxy.port, traffic: { driver: "haproxy", haproxy: haproxy.options }, stop: () => haproxy.stop() };
  },
};

/**
 * One registry and one build of each image for the whole file: each describe's afterAll
 * removes the images from the engine again, so the deployments of every describe pull them
 * from the registry for real, as they did when each describe built its own.
 */
let registry: TestRegistry;
let v1: DemoImage;
let v2: DemoImage;
let neverHealthy: DemoImage;
let failsInBake: DemoImage;
let tested1: DemoImage;
let tested2: DemoImage;
const allImages = () =>
  [v1, v2, neverHealthy, failsInBake, tested1, tested2].flatMap((image) =>
    image === undefined ? [] : [image.reference],
  );

beforeAll(async () => {
  registry = await startRegistry();
  [v1, v2, neverHealthy, failsInBake, tested1, tested2] = await Promise.all([
    buildDemoImage({ registryUrl: registry.url, repository: "bg/app", version: "1.0.1" }),
    buildDemoImage({ registryUrl: registry.url, repository: "bg/app", version: "1.0.2" }),
    buildDemoImage({ registryUrl: registry.url, repository: "bg/app", version: "1.0.3", neverHealthy: true }),
    buildDemoImage({ registryUrl: registry.url, repository: "bg/app", version: "1.0.4", unhealthyAfterSeconds: 2 }),
    buildDemoImage({ registryUrl: registry.url, repository: "bgt/app", version: "2.0.1" }),
    buildDemoImage({ registryUrl: registry.url, repository: "bgt/app", version: "2.0.2" }),
  ]);
}, 120_000);

afterAll(async () => {
  await registry?.stop();
  await removeImages(allImages());
});

describe.each(["builtin", "nginx", "haproxy"] as const)(
  "blue/green container deployments through the %s router (real Docker, registry, proxy; under load)",
  (driver) => {
    const docker = new DockerRuntime();
    const projectName = `bg-${driver}-${randomBytes(3).toString("hex")}`;
    const host = `${projectName}.test`;
    let proxy: Front;
    let etcd: TestEtcd | undefined;
    let etcdClient: EtcdClient | undefined;
    let test: TestServer;
    let projectSlug: string;
    let imageVariableId: string;

    const webStep = (blueGreen: Record<string, unknown> = {}) => ({
      name: "web",
      kind: "container",
      config: {
        strategy: "blueGreen",
        image: "#{Image}",
        route: { host, port: 8080 },
        blueGreen: {
          healthCheck: { path: "/health", intervalMs: 200, timeoutMs: 1000, deadlineSeconds: 4 },
          drainSeconds: 10,
          keepPreviousRunning: true,
          ...blueGreen,
        },
        settleSeconds: 0.5,
        stopTimeoutSeconds: 5,
      },
    });

    const logText = async (taskId: string) =>
      (await test.call<{ lines: { text: string }[] }>("GET", `/api/v1/tasks/${taskId}/log`)).body.lines
        .map((line) => line.text)
        .join("\n");

    /** Creates a release of `image` with the given blue/green options; its auto-deployment's task and log. */
    const release = async (version: string, image: DemoImage, blueGreen: Record<string, unknown> = {}) => {
      await test.call("PUT", `/api/v1/projects/${projectSlug}/process`, { steps: [webStep(blueGreen)] });
      await test.call("PATCH", `/api/v1/projects/${projectSlug}/variables/${imageVariableId}`, {
        value: image.reference,
      });
      const created = await test.call<Created>("POST", `/api/v1/projects/${projectSlug}/releases`, { version });
      expect(created.status, JSON.stringify(created.body)).toBe(201);
      return finished(created.body.deployments[0]?.taskId ?? "");
    };

    const finished = async (taskId: string) => {
      const task = await test.waitForTask(taskId, 90_000);
      return { taskId, state: task.state, log: await logText(taskId) };
    };

    const served = async (path = "/") => {
      const response = await request(proxy.port, host, path);
      return response.body.trim();
    };

    const colours = async () =>
      (await docker.listByLabel("ferry.project", projectSlug)).map((container) => ({
        name: container.name,
        release: container.labels["ferry.release"],
        state: container.state,
      }));

    let load: RunningLoad | undefined;
    const underLoad = async <T>(action: () => Promise<T>) => {
      load = startLoad({ port: proxy.port, host, connections: 16 });
      try {
        const result = await action();
        return { result, load: await load.stop() };
      } finally {
        load = undefined;
      }
    };

    beforeAll(async () => {
      // Side by side; each kept as it starts, so afterAll stops it even when the other failed.
      const [, endpoint] = await Promise.all([
        fronts[driver]().then((started) => {
          proxy = started;
        }),
        startEtcd().then((started) => {
          etcd = started;
          return started.endpoint;
        }),
      ]);
      etcdClient = new EtcdClient(endpoint);
      test = await startTestServer({ traffic: { ...proxy.traffic, etcdEndpoint: endpoint } });
      ({ projectSlug, variableId: imageVariableId } = await createAutoDeployedProject(
        test,
        { lifecycle: "bg", project: projectName },
        { name: "Image", value: v1.reference },
      ));
    }, 120_000);

    afterAll(async () => {
      await load?.stop();
      if (projectSlug) await docker.removeByLabel("ferry.project", projectSlug);
      await test?.close();
      await proxy?.stop();
      await etcdClient?.close();
      await etcd?.stop();
      // Gone from the engine again: the next describe pulls them from the registry.
      await removeImages(allImages());
    });

    it("deploys the first colour and routes the host to it", async () => {
      const first = await release("1.0.1", v1);
      expect(first.state, first.log).toBe("succeeded");
      expect(first.log).toContain("new: nothing is live yet");
      expect(first.log).toMatch(
        /switched route \S+ to colour ferry-\S+-prod-1\.0\.1-\w+ \(http:\/\/127\.0\.0\.1:\d+\)/,
      );
      expect(await served()).toBe("version 1.0.1");
      // Every switch is published to etcd too (FERRY_ETCD_ENDPOINT), where confd-style consumers read it.
      const keys = await (etcdClient as EtcdClient).getPrefix(`/ferry/routes/${host}/`);
      const upstream = /switched route \S+ to colour \S+ \((http:\/\/127\.0\.0\.1:\d+)\)/.exec(first.log)?.[1];
      expect(keys.find((entry) => entry.key.endsWith("/upstream"))?.value).toBe(upstream);
      expect(keys.find((entry) => entry.key.endsWith("/colour"))?.value).toMatch(/-prod-1\.0\.1-/);
    });

    it("switches to 1.0.2 under load with 0 failed requests; 2 s requests in flight at the switch complete with 200", async () => {
      const slow: { body: string; status: number; started: number; ended: number }[] = [];
      let slowRunning = true;
      const slowClient = async () => {
        while (slowRunning) {
          const started = Date.now();
          const reply = await request(proxy.port, host, "/cgi-bin/slow");
          slow.push({ body: reply.body.trim(), status: reply.status, started, ended: Date.now() });
        }
      };
      const { result: second, load: seen } = await underLoad(async () => {
        const slowClients = Array.from({ length: 4 }, slowClient);
        const deployed = await release("1.0.2", v2);
        // Slow requests go on until one has been served by the new colour too (a busy machine
        // may end the deployment before any slow request started after the switch).
        const deadline = Date.now() + 15_000;
        while (!slow.some((reply) => reply.body === "slow 1.0.2") && Date.now() < deadline) await sleep(100);
        slowRunning = false;
        await Promise.all(slowClients);
        return deployed;
      });
      expect(second.state, second.log).toBe("succeeded");
      expect(seen.failures).toEqual([]);
      expect(seen.bodies.get("version 1.0.1")).toBeGreaterThan(0);
      expect(seen.bodies.get("version 1.0.2")).toBeGreaterThan(0);
      expect(await served()).toBe("version 1.0.2");

      expect(slow.filter((reply) => reply.status !== 200)).toEqual([]);
      // A request to the old colour still running when one to the new colour had begun: it spanned the switch.
      const firstNew = Math.min(...slow.filter((reply) => reply.body === "slow 1.0.2").map((reply) => reply.started));
      expect(slow.some((reply) => reply.body === "slow 1.0.1" && reply.ended > firstNew)).toBe(true);

      // The deployment's own traffic record: what the proxy counted in its window.
      expect(second.log).toMatch(/traffic during this deployment: [1-9]\d* request\(s\) served, 0 failed/);
      expect(second.log).toMatch(/colour \S+1\.0\.1\S* drained in \d+ ms/);
      // The previous colour is kept running for an instant rollback.
      expect(
        (await colours())
          .filter((colour) => colour.state === "running")
          .map((colour) => colour.release)
          .sort(),
      ).toEqual(["1.0.1", "1.0.2"]);
    });

    it("rolls back by re-switching to the retained colour: no pull, no container start", async () => {
      const before = await colours();
      const { result: back, load: seen } = await underLoad(async () => {
        const rolled = await test.call<{ taskId: string }>("POST", `/api/v1/projects/${projectSlug}/rollbacks`, {
          environment: "prod",
        });
        expect(rolled.status, JSON.stringify(rolled.body)).toBe(201);
        return finished(rolled.body.taskId);
      });
      expect(back.state, back.log).toBe("succeeded");
      expect(seen.failures).toEqual([]);
      expect(await served()).toBe("version 1.0.1");
      expect(back.log).toContain("of release 1.0.1 is retained and running: no pull, no start");
      expect(back.log).not.toContain("pulling");
      // The switch time itself is measured by `npm run bench -- rollback` / `zero-downtime`, not here.
      expect(back.log).toMatch(/switched route \S+ to colour \S+1\.0\.1\S* \(\S+\) in [\d.]+ ms/);
      // The same containers, no new one.
      expect((await colours()).map((colour) => colour.name).sort()).toEqual(before.map((colour) => colour.name).sort());
    });

    it("a release whose health check never passes fails, 0 failed requests, the live colour keeps serving", async () => {
      const { result: failed, load: seen } = await underLoad(() => release("1.0.3", neverHealthy));
      expect(failed.state).toBe("failed");
      expect(failed.log).toMatch(/did not answer HTTP 200 on \/health within 4 s/);
      expect(failed.log).toContain("keeps serving");
      expect(seen.failures).toEqual([]);
      expect(seen.bodies.get("version 1.0.3")).toBeUndefined();
      expect(await served()).toBe("version 1.0.1");
      expect((await colours()).some((colour) => colour.release === "1.0.3")).toBe(false);
    });

    it("a release that fails during bake is switched back by itself, with 0 failed requests", async () => {
      const { result: baked, load: seen } = await underLoad(() =>
        release("1.0.4", failsInBake, { bakeSeconds: 8, drainSeconds: 5 }),
      );
      expect(baked.state).toBe("failed");
      expect(baked.log).toMatch(/bake failed .*switched route \S+ back to colour \S+1\.0\.1/);
      expect(seen.failures).toEqual([]);
      // It did serve for a while: the switch happened before the bake caught the failure.
      expect(seen.bodies.get("version 1.0.4")).toBeGreaterThan(0);
      expect(await served()).toBe("version 1.0.1");
      expect((await colours()).some((colour) => colour.release === "1.0.4")).toBe(false);
    });

    it("rolls back two releases to a stopped retained colour: started, probed, switched, no pull", async () => {
      const third = await release("1.0.5", v2);
      expect(third.state, third.log).toBe("succeeded");
      // Live 1.0.5; 1.0.1 kept running (the previous), 1.0.2 retained but stopped.
      const byRelease = new Map((await colours()).map((colour) => [colour.release, colour.state]));
      expect(byRelease.get("1.0.2")).toBe("exited");
      const { result: back, load: seen } = await underLoad(async () => {
        const rolled = await test.call<{ taskId: string }>("POST", `/api/v1/projects/${projectSlug}/rollbacks`, {
          environment: "prod",
          to: "1.0.2",
        });
        expect(rolled.status, JSON.stringify(rolled.body)).toBe(201);
        return finished(rolled.body.taskId);
      });
      expect(back.state, back.log).toBe("succeeded");
      expect(back.log).toContain("of release 1.0.2 is retained: starting it (no pull)");
      expect(back.log).not.toContain("pulling");
      expect(seen.failures).toEqual([]);
      expect(await served()).toBe("version 1.0.2");
    });
  },
);

/**
 * Pre-switch tests, and the outbound guard around a colour: the server runs with the guard at
 * its defaults (no FERRY_OUTBOUND_ALLOW), so each request to 127.0.0.1 that succeeds here does
 * because it checks the new colour at its own address and port.
 */
describe("blue/green pre-switch tests and the outbound guard at its defaults (real Docker, registry, ferry proxy; under load)", () => {
  const docker = new DockerRuntime();
  const projectName = `bgt-${randomBytes(3).toString("hex")}`;
  const host = `${projectName}.test`;
  let proxy: ProxyProcess;
  let test: TestServer;
  let projectSlug: string;
  let imageVariableId: string;

  const release = async (version: string, image: DemoImage, blueGreen: Record<string, unknown>) => {
    const saved = await test.call("PUT", `/api/v1/projects/${projectSlug}/process`, {
      steps: [
        {
          name: "web",
          kind: "container",
          config: {
            strategy: "blueGreen",
            image: "#{Image}",
            route: { host, port: 8080 },
            blueGreen: {
              healthCheck: { path: "/health", intervalMs: 200, timeoutMs: 1000, deadlineSeconds: 10 },
              drainSeconds: 2,
              ...blueGreen,
            },
            settleSeconds: 0.5,
            stopTimeoutSeconds: 5,
          },
        },
      ],
    });
    expect(saved.status, JSON.stringify(saved.body)).toBe(200);
    await test.call("PATCH", `/api/v1/projects/${projectSlug}/variables/${imageVariableId}`, {
      value: image.reference,
    });
    const created = await test.call<Created>("POST", `/api/v1/projects/${projectSlug}/releases`, { version });
    expect(created.status, JSON.stringify(created.body)).toBe(201);
    const taskId = created.body.deployments[0]?.taskId ?? "";
    const task = await test.waitForTask(taskId, 90_000);
    const log = (await test.call<{ lines: { text: string }[] }>("GET", `/api/v1/tasks/${taskId}/log`)).body.lines
      .map((line) => line.text)
      .join("\n");
    return { state: task.state, error: String(task.error), log };
  };
  const served = async () => (await request(proxy.port, host, "/")).body.trim();
  const releases = async () =>
    (await docker.listByLabel("ferry.project", projectSlug)).map((container) => container.labels["ferry.release"]);
  const underLoad = async <T>(action: () => Promise<T>) => {
    const load = startLoad({ port: proxy.port, host, connections: 8 });
    try {
      const result = await action();
      return { result, load: await load.stop() };
    } catch (error) {
      await load.stop();
      throw error;
    }
  };

  beforeAll(async () => {
    proxy = await startProxyProcess();
    test = await startTestServer({ traffic: proxy.traffic, outbound: defaultOutboundPolicy });
    ({ projectSlug, variableId: imageVariableId } = await createAutoDeployedProject(
      test,
      { lifecycle: "bgt", project: projectName },
      { name: "Image", value: tested1.reference },
    ));
    await test.call("POST", `/api/v1/projects/${projectSlug}/variables`, {
      name: "CatalogUrl",
      value: `${registry.url}/v2/_catalog`,
    });
  }, 120_000);

  afterAll(async () => {
    if (projectSlug) await docker.removeByLabel("ferry.project", projectSlug);
    await test?.close();
    await proxy?.stop();
    await removeImages(allImages());
  });

  it("probes, tests and bakes the new colour at its own address, then switches", async () => {
    const first = await release("2.0.1", tested1, {
      preSwitchTests: [
        {
          url: "#{Ferry.Route.PreviewUrl}/",
          assertions: { bodyContains: ["version #{Ferry.Release.Number}"] },
        },
      ],
      bakeSeconds: 1,
    });
    expect(first.state, first.log).toBe("succeeded");
    expect(first.log).toContain("healthy: HTTP 200");
    expect(first.log).toContain("pre-switch test 1 of 1");
    expect(first.log).toContain('✔ body contains "version 2.0.1"');
    expect(first.log).toContain("bake passed");
    expect(await served()).toBe("version 2.0.1");
  });

  it("a failing pre-switch test keeps the live colour serving, with 0 failed requests, and removes the new one", async () => {
    const { result: failed, load } = await underLoad(() =>
      release("2.0.2", tested2, {
        preSwitchTests: [
          { url: "#{Ferry.Route.PreviewUrl}/health", assertions: { status: 200 } },
          { url: "#{Ferry.Route.PreviewUrl}/", assertions: { bodyContains: ["version 9.9.9"] } },
        ],
      }),
    );
    expect(failed.state, failed.log).toBe("failed");
    expect(failed.error).toMatch(
      /pre-switch test 2 failed: 1 of 2 assertions failed .*body does not contain "version 9\.9\.9"/,
    );
    expect(failed.error).toContain("the live colour keeps serving");
    expect(failed.log).not.toMatch(/switched route/);
    expect(load.failures).toEqual([]);
    expect(load.bodies.get("version 2.0.2")).toBeUndefined();
    expect(await served()).toBe("version 2.0.1");
    expect(await releases()).toEqual(["2.0.1"]);
  });

  it("refuses a pre-switch test whose URL a variable pointed at another loopback service (the registry), and removes the new colour", async () => {
    const refused = await release("2.0.3", tested2, { preSwitchTests: [{ url: "#{CatalogUrl}" }] });
    expect(refused.state, refused.log).toBe("failed");
    const registryPort = new URL(registry.url).port;
    expect(refused.error).toContain(
      `pre-switch test 1 failed: url ${registry.url}/v2/_catalog points at a loopback address (127.0.0.1 port ${registryPort}); allow it with FERRY_OUTBOUND_ALLOW if you mean it`,
    );
    expect(refused.log).not.toContain("repositories");
    expect(await served()).toBe("version 2.0.1");
    expect(await releases()).toEqual(["2.0.1"]);
  });
});

function request(port: number, host: string, path: string): Promise<{ status: number; body: string }> {
  return new Promise((resolve, reject) => {
    const sent = http.request({ host: "127.0.0.1", port, path, headers: { host } }, (response) => {
      const chunks: Buffer[] = [];
      response.on("data", (chunk: Buffer) => chunks.push(chunk));
      response.on("end", () => resolve({ status: response.statusCode ?? 0, body: Buffer.concat(chunks).toString() }));
      response.on("error", reject);
    });
    sent.on("error", reject);
    sent.setTimeout(15_000, () => sent.destroy(new Error("no answer within 15 s")));
    sent.end();
  });
}
