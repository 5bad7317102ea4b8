import { type ChildProcess, spawn } from "node:child_process";
import { randomBytes } from "node:crypto";
import { chmodSync, mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { FERRY } from "./helpers/cli.js";
import { waitUntil } from "./helpers/remoteHosts.js";
import { startTestServer, type TestServer, taskLogText } from "./helpers/server.js";
import { type SshHosts, startSshHosts } from "./helpers/sshHosts.js";

/**
 * http-test steps (the tests a process runs against an app, before a switch or after it) on
 * remote targets, end to end: a real namespace host with its own sshd, and a real `ferry
 * agent` on a second one, each serving a page with busybox httpd on its own loopback only,
 * which the server cannot reach. A test whose request went from the server would fail; it
 * passes only when it went through the target's transport, from the host. Its assertions
 * decide the step there as on the server's own host.
 */

describe("http-test through remote targets' transports (real sshd, real ferry agent)", { timeout: 240_000 }, () => {
  let hosts: SshHosts;
  let test: TestServer;
  let agent: ChildProcess | undefined;
  let agentOutput = "";
  const temporary: string[] = [];
  const token = `ferry-remote-${randomBytes(6).toString("hex")}`;
  const port = 20_000 + Math.floor(Math.random() * 20_000);
  let releaseCount = 0;

  const tempDir = (prefix: string) => {
    const directory = mkdtempSync(join(tmpdir(), prefix));
    temporary.push(directory);
    return directory;
  };
  /** Runs a new release of a project with these steps; the task's end state and log. */
  const run = async (steps: unknown[]) => {
    const project = await test.call<{ slug: string }>("POST", "/api/v1/projects", {
      name: `http-${randomBytes(4).toString("hex")}`,
      lifecycle: "auto",
    });
    expect(project.status).toBe(201);
    const slug = project.body.slug;
    const process = await test.call("PUT", `/api/v1/projects/${slug}/process`, { steps });
    expect(process.status, JSON.stringify(process.body)).toBe(200);
    const created = await test.call<{ deployments: { taskId: string }[] }>(
      "POST",
      `/api/v1/projects/${slug}/releases`,
      {
        version: `1.0.${++releaseCount}`,
      },
    );
    expect(created.status, JSON.stringify(created.body)).toBe(201);
    const taskId = created.body.deployments[0]?.taskId ?? "";
    const task = await test.waitForTask(taskId, 120_000);
    return { state: String(task.state), log: await taskLogText(test.call, taskId) };
  };
  const httpTest = (name: string, role: string, assertions: Record<string, unknown>, path = "/page.html") => ({
    name,
    kind: "http-test",
    roles: [role],
    config: { url: `http://127.0.0.1:${port}${path}`, headers: { "x-probe": "ferry" }, assertions },
  });

  beforeAll(async () => {
    hosts = await startSshHosts(2);
    const gateway = (address: string) => address.replace(/\.2$/, ".1");
    for (const host of hosts.hosts) host.exec("ip", ["route", "add", "default", "via", gateway(host.address)]);
    test = await startTestServer({ host: gateway(hosts.hosts[1]?.address ?? "") });
    expect((await test.call("POST", "/api/v1/environments", { name: "dev" })).status).toBe(201);
    expect(
      (
        await test.call("POST", "/api/v1/lifecycles", {
          name: "auto",
          phases: [{ environments: ["dev"], autoDeploy: true }],
        })
      ).status,
    ).toBe(201);

    // Each host serves the page on its own loopback only: the server's 127.0.0.1:port has nothing.
    const site = tempDir("ferry-http-site-");
    writeFileSync(join(site, "page.html"), `<p>${token}</p>\n`);
    chmodSync(site, 0o755);
    for (const host of hosts.hosts) {
      host.spawn("busybox", ["httpd", "-f", "-p", `127.0.0.1:${port}`, "-h", site]);
      await waitUntil(
        () => {
          try {
            return host
              .exec("busybox", ["wget", "-q", "-O", "-", `http://127.0.0.1:${port}/page.html`])
              .includes(token);
          } catch {
            return false;
          }
        },
        "the host's page answers",
        10_000,
      );
    }
    await expect(fetch(`http://127.0.0.1:${port}/page.html`, { signal: AbortSignal.timeout(2000) })).rejects.toThrow();

    const sshHost = hosts.hosts[0];
    if (!sshHost) throw new Error("no host");
    const ssh = await test.call("POST", "/api/v1/targets", {
      name: "ssh-web",
      environments: ["dev"],
      roles: ["ssh-web"],
      transport: "ssh",
      runtimes: ["process"],
      ssh: { host: sshHost.address, user: "root", privateKey: hosts.privateKey, hostKey: sshHost.fingerprint },
    });
    expect(ssh.status, JSON.stringify(ssh.body)).toBe(201);

    const agentHost = hosts.hosts[1];
    if (!agentHost) throw new Error("no host");
    const enrolment = await test.call<{ token: string }>("POST", "/api/v1/agent-tokens", {});
    expect(enrolment.status).toBe(201);
    const stateDir = tempDir("ferry-http-agent-");
    writeFileSync(join(stateDir, "token"), enrolment.body.token, { mode: 0o600 });
    agent = spawn(
      "ip",
      [
        ...["netns", "exec", agentHost.namespace, process.execPath, FERRY, "agent", "--server", test.server.url],
        ...["--state-dir", stateDir, "--stop-grace", "2", "--token-file", join(stateDir, "token")],
        ...["--name", "agent-web", "--environments", "dev", "--roles", "agent-web"],
      ],
      { stdio: ["ignore", "pipe", "pipe"] },
    );
    agent.stdout?.on("data", (chunk: Buffer) => {
      agentOutput += chunk.toString();
    });
    agent.stderr?.on("data", (chunk: Buffer) => {
      agentOutput += chunk.toString();
    });
    await waitUntil(
      async () =>
        (await test.call<{ agent: { state: string } | null }>("GET", "/api/v1/targets/agent-web")).body.agent?.state ===
        "connected",
      "the agent is connected",
      30_000,
    ).catch((error: Error) => {
      throw new Error(`${error.message}\n${agentOutput}`);
    });
  }, 120_000);

  afterAll(async () => {
    agent?.kill("SIGKILL");
    await test?.close();
    await hosts?.close();
    for (const directory of temporary) rmSync(directory, { recursive: true, force: true });
  });

  it("runs each target's http-test from its host, over SSH and through the agent, with its assertions", async () => {
    const assertions = { status: 200, bodyContains: [token], bodyMatches: "<p>ferry-remote-[0-9a-f]{12}</p>" };
    const { state, log } = await run([
      httpTest("over-ssh", "ssh-web", assertions),
      httpTest("through-agent", "agent-web", assertions),
    ]);
    expect(state, log).toBe("succeeded");
    expect(log).toContain("▶ over-ssh");
    expect(log).toContain("▶ through-agent");
  });

  it("fails the step on the host where an assertion does not hold, naming it", async () => {
    const ssh = await run([httpTest("over-ssh", "ssh-web", { status: 200, bodyContains: ["not on the page"] })]);
    expect(ssh.state, ssh.log).toBe("failed");
    expect(ssh.log).toContain("not on the page");
    const agentRun = await run([httpTest("through-agent", "agent-web", { status: 200 }, "/missing.html")]);
    expect(agentRun.state, agentRun.log).toBe("failed");
    expect(agentRun.log).toMatch(/404/);
  });
});
