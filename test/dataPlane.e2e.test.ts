import { execFileSync } from "node:child_process";
import { randomBytes } from "node:crypto";
import { existsSync, mkdtempSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { setTimeout as sleep } from "node:timers/promises";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { DockerRuntime } from "../src/runtimes/docker.js";
import { parseOutboundAllow } from "../src/security/outboundGuard.js";
import { startServer } from "../src/server/start.js";
import { apiRequest, FERRY, isolatedEnv, runFerry, testAdminKey, trackedResources } from "./helpers/cli.js";
import { buildDemoImage, type DemoImage, removeImages } from "./helpers/images.js";
import { type RunningLoad, startLoad } from "./helpers/load.js";
import { startRegistry, type TestRegistry } from "./helpers/registry.js";
import { commandLinesContaining, createAutoProd, PROXY_PORT, served as servedBy } from "./helpers/remoteHosts.js";
import { startTestServer, type TestServer } from "./helpers/server.js";
import { type SshHosts, startSshHosts } from "./helpers/sshHosts.js";

/**
 * A data plane per host (issue 12, parts 4 and 7), on real parts: three namespace hosts, each
 * with its own sshd, its own dockerd (pulling from the test registry over its link) and its
 * own `ferry proxy`, which Ferry starts there through the SSH transport. 16 keep-alive
 * clients per host send requests to each host's proxy the whole time; every failed request
 * fails the test.
 */

/** Where each host's proxy takes traffic (inside its namespace). */

interface Created {
  deployments: { taskId: string }[];
}

async function waitUntil(condition: () => boolean | Promise<boolean>, what: string, timeoutMs: number): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!(await condition())) {
    if (Date.now() > deadline) throw new Error(`timed out after ${timeoutMs} ms waiting until ${what}`);
    await sleep(200);
  }
}

describe("blue/green on remote hosts, each with its own engine and router", { timeout: 600_000 }, () => {
  let registry: TestRegistry;
  let hosts: SshHosts;
  let test: TestServer;
  let v1: DemoImage;
  let v2: DemoImage;
  const stateRoot = mkdtempSync(join(tmpdir(), "ferry-dataplane-"));
  const resources = trackedResources("ferry-dataplane-e2e-");
  const suffix = randomBytes(3).toString("hex");

  const hostAt = (index: number) => {
    const host = hosts.hosts[index];
    if (!host?.engine) throw new Error(`no host ${index} with an engine`);
    return { ...host, engine: host.engine };
  };

  const logText = async (taskId: string) =>
    (await test.call<{ lines: { text: string }[] }>("GET", `/api/v1/tasks/${taskId}/log`)).body.lines
      .map((line) => line.text)
      .join("\n");

  const finished = async (taskId: string) => {
    const task = await test.waitForTask(taskId, 240_000);
    return { taskId, state: task.state, log: await logText(taskId) };
  };

  /** What the proxy of host `index` answers for the route's host name (trimmed body). */
  const served = (index: number, routeHost: string) => servedBy(hostAt(index).address, routeHost);

  /** Runs `action` with 16 keep-alive clients on each of the hosts' proxies; what each load saw. */
  const underLoad = async <T>(indexes: readonly number[], routeHost: string, action: () => Promise<T>) => {
    const loads: RunningLoad[] = indexes.map((index) =>
      startLoad({ address: hostAt(index).address, port: PROXY_PORT, host: routeHost, connections: 16 }),
    );
    try {
      // Traffic is flowing on every host before anything changes.
      while (loads.some((load) => load.completed() < 50)) await sleep(20);
      const result = await action();
      // And keeps flowing after it.
      const after = loads.map((load) => load.completed());
      while (loads.some((load, position) => load.completed() < (after[position] ?? 0) + 50)) await sleep(20);
      return { result, loads: await Promise.all(loads.map((load) => load.stop())) };
    } finally {
      await Promise.all(loads.map((load) => load.stop().catch(() => undefined)));
    }
  };

  /** A project auto-deployed to prod, whose one step is a blue/green container on the targets with `role`. */
  let projects = 0;
  const newProject = async (role: string, blueGreen: Record<string, unknown> = {}) => {
    const project = await test.call<{ slug: string }>("POST", "/api/v1/projects", {
      name: `dp-${role}-${suffix}-${++projects}`,
      lifecycle: "auto",
    });
    expect(project.status, JSON.stringify(project.body)).toBe(201);
    const slug = project.body.slug;
    const routeHost = `${slug}.test`;
    const variable = await test.call<{ id: string }>("POST", `/api/v1/projects/${slug}/variables`, {
      name: "Image",
      value: v1.reference,
    });
    const steps = [
      {
        name: "web",
        kind: "container",
        roles: [role],
        config: {
          strategy: "blueGreen",
          image: "#{Image}",
          route: { host: routeHost, port: 8080 },
          blueGreen: {
            healthCheck: { path: "/health", intervalMs: 200, timeoutMs: 2000, deadlineSeconds: 30 },
            drainSeconds: 5,
            keepPreviousRunning: true,
            ...blueGreen,
          },
          settleSeconds: 0.5,
          stopTimeoutSeconds: 5,
        },
      },
    ];
    const process = await test.call("PUT", `/api/v1/projects/${slug}/process`, { steps });
    expect(process.status, JSON.stringify(process.body)).toBe(200);
    const release = async (version: string, image: DemoImage) => {
      await test.call("PATCH", `/api/v1/projects/${slug}/variables/${variable.body.id}`, { value: image.reference });
      const created = await test.call<Created>("POST", `/api/v1/projects/${slug}/releases`, { version });
      expect(created.status, JSON.stringify(created.body)).toBe(201);
      return finished(created.body.deployments[0]?.taskId ?? "");
    };
    return { slug, routeHost, release };
  };

  /** The names of the project's containers on a host's own engine. */
  const containersOn = (index: number, slug: string) =>
    hostAt(index)
      .engine.docker(["ps", "-a", "--filter", `label=ferry.project=${slug}`, "--format", "{{.Names}} {{.State}}"])
      .split("\n")
      .filter(Boolean);

  beforeAll(async () => {
    registry = await startRegistry();
    [v1, v2] = await Promise.all([
      buildDemoImage({ registryUrl: registry.url, repository: `dataplane/app-${suffix}`, version: "1.0.1" }),
      buildDemoImage({ registryUrl: registry.url, repository: `dataplane/app-${suffix}`, version: "1.0.2" }),
    ]);
    [hosts, test] = await Promise.all([
      startSshHosts(3, { engines: 3, registries: [registry.url] }),
      startTestServer(),
    ]);
    await createAutoProd(test);
    for (const [index, host] of hosts.hosts.entries()) {
      const created = await test.call("POST", "/api/v1/targets", {
        name: `host-${index}`,
        environments: ["prod"],
        roles: index < 2 ? ["trio", "pair"] : ["trio"],
        transport: "ssh",
        ssh: { host: host.address, user: "root", privateKey: hosts.privateKey, hostKey: host.fingerprint },
        // The namespaces share this machine's files: each host's proxy gets a state directory of its own.
        router: {
          driver: "builtin",
          listen: `0.0.0.0:${PROXY_PORT}`,
          stateDir: join(stateRoot, `host-${index}`),
          command: FERRY,
        },
      });
      expect(created.status, JSON.stringify(created.body)).toBe(201);
    }
  }, 300_000);

  afterAll(async () => {
    for (const index of [0, 1, 2]) {
      try {
        execFileSync("chattr", ["-i", join(stateRoot, `host-${index}`)], { stdio: "ignore" });
      } catch {
        // Never made immutable, or gone.
      }
    }
    // The last test stops the server itself: a second close has nothing left to do.
    await test?.close().catch(() => undefined);
    await hosts?.close();
    await registry?.stop();
    await removeImages([v1?.reference, v2?.reference].filter((reference) => reference !== undefined));
    rmSync(stateRoot, { recursive: true, force: true });
    await resources.cleanUp();
  });

  it("switches two hosts under load, each with its own engine and router: 0 failed requests; a rollback re-switches both", async () => {
    const project = await newProject("pair");
    const first = await project.release("1.0.1", v1);
    expect(first.state, first.log).toBe("succeeded");
    // Each host's own router, started there through the SSH transport.
    expect(first.log).toMatch(/web on host-0/);
    expect(first.log).toMatch(/web on host-1/);
    expect(await served(0, project.routeHost)).toBe("version 1.0.1");
    expect(await served(1, project.routeHost)).toBe("version 1.0.1");
    // The colours run on each host's own engine, none on this machine's.
    for (const index of [0, 1]) {
      expect(containersOn(index, project.slug)).toEqual([
        expect.stringMatching(new RegExp(`-host-${index}-\\w+ running$`)),
      ]);
    }
    expect(await new DockerRuntime().listByLabel("ferry.project", project.slug)).toEqual([]);
    expect(containersOn(2, project.slug)).toEqual([]);
    // The hosts' admin tokens, which the server read from `ferry proxy --detach`, show up
    // neither in the task's log nor in the target as the API shows it.
    for (const index of [0, 1]) {
      const token = readFileSync(join(stateRoot, `host-${index}`, "admin-token"), "utf8").trim();
      expect(token.length).toBeGreaterThan(20);
      expect(first.log).not.toContain(token);
      expect(JSON.stringify((await test.call("GET", `/api/v1/targets/host-${index}`)).body)).not.toContain(token);
      expect(commandLinesContaining(token)).toEqual([]);
    }

    const { result: second, loads } = await underLoad([0, 1], project.routeHost, () => project.release("1.0.2", v2));
    expect(second.state, second.log).toBe("succeeded");
    for (const [position, seen] of loads.entries()) {
      expect(seen.failures, `host-${position}`).toEqual([]);
      // The load saw both releases: the switch happened under it.
      expect(seen.bodies.get("version 1.0.1"), `host-${position}`).toBeGreaterThan(0);
      expect(seen.bodies.get("version 1.0.2"), `host-${position}`).toBeGreaterThan(0);
    }
    expect(await served(0, project.routeHost)).toBe("version 1.0.2");
    expect(await served(1, project.routeHost)).toBe("version 1.0.2");
    expect(second.log).toMatch(/traffic during this deployment: [1-9]\d* request\(s\) served, 0 failed/);

    const { result: back, loads: duringRollback } = await underLoad([0, 1], project.routeHost, async () => {
      const rolled = await test.call<{ taskId: string }>("POST", `/api/v1/projects/${project.slug}/rollbacks`, {
        environment: "prod",
      });
      expect(rolled.status, JSON.stringify(rolled.body)).toBe(201);
      return finished(rolled.body.taskId);
    });
    expect(back.state, back.log).toBe("succeeded");
    for (const [position, seen] of duringRollback.entries()) expect(seen.failures, `host-${position}`).toEqual([]);
    expect(await served(0, project.routeHost)).toBe("version 1.0.1");
    expect(await served(1, project.routeHost)).toBe("version 1.0.1");
    // A re-switch on each host to its retained colour: no pull, no new container.
    expect(back.log.match(/of release 1\.0\.1 is retained and running: no pull, no start/g)).toHaveLength(2);
    expect(back.log).not.toContain("pulling");
  });

  it("all at once across three hosts, one router failing: every host ends on the old release, 0 failed requests", async () => {
    const project = await newProject("trio", { switch: "allAtOnce" });
    const first = await project.release("1.0.1", v1);
    expect(first.state, first.log).toBe("succeeded");
    expect(first.log).toContain("runs on host-0, host-1, host-2 all at once");
    for (const index of [0, 1, 2]) expect(await served(index, project.routeHost)).toBe("version 1.0.1");

    // host-2's proxy keeps serving, but cannot save a change: its routes file's directory is
    // immutable (chattr +i holds even for root), and the proxy persists a switch before it
    // takes effect, so it refuses the switch.
    const failing = join(stateRoot, "host-2");
    execFileSync("chattr", ["+i", failing]);
    try {
      const { result: second, loads } = await underLoad([0, 1, 2], project.routeHost, () =>
        project.release("1.0.2", v2),
      );
      expect(second.state, second.log).toBe("failed");
      for (const [index, seen] of loads.entries()) expect(seen.failures, `host-${index}`).toEqual([]);
      // Every host ends on the old release.
      for (const index of [0, 1, 2]) expect(await served(index, project.routeHost)).toBe("version 1.0.1");
      expect(second.log).toMatch(/host-2: the builtin router could not switch route/);
      for (const index of [0, 1]) {
        expect(second.log).toMatch(new RegExp(`\\[host-${index}\\] switched route \\S+ to colour`));
        expect(second.log).toMatch(
          new RegExp(
            `\\[host-${index}\\] switched route \\S+ back to colour \\S+1\\.0\\.1\\S* in \\d+ ms: the switch is all at once`,
          ),
        );
      }
      // The new colours went away again; the old ones run on.
      for (const index of [0, 1, 2]) {
        const names = containersOn(index, project.slug);
        expect(
          names.some((name) => name.includes("-1.0.2-")),
          `host-${index}: ${names.join(", ")}`,
        ).toBe(false);
        expect(names.some((name) => name.includes("-1.0.1-") && name.endsWith(" running"))).toBe(true);
      }
    } finally {
      execFileSync("chattr", ["-i", failing]);
    }
  });

  it("gives two targets with the same role on one host a container each", async () => {
    const host = hostAt(1);
    for (const name of ["twin-a", "twin-b"]) {
      const created = await test.call("POST", "/api/v1/targets", {
        name,
        environments: ["prod"],
        roles: ["twin"],
        transport: "ssh",
        ssh: { host: host.address, user: "root", privateKey: hosts.privateKey, hostKey: host.fingerprint },
      });
      expect(created.status, JSON.stringify(created.body)).toBe(201);
    }
    const project = await test.call<{ slug: string }>("POST", "/api/v1/projects", {
      name: `dp-twin-${suffix}`,
      lifecycle: "auto",
    });
    const slug = project.body.slug;
    const steps = [
      { name: "web", kind: "container", roles: ["twin"], config: { image: v1.reference, settleSeconds: 0.5 } },
    ];
    expect((await test.call("PUT", `/api/v1/projects/${slug}/process`, { steps })).status).toBe(200);
    for (const version of ["1.0.1", "1.0.2"]) {
      const created = await test.call<Created>("POST", `/api/v1/projects/${slug}/releases`, { version });
      const done = await finished(created.body.deployments[0]?.taskId ?? "");
      expect(done.state, done.log).toBe("succeeded");
    }
    // One container per target, each replaced by its own target's next deployment.
    expect(containersOn(1, slug).sort()).toEqual([
      `ferry-${slug}-prod-twin-a running`,
      `ferry-${slug}-prod-twin-b running`,
    ]);
    for (const name of ["twin-a", "twin-b"]) {
      expect(
        host.engine
          .docker(["inspect", "--format", '{{index .Config.Labels "ferry.release"}}', `ferry-${slug}-prod-${name}`])
          .trim(),
      ).toBe("1.0.2");
    }
    for (const name of ["twin-a", "twin-b"]) host.engine.docker(["rm", "-f", `ferry-${slug}-prod-${name}`]);
    for (const name of ["twin-a", "twin-b"])
      expect((await test.call("DELETE", `/api/v1/targets/${name}`)).status).toBe(204);
  });

  it("sets, shows and removes a target's router from the CLI, refusing what it cannot run", async () => {
    const home = await resources.makeTemporaryDirectory();
    const cli = (args: string[]) =>
      runFerry(args, isolatedEnv(home, { FERRY_URL: test.server.url, FERRY_API_KEY: test.apiKey }), {
        timeoutMs: 60_000,
      });
    const created = await cli([
      "target",
      "create",
      "cli-host",
      "--env",
      "prod",
      "--transport",
      "ssh",
      "--ssh-host",
      "10.0.0.9",
      "--ssh-user",
      "deploy",
      "--ssh-key-file",
      hosts.privateKeyFile,
      "--router",
      "builtin",
      "--router-listen",
      "0.0.0.0:8080",
      "--json",
    ]);
    expect(created.code, created.stderr).toBe(0);
    expect(JSON.parse(created.stdout).router).toEqual({
      driver: "builtin",
      listen: "0.0.0.0:8080",
      adminPort: 7999,
      command: "ferry",
    });
    const shown = await cli(["target", "show", "cli-host"]);
    expect(shown.stdout).toMatch(/builtin on 0\.0\.0\.0:8080 \(admin API on 127\.0\.0\.1:7999\)/);
    // nginx on the host needs its main config, the directory Ferry owns and the pid file: each is named.
    const nginx = await cli(["target", "update", "cli-host", "--router", "nginx"]);
    expect(nginx.code).not.toBe(0);
    for (const field of ["config", "sitesDir", "pidFile"]) expect(nginx.stderr).toContain(`router/${field}`);
    const unknown = await cli(["target", "update", "cli-host", "--router", "traefik"]);
    expect(unknown.code).not.toBe(0);
    expect(unknown.stderr).toMatch(/router\/driver/);
    expect(unknown.stderr).toContain('choose driver "builtin"');
    const onNginx = await cli([
      "target",
      "update",
      "cli-host",
      "--router",
      "nginx",
      "--router-listen",
      "0.0.0.0:8080",
      "--router-config",
      "/etc/nginx/nginx.conf",
      "--router-sites-dir",
      "/etc/nginx/ferry",
      "--router-pid-file",
      "/run/nginx.pid",
      "--json",
    ]);
    expect(onNginx.code, onNginx.stderr).toBe(0);
    expect(JSON.parse(onNginx.stdout).router).toEqual({
      driver: "nginx",
      listen: "0.0.0.0:8080",
      config: "/etc/nginx/nginx.conf",
      sitesDir: "/etc/nginx/ferry",
      pidFile: "/run/nginx.pid",
      binary: "nginx",
      clientKeepalive: false,
      command: "ferry",
    });
    expect((await cli(["target", "show", "cli-host"])).stdout).toMatch(
      /nginx on 0\.0\.0\.0:8080 \(client keep-alive off\)/,
    );
    const without = await cli(["target", "update", "cli-host", "--router-listen", "0.0.0.0:81"]);
    expect(without.code).not.toBe(0);
    expect(without.stderr).toContain("give --router builtin");
    // Another change leaves the router as it is; --no-router removes it.
    const renamed = await cli(["target", "update", "cli-host", "--role", "spare", "--json"]);
    expect(renamed.code, renamed.stderr).toBe(0);
    expect(JSON.parse(renamed.stdout).router).toMatchObject({ listen: "0.0.0.0:8080" });
    const removed = await cli(["target", "update", "cli-host", "--no-router", "--json"]);
    expect(removed.code, removed.stderr).toBe(0);
    expect(JSON.parse(removed.stdout).router).toBe(null);
    expect((await cli(["target", "delete", "cli-host"])).code).toBe(0);
  });

  it("keeps serving on every host with the server stopped; the next server brings a rebooted host's proxy and colour back", async () => {
    const project = await newProject("pair");
    const first = await project.release("1.0.1", v1);
    expect(first.state, first.log).toBe("succeeded");
    await test.server.close();
    for (const index of [0, 1]) expect(await served(index, project.routeHost)).toBe("version 1.0.1");
    const { loads } = await underLoad([0, 1], project.routeHost, () => sleep(1_000));
    for (const seen of loads) expect(seen.failures).toEqual([]);

    // host-0 "reboots" while the server is down: its proxy and the live colour stop.
    const host = hostAt(0);
    const proxyPid = Number(readFileSync(join(stateRoot, "host-0", "proxy.pid"), "utf8").trim());
    process.kill(proxyPid, "SIGKILL");
    const [live] = containersOn(0, project.slug).filter((line) => line.endsWith(" running"));
    const liveName = live?.split(" ")[0] ?? "";
    expect(liveName).toMatch(/-1\.0\.1-host-0-/);
    host.engine.docker(["stop", "--time", "1", liveName]);
    await expect(served(0, project.routeHost)).rejects.toThrow();

    // The next server reconciles every target with a router, not only its own host.
    const again = await startServer({
      port: 0,
      host: "127.0.0.1",
      dataDir: test.dataDir,
      logLevel: "silent",
      traffic: { driver: "builtin", proxy: { stateDir: join(test.dataDir, "proxy"), listen: "127.0.0.1:0" } },
      announce: () => {},
      outbound: parseOutboundAllow("127.0.0.1"),
    });
    try {
      await again.reconciled;
      expect(await served(0, project.routeHost)).toBe("version 1.0.1");
      expect(containersOn(0, project.slug)).toContain(`${liveName} running`);
      expect(await served(1, project.routeHost)).toBe("version 1.0.1");
    } finally {
      await again.close();
    }
  });

  it("removes what an interrupted task left on a host that was unreachable, once the host is back", async () => {
    const host = hostAt(0);
    const apiKey = testAdminKey();
    const dataDir = await resources.makeTemporaryDirectory();
    const env = isolatedEnv(dataDir, { FERRY_ADMIN_API_KEY: apiKey, FERRY_TASK_LEASE_SECONDS: "2" });
    let server = await resources.startFerryServer({ dataDir, env });
    const port = server.port;
    const call = async <T = Record<string, unknown>>(method: string, path: string, body?: unknown) => {
      const response = await apiRequest(`http://127.0.0.1:${port}${path}`, apiKey, method, body);
      return { status: response.status, body: (await response.json()) as T };
    };
    const log = async (taskId: string) =>
      (await call<{ lines: { text: string }[] }>("GET", `/api/v1/tasks/${taskId}/log`)).body.lines
        .map((line) => line.text)
        .join("\n");
    expect((await call("POST", "/api/v1/environments", { name: "dev" })).status).toBe(201);
    expect(
      (await call("POST", "/api/v1/lifecycles", { name: "one", phases: [{ environments: ["dev"] }] })).status,
    ).toBe(201);
    expect((await call("POST", "/api/v1/projects", { name: "crash", lifecycle: "one" })).status).toBe(201);
    const target = await call("POST", "/api/v1/targets", {
      name: "host-0",
      environments: ["dev"],
      roles: ["crash"],
      transport: "ssh",
      ssh: { host: host.address, user: "root", privateKey: hosts.privateKey, hostKey: host.fingerprint },
    });
    expect(target.status, JSON.stringify(target.body)).toBe(201);
    // A container (the new version) and then a slow script, whose work files stay in the SSH
    // user's ~/.cache/ferry/work/<task>: both are the task's leftovers on the host. (Its
    // processes are not checked here: the namespaces share this machine's process table, so
    // the clean-up of the server's own host would find them too; test/sshTargets.e2e.test.ts
    // covers a host's processes.)
    const steps = [
      { name: "web", kind: "container", roles: ["crash"], config: { image: v1.reference, settleSeconds: 0.5 } },
      {
        name: "slow",
        kind: "script",
        roles: ["crash"],
        config: { script: "echo leftover-is-running\nsleep 600" },
      },
    ];
    expect((await call("PUT", "/api/v1/projects/crash/process", { steps })).status).toBe(200);
    expect((await call("POST", "/api/v1/projects/crash/releases", { version: "1.0.0" })).status).toBe(201);
    const queued = await call<{ taskId: string }>("POST", "/api/v1/projects/crash/deployments", {
      release: "1.0.0",
      environment: "dev",
    });
    const taskId = queued.body.taskId;
    await waitUntil(async () => (await log(taskId)).includes("leftover-is-running"), "the script started", 180_000);
    const leftContainers = () =>
      host.engine
        .docker(["ps", "-aq", "--filter", `label=ferry.task=${taskId}`])
        .split("\n")
        .filter(Boolean);
    const workDirectory = join("/root/.cache/ferry/work", taskId);
    expect(leftContainers()).toHaveLength(1);

    // The host goes away, then the server dies: its restart cannot reach the host to clean up.
    host.setLink(false);
    try {
      server.process.kill("SIGKILL");
      await new Promise((resolve) => server.process.once("exit", resolve));
      server = await resources.startFerryServer({ dataDir, env, port });
      await waitUntil(
        async () => (await log(taskId)).includes("Ferry tries again until the host answers"),
        "the clean-up gave up on the host for now",
        120_000,
      );
      expect((await call<{ state: string }>("GET", `/api/v1/tasks/${taskId}`)).body.state).toBe("interrupted");
      // What the task left is still there: the host could not be reached.
      expect(leftContainers()).toHaveLength(1);
      expect(existsSync(workDirectory)).toBe(true);
    } finally {
      host.setLink(true);
    }

    // Back: the retry removes the container and the task's work files.
    await waitUntil(
      async () => (await log(taskId)).includes("answers again: removed what the task left there"),
      "the clean-up was retried",
      180_000,
    );
    expect(leftContainers()).toEqual([]);
    expect(existsSync(workDirectory)).toBe(false);
    server.process.kill("SIGKILL");
  });
});
