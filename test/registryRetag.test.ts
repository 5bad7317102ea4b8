import { createServer, request, type Server } from "node:http";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { RegistryClient } from "../src/feeds/registry.js";
import { parseOutboundAllow } from "../src/security/outboundGuard.js";
import { freePort, pushTestImage, startRegistry } from "./helpers/registry.js";
import { startTestServer, type TestServer } from "./helpers/server.js";

/**
 * A pass-through HTTP proxy in front of the registry that writes down every request it
 * forwards ("PUT /v2/demo/app/manifests/1.0.3"): the proof that a retag moves no layer.
 */
async function recordingProxy(target: string) {
  const upstream = new URL(target);
  const seen: string[] = [];
  const server: Server = createServer((incoming, outgoing) => {
    seen.push(`${incoming.method} ${incoming.url}`);
    const forwarded = request(
      {
        host: upstream.hostname,
        port: upstream.port,
        method: incoming.method,
        path: incoming.url,
        headers: { ...incoming.headers, host: upstream.host },
      },
      (answer) => {
        outgoing.writeHead(answer.statusCode ?? 502, answer.headers);
        answer.pipe(outgoing);
      },
    );
    forwarded.on("error", () => outgoing.destroy());
    incoming.pipe(forwarded);
  });
  const port = await freePort();
  await new Promise<void>((resolve) => server.listen(port, "127.0.0.1", resolve));
  return {
    url: `http://127.0.0.1:${port}`,
    seen,
    close: () => new Promise<void>((resolve) => server.close(() => resolve())),
  };
}

describe("registry-retag step (real registry with authentication, through a real server)", () => {
  let test: TestServer;
  let registry: Awaited<ReturnType<typeof startRegistry>>;
  let proxy: Awaited<ReturnType<typeof recordingProxy>>;
  let direct: RegistryClient;
  const auth = { username: "ci", password: "registry-retag-canary" };
  const digests: Record<string, string> = {};

  const deploy = async (version: string) => {
    const queued = await test.call<{ taskId: string }>("POST", "/api/v1/projects/app/deployments", {
      release: version,
      environment: "dev",
    });
    expect(queued.status, JSON.stringify(queued.body)).toBe(201);
    const task = await test.waitForTask(queued.body.taskId);
    const log = await test.call<{ lines: { text: string }[] }>("GET", `/api/v1/tasks/${queued.body.taskId}/log`);
    return { state: task.state, log: log.body.lines.map((line) => line.text).join("\n") };
  };

  const release = async (version: string, tag: string) => {
    const created = await test.call("POST", "/api/v1/projects/app/releases", { version, images: { web: tag } });
    expect(created.status, JSON.stringify(created.body)).toBe(201);
  };

  beforeAll(async () => {
    registry = await startRegistry({ auth });
    for (const tag of ["1.0.3-beta", "1.0.4-beta"]) {
      digests[tag] = await pushTestImage(registry.url, "demo/app", tag, { content: `version ${tag}`, auth });
    }
    proxy = await recordingProxy(registry.url);
    direct = new RegistryClient({ url: registry.url, ...auth, outbound: parseOutboundAllow("127.0.0.1") });
    test = await startTestServer();
    await test.call("POST", "/api/v1/environments", { name: "dev" });
    await test.call("POST", "/api/v1/lifecycles", { name: "one", phases: [{ environments: ["dev"] }] });
    await test.call("POST", "/api/v1/projects", { name: "app", lifecycle: "one" });
    await test.call("POST", "/api/v1/feeds", { name: "local", url: proxy.url, ...auth });
    const saved = await test.call("PUT", "/api/v1/projects/app/process", {
      images: [{ name: "web", feed: "local", repository: "demo/app" }],
      steps: [
        {
          name: "release tags",
          kind: "registry-retag",
          config: { image: "#{Ferry.Image[web]}", tags: ["#{Ferry.Release.Number}", "latest"] },
        },
      ],
    });
    expect(saved.status, JSON.stringify(saved.body)).toBe(200);
  });
  afterAll(async () => {
    await test?.close();
    await proxy?.close();
    await registry?.stop();
  });

  it("gives the release's image its version and latest by manifest: same digest, no layer moved", async () => {
    await release("1.0.3", "1.0.3-beta");
    proxy.seen.length = 0;
    const { state, log } = await deploy("1.0.3");
    expect(state, log).toBe("succeeded");
    expect(log).toContain("tagged 127.0.0.1");
    expect((await direct.resolveDigest("demo/app", "1.0.3")).digest).toBe(digests["1.0.3-beta"]);
    expect((await direct.resolveDigest("demo/app", "latest")).digest).toBe(digests["1.0.3-beta"]);
    expect(proxy.seen).toContain("PUT /v2/demo/app/manifests/1.0.3");
    expect(proxy.seen).toContain("PUT /v2/demo/app/manifests/latest");
    expect(proxy.seen.filter((line) => line.includes("/blobs/"))).toEqual([]);
    // The feed's password went to the registry, never into the task log.
    expect(log).not.toContain(auth.password);
  });

  it("deploying again changes nothing: the tags already point to the image", async () => {
    proxy.seen.length = 0;
    const { state, log } = await deploy("1.0.3");
    expect(state, log).toBe("succeeded");
    expect(log).toContain(":latest already points to it");
    expect(proxy.seen.filter((line) => line.startsWith("PUT"))).toEqual([]);
  });

  it("refuses to move a tag that points to another image, naming both digests", async () => {
    // Release 1.0.4's own version tag is new; `latest` points to 1.0.3's image.
    await release("1.0.4", "1.0.4-beta");
    const { state, log } = await deploy("1.0.4");
    expect(state).toBe("failed");
    expect(log).toContain(
      `tag latest of demo/app already points to ${digests["1.0.3-beta"]}, not ${digests["1.0.4-beta"]}`,
    );
    expect(log).toContain("force: true");
    expect((await direct.resolveDigest("demo/app", "latest")).digest).toBe(digests["1.0.3-beta"]);
  });

  it("moves it with force: true, and says so in the log", async () => {
    const saved = await test.call("PUT", "/api/v1/projects/app/process", {
      images: [{ name: "web", feed: "local", repository: "demo/app" }],
      steps: [
        {
          name: "release tags",
          kind: "registry-retag",
          config: { image: "#{Ferry.Image[web]}", tags: ["latest"], force: true },
        },
      ],
    });
    expect(saved.status).toBe(200);
    await release("1.0.4-1", "1.0.4-beta");
    const { state, log } = await deploy("1.0.4-1");
    expect(state, log).toBe("succeeded");
    expect(log).toContain(`moved 127.0.0.1`);
    expect((await direct.resolveDigest("demo/app", "latest")).digest).toBe(digests["1.0.4-beta"]);
  });

  it("refuses a step without tags when the process is saved, naming the field", async () => {
    const saved = await test.call<{ errors: { pointer: string }[] }>("PUT", "/api/v1/projects/app/process", {
      steps: [{ name: "bad", kind: "registry-retag", config: { image: "r.example:5000/a/b:1" } }],
    });
    expect(saved.status).toBe(400);
    expect(saved.body.errors.map((error) => error.pointer)).toContain("/steps/0/config/tags");
  });
});
