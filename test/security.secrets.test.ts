import { execFileSync } from "node:child_process";
import { randomBytes } from "node:crypto";
import { readdirSync, readFileSync } from "node:fs";
import { readdir, readFile } from "node:fs/promises";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { DockerRuntime } from "../src/runtimes/docker.js";
import { apiRequest, type FerryServer, testAdminKey, trackedResources } from "./helpers/cli.js";
import { buildDemoImage, type DemoImage, removeImages } from "./helpers/images.js";
import { pushTestImage, startRegistry, type TestRegistry } from "./helpers/registry.js";

/**
 * Issue 5: a canary secret never appears in the process table while a step that uses it
 * runs, nor in the task log, the server's output or any file of its data directory.
 * test/secrets.test.ts already covers API responses, the server log and the database (SQLite
 * file and WAL, pg_dump); this file adds what only a running deployment shows.
 *
 * The server is the real `bin/ferry server` process, so its own command line is in the scan too.
 *
 * - A sensitive variable reaches a script as an environment variable: no /proc/PID/cmdline
 *   holds it while the script runs (its own /proc/PID/environ does, readable by its user and root).
 * - A sensitive variable in a container's env goes to the engine through its API (no
 *   `docker run -e` command line): no cmdline of dockerd, containerd, the shim, runc or the
 *   container's processes holds it, nor does `docker inspect`'s Path/Args/Cmd/Entrypoint. It is
 *   in Config.Env — visible to anyone who can reach the Docker engine (docs/security.md says so).
 * - A feed's password reaches the engine's pull as X-Registry-Auth (no `docker login`, no
 *   ~/.docker/config.json): not in any cmdline during the pull.
 * - SSH keys: there is no ssh transport yet (targets run on the server's own host); when it
 *   comes, its key belongs in this scan.
 */

/** Polls every process's command line (and the server's environment) for the canaries until stopped. */
function startProcessScan(canaries: readonly string[]) {
  const hits = new Set<string>();
  let scans = 0;
  const scan = () => {
    scans++;
    for (const pid of readdirSync("/proc").filter((entry) => /^\d+$/.test(entry))) {
      let cmdline: string;
      try {
        cmdline = readFileSync(`/proc/${pid}/cmdline`, "utf8").replaceAll("\0", " ");
      } catch {
        continue; // the process ended between readdir and read
      }
      for (const canary of canaries) {
        if (cmdline.includes(canary)) hits.add(`pid ${pid}: ${cmdline.slice(0, 300)}`);
      }
    }
  };
  scan();
  const timer = setInterval(scan, 15);
  return {
    /** Every process (pid and command line) that showed a canary, and how many times /proc was scanned. */
    stop(): { hits: string[]; scans: number } {
      clearInterval(timer);
      scan();
      return { hits: [...hits], scans };
    },
  };
}

/** Whether `pid` or one of its descendants runs a process whose command line contains `text`. */
function processRunning(text: string): boolean {
  for (const pid of readdirSync("/proc").filter((entry) => /^\d+$/.test(entry))) {
    try {
      if (readFileSync(`/proc/${pid}/cmdline`, "utf8").includes(text)) return true;
    } catch {
      // gone
    }
  }
  return false;
}

async function filesUnder(directory: string): Promise<string[]> {
  const entries = await readdir(directory, { withFileTypes: true, recursive: true });
  return entries.filter((entry) => entry.isFile()).map((entry) => join(entry.parentPath, entry.name));
}

describe("canary secrets while deployments run (real ferry server, Docker engine and registries)", {
  timeout: 90_000,
}, () => {
  const { startServerInNewHome, cleanUp } = trackedResources("ferry-security-secrets-");
  const docker = new DockerRuntime();
  const adminKey = testAdminKey();
  const run = randomBytes(4).toString("hex");
  const variableCanary = `var-canary-${randomBytes(12).toString("hex")}`;
  const containerCanary = `container-canary-${randomBytes(12).toString("hex")}`;
  const feedCanary = `feed-canary-${randomBytes(12).toString("hex")}`;
  const canaries = [variableCanary, containerCanary, feedCanary];
  let server: FerryServer;
  let home: string;
  let registry: TestRegistry;
  let authRegistry: TestRegistry;
  let image: DemoImage;
  let pulledImage = "";
  const projects: string[] = [];
  const taskLogs: string[] = [];

  const call = async <T = Record<string, unknown>>(method: string, path: string, body?: unknown) => {
    const response = await apiRequest(`${server.url}${path}`, adminKey, method, body);
    const text = await response.text();
    expect(response.status, `${method} ${path}: ${text}`).toBeLessThan(300);
    return (text ? JSON.parse(text) : undefined) as T;
  };
  const waitForTask = async (taskId: string) => {
    const deadline = Date.now() + 60_000;
    for (;;) {
      const task = await call<{ state: string; error?: string }>("GET", `/api/v1/tasks/${taskId}`);
      if (["succeeded", "failed", "cancelled", "interrupted"].includes(task.state)) return task;
      if (Date.now() > deadline) throw new Error(`task ${taskId} still ${task.state}`);
      await new Promise((resolve) => setTimeout(resolve, 50));
    }
  };
  const taskLog = async (taskId: string) => {
    const log = (await call<{ lines: { text: string }[] }>("GET", `/api/v1/tasks/${taskId}/log`)).lines
      .map((line) => line.text)
      .join("\n");
    taskLogs.push(log);
    return log;
  };
  /** A project that auto-deploys to dev, with a sensitive variable Secret = `secret`. */
  const project = async (secret: string) => {
    const created = await call<{ slug: string }>("POST", "/api/v1/projects", {
      name: `sec-${run}-${projects.length}`,
      lifecycle: "auto",
    });
    projects.push(created.slug);
    await call("POST", `/api/v1/projects/${created.slug}/variables`, {
      name: "Secret",
      value: secret,
      sensitive: true,
    });
    return created.slug;
  };
  const release = async (slug: string) => {
    const created = await call<{ deployments: { taskId: string }[] }>("POST", `/api/v1/projects/${slug}/releases`, {
      version: "1.0.0",
    });
    return created.deployments[0]?.taskId ?? "";
  };

  beforeAll(async () => {
    registry = await startRegistry();
    image = await buildDemoImage({ registryUrl: registry.url, repository: `sec/app-${run}`, version: "1.0.0" });
    authRegistry = await startRegistry({ auth: { username: "ci", password: feedCanary } });
    const digest = await pushTestImage(authRegistry.url, "sec/pulled", `t-${run}`, {
      content: `secrets ${run}`,
      auth: { username: "ci", password: feedCanary },
    });
    pulledImage = `${new URL(authRegistry.url).host}/sec/pulled@${digest}`;
    ({ home, server } = await startServerInNewHome(adminKey));
    await call("POST", "/api/v1/environments", { name: "dev" });
    await call("POST", "/api/v1/lifecycles", { name: "auto", phases: [{ environments: ["dev"], autoDeploy: true }] });
  }, 120_000);

  afterAll(async () => {
    for (const slug of projects) await docker.removeByLabel("ferry.project", slug).catch(() => {});
    await cleanUp();
    await registry?.stop();
    await authRegistry?.stop();
    await removeImages([image?.reference, pulledImage].filter((reference) => !!reference));
  });

  it("a script step's sensitive env var is in no process's command line while it runs", async () => {
    const slug = await project(variableCanary);
    const marker = `ferry-secret-step-${run}`;
    await call("PUT", `/api/v1/projects/${slug}/process`, {
      steps: [
        {
          name: "use-secret",
          kind: "script",
          config: {
            // The script really uses the value (a child process gets it through its environment too).
            script: `test -n "$DB_PASSWORD"\necho "length \${#DB_PASSWORD}"\nsh -c 'sleep 2' ${marker}\necho "done $DB_PASSWORD"`,
            env: { DB_PASSWORD: "#{Secret}" },
          },
        },
      ],
    });
    const scan = startProcessScan(canaries);
    const taskId = await release(slug);
    // The scan must overlap the step: wait until its sleep is running.
    const deadline = Date.now() + 15_000;
    while (!processRunning(marker) && Date.now() < deadline) await new Promise((resolve) => setTimeout(resolve, 10));
    const sawStep = processRunning(marker);
    const task = await waitForTask(taskId);
    const { hits, scans } = scan.stop();
    expect(sawStep, "the step's process was seen running").toBe(true);
    expect(scans).toBeGreaterThan(10);
    expect(hits).toEqual([]);
    const log = await taskLog(taskId);
    expect(task.state, log).toBe("succeeded");
    expect(log).toContain(`length ${variableCanary.length}`);
    expect(log).toContain("done ********");
  });

  it("a container's sensitive env value is in no command line of Docker's processes, nor in its command", async () => {
    const slug = await project(containerCanary);
    await call("PUT", `/api/v1/projects/${slug}/process`, {
      steps: [
        {
          name: "web",
          kind: "container",
          config: {
            image: image.reference,
            env: { GREETING: "#{Secret}", DB_PASSWORD: "#{Secret}" },
            settleSeconds: 2,
            stopTimeoutSeconds: 1,
          },
        },
      ],
    });
    const scan = startProcessScan(canaries);
    const taskId = await release(slug);
    const task = await waitForTask(taskId);
    // The container keeps running: scan a little longer, then look at what the engine shows.
    await new Promise((resolve) => setTimeout(resolve, 500));
    const { hits, scans } = scan.stop();
    const log = await taskLog(taskId);
    expect(task.state, log).toBe("succeeded");
    expect(scans).toBeGreaterThan(10);
    expect(hits).toEqual([]);

    const [container] = await docker.listByLabel("ferry.project", slug);
    const [inspected] = JSON.parse(
      execFileSync("docker", ["container", "inspect", container?.id ?? "none"], { encoding: "utf8" }),
    );
    const commandParts = JSON.stringify([
      inspected.Path,
      inspected.Args,
      inspected.Config.Cmd,
      inspected.Config.Entrypoint,
      inspected.Config.Labels,
      inspected.Name,
      inspected.HostConfig,
    ]);
    expect(commandParts).not.toContain(containerCanary);
    // The known exposure: the engine keeps a container's environment in its configuration.
    expect(inspected.Config.Env).toContain(`DB_PASSWORD=${containerCanary}`);
    // `docker top` (ps inside the container) shows command lines only.
    expect(
      execFileSync("docker", ["top", container?.id ?? "none", "-o", "pid,args"], { encoding: "utf8" }),
    ).not.toContain(containerCanary);
    // The app logs its greeting at start: masked in the task log (when a failure shows it), never in clear.
    expect(log).not.toContain(containerCanary);
    await docker.removeByLabel("ferry.project", slug);
  });

  it("a feed's password reaches the engine's pull without any command line or docker config file", async () => {
    const feed = await call<{ slug: string }>("POST", "/api/v1/feeds", {
      name: `auth-${run}`,
      url: authRegistry.url,
      username: "ci",
      password: feedCanary,
    });
    const slug = await project("not-the-canary");
    await call("PUT", `/api/v1/projects/${slug}/process`, {
      images: [{ name: "web", feed: feed.slug, repository: "sec/pulled" }],
      steps: [
        {
          name: "web",
          kind: "container",
          config: { image: "#{Ferry.Image[web]}", settleSeconds: 0, restartPolicy: "no" },
        },
      ],
    });
    await removeImages([pulledImage]); // so that the step pulls it, with the credentials
    const scan = startProcessScan(canaries);
    const taskId = await release(slug);
    const task = await waitForTask(taskId);
    const { hits } = scan.stop();
    const log = await taskLog(taskId);
    expect(log).toContain(`pulling ${pulledImage} as ci`);
    expect(log).toContain("Downloaded newer image");
    // The test image has nothing runnable: the start fails, after the authenticated pull.
    expect(task.state).toBe("failed");
    expect(hits).toEqual([]);
    const homeFiles = await filesUnder(home);
    expect(homeFiles.filter((file) => file.includes(".docker"))).toEqual([]);
    await docker.removeByLabel("ferry.project", slug);
  });

  it("leaves no canary in the task logs, the server's output or any file of its data directory", async () => {
    expect(taskLogs).toHaveLength(3);
    const output = `${server.stdout()}\n${server.stderr()}\n${taskLogs.join("\n")}`;
    const files = await filesUnder(join(home, "data"));
    expect(files.length).toBeGreaterThan(1);
    const contents = await Promise.all(
      files.map(async (file) => `${file}\n${(await readFile(file)).toString("latin1")}`),
    );
    for (const canary of canaries) {
      expect(output).not.toContain(canary);
      for (const content of contents) expect(content.includes(canary), content.split("\n")[0]).toBe(false);
    }
  });
});
