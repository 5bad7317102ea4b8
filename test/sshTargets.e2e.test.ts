import { execFileSync } from "node:child_process";
import { randomBytes } from "node:crypto";
import { chmodSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { homedir, tmpdir } from "node:os";
import { join } from "node:path";
import { setTimeout as sleep } from "node:timers/promises";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { DockerRuntime } from "../src/runtimes/docker.js";
import { apiRequest, isolatedEnv, runFerry, testAdminKey, trackedResources } from "./helpers/cli.js";
import { buildDemoImage, removeImages } from "./helpers/images.js";
import { freePort, startRegistry } from "./helpers/registry.js";
import { createAutoProject, processesCarrying, releaseDeployed } from "./helpers/remoteHosts.js";
import { startTestServer, type TestServer } from "./helpers/server.js";
import { type SshHosts, startSshHosts, TEST_SSH_KEEPALIVE } from "./helpers/sshHosts.js";

/**
 * SSH targets against real hosts: three network namespaces, each with its own address and
 * Debian's sshd (test/helpers/sshHosts.ts), reached by a real Ferry server. What a user
 * notices: a script runs on each host with hostile values arriving as data; a host key is
 * refused until someone trusts it, and a changed one is refused naming both fingerprints;
 * the private key shows up nowhere; a health check probes the host's own loopback; a cancel
 * stops the process on the host.
 */

/** Values that would run something if they were ever spliced into a shell line (as in security.injection.test.ts). */
function payloads(markerDir: string): string[] {
  const marker = (name: string) => join(markerDir, name);
  return [
    `$(touch ${marker("dollar")})`,
    `\`touch ${marker("backtick")}\``,
    `; touch ${marker("semicolon")}`,
    `x | touch ${marker("pipe")}`,
    `x && touch ${marker("and")}`,
    `' ; touch ${marker("quote")} ; '`,
    `" ; touch ${marker("dquote")} ; "`,
    `x > ${marker("redirect")}`,
    `\${IFS}touch\${IFS}${marker("ifs")}`,
    `x\ntouch ${marker("newline")}\n`,
    "--",
    `-- touch ${marker("dashdash")}`,
    "--help",
    `\\'; touch ${marker("backslash")}; echo \\'`,
  ];
}

interface LogLine {
  text: string;
}

describe("SSH targets on real hosts", { timeout: 180_000 }, () => {
  let hosts: SshHosts;
  let test: TestServer;
  const temporary: string[] = [];
  const resources = trackedResources("ferry-ssh-e2e-");
  let releaseCount = 0;

  const logText = async (taskId: string) =>
    (await test.call<{ lines: LogLine[] }>("GET", `/api/v1/tasks/${taskId}/log`)).body.lines
      .map((line) => line.text)
      .join("\n");
  const cli = (args: string[], input?: string) => {
    const home = mkdtempSync(join(tmpdir(), "ferry-ssh-cli-"));
    temporary.push(home);
    return runFerry(args, isolatedEnv(home, { FERRY_URL: test.server.url, FERRY_API_KEY: test.apiKey }), {
      ...(input !== undefined && { input }),
      timeoutMs: 60_000,
    });
  };
  /** A project that deploys to dev on each release, with these variables and steps. */
  const newProject = (steps: unknown[], variables: Record<string, string> = {}) =>
    createAutoProject(test, "ssh", steps, variables);
  const release = (slug: string) => releaseDeployed(test, slug, `1.0.${++releaseCount}`);
  const releaseAndWait = async (slug: string) => {
    const taskId = await release(slug);
    const task = await test.waitForTask(taskId, 120_000);
    return { task, log: await logText(taskId) };
  };
  const trust = async (index: number) => {
    const host = hosts.hosts[index];
    const answer = await test.call("POST", `/api/v1/targets/host-${index}/trust`, { fingerprint: host?.fingerprint });
    expect(answer.status, JSON.stringify(answer.body)).toBe(200);
  };

  beforeAll(async () => {
    [hosts, test] = await Promise.all([
      startSshHosts(3),
      startTestServer({
        sshKeepalive: TEST_SSH_KEEPALIVE,
        // A host behind a jump host answered after the default 20 s once, in CI under load.
        targetHealth: { timeoutMs: 60_000 },
      }),
    ]);
    expect((await test.call("POST", "/api/v1/environments", { name: "dev" })).status).toBe(201);
    const lifecycle = await test.call("POST", "/api/v1/lifecycles", {
      name: "auto",
      phases: [{ environments: ["dev"], autoDeploy: true }],
    });
    expect(lifecycle.status).toBe(201);
    for (const [index, host] of hosts.hosts.entries()) {
      const created = await test.call("POST", "/api/v1/targets", {
        name: `host-${index}`,
        environments: ["dev"],
        roles: ["web", `h${index}`],
        transport: "ssh",
        ssh: { host: host.address, user: "root", privateKey: hosts.privateKey },
      });
      expect(created.status, JSON.stringify(created.body)).toBe(201);
    }
  }, 120_000);

  afterAll(async () => {
    await test?.close();
    await hosts?.close();
    await resources.cleanUp();
    for (const directory of temporary) rmSync(directory, { recursive: true, force: true });
  });

  it("refuses an unknown host key until it is trusted, and a changed one naming both fingerprints", async () => {
    const host = hosts.hosts[0];
    if (!host) throw new Error("no host");
    const slug = await newProject([
      { name: "hello", kind: "script", roles: ["h0"], config: { script: "echo hello from $(id -un)" } },
    ]);
    // Unknown key: the deployment fails before anything runs, and says what to do.
    const first = await releaseAndWait(slug);
    expect(first.task.state).toBe("failed");
    expect(first.log).toContain(`presents ssh-ed25519 ${host.fingerprint}`);
    expect(first.log).toContain("ferry target trust host-0");
    expect(first.log).not.toContain("hello from");

    // Without a terminal and without --fingerprint the CLI only shows the key and says how to trust it.
    const shown = await cli(["target", "trust", "host-0"]);
    expect(shown.code).not.toBe(0);
    expect(shown.stdout).toContain(host.fingerprint);
    expect(shown.stderr).toContain(`--fingerprint ${host.fingerprint}`);
    // A fingerprint that is not what the host presents is refused, and nothing is trusted.
    const wrong = await cli(["target", "trust", "host-0", "--fingerprint", `SHA256:${"A".repeat(43)}`]);
    expect(wrong.code).not.toBe(0);
    expect(wrong.stderr).toContain(host.fingerprint);
    expect(
      (await test.call<{ ssh: { hostKey: string | null } }>("GET", "/api/v1/targets/host-0")).body.ssh.hostKey,
    ).toBe(null);
    const trusted = await cli(["target", "trust", "host-0", "--fingerprint", host.fingerprint]);
    expect(trusted.code, trusted.stderr).toBe(0);
    expect(trusted.stdout).toContain("trusted");
    expect((await test.call<{ ssh: { hostKey: string } }>("GET", "/api/v1/targets/host-0")).body.ssh.hostKey).toBe(
      host.fingerprint,
    );

    const second = await releaseAndWait(slug);
    expect(second.task.state, second.log).toBe("succeeded");
    expect(second.log).toContain("hello from root");

    // The host gets a new key (as a reinstall would): refused, naming what Ferry trusts and what it sees.
    const old = host.fingerprint;
    const replaced = await host.replaceHostKey();
    const third = await releaseAndWait(slug);
    expect(third.task.state).toBe("failed");
    expect(third.log).toContain(`Ferry trusts ${old}`);
    expect(third.log).toContain(`presents ssh-ed25519 ${replaced}`);
    expect(third.log).not.toContain("hello from");

    // Trusting the new key through the API lets deployments through again.
    const answer = await test.call<{ changed: boolean; host: { trusted: string } }>(
      "POST",
      "/api/v1/targets/host-0/trust",
      { fingerprint: replaced },
    );
    expect(answer.status, JSON.stringify(answer.body)).toBe(200);
    expect(answer.body).toMatchObject({ changed: true, host: { trusted: replaced } });
    const fourth = await releaseAndWait(slug);
    expect(fourth.task.state, fourth.log).toBe("succeeded");
  });

  it("runs a script on three hosts with hostile values as data, leaving no marker on any host", async () => {
    for (const index of [0, 1, 2]) await trust(index);
    const markerDir = mkdtempSync(join(tmpdir(), "ferry-ssh-marker-"));
    chmodSync(markerDir, 0o777);
    temporary.push(markerDir);
    const values = payloads(markerDir);
    const variables = Object.fromEntries(values.map((value, index) => [`P${index}`, value]));
    const env = Object.fromEntries(values.map((_, index) => [`P${index}`, `#{P${index}}`]));
    const slug = await newProject(
      [
        {
          name: "show",
          kind: "script",
          roles: ["web"],
          config: {
            // Quoted and unquoted expansions: neither evaluates $(…) or `…` inside a value.
            script: [
              'for a in "$@"; do printf "arg[%s]\\n" "$a"; done',
              `for n in ${Object.keys(env).join(" ")}; do printf "env[%s]\\n" "\${!n}"; echo unquoted \${!n}; done`,
              'printf "where[%s]\\n" "$(ip -4 -o addr show | grep -o "10\\.231\\.[0-9]*\\.2")"',
              'printf "who[%s]\\n" "$(id -un)"',
            ].join("\n"),
            env,
            arguments: values.map((_, index) => `#{P${index}}`),
          },
        },
      ],
      variables,
    );
    const { task, log } = await releaseAndWait(slug);
    expect(task.state, log).toBe("succeeded");
    const count = (text: string) => log.split(text).length - 1;
    for (const [index, host] of hosts.hosts.entries()) {
      expect(log, `host-${index}`).toContain(`show on host-${index}`);
      expect(count(`where[${host.address}]`)).toBe(1);
    }
    expect(count("who[root]")).toBe(3);
    // Every single-line value arrived verbatim, as an argument and as an environment variable, on each host.
    for (const value of values.filter((text) => !text.includes("\n"))) {
      expect(count(`arg[${value}]`), value).toBe(3);
      expect(count(`env[${value}]`), value).toBe(3);
    }
    expect(count(`touch ${markerDir}/newline`)).toBeGreaterThanOrEqual(3);
    expect(readdirSync(markerDir), "markers").toEqual([]);
  });

  it("probes an address on the host's own loopback, which the server cannot reach", async () => {
    await trust(1);
    const host = hosts.hosts[1];
    if (!host) throw new Error("no host");
    const site = mkdtempSync(join(tmpdir(), "ferry-ssh-site-"));
    temporary.push(site);
    writeFileSync(join(site, "health"), "ok\n");
    chmodSync(site, 0o755);
    const port = 20_000 + Math.floor(Math.random() * 20_000);
    host.spawn("busybox", ["httpd", "-f", "-p", `127.0.0.1:${port}`, "-h", site]);
    await waitUntil(() => {
      try {
        host.exec("busybox", ["wget", "-q", "-O", "-", `http://127.0.0.1:${port}/health`]);
        return true;
      } catch {
        return false;
      }
    });
    // From the server's own host that address has nothing behind it.
    await expect(fetch(`http://127.0.0.1:${port}/health`, { signal: AbortSignal.timeout(2000) })).rejects.toThrow();
    const slug = await newProject(
      [
        {
          name: "probe",
          kind: "health-check",
          roles: ["h1"],
          config: { url: `http://127.0.0.1:${port}/health`, intervalMs: 200, deadlineSeconds: 20 },
        },
        {
          name: "probe-missing",
          kind: "health-check",
          roles: ["h1"],
          required: false,
          config: { url: `http://127.0.0.1:${port}/missing`, intervalMs: 200, deadlineSeconds: 2 },
        },
        {
          // A variable chose this address: the outbound guard checks it before the host connects.
          name: "probe-metadata",
          kind: "health-check",
          roles: ["h1"],
          required: false,
          config: { url: "#{ProbeUrl}", intervalMs: 200, deadlineSeconds: 2 },
        },
      ],
      { ProbeUrl: "http://169.254.169.254/latest/meta-data" },
    );
    const { task, log } = await releaseAndWait(slug);
    expect(task.state, log).toBe("succeeded");
    expect(log).toMatch(/probe on host-1/);
    expect(log).toMatch(/404/);
    expect(log).toMatch(/link-local\/metadata address \(169\.254\.169\.254\)/);
  });

  it("a cancel mid-step kills the process on the host", async () => {
    await trust(2);
    const markerDir = mkdtempSync(join(tmpdir(), "ferry-ssh-cancel-"));
    chmodSync(markerDir, 0o777);
    temporary.push(markerDir);
    const slug = await newProject([
      {
        name: "slow",
        kind: "script",
        roles: ["h2"],
        config: {
          // A background job too: everything the step started goes.
          script: `(sleep 4; touch ${markerDir}/background) &\necho started\nsleep 4\ntouch ${markerDir}/foreground`,
        },
      },
    ]);
    const taskId = await release(slug);
    await waitUntil(async () => (await logText(taskId)).includes("started"), 30_000);
    const cancelled = await test.call("POST", `/api/v1/tasks/${taskId}/cancel`);
    expect(cancelled.status, JSON.stringify(cancelled.body)).toBeLessThan(300);
    const task = await test.waitForTask(taskId, 30_000);
    expect(task.state).toBe("cancelled");
    // No process of the task is left (the namespaces share this machine's process table).
    expect(processesCarrying(`FERRY_TASK_ID=${taskId}`)).toEqual([]);
    await sleep(5000);
    expect(readdirSync(markerDir)).toEqual([]);
  });

  it("reaches a host only a jump host can reach, once both host keys are trusted", async () => {
    const jump = hosts.hosts[1];
    if (!jump) throw new Error("no host");
    await trust(1);
    const port = 2200 + Math.floor(Math.random() * 700);
    const innerFingerprint = await jump.startLoopbackSshd(port);
    const created = await test.call("POST", "/api/v1/targets", {
      name: "behind",
      environments: ["dev"],
      roles: ["behind"],
      transport: "ssh",
      ssh: {
        host: "127.0.0.1",
        port,
        user: "root",
        jumpHost: { host: jump.address, user: "root" },
        privateKey: hosts.privateKey,
      },
    });
    expect(created.status, JSON.stringify(created.body)).toBe(201);
    interface Answer {
      changed: boolean;
      host: { presented: { fingerprint: string } | null; trusted: string | null };
      jumpHost: { presented: { fingerprint: string } | null; trusted: string | null };
    }
    // First only the jump host's key can be seen: Ferry signs in nowhere it does not trust.
    const first = await test.call<Answer>("POST", "/api/v1/targets/behind/trust", {});
    expect(first.status, JSON.stringify(first.body)).toBe(200);
    expect(first.body).toMatchObject({
      changed: false,
      jumpHost: { presented: { fingerprint: jump.fingerprint }, trusted: null },
      host: { presented: null, trusted: null },
    });
    const slug = await newProject([
      { name: "inside", kind: "script", roles: ["behind"], config: { script: "echo behind the jump host" } },
    ]);
    const refused = await releaseAndWait(slug);
    expect(refused.task.state).toBe("failed");
    expect(refused.log).toContain(`presents ssh-ed25519 ${jump.fingerprint}`);
    // Trusting the jump host shows the inner host's key; then that one is trusted too.
    const second = await test.call<Answer>("POST", "/api/v1/targets/behind/trust", {
      jumpHostFingerprint: jump.fingerprint,
    });
    expect(second.body).toMatchObject({
      changed: true,
      jumpHost: { trusted: jump.fingerprint },
      host: { presented: { fingerprint: innerFingerprint }, trusted: null },
    });
    const third = await test.call<Answer>("POST", "/api/v1/targets/behind/trust", { fingerprint: innerFingerprint });
    expect(third.body).toMatchObject({ changed: true, host: { trusted: innerFingerprint } });
    const { task, log } = await releaseAndWait(slug);
    expect(task.state, log).toBe("succeeded");
    expect(log).toContain("behind the jump host");
  });

  it("a container step on an ssh target drives the host's Docker engine over the SSH connection", async () => {
    await trust(1);
    const host = hosts.hosts[1];
    if (!host) throw new Error("no host");
    const registry = await startRegistry();
    const docker = new DockerRuntime();
    let slug = "";
    let reference: string | undefined;
    try {
      const image = await buildDemoImage({ registryUrl: registry.url, repository: "ssh/app", version: "1.0.0" });
      reference = image.reference;
      const hostPort = await freePort();
      slug = await newProject([
        {
          name: "web",
          kind: "container",
          roles: ["h1"],
          config: { image: image.reference, ports: [{ host: hostPort, container: 8080 }], settleSeconds: 1 },
        },
      ]);
      const { task, log } = await releaseAndWait(slug);
      expect(task.state, log).toBe("succeeded");
      expect(log).toContain("web on host-1");
      const containers = await docker.listByLabel("ferry.project", slug);
      expect(containers.map((container) => container.labels["ferry.release"])).toEqual([`1.0.${releaseCount}`]);
      // The namespaces share this machine's files, so the socket sshd opened on "the host" is
      // this machine's engine: what this shows is the way there — through the SSH connection
      // (sshd forwarded the engine's unix socket), no TCP port opened for it.
      expect(host.sshdLog()).toMatch(/direct[-_]streamlocal.*\/var\/run\/docker\.sock/);
    } finally {
      if (slug) await docker.removeByLabel("ferry.project", slug);
      await registry.stop();
      if (reference) await removeImages([reference]);
    }
  });

  it("a script that runs past its timeout is stopped on the host, with everything it started", async () => {
    await trust(2);
    const slug = await newProject([
      {
        name: "endless",
        kind: "script",
        roles: ["h2"],
        config: { script: "sleep 60 &\necho waiting\nsleep 60", timeoutSeconds: 2 },
      },
    ]);
    const taskId = await release(slug);
    const task = await test.waitForTask(taskId, 60_000);
    expect(task.state).toBe("failed");
    expect(await logText(taskId)).toContain("the script ran longer than 2 s and was stopped");
    await waitUntil(() => processesCarrying(`FERRY_TASK_ID=${taskId}`).length === 0, 10_000);
  });

  it("a host cut off mid-step fails the step, and the host stops the process when sshd notices", async () => {
    await trust(2);
    const host = hosts.hosts[2];
    if (!host) throw new Error("no host");
    const markerDir = mkdtempSync(join(tmpdir(), "ferry-ssh-cut-"));
    chmodSync(markerDir, 0o777);
    temporary.push(markerDir);
    const slug = await newProject([
      {
        name: "long",
        kind: "script",
        roles: ["h2"],
        config: { script: `echo started\nsleep 90\ntouch ${markerDir}/finished` },
      },
    ]);
    const taskId = await release(slug);
    await waitUntil(async () => (await logText(taskId)).includes("started"), 30_000);
    const cutAt = Date.now();
    host.setLink(false);
    try {
      const task = await test.waitForTask(taskId, 120_000);
      expect(task.state).toBe("failed");
      // Keep-alives every 2 s here (TEST_SSH_KEEPALIVE), three missed: the step fails well before
      // the script would have ended.
      expect(Date.now() - cutAt).toBeLessThan(80_000);
      expect(await logText(taskId)).toContain("was lost while the process ran");
      // sshd's ClientAliveInterval ends the session; the launcher then kills the script's group.
      await waitUntil(() => processesCarrying(`FERRY_TASK_ID=${taskId}`).length === 0, 30_000);
    } finally {
      host.setLink(true);
      // The host was unreachable when the task ended, so its work directory stayed there
      // (docs/targets.md); the namespace hosts share root's home with this machine.
      rmSync(join(homedir(), ".cache", "ferry", "work", taskId), { recursive: true, force: true });
    }
    expect(readdirSync(markerDir)).toEqual([]);
  });

  it("ferry apply creates an ssh target with its key read from a file beside ferry.yml, and a second apply changes nothing", async () => {
    const host = hosts.hosts[2];
    if (!host) throw new Error("no host");
    const directory = mkdtempSync(join(tmpdir(), "ferry-ssh-apply-"));
    temporary.push(directory);
    writeFileSync(join(directory, "deploy_key"), hosts.privateKey, { mode: 0o600 });
    const name = `applied-${randomBytes(3).toString("hex")}`;
    writeFileSync(
      join(directory, "ferry.yml"),
      JSON.stringify({
        project: { name },
        environments: ["dev"],
        lifecycle: { name: `lc-${name}`, phases: [{ environments: ["dev"], autoDeploy: true }] },
        targets: [
          {
            name: `${name}-host`,
            environments: ["dev"],
            roles: [name],
            transport: "ssh",
            ssh: {
              host: host.address,
              user: "root",
              privateKeyFrom: { file: "deploy_key" },
              hostKey: host.fingerprint,
            },
          },
        ],
        steps: [{ name: "hello", kind: "script", roles: [name], config: { script: "echo applied on $(id -un)" } }],
      }),
    );
    const apply = () => cli(["apply", "-f", join(directory, "ferry.yml")]);
    const first = await apply();
    expect(first.code, first.stderr).toBe(0);
    expect(first.stdout).toContain(`created target ${name}-host (private key from deploy_key)`);
    const target = await test.call<{ ssh: Record<string, unknown> }>("GET", `/api/v1/targets/${name}-host`);
    expect(target.body.ssh).toMatchObject({
      host: host.address,
      user: "root",
      privateKey: "set",
      hostKey: host.fingerprint,
    });
    const second = await apply();
    expect(second.code, second.stderr).toBe(0);
    expect(second.stdout).toContain(`unchanged target ${name}-host`);
    const { task, log } = await releaseAndWait(name);
    expect(task.state, log).toBe("succeeded");
    expect(log).toContain("applied on root");
  });

  it("the private key appears in no log, API answer, audit export, server log or process list", async () => {
    // A real `ferry server` process, logging at debug level, and the real CLI.
    const adminKey = testAdminKey();
    const { server } = await resources.startServerInNewHome(adminKey, []);
    const env = (extra: Record<string, string> = {}) =>
      isolatedEnv(mkdtempSync(join(tmpdir(), "ferry-ssh-home-")), {
        FERRY_URL: server.url,
        FERRY_API_KEY: adminKey,
        ...extra,
      });
    const host = hosts.hosts[1];
    if (!host) throw new Error("no host");
    // An encrypted copy of the client key: its passphrase must not show up either.
    const keyDirectory = mkdtempSync(join(tmpdir(), "ferry-ssh-key-"));
    temporary.push(keyDirectory);
    const keyFile = join(keyDirectory, "key");
    writeFileSync(keyFile, hosts.privateKey, { mode: 0o600 });
    const passphrase = `pass-${randomBytes(12).toString("hex")}`;
    execFileSync("ssh-keygen", ["-q", "-p", "-N", passphrase, "-f", keyFile]);
    const encryptedKey = readFileSync(keyFile, "utf8");
    const run = async (args: string[], input?: string) => {
      const result = await runFerry(args, env(), { ...(input !== undefined && { input }), timeoutMs: 60_000 });
      expect(result.code, `${args.join(" ")}\n${result.stdout}\n${result.stderr}`).toBe(0);
      return result;
    };
    await run(["env", "create", "dev"]);
    const lifecycle = await apiRequest(`${server.url}/api/v1/lifecycles`, adminKey, "POST", {
      name: "auto",
      phases: [{ environments: ["dev"], autoDeploy: true }],
    });
    expect(lifecycle.status).toBe(201);
    const created = await run(
      [
        "target",
        "create",
        "secret-host",
        "--env",
        "dev",
        "--role",
        "web",
        "--transport",
        "ssh",
        "--ssh-host",
        host.address,
        "--ssh-user",
        "root",
        "--ssh-key-file",
        keyFile,
        "--ssh-passphrase-stdin",
        "--json",
      ],
      `${passphrase}\n`,
    );
    expect(JSON.parse(created.stdout)).toMatchObject({ ssh: { privateKey: "set", passphrase: "set", hostKey: null } });
    await run(["target", "trust", "secret-host", "--fingerprint", host.fingerprint]);
    // The key replaced by the same one: the audit log records "(changed)", never the key.
    const patched = await apiRequest(`${server.url}/api/v1/targets/secret-host`, adminKey, "PATCH", {
      ssh: { privateKey: encryptedKey },
    });
    expect(patched.status, await patched.clone().text()).toBe(200);

    const project = await apiRequest(`${server.url}/api/v1/projects`, adminKey, "POST", {
      name: "secret-app",
      lifecycle: "auto",
    });
    expect(project.status).toBe(201);
    const steps = [
      { name: "wait", kind: "script", roles: ["web"], config: { script: "echo begun; sleep 2; echo done" } },
    ];
    expect(
      (await apiRequest(`${server.url}/api/v1/projects/secret-app/process`, adminKey, "PUT", { steps })).status,
    ).toBe(200);
    const releaseResponse = await apiRequest(`${server.url}/api/v1/projects/secret-app/releases`, adminKey, "POST", {
      version: "1.0.0",
    });
    const { deployments } = (await releaseResponse.json()) as { deployments: { taskId: string }[] };
    const taskId = deployments[0]?.taskId ?? "";
    // While the step runs on the host: nothing in any process's command line.
    const processList: string[] = [];
    const readLog = async () => {
      const response = await apiRequest(`${server.url}/api/v1/tasks/${taskId}/log`, adminKey);
      return ((await response.json()) as { lines: LogLine[] }).lines.map((line) => line.text).join("\n");
    };
    await waitUntil(async () => {
      processList.push(execFileSync("ps", ["-eo", "args"], { encoding: "utf8" }));
      return (await readLog()).includes("done");
    }, 60_000);
    const taskResponse = await apiRequest(`${server.url}/api/v1/tasks/${taskId}`, adminKey);
    const log = await readLog();
    expect(((await taskResponse.json()) as { state: string }).state, log).toMatch(/running|succeeded/);

    const answers = [
      await (await apiRequest(`${server.url}/api/v1/targets/secret-host`, adminKey)).text(),
      await (await apiRequest(`${server.url}/api/v1/targets`, adminKey)).text(),
      await (await apiRequest(`${server.url}/api/v1/audit/export`, adminKey)).text(),
      (await run(["target", "show", "secret-host", "--json"])).stdout,
      (await run(["target", "list"])).stdout,
    ];
    expect(answers[2]).toContain("target.update");
    expect(answers[2]).toContain("(changed)");
    const everything = [log, ...answers, ...processList, server.stdout(), server.stderr()].join("\n");
    // Each line of the key's body is checked on its own: a partial leak counts too.
    const keyLines = [hosts.privateKey, encryptedKey].flatMap((key) =>
      key.split("\n").filter((line) => line.length > 20 && !line.startsWith("-----")),
    );
    expect(keyLines.length).toBeGreaterThan(3);
    for (const line of keyLines) expect(everything.includes(line), `key line ${line.slice(0, 10)}…`).toBe(false);
    expect(everything.includes(passphrase)).toBe(false);
  });
});

async function waitUntil(condition: () => boolean | Promise<boolean>, timeoutMs = 10_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!(await condition())) {
    if (Date.now() > deadline) throw new Error("timed out");
    await sleep(100);
  }
}
