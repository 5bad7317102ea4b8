import { execFileSync } from "node:child_process";
import { createHash, randomBytes } from "node:crypto";
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import http from "node:http";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { ProcessRuntime } from "../src/runtimes/process.js";
import { type RunningLoad, startLoad } from "./helpers/load.js";
import { buildProcessApp, type ProcessApp } from "./helpers/processApp.js";
import { type ProxyProcess, startProxyProcess } from "./helpers/proxy.js";
import { createAutoDeployedProject, startTestServer, type TestServer } from "./helpers/server.js";

interface Created {
  deployments: { taskId: string }[];
  packages: { name: string; version: string; sha256: string }[];
}

/**
 * Packages of the built-in feed (ADR 0044) deployed blue/green by the process runtime: two
 * versions of a Node.js app are pushed as .tar.gz archives whose server.js answers with the
 * VERSION file inside the archive (so what is served proves which bytes run); each release
 * pins one; a `package` step unpacks it (sha256 checked on the host) and a `process` step
 * with `package:` runs it from its unpacked copy. A real Ferry server, real `ferry supervise`
 * supervisors, a real `ferry proxy` process, and 16 keep-alive clients through the proxy
 * while releases alternate between the two versions: every failed request fails the test.
 * A release whose pinned version was deleted and pushed again with other bytes fails, and
 * the previous version keeps serving.
 */
describe("package versions deployed blue/green as processes (real server, supervisors and proxy; under load)", () => {
  const projectName = `pkg-${randomBytes(3).toString("hex")}`;
  const host = `${projectName}.test`;
  let proxy: ProxyProcess;
  let test: TestServer;
  let processes: ProcessRuntime;
  let app: ProcessApp;
  let work: string;
  let projectSlug: string;
  const archives = new Map<string, string>();

  const logText = async (taskId: string) =>
    (await test.call<{ lines: { text: string }[] }>("GET", `/api/v1/tasks/${taskId}/log`)).body.lines
      .map((line) => line.text)
      .join("\n");

  const finished = async (taskId: string) => {
    const task = await test.waitForTask(taskId, 120_000);
    return { taskId, state: task.state, log: await logText(taskId) };
  };

  /** An archive of the app whose answers name `version`, read from the VERSION file it carries. */
  function archiveOf(version: string): string {
    const directory = mkdtempSync(join(work, "src-"));
    const server = readFileSync(join(app.directory, "server.js"), "utf8").replace(
      'const version = process.env.APP_VERSION || "?";',
      'const version = require("node:fs").readFileSync("VERSION", "utf8").trim();',
    );
    expect(server).toContain('readFileSync("VERSION"');
    writeFileSync(join(directory, "server.js"), server);
    writeFileSync(join(directory, "VERSION"), `package ${version}\n`);
    const file = join(work, `web-app-${version}.tar.gz`);
    execFileSync("tar", ["-czf", file, "-C", directory, "."]);
    return file;
  }

  async function push(version: string, file: string) {
    const response = await fetch(new URL(`/api/v1/packages/web-app/versions/${version}`, test.server.url), {
      method: "PUT",
      headers: { authorization: `Bearer ${test.apiKey}`, "content-type": "application/octet-stream" },
      body: readFileSync(file),
    });
    expect(response.status, await response.clone().text()).toBe(201);
    return (await response.json()) as { sha256: string };
  }

  const process = {
    packages: [{ name: "web-app" }],
    steps: [
      { name: "unpack", kind: "package", config: { package: "web-app" } },
      {
        name: "look",
        kind: "script",
        config: {
          script: 'echo "unpacked $(cat "$DIR/VERSION") at $DIR"',
          env: { DIR: "#{Ferry.Step[unpack].Output.directory}" },
        },
      },
      {
        name: "web",
        kind: "process",
        config: {
          strategy: "blueGreen",
          command: "node",
          args: ["server.js"],
          package: "web-app",
          limits: { openFiles: 4096 },
          route: { host },
          blueGreen: {
            healthCheck: { path: "/health", intervalMs: 100, timeoutMs: 1000, deadlineSeconds: 6 },
            drainSeconds: 5,
            keepPreviousRunning: true,
            retain: 2,
          },
          settleSeconds: 0.3,
          stopTimeoutSeconds: 5,
        },
      },
    ],
  };

  /** Creates release `version` pinning package version `pinned`; its auto-deployment's outcome. */
  const release = async (version: string, pinned: string) => {
    const created = await test.call<Created>("POST", `/api/v1/projects/${projectSlug}/releases`, {
      version,
      packages: { "web-app": pinned },
    });
    expect(created.status, JSON.stringify(created.body)).toBe(201);
    return { created: created.body, ...(await finished(created.body.deployments[0]?.taskId ?? "")) };
  };

  const served = async () => (await request(proxy.port, host, "/")).body.trim();

  let load: RunningLoad | undefined;

  beforeAll(async () => {
    app = await buildProcessApp();
    work = mkdtempSync(join(tmpdir(), "ferry-package-bg-"));
    proxy = await startProxyProcess();
    test = await startTestServer({ traffic: proxy.traffic });
    processes = new ProcessRuntime({ directory: join(test.server.deployments.workRoot, "processes") });
    ({ projectSlug } = await createAutoDeployedProject(
      test,
      { lifecycle: "pkgbg", project: projectName },
      { name: "Unused", value: "x" },
    ));
    const saved = await test.call("PUT", `/api/v1/projects/${projectSlug}/process`, process);
    expect(saved.status, JSON.stringify(saved.body)).toBe(200);
    for (const version of ["1.0.0", "2.0.0"]) {
      const file = archiveOf(version);
      archives.set(version, file);
      await push(version, file);
    }
  }, 120_000);

  afterAll(async () => {
    await load?.stop();
    if (projectSlug) await processes.removeByLabel("ferry.project", projectSlug);
    const workRoot = test?.server.deployments.workRoot;
    await test?.close();
    if (workRoot) rmSync(workRoot, { recursive: true, force: true });
    await proxy?.stop();
    await app?.remove();
    if (work) rmSync(work, { recursive: true, force: true });
  });

  it("unpacks the pinned version on the target (sha256 checked there) and runs it from its unpacked copy", async () => {
    const first = await release("1", "1.0.0");
    expect(first.state, first.log).toBe("succeeded");
    const sha256 = createHash("sha256")
      .update(readFileSync(archives.get("1.0.0") ?? ""))
      .digest("hex");
    expect(first.created.packages).toEqual([expect.objectContaining({ name: "web-app", version: "1.0.0", sha256 })]);
    expect(first.log).toContain(`unpacking package web-app 1.0.0 (tar.gz,`);
    expect(first.log).toContain(`sha256 ${sha256}`);
    expect(first.log).toMatch(/unpacked package 1\.0\.0 at \/\S+\/package-web-app-1-\w+\/files/);
    expect(first.log).toMatch(
      /starting colour \S+: node server\.js \(in a copy of \/\S+\/package-web-app-1-\w+\/files\)/,
    );
    expect(await served()).toBe("version package 1.0.0");
  });

  it("switches between two package versions under 16-connection keep-alive load with 0 failed requests", async () => {
    load = startLoad({ port: proxy.port, host, connections: 16 });
    const outcomes = [];
    try {
      for (const [index, pinned] of ["2.0.0", "1.0.0", "2.0.0", "1.0.0"].entries()) {
        outcomes.push(await release(String(index + 2), pinned));
      }
    } finally {
      const seen = await load.stop();
      load = undefined;
      for (const outcome of outcomes) expect(outcome.state, outcome.log).toBe("succeeded");
      expect(seen.failures).toEqual([]);
      expect(seen.requests).toBeGreaterThan(500);
      expect(seen.bodies.get("version package 1.0.0")).toBeGreaterThan(0);
      expect(seen.bodies.get("version package 2.0.0")).toBeGreaterThan(0);
    }
    expect(await served()).toBe("version package 1.0.0");
  });

  it("fails a release whose pinned version was replaced in the feed, and the previous version keeps serving", async () => {
    const pinnedTwo = await test.call<Created>("POST", `/api/v1/projects/${projectSlug}/releases`, {
      version: "stale",
      packages: { "web-app": "2.0.0" },
    });
    expect(pinnedTwo.status, JSON.stringify(pinnedTwo.body)).toBe(201);
    // Its auto-deployment serves 2.0.0; then the deployed release is release 5 no more…
    expect((await finished(pinnedTwo.body.deployments[0]?.taskId ?? "")).state).toBe("succeeded");
    const back = await release("6", "1.0.0");
    expect(back.state, back.log).toBe("succeeded");
    // …so 2.0.0 may be deleted, and is pushed again with other bytes.
    const deleted = await test.call("DELETE", "/api/v1/packages/web-app/versions/2.0.0");
    expect(deleted.status, JSON.stringify(deleted.body)).toBe(204);
    await push("2.0.0", archiveOf("2.0.0-rebuilt"));
    const redeployed = await test.call<{ taskId: string }>("POST", `/api/v1/projects/${projectSlug}/deployments`, {
      release: "stale",
      environment: "prod",
    });
    expect(redeployed.status, JSON.stringify(redeployed.body)).toBe(201);
    const failed = await finished(redeployed.body.taskId);
    expect(failed.state, failed.log).toBe("failed");
    expect(failed.log).toContain("package web-app 2.0.0, which release stale pins, is no longer in the feed");
    expect(await served()).toBe("version package 1.0.0");
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
