import { type ChildProcess, execFileSync, spawn } from "node:child_process";
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { setTimeout as sleep } from "node:timers/promises";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { FERRY } from "./helpers/cli.js";
import { startTestServer, type TestServer } from "./helpers/server.js";
import { type SshHosts, startSshHosts } from "./helpers/sshHosts.js";

/**
 * The `package` step on remote targets (ADR 0044): a release pins a tar.gz and a zip
 * package; a deployment unpacks the tar.gz on an SSH target (a network-namespace host with
 * Debian's sshd) and the zip on an agent target (`bin/ferry agent` in another namespace),
 * each through its target's transport with the sha256 checked on the host, and a script on
 * each host reads the unpacked files. SQLite (the store is not what this tests).
 */
describe("package step on SSH and agent targets", { timeout: 240_000 }, () => {
  let hosts: SshHosts;
  let test: TestServer;
  let agent: ChildProcess | undefined;
  let agentOutput = "";
  const temporary: string[] = [];

  async function admin<T = Record<string, unknown>>(method: string, path: string, body?: unknown): Promise<T> {
    const response = await test.call<T>(method, path, body);
    expect(response.status, `${method} ${path}: ${JSON.stringify(response.body)}`).toBeLessThan(300);
    return response.body;
  }

  async function push(name: string, version: string, file: string) {
    const response = await fetch(new URL(`/api/v1/packages/${name}/versions/${version}`, test.server.url), {
      method: "PUT",
      headers: { authorization: `Bearer ${test.apiKey}`, "content-type": "application/octet-stream" },
      body: readFileSync(file),
    });
    expect(response.status, await response.clone().text()).toBe(201);
  }

  beforeAll(async () => {
    hosts = await startSshHosts(2);
    const gateway = (address: string) => address.replace(/\.2$/, ".1");
    for (const host of hosts.hosts) host.exec("ip", ["route", "add", "default", "via", gateway(host.address)]);
    test = await startTestServer({ host: gateway(hosts.hosts[0]?.address ?? "") });
    await admin("POST", "/api/v1/environments", { name: "dev" });
    await admin("POST", "/api/v1/lifecycles", { name: "standard", phases: [{ environments: ["dev"] }] });
    await admin("POST", "/api/v1/projects", { name: "shop", lifecycle: "standard" });
    const sshHost = hosts.hosts[0];
    await admin("POST", "/api/v1/targets", {
      name: "web-ssh",
      environments: ["dev"],
      roles: ["ssh"],
      transport: "ssh",
      ssh: { host: sshHost?.address, user: "root", privateKey: hosts.privateKey },
    });
    await admin("POST", "/api/v1/targets/web-ssh/trust", { fingerprint: sshHost?.fingerprint });
    const { token } = await admin<{ token: string }>("POST", "/api/v1/agent-tokens", {});
    const stateDir = mkdtempSync(join(tmpdir(), "ferry-package-agent-"));
    temporary.push(stateDir);
    writeFileSync(join(stateDir, "token"), token, { mode: 0o600 });
    agent = spawn(
      "ip",
      [
        "netns",
        "exec",
        hosts.hosts[1]?.namespace ?? "",
        process.execPath,
        FERRY,
        "agent",
        "--server",
        test.server.url,
        "--state-dir",
        stateDir,
        "--token-file",
        join(stateDir, "token"),
        "--name",
        "web-agent",
        "--environments",
        "dev",
        "--roles",
        "agent",
      ],
      { stdio: ["ignore", "pipe", "pipe"] },
    );
    agent.stdout?.on("data", (chunk: Buffer) => {
      agentOutput += chunk.toString();
    });
    agent.stderr?.on("data", (chunk: Buffer) => {
      agentOutput += chunk.toString();
    });
    const deadline = Date.now() + 30_000;
    for (;;) {
      const target = await test.call<{ agent?: { state: string } | null }>("GET", "/api/v1/targets/web-agent");
      if (target.status === 200 && target.body.agent?.state === "connected") break;
      if (Date.now() > deadline) throw new Error(`the agent did not connect: ${agentOutput}`);
      await sleep(200);
    }

    const source = mkdtempSync(join(tmpdir(), "ferry-package-src-"));
    temporary.push(source);
    writeFileSync(join(source, "VERSION"), "web 3.1.4\n");
    execFileSync("tar", ["-czf", join(source, "web.tar.gz"), "-C", source, "VERSION"]);
    await push("web-app", "3.1.4", join(source, "web.tar.gz"));
    writeFileSync(join(source, "VERSION"), "docs 7\n");
    execFileSync("zip", ["-q", join(source, "docs.zip"), "VERSION"], { cwd: source });
    await push("docs", "7", join(source, "docs.zip"));
  }, 180_000);

  afterAll(async () => {
    agent?.kill("SIGKILL");
    await test?.close();
    await hosts?.close();
    for (const directory of temporary) rmSync(directory, { recursive: true, force: true });
  });

  it("unpacks a pinned tar.gz over SSH and a pinned zip through an agent, sha256 checked on each host", async () => {
    const look = (name: string, role: string, step: string) => ({
      name,
      kind: "script",
      roles: [role],
      config: {
        script: 'echo "on $(hostname -I | cut -d" " -f1): $(cat "$DIR/VERSION")"',
        env: { DIR: `#{Ferry.Step[${step}].Output.directory}` },
      },
    });
    await admin("PUT", "/api/v1/projects/shop/process", {
      packages: [{ name: "web-app" }, { name: "docs" }],
      steps: [
        { name: "unpack-web", kind: "package", roles: ["ssh"], config: { package: "web-app" } },
        look("look-web", "ssh", "unpack-web"),
        { name: "unpack-docs", kind: "package", roles: ["agent"], config: { package: "docs" } },
        look("look-docs", "agent", "unpack-docs"),
      ],
    });
    await admin("POST", "/api/v1/projects/shop/releases", { version: "1" });
    const deployment = await admin<{ taskId: string }>("POST", "/api/v1/projects/shop/deployments", {
      release: "1",
      environment: "dev",
    });
    const task = await test.waitForTask(deployment.taskId, 120_000);
    const log = (await admin<{ lines: { text: string }[] }>("GET", `/api/v1/tasks/${deployment.taskId}/log`)).lines
      .map((line) => line.text)
      .join("\n");
    expect(task.state, log).toBe("succeeded");
    expect(log).toContain("unpacking package web-app 3.1.4 (tar.gz,");
    expect(log).toContain("unpacking package docs 7 (zip,");
    expect(log).toContain(`on ${hosts.hosts[0]?.address}: web 3.1.4`);
    expect(log).toContain(`on ${hosts.hosts[1]?.address}: docs 7`);
    expect(log.match(/sha256 checked on the target/g)?.length).toBe(2);
  });
});
