import { randomBytes } from "node:crypto";
import { chmodSync, mkdtempSync, readdirSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { setTimeout as sleep } from "node:timers/promises";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import type { TargetHealth } from "../src/domain/targets.js";
import { ProcessRuntime } from "../src/runtimes/process.js";
import { FERRY, isolatedEnv, runFerry } from "./helpers/cli.js";
import { buildProcessApp } from "./helpers/processApp.js";
import { PROXY_PORT, ROOT_INSTANCES, remoteProcessStep, stopDetachedProxy } from "./helpers/remoteHosts.js";
import { startTestServer, type TestServer } from "./helpers/server.js";
import { type SshHosts, startSshHosts, TEST_SSH_KEEPALIVE } from "./helpers/sshHosts.js";

/**
 * Target health and the environment's policy for unavailable targets, against real hosts:
 * two network namespaces with Debian's sshd (test/helpers/sshHosts.ts) and a target on the
 * server's own host. The server checks every second with a 10 s timeout. What a user notices:
 * `ferry target list`, the API and /metrics say each target is up, with its Docker version and
 * free disk; a host whose link goes down (`ip link set … down`) is shown down within the
 * timeout; a deployment to an environment whose policy is fail then fails before anything
 * runs anywhere, and one whose policy is skip deploys to the others and says it left it out.
 */

interface TargetView {
  name: string;
  health: TargetHealth;
}

describe("target health and unavailable targets", { timeout: 240_000 }, () => {
  let hosts: SshHosts;
  let test: TestServer;
  const directories: string[] = [];
  let releaseCount = 0;

  const targetView = async (name: string) => (await test.call<TargetView>("GET", `/api/v1/targets/${name}`)).body;
  const waitForHealth = async (name: string, state: TargetHealth["state"], timeoutMs = 30_000) => {
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      const target = await targetView(name);
      if (target.health.state === state) return target.health;
      if (Date.now() > deadline) {
        throw new Error(`target ${name} is still ${target.health.state} (${target.health.error ?? ""}), not ${state}`);
      }
      await sleep(200);
    }
  };
  const metrics = async () => {
    const response = await fetch(new URL("/metrics", test.server.url), {
      headers: { authorization: `Bearer ${test.apiKey}` },
    });
    return response.text();
  };
  const cli = (args: string[]) => {
    const home = mkdtempSync(join(tmpdir(), "ferry-health-cli-"));
    directories.push(home);
    return runFerry(args, isolatedEnv(home, { FERRY_URL: test.server.url, FERRY_API_KEY: test.apiKey }), {
      timeoutMs: 60_000,
    });
  };
  const logText = async (taskId: string) =>
    (await test.call<{ lines: { text: string }[] }>("GET", `/api/v1/tasks/${taskId}/log`)).body.lines
      .map((line) => line.text)
      .join("\n");
  /** Deploys a new release of the project (its lifecycle deploys it at once) and waits for the end. */
  const release = async (project: string) => {
    const created = await test.call<{ deployments: { taskId: string }[] }>(
      "POST",
      `/api/v1/projects/${project}/releases`,
      { version: `1.0.${++releaseCount}` },
    );
    expect(created.status, JSON.stringify(created.body)).toBe(201);
    const taskId = created.body.deployments[0]?.taskId ?? "";
    return { task: await test.waitForTask(taskId, 120_000), log: await logText(taskId) };
  };

  beforeAll(async () => {
    [hosts, test] = await Promise.all([
      startSshHosts(2),
      // A timeout long enough for a loaded machine: a session cut short while root's shell
      // starts could leave that shell's start-up files (pyenv's rehash lock) half done.
      // Short keep-alives: the connection to a cut host is given up on within seconds
      // (FERRY_SSH_KEEPALIVE_*), which is what ends a step running there.
      startTestServer({ targetHealth: { intervalMs: 1000, timeoutMs: 10_000 }, sshKeepalive: TEST_SSH_KEEPALIVE }),
    ]);
    // Two environments with the same hosts: one fails on an unavailable target, one skips it.
    for (const [name, policy] of [
      ["strict", "fail"],
      ["lenient", "skip"],
    ] as const) {
      const environment = await test.call<{ unavailableTargets: string }>("POST", "/api/v1/environments", {
        name,
        ...(policy === "skip" && { unavailableTargets: policy }),
      });
      expect(environment.status, JSON.stringify(environment.body)).toBe(201);
      expect(environment.body.unavailableTargets).toBe(policy);
      const lifecycle = await test.call("POST", "/api/v1/lifecycles", {
        name,
        phases: [{ environments: [name], autoDeploy: true }],
      });
      expect(lifecycle.status).toBe(201);
      expect((await test.call("POST", "/api/v1/projects", { name: `${name}-app`, lifecycle: name })).status).toBe(201);
    }
    for (const [index, host] of hosts.hosts.entries()) {
      const created = await test.call("POST", "/api/v1/targets", {
        name: `host-${index}`,
        environments: ["strict", "lenient"],
        roles: ["web"],
        transport: "ssh",
        // host-0 has Docker (the engine's socket is this machine's: the namespaces share the file system).
        runtimes: index === 0 ? ["docker"] : ["process"],
        ssh: { host: host.address, user: "root", privateKey: hosts.privateKey, hostKey: host.fingerprint },
      });
      expect(created.status, JSON.stringify(created.body)).toBe(201);
    }
    const local = await test.call("POST", "/api/v1/targets", {
      name: "local-1",
      environments: ["strict"],
      roles: ["local"],
      runtimes: ["docker", "process"],
    });
    expect(local.status, JSON.stringify(local.body)).toBe(201);
  }, 120_000);

  afterAll(async () => {
    await test?.close();
    await hosts?.close();
    for (const directory of directories) rmSync(directory, { recursive: true, force: true });
  });

  it("checks every target: reachable, its Docker version, free disk, shown in the API, the CLI and /metrics", async () => {
    const [sshDocker, sshProcess, local] = await Promise.all([
      waitForHealth("host-0", "up"),
      waitForHealth("host-1", "up"),
      waitForHealth("local-1", "up"),
    ]);
    for (const health of [sshDocker, sshProcess, local]) {
      expect(health.reachable).toBe(true);
      expect(health.diskFreeBytes).toBeGreaterThan(0);
      expect(health.error).toBeNull();
      // No blue/green ran: no router is in use, and none was started to be checked.
      expect(health.router).toBeNull();
      expect(health.lastUpAt).toBe(health.checkedAt);
    }
    expect(sshDocker.dockerVersion).toMatch(/^[0-9]+\.[0-9]+/);
    expect(local.dockerVersion).toMatch(/^[0-9]+\.[0-9]+/);
    // A target without the docker runtime is not asked for one.
    expect(sshProcess.dockerVersion).toBeNull();

    const text = await metrics();
    expect(text).toContain("# TYPE ferry_target_up gauge");
    expect(text).toContain('ferry_target_up{target="host-0"} 1');
    expect(text).toContain('ferry_target_up{target="host-1"} 1');
    expect(text).toContain('ferry_target_up{target="local-1"} 1');
    // No agent transport yet: the gauge is there, at 0.
    expect(text).toContain("ferry_agent_connections 0");

    const list = await cli(["target", "list"]);
    expect(list.code, list.stderr).toBe(0);
    expect(list.stdout).toMatch(/host-1 .* up/);
    const shown = await cli(["target", "show", "host-0"]);
    expect(shown.code, shown.stderr).toBe(0);
    expect(shown.stdout).toMatch(/health:\s+up/);
    expect(shown.stdout).toMatch(/reachable:\s+yes/);
    expect(shown.stdout).toMatch(/docker:\s+[0-9]+\./);
    expect(shown.stdout).toMatch(/disk free:\s+[0-9.]+ [KMGT]i?B/);
  });

  it("shows a host whose link went down as down within the timeout, and the policy decides the deployment", async () => {
    const host = hosts.hosts[1];
    if (!host) throw new Error("no host");
    await waitForHealth("host-1", "up");
    const markers = mkdtempSync(join(tmpdir(), "ferry-health-markers-"));
    chmodSync(markers, 0o777);
    directories.push(markers);
    const steps = [
      {
        name: "deploy",
        kind: "script",
        roles: ["web"],
        // The namespaces share this machine's file system: the marker shows where it ran.
        config: {
          script: 'touch "$MARKERS/$ENVIRONMENT-$TARGET"',
          env: { MARKERS: markers, TARGET: "#{Ferry.Target.Name}", ENVIRONMENT: "#{Ferry.Environment.Name}" },
        },
      },
    ];
    for (const project of ["strict-app", "lenient-app"]) {
      expect((await test.call("PUT", `/api/v1/projects/${project}/process`, { steps })).status).toBe(200);
    }

    host.setLink(false);
    try {
      const cutAt = Date.now();
      const down = await waitForHealth("host-1", "down", 30_000);
      // The first check that starts after the cut gives up at the 10 s timeout (or sooner: no route).
      expect(Date.now() - cutAt).toBeLessThan(30_000);
      expect(down.reachable).toBe(false);
      expect(down.error).toMatch(/target 'host-1'|host-1/);
      expect(down.lastUpAt).not.toBeNull();
      expect((await targetView("host-0")).health.state).toBe("up");
      const text = await metrics();
      expect(text).toContain('ferry_target_up{target="host-1"} 0');
      expect(text).toContain('ferry_target_up{target="host-0"} 1');
      const list = await cli(["target", "list"]);
      expect(list.stdout).toMatch(/host-1 .* down \(last up /);

      // Policy fail: nothing runs anywhere, not even on the host that answers.
      const strict = await release("strict-app");
      expect(strict.task.state).toBe("failed");
      expect(strict.task.error).toContain("cannot reach target 'host-1'");
      expect(strict.log).toContain("strict's policy for unavailable targets is fail");
      expect(strict.log).toContain("ferry env update strict --unavailable-targets skip");
      expect(readdirSync(markers)).toEqual([]);

      // Policy skip: the others are deployed, and the log says which target was left out.
      const lenient = await release("lenient-app");
      expect(lenient.task.state, lenient.log).toBe("succeeded");
      expect(lenient.log).toContain("target 'host-1' cannot be reached");
      expect(lenient.log).toContain("left out of this deployment (lenient's policy for unavailable targets is skip)");
      expect(readdirSync(markers).sort()).toEqual(["lenient-host-0"]);
    } finally {
      host.setLink(true);
    }
    // Back up once the link is: the pooled connection that died with it is replaced.
    const back = await waitForHealth("host-1", "up", 90_000);
    expect(back.reachable).toBe(true);
  });

  it("leaves out a host cut off mid-step when the policy is skip, and deploys the rest", async () => {
    const host = hosts.hosts[1];
    if (!host) throw new Error("no host");
    await waitForHealth("host-1", "up", 90_000);
    const markers = mkdtempSync(join(tmpdir(), "ferry-health-markers-"));
    chmodSync(markers, 0o777);
    directories.push(markers);
    const env = { MARKERS: markers, TARGET: "#{Ferry.Target.Name}" };
    const steps = [
      {
        name: "deploy",
        kind: "script",
        roles: ["web"],
        rolling: { window: "100%" },
        // host-1 takes its time, long enough to be cut off while it works.
        config: {
          script: 'touch "$MARKERS/started-$TARGET"; if [ "$TARGET" = host-1 ]; then sleep 120; fi',
          env,
        },
      },
      { name: "after", kind: "script", roles: ["web"], config: { script: 'touch "$MARKERS/after-$TARGET"', env } },
    ];
    expect((await test.call("PUT", "/api/v1/projects/lenient-app/process", { steps })).status).toBe(200);
    const created = await test.call<{ deployments: { taskId: string }[] }>(
      "POST",
      "/api/v1/projects/lenient-app/releases",
      { version: `1.0.${++releaseCount}` },
    );
    const taskId = created.body.deployments[0]?.taskId ?? "";
    for (let tries = 0; !readdirSync(markers).includes("started-host-1"); tries++) {
      if (tries > 600) throw new Error("the step never started on host-1");
      await sleep(100);
    }
    host.setLink(false);
    try {
      const task = await test.waitForTask(taskId, 150_000);
      const log = await logText(taskId);
      expect(task.state, log).toBe("succeeded");
      expect(log).toContain("step 'deploy' failed on host-1, which cannot be reached now");
      expect(log).toContain(
        "left out of the rest of this deployment (lenient's policy for unavailable targets is skip)",
      );
      // The later step ran where the host answers, and not on the one left out.
      expect(readdirSync(markers).sort()).toEqual(["after-host-0", "started-host-0", "started-host-1"]);
    } finally {
      host.setLink(true);
    }
  });

  it("checks a remote host's router: up once a blue/green deployment uses it, down when it stops answering", async () => {
    const host = hosts.hosts[0];
    if (!host) throw new Error("no host");
    const app = await buildProcessApp();
    const suffix = randomBytes(3).toString("hex");
    const targetName = `routed-${suffix}`;
    const stateDir = mkdtempSync(join(tmpdir(), "ferry-health-proxy-"));
    directories.push(stateDir);
    let slug = "";
    try {
      // Its own environment and role: the other tests' deployments never reach this target.
      expect((await test.call("POST", "/api/v1/environments", { name: "routed" })).status).toBe(201);
      expect(
        (
          await test.call("POST", "/api/v1/lifecycles", {
            name: "routed",
            phases: [{ environments: ["routed"], autoDeploy: true }],
          })
        ).status,
      ).toBe(201);
      const target = await test.call("POST", "/api/v1/targets", {
        name: targetName,
        environments: ["routed"],
        roles: ["edge"],
        transport: "ssh",
        runtimes: ["process"],
        ssh: { host: host.address, user: "root", privateKey: hosts.privateKey, hostKey: host.fingerprint },
        router: { driver: "builtin", listen: `0.0.0.0:${PROXY_PORT}`, stateDir, command: FERRY },
      });
      expect(target.status, JSON.stringify(target.body)).toBe(201);
      // No blue/green ran there yet: no router is in use, and none is started to be checked.
      expect((await waitForHealth(targetName, "up")).router).toBeNull();

      const project = await test.call<{ slug: string }>("POST", "/api/v1/projects", {
        name: `routed-${suffix}`,
        lifecycle: "routed",
      });
      expect(project.status).toBe(201);
      slug = project.body.slug;
      const variable = await test.call("POST", `/api/v1/projects/${slug}/variables`, {
        name: "AppDirectory",
        value: app.directory,
      });
      expect(variable.status).toBe(201);
      const saved = await test.call("PUT", `/api/v1/projects/${slug}/process`, {
        steps: [remoteProcessStep(`${slug}.test`, { role: "edge" })],
      });
      expect(saved.status, JSON.stringify(saved.body)).toBe(200);
      const created = await test.call<{ deployments: { taskId: string }[] }>(
        "POST",
        `/api/v1/projects/${slug}/releases`,
        { version: "1.0.0" },
      );
      expect(created.status, JSON.stringify(created.body)).toBe(201);
      const taskId = created.body.deployments[0]?.taskId ?? "";
      const task = await test.waitForTask(taskId, 120_000);
      expect(task.state, await logText(taskId)).toBe("succeeded");

      // The host's ferry proxy now serves the release: the scheduled check asks it, over SSH.
      const routed = async (router: "up" | "down") => {
        const deadline = Date.now() + 40_000;
        for (;;) {
          const health = (await targetView(targetName)).health;
          if (health.router === router) return health;
          if (Date.now() > deadline) throw new Error(`the router of ${targetName} is ${health.router}, not ${router}`);
          await sleep(200);
        }
      };
      const up = await routed("up");
      expect(up.state).toBe("up");
      // A router that stops answering (its process frozen, as a hung proxy) makes the host down, saying why.
      const pid = Number(readFileSync(join(stateDir, "proxy.pid"), "utf8").trim());
      process.kill(pid, "SIGSTOP");
      try {
        const down = await routed("down");
        expect(down.state).toBe("down");
        expect(down.reachable).toBe(true);
        expect(down.error).toContain("the traffic router did not answer");
        expect(await metrics()).toContain(`ferry_target_up{target="${targetName}"} 0`);
      } finally {
        process.kill(pid, "SIGCONT");
      }
      expect((await routed("up")).state).toBe("up");
    } finally {
      if (slug) {
        await new ProcessRuntime({ directory: join(ROOT_INSTANCES, targetName) })
          .removeByLabel("ferry.project", slug)
          .catch(() => []);
      }
      rmSync(join(ROOT_INSTANCES, targetName), { recursive: true, force: true });
      stopDetachedProxy(stateDir);
      await app.remove();
    }
  });

  it("validates the policy where environments are configured, naming the field", async () => {
    const refused = await test.call<{ errors: { pointer: string; detail: string }[] }>("POST", "/api/v1/environments", {
      name: "odd",
      unavailableTargets: "ignore",
    });
    expect(refused.status).toBe(400);
    expect(refused.body.errors[0]?.pointer).toBe("/unavailableTargets");
    expect(refused.body.errors[0]?.detail).toContain('"skip"');
    const usage = await cli(["env", "update", "strict", "--unavailable-targets", "sometimes"]);
    expect(usage.code).toBe(2);
    expect(usage.stderr).toContain("write fail");
    const changed = await cli(["env", "update", "strict", "--unavailable-targets", "skip", "--json"]);
    expect(changed.code, changed.stderr).toBe(0);
    expect(JSON.parse(changed.stdout).unavailableTargets).toBe("skip");
    const back = await cli(["env", "update", "strict", "--unavailable-targets", "fail"]);
    expect(back.code, back.stderr).toBe(0);
    expect(back.stdout).toMatch(/unavailable targets:\s+fail/);
  });
});
