import { execFileSync } from "node:child_process";
import { randomBytes } from "node:crypto";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { DockerRuntime } from "../src/runtimes/docker.js";
import { buildDemoImage, type DemoImage, removeImages } from "./helpers/images.js";
import { startLoad } from "./helpers/load.js";
import { type ProxyProcess, startProxyProcess } from "./helpers/proxy.js";
import { startRegistry, type TestRegistry } from "./helpers/registry.js";
import { get } from "./helpers/routerDriver.js";
import { createAutoDeployedProject, startTestServer, type TestServer } from "./helpers/server.js";

/**
 * Issue 14 part 6: the `restart` and `exec` runbook steps against a real blue/green service
 * (an image pulled from a docker-registry process by the Docker engine, a `ferry proxy`
 * process switching traffic). A restart of the routed service under 16 keep-alive
 * connections drops no request and leaves a fresh colour of the same release live; exec
 * runs a command in the live colour, its output in the task log and its exit code the
 * step's result; a service that is not routed is restarted in place.
 */

type Body = Record<string, unknown>;

describe("restart and exec steps (real Docker, registry, proxy)", () => {
  const docker = new DockerRuntime();
  const projectName = `ops-${randomBytes(3).toString("hex")}`;
  const host = `${projectName}.test`;
  let registry: TestRegistry;
  let proxy: ProxyProcess;
  let test: TestServer;
  let image: DemoImage;
  let projectSlug: string;

  async function admin<T = Body>(method: string, path: string, body?: unknown): Promise<T> {
    const response = await test.call<T>(method, path, body);
    expect(response.status, `${method} ${path}: ${JSON.stringify(response.body)}`).toBeLessThan(300);
    return response.body;
  }

  const logOf = async (taskId: string) =>
    (await admin<{ lines: { text: string }[] }>("GET", `/api/v1/tasks/${taskId}/log`)).lines
      .map((line) => line.text)
      .join("\n");

  async function runRunbook(name: string, steps: Body[]) {
    const created = await admin<Body>("POST", `/api/v1/projects/${projectSlug}/runbooks`, {
      name,
      process: { steps },
    });
    await admin("POST", `/api/v1/projects/${projectSlug}/runbooks/${created.slug}/publish`);
    const run = await admin<Body>("POST", `/api/v1/projects/${projectSlug}/runbooks/${created.slug}/runs`, {
      environment: "prod",
    });
    const task = await test.waitForTask(String(run.taskId), 120_000);
    return { state: task.state, log: await logOf(String(run.taskId)) };
  }

  const liveColours = async () =>
    (await docker.listByLabel("ferry.project", projectSlug)).filter((container) => container.state === "running");

  beforeAll(async () => {
    // Side by side where nothing waits for the other (the image needs the registry, the server
    // the proxy); each is kept as it starts, so afterAll stops it even when the other failed.
    await Promise.all([
      startRegistry().then((started) => {
        registry = started;
      }),
      startProxyProcess().then((started) => {
        proxy = started;
      }),
    ]);
    await Promise.all([
      buildDemoImage({ registryUrl: registry.url, repository: "ops/app", version: "2.0.0" }).then((built) => {
        image = built;
      }),
      startTestServer({ traffic: proxy.traffic }).then((started) => {
        test = started;
      }),
    ]);
    ({ projectSlug } = await createAutoDeployedProject(
      test,
      { lifecycle: "ops", project: projectName },
      { name: "Image", value: image.reference },
    ));
    await admin("POST", `/api/v1/projects/${projectSlug}/variables`, {
      name: "Token",
      value: "tok-very-secret-value",
      sensitive: true,
    });
    await admin("PUT", `/api/v1/projects/${projectSlug}/process`, {
      steps: [
        {
          name: "web",
          kind: "container",
          config: {
            strategy: "blueGreen",
            image: "#{Image}",
            route: { host, port: 8080 },
            blueGreen: { healthCheck: { path: "/health", intervalMs: 200, deadlineSeconds: 20 }, drainSeconds: 10 },
            settleSeconds: 0.5,
            stopTimeoutSeconds: 5,
          },
        },
      ],
    });
    const created = await admin<{ deployments: { taskId: string }[] }>(
      "POST",
      `/api/v1/projects/${projectSlug}/releases`,
      { version: "2.0.0" },
    );
    const deployed = await test.waitForTask(created.deployments[0]?.taskId ?? "", 90_000);
    expect(deployed.state).toBe("succeeded");
  }, 180_000);

  afterAll(async () => {
    if (projectSlug) await docker.removeByLabel("ferry.project", projectSlug);
    await test?.close();
    await proxy?.stop();
    await registry?.stop();
    if (image) await removeImages([image.reference]);
  });

  it("exec runs a command in the live colour: output in the log, sensitive env masked, exit code the result", async () => {
    const [live] = await liveColours();
    const ok = await runRunbook("Say hello", [
      {
        name: "hello",
        kind: "exec",
        config: {
          command: [
            "/bin/busybox",
            "sh",
            "-c",
            'echo "hello from $(/bin/busybox hostname) token=$TOKEN"; echo oops >&2',
          ],
          env: { TOKEN: "#{Token}" },
        },
      },
    ]);
    expect(ok.state, ok.log).toBe("succeeded");
    expect(ok.log).toContain(`in container ${live?.name}, the live colour of route`);
    expect(ok.log).toContain(`hello from ${live?.id.slice(0, 12)} token=********`);
    expect(ok.log).toContain("oops");
    expect(ok.log).not.toContain("tok-very-secret-value");

    const failing = await runRunbook("Fail", [
      { name: "fail", kind: "exec", config: { command: ["/bin/busybox", "sh", "-c", "echo about to fail; exit 3"] } },
    ]);
    expect(failing.state).toBe("failed");
    expect(failing.log).toContain("about to fail");
    expect(failing.log).toContain("step 'fail' failed: the command exited with code 3");
  }, 120_000);

  it("restarts the routed service under 16-connection keep-alive load with 0 failed requests", async () => {
    const [before] = await liveColours();
    const load = startLoad({ port: proxy.port, host, connections: 16 });
    const restarted = await (async () => {
      // Load flows before the restart starts, so the switch happens under it.
      while (load.completed() < 200) await new Promise((resolve) => setTimeout(resolve, 20));
      return runRunbook("Restart", [{ name: "restart", kind: "restart", config: { drainSeconds: 5 } }]);
    })().finally(() => undefined);
    const seen = await load.stop();
    expect(restarted.state, restarted.log).toBe("succeeded");
    expect(seen.failures).toEqual([]);
    expect(seen.requests).toBeGreaterThan(200);
    expect([...seen.bodies.keys()]).toEqual(["version 2.0.0"]);

    // A fresh colour of the same release serves; the replaced one is gone.
    const after = await liveColours();
    expect(after).toHaveLength(1);
    expect(after[0]?.name).not.toBe(before?.name);
    expect(after[0]?.labels["ferry.release"]).toBe("2.0.0");
    expect(await docker.inspectContainer(before?.name ?? "")).toBeUndefined();
    expect(restarted.log).toMatch(/switched route \S+ to colour \S+-prod-2\.0\.0-\S+/);
    expect(restarted.log).toContain(`removed the replaced colour ${before?.name}`);
    expect(await body(proxy.port, host)).toBe("version 2.0.0");
    // The router counted the load on both colours across the switch, and no failure.
    expect(restarted.log).toMatch(/traffic during this deployment: [1-9]\d* request\(s\) served, 0 failed/);
  }, 180_000);

  it("restarts a container that is not routed in place, and refuses one Ferry did not start for the project", async () => {
    const name = `${projectSlug}-side`;
    const startedAt = () => execFileSync("docker", ["inspect", "-f", "{{.State.StartedAt}}", name]).toString().trim();
    const first = await runRunbook("Side", [
      {
        name: "side",
        kind: "container",
        config: { strategy: "recreate", image: "#{Image}", name, settleSeconds: 0.5 },
      },
    ]);
    expect(first.state, first.log).toBe("succeeded");
    const before = startedAt();
    const restarted = await runRunbook("Restart side", [
      { name: "restart", kind: "restart", config: { container: name, stopTimeoutSeconds: 2, settleSeconds: 0.5 } },
    ]);
    expect(restarted.state, restarted.log).toBe("succeeded");
    expect(restarted.log).toContain(`container ${name} is not behind a route: stopping and starting it`);
    expect(startedAt()).not.toBe(before);

    const stranger = `${projectSlug}-stranger`;
    execFileSync("docker", ["create", "--name", stranger, imageId(name)]);
    try {
      const refused = await runRunbook("Restart stranger", [
        { name: "restart", kind: "restart", config: { container: stranger } },
      ]);
      expect(refused.state).toBe("failed");
      expect(refused.log).toContain(
        `container ${stranger} was not started by Ferry for ${projectName} in prod: refusing to act on it`,
      );
    } finally {
      execFileSync("docker", ["rm", "-f", stranger]);
    }
  }, 180_000);
});

/** The image id a container runs (the demo image is not tagged on this engine: it was pulled by digest). */
function imageId(container: string): string {
  return execFileSync("docker", ["inspect", "-f", "{{.Image}}", container]).toString().trim();
}

/** What the router on 127.0.0.1:`port` answers for `host` at / (the body, trimmed), on a fresh connection. */
async function body(port: number, host: string): Promise<string> {
  return (await get(port, host)).body.trim();
}
