import { type ChildProcess, spawn } from "node:child_process";
import { createHash } from "node:crypto";
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { setTimeout as sleep } from "node:timers/promises";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { callExpecting } from "./helpers/api.js";
import { FERRY, isolatedEnv, runFerry } from "./helpers/cli.js";
import { createPostgresDatabase, dialects } from "./helpers/databases.js";
import { startTestServer, type TestServer } from "./helpers/server.js";
import { type SshHosts, startSshHosts } from "./helpers/sshHosts.js";

/**
 * Artifacts (ADR 0037) on real hosts: a runbook's scripts on the server's own host, on an SSH
 * target (a network-namespace host with Debian's sshd) and on an agent target (`bin/ferry
 * agent` in another namespace) each attach a file they wrote with
 * `##ferry[artifact path='…' name='…']`; the task lists them with the size and SHA-256 the
 * host itself computed, and a download gives back the same bytes. On SQLite (files in the
 * data directory) and on PostgreSQL (large objects).
 */

type Body = Record<string, unknown>;

/**
 * A script that writes `bytes` random bytes to data.bin, prints their sha256, and attaches
 * them: with the service message, or with `ferry artifact add` (which prints it) where the
 * host has Ferry (the namespaces share this machine's files: $FERRY is bin/ferry).
 */
function writeAndAttach(name: string, bytes: number, how: "message" | "cli" = "message"): string {
  return [
    "set -euo pipefail",
    `head -c ${bytes} /dev/urandom > data.bin`,
    `echo "sum=$(sha256sum data.bin | cut -d' ' -f1)"`,
    how === "message"
      ? `echo "##ferry[artifact path='data.bin' name='${name}']"`
      : `node "$FERRY" artifact add data.bin --name ${name}`,
  ].join("\n");
}

describe.each(dialects)("artifacts on local, SSH and agent targets (%s)", { timeout: 240_000 }, (dialect) => {
  let hosts: SshHosts;
  let test: TestServer;
  let dropDatabase: (() => Promise<void>) | undefined;
  let agent: ChildProcess | undefined;
  let agentOutput = "";
  const temporary: string[] = [];

  function admin<T = Body>(method: string, path: string, body?: unknown, status?: number): Promise<T> {
    return callExpecting<T>(test, method, path, body, status);
  }

  async function logOf(taskId: string): Promise<string> {
    const page = await admin<{ lines: { text: string }[] }>("GET", `/api/v1/tasks/${taskId}/log`);
    return page.lines.map((line) => line.text).join("\n");
  }

  /** Creates and publishes a runbook with these steps, runs it in dev, and waits. */
  async function runRunbook(name: string, steps: unknown[]) {
    const created = await admin<{ slug: string }>(
      "POST",
      "/api/v1/projects/shop/runbooks",
      { name, process: { steps } },
      201,
    );
    await admin("POST", `/api/v1/projects/shop/runbooks/${created.slug}/publish`);
    const run = await admin<{ taskId: string }>(
      "POST",
      `/api/v1/projects/shop/runbooks/${created.slug}/runs`,
      { environment: "dev" },
      201,
    );
    const task = await test.waitForTask(run.taskId, 120_000);
    return { taskId: run.taskId, task, log: await logOf(run.taskId) };
  }

  async function download(id: string): Promise<{ status: number; bytes: Buffer; headers: Headers }> {
    const response = await fetch(new URL(`/api/v1/artifacts/${id}/content`, test.server.url), {
      headers: { authorization: `Bearer ${test.apiKey}` },
    });
    return { status: response.status, bytes: Buffer.from(await response.arrayBuffer()), headers: response.headers };
  }

  beforeAll(async () => {
    hosts = await startSshHosts(2);
    const gateway = (address: string) => address.replace(/\.2$/, ".1");
    for (const host of hosts.hosts) host.exec("ip", ["route", "add", "default", "via", gateway(host.address)]);
    let databaseUrl: string | undefined;
    if (dialect === "postgres") {
      const database = await createPostgresDatabase();
      databaseUrl = database.url;
      dropDatabase = database.drop;
    }
    // Listening on host 0's side of its link: the agent's namespace reaches it through its default route.
    test = await startTestServer({ host: gateway(hosts.hosts[0]?.address ?? ""), ...(databaseUrl && { databaseUrl }) });
    await admin("POST", "/api/v1/environments", { name: "dev" });
    await admin("POST", "/api/v1/lifecycles", { name: "standard", phases: [{ environments: ["dev"] }] });
    await admin("POST", "/api/v1/projects", { name: "shop", lifecycle: "standard" });
    await admin("POST", "/api/v1/projects/shop/variables", {
      name: "ApiToken",
      value: "tok-artifact-secret-4711",
      sensitive: true,
    });

    const sshHost = hosts.hosts[0];
    await admin(
      "POST",
      "/api/v1/targets",
      {
        name: "db-ssh",
        environments: ["dev"],
        roles: ["ssh"],
        transport: "ssh",
        ssh: { host: sshHost?.address, user: "root", privateKey: hosts.privateKey },
      },
      201,
    );
    await admin("POST", "/api/v1/targets/db-ssh/trust", { fingerprint: sshHost?.fingerprint });

    const { token } = await admin<{ token: string }>("POST", "/api/v1/agent-tokens", {}, 201);
    const stateDir = mkdtempSync(join(tmpdir(), "ferry-artifacts-agent-"));
    temporary.push(stateDir);
    writeFileSync(join(stateDir, "token"), token, { mode: 0o600 });
    const agentHost = hosts.hosts[1];
    agent = spawn(
      "ip",
      [
        "netns",
        "exec",
        agentHost?.namespace ?? "",
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
        "db-agent",
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
      const target = await test.call<{ agent?: { state: string } | null }>("GET", "/api/v1/targets/db-agent");
      if (target.status === 200 && target.body.agent?.state === "connected") break;
      if (Date.now() > deadline) throw new Error(`the agent did not connect: ${agentOutput}`);
      await sleep(200);
    }
  }, 180_000);

  afterAll(async () => {
    agent?.kill("SIGKILL");
    await test?.close();
    await dropDatabase?.();
    await hosts?.close();
    for (const directory of temporary) rmSync(directory, { recursive: true, force: true });
  });

  it("attaches a file from each target; the task lists its size and SHA-256 and a download gives the same bytes", async () => {
    const { taskId, task, log } = await runRunbook("Collect data", [
      { name: "here", kind: "script", config: { script: writeAndAttach("local.bin", 3_000_000) } },
      { name: "over-ssh", kind: "script", roles: ["ssh"], config: { script: writeAndAttach("ssh.bin", 2_500_000) } },
      {
        name: "by-agent",
        kind: "script",
        roles: ["agent"],
        config: { script: writeAndAttach("agent.bin", 2_000_000) },
      },
    ]);
    expect(task.state, log).toBe("succeeded");
    // The sums each host computed of its own file, in step order.
    const sums = [...log.matchAll(/^sum=([0-9a-f]{64})$/gm)].map((match) => match[1]);
    expect(sums).toHaveLength(3);

    const listed = await admin<Body[]>("GET", `/api/v1/tasks/${taskId}/artifacts`);
    expect(listed.map((artifact) => [artifact.name, artifact.step, artifact.target, artifact.size])).toEqual([
      ["local.bin", "here", null, 3_000_000],
      ["ssh.bin", "over-ssh", "db-ssh", 2_500_000],
      ["agent.bin", "by-agent", "db-agent", 2_000_000],
    ]);
    expect(listed.map((artifact) => artifact.sha256)).toEqual(sums);
    expect(log).toContain(`attached artifact ssh.bin (2500000 bytes, sha256 ${sums[1]})`);

    for (const artifact of listed) {
      const downloaded = await download(String(artifact.id));
      expect(downloaded.status).toBe(200);
      expect(downloaded.bytes.length).toBe(artifact.size);
      expect(createHash("sha256").update(downloaded.bytes).digest("hex")).toBe(artifact.sha256);
      expect(downloaded.headers.get("content-disposition")).toBe(`attachment; filename="${artifact.name}"`);
      expect(downloaded.headers.get("etag")).toBe(`"${artifact.sha256}"`);
    }
    const shown = await admin<Body>("GET", `/api/v1/artifacts/${listed[0]?.id}`);
    expect(shown).toMatchObject({ name: "local.bin", taskId, size: 3_000_000 });

    // The CLI lists them and downloads one, checking its SHA-256 on the way.
    const home = mkdtempSync(join(tmpdir(), "ferry-artifacts-cli-"));
    temporary.push(home);
    const env = isolatedEnv(home, { FERRY_URL: test.server.url, FERRY_API_KEY: test.apiKey });
    const table = await runFerry(["artifact", "list", "--task", taskId], env);
    expect(table.code, table.stderr).toBe(0);
    for (const artifact of listed) expect(table.stdout).toContain(String(artifact.id));
    const file = join(home, "agent.bin");
    const got = await runFerry(["artifact", "get", String(listed[2]?.id), "-o", file], env);
    expect(got.code, got.stderr).toBe(0);
    expect(createHash("sha256").update(readFileSync(file)).digest("hex")).toBe(listed[2]?.sha256);
    const again = await runFerry(["artifact", "get", String(listed[2]?.id), "-o", file], env);
    expect(again.code).toBe(2);
    expect(again.stderr).toContain("--force");
  });

  it("fails the step naming a missing file, and refuses a file the step's account cannot read", async () => {
    const missing = await runRunbook("Missing file", [
      {
        name: "ssh-missing",
        kind: "script",
        roles: ["ssh"],
        config: { script: "echo \"##ferry[artifact path='/nonexistent/dump.sql']\"" },
      },
    ]);
    expect(missing.task.state).toBe("failed");
    expect(String(missing.task.error)).toContain("there is no regular file /nonexistent/dump.sql on target 'db-ssh'");

    // Local work runs as an account of its own, not as the (root) server: the server's own
    // master key is out of its reach, and so out of an artifact's.
    const masterKey = join(test.dataDir, "master.key");
    const refused = await runRunbook("Steal the key", [
      { name: "steal", kind: "script", config: { script: `echo "##ferry[artifact path='${masterKey}' name='key']"` } },
    ]);
    expect(refused.task.state).toBe("failed");
    expect(refused.log).toMatch(
      /could not attach .*master\.key: (there is no regular file|.* cannot be read by the account)/,
    );
    expect(await admin<Body[]>("GET", `/api/v1/tasks/${refused.taskId}/artifacts`)).toEqual([]);
  });

  it("refuses names with path tricks or a sensitive value, never showing the value", async () => {
    const tricks = await runRunbook("Bad names", [
      {
        name: "tricks",
        kind: "script",
        roles: ["agent"],
        config: {
          script: ["echo hello > f.txt", "echo \"##ferry[artifact path='f.txt' name='../../etc/passwd']\""].join("\n"),
        },
      },
    ]);
    expect(tricks.task.state).toBe("failed");
    expect(tricks.log).toContain("an artifact name is one file name");
    const secret = await runRunbook("Secret name", [
      {
        name: "leak",
        kind: "script",
        config: {
          script: ["echo hello > f.txt", "echo \"##ferry[artifact path='f.txt' name='dump-$TOKEN.txt']\""].join("\n"),
          env: { TOKEN: "#{ApiToken}" },
        },
      },
    ]);
    expect(secret.task.state).toBe("failed");
    expect(secret.log).toContain("its name holds a sensitive value");
    expect(secret.log).not.toContain("tok-artifact-secret-4711");
    expect(String(secret.task.error)).not.toContain("tok-artifact-secret-4711");
    expect(await admin<Body[]>("GET", `/api/v1/tasks/${secret.taskId}/artifacts`)).toEqual([]);
  });
});
