import { type ChildProcess, spawn } from "node:child_process";
import { chmodSync, mkdtempSync, readdirSync, readFileSync, rmSync, statSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { setTimeout as sleep } from "node:timers/promises";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { DockerRuntime } from "../src/runtimes/docker.js";
import { expectSuccess, FERRY, isolatedEnv, parseJson, runFerry } from "./helpers/cli.js";
import { buildDemoImage, removeImages } from "./helpers/images.js";
import { freePort, startRegistry } from "./helpers/registry.js";
import { createAutoProject, processesCarrying, releaseDeployed } from "./helpers/remoteHosts.js";
import { startTestServer, type TestServer } from "./helpers/server.js";
import { type SshHosts, startSshHosts } from "./helpers/sshHosts.js";

/**
 * `ferry agent` on real hosts: real `bin/ferry agent` processes inside network namespaces
 * (test/helpers/sshHosts.ts makes them; their sshd is not used here), dialling out to a real
 * server over the namespace links. What a user notices: an agent enrols once and runs steps;
 * hostile values stay data; a killed agent never runs a step twice and the task says what
 * happened; a cut link fails the step within the timeout; spent, expired and revoked tokens
 * and revoked credentials are refused; a container step drives the host's Docker engine.
 */

/** The link timeout of the test server: short, so a cut link is noticed quickly. */
const AGENT_TIMEOUT_MS = 6_000;

function payloads(markerDir: string): string[] {
  const marker = (name: string) => join(markerDir, name);
  return [
    `$(touch ${marker("dollar")})`,
    `\`touch ${marker("backtick")}\``,
    `; touch ${marker("semicolon")}`,
    `x | touch ${marker("pipe")}`,
    `' ; touch ${marker("quote")} ; '`,
    `\${IFS}touch\${IFS}${marker("ifs")}`,
    `x\ntouch ${marker("newline")}\n`,
    "--",
    `-- touch ${marker("dashdash")}`,
  ];
}

interface RunningAgent {
  child: ChildProcess;
  output(): string;
  exited: Promise<number | null>;
}

describe("ferry agent on real hosts", { timeout: 180_000 }, () => {
  let hosts: SshHosts;
  let test: TestServer;
  const temporary: string[] = [];
  const agents: RunningAgent[] = [];
  let releaseCount = 0;

  const tempDir = (prefix: string) => {
    const directory = mkdtempSync(join(tmpdir(), prefix));
    temporary.push(directory);
    return directory;
  };
  const logText = async (taskId: string) =>
    (await test.call<{ lines: { text: string }[] }>("GET", `/api/v1/tasks/${taskId}/log`)).body.lines
      .map((line) => line.text)
      .join("\n");
  const newToken = async (body: Record<string, unknown> = {}) => {
    const created = await test.call<{ id: string; token: string }>("POST", "/api/v1/agent-tokens", body);
    expect(created.status, JSON.stringify(created.body)).toBe(201);
    return created.body;
  };
  /** Starts `bin/ferry agent` inside host `index`'s namespace; its state directory is `stateDir`. */
  const startAgent = (index: number, stateDir: string, extra: string[] = [], env: Record<string, string> = {}) => {
    const host = hosts.hosts[index];
    if (!host) throw new Error("no host");
    const child = spawn(
      "ip",
      [
        "netns",
        "exec",
        host.namespace,
        "env",
        ...Object.entries(env).map(([name, value]) => `${name}=${value}`),
        process.execPath,
        FERRY,
        "agent",
        "--server",
        test.server.url,
        "--state-dir",
        stateDir,
        "--stop-grace",
        "2",
        ...extra,
      ],
      { stdio: ["ignore", "pipe", "pipe"] },
    );
    let output = "";
    child.stdout?.on("data", (chunk: Buffer) => {
      output += chunk.toString();
    });
    child.stderr?.on("data", (chunk: Buffer) => {
      output += chunk.toString();
    });
    const exited = new Promise<number | null>((resolve) => child.once("exit", (code) => resolve(code)));
    const agent = { child, output: () => output, exited };
    agents.push(agent);
    return agent;
  };
  /** Enrols a new agent on host `index` with a fresh token; resolves once the target shows it connected. */
  const enrolAgent = async (index: number, name: string, roles: string[]) => {
    const { token } = await newToken();
    const stateDir = tempDir("ferry-agent-state-");
    const tokenFile = join(stateDir, "token");
    writeFileSync(tokenFile, token, { mode: 0o600 });
    const agent = startAgent(index, stateDir, [
      "--token-file",
      tokenFile,
      "--name",
      name,
      "--environments",
      "dev",
      "--roles",
      roles.join(","),
    ]);
    await waitUntil(
      async () => (await agentState(name)) === "connected",
      20_000,
      () => agent.output(),
    );
    return { agent, stateDir };
  };
  const agentState = async (name: string) =>
    (await test.call<{ agent: { state: string } | null }>("GET", `/api/v1/targets/${name}`)).body.agent?.state;
  const newProject = (steps: unknown[], variables: Record<string, string> = {}) =>
    createAutoProject(test, "agent", steps, variables);
  const release = (slug: string) => releaseDeployed(test, slug, `1.0.${++releaseCount}`);
  const waitForLine = async (taskId: string, text: string) =>
    waitUntil(async () => (await logText(taskId)).includes(text), 30_000);

  beforeAll(async () => {
    hosts = await startSshHosts(2);
    const gateway = (address: string) => address.replace(/\.2$/, ".1");
    // Every namespace reaches the server through its own link (the server listens on host 0's side of it).
    for (const host of hosts.hosts) host.exec("ip", ["route", "add", "default", "via", gateway(host.address)]);
    test = await startTestServer({ host: gateway(hosts.hosts[0]?.address ?? ""), agentTimeoutMs: AGENT_TIMEOUT_MS });
    expect((await test.call("POST", "/api/v1/environments", { name: "dev" })).status).toBe(201);
    const lifecycle = await test.call("POST", "/api/v1/lifecycles", {
      name: "auto",
      phases: [{ environments: ["dev"], autoDeploy: true }],
    });
    expect(lifecycle.status).toBe(201);
  }, 120_000);

  afterAll(async () => {
    for (const agent of agents) agent.child.kill("SIGKILL");
    await test?.close();
    await hosts?.close();
    for (const directory of temporary) rmSync(directory, { recursive: true, force: true });
  });

  it("enrols once with a token, keeps only its own credential (0600), and runs hostile values as data", async () => {
    const { stateDir, agent } = await enrolAgent(0, "agent-0", ["web", "a0"]);
    const saved = JSON.parse(readFileSync(join(stateDir, "agent.json"), "utf8")) as { credential: string };
    expect(saved.credential).toMatch(/^ferry_agent_/);
    expect(statSync(join(stateDir, "agent.json")).mode & 0o777).toBe(0o600);
    const listed = await test.call<{ items: { name: string; transport: string }[] }>("GET", "/api/v1/targets");
    expect(listed.body.items.find((target) => target.name === "agent-0")?.transport).toBe("agent");
    // The credential appears nowhere but in the agent's own file.
    expect(JSON.stringify(listed.body)).not.toContain(saved.credential);
    expect(agent.output()).not.toContain(saved.credential);

    const markerDir = tempDir("ferry-agent-marker-");
    chmodSync(markerDir, 0o777);
    const values = payloads(markerDir);
    const variables = Object.fromEntries(values.map((value, index) => [`P${index}`, value]));
    const env = Object.fromEntries(values.map((_, index) => [`P${index}`, `#{P${index}}`]));
    const slug = await newProject(
      [
        {
          name: "show",
          kind: "script",
          roles: ["a0"],
          config: {
            script: [
              'for a in "$@"; do printf "arg[%s]\\n" "$a"; done',
              `for n in ${Object.keys(env).join(" ")}; do printf "env[%s]\\n" "\${!n}"; echo unquoted \${!n}; done`,
              'printf "where[%s]\\n" "$(ip -4 -o addr show | grep -o "10\\.231\\.[0-9]*\\.2")"',
            ].join("\n"),
            env,
            arguments: values.map((_, index) => `#{P${index}}`),
          },
        },
      ],
      variables,
    );
    const taskId = await release(slug);
    const task = await test.waitForTask(taskId, 60_000);
    const log = await logText(taskId);
    expect(task.state, log).toBe("succeeded");
    expect(log).toContain("show on agent-0");
    expect(log).toContain(`where[${hosts.hosts[0]?.address}]`);
    for (const value of values.filter((text) => !text.includes("\n"))) {
      expect(log, value).toContain(`arg[${value}]`);
      expect(log, value).toContain(`env[${value}]`);
    }
    expect(readdirSync(markerDir), "markers").toEqual([]);
  });

  it("hands a script's outputs to the next step, the first step's directory already gone from the agent's host", async () => {
    await waitUntil(async () => (await agentState("agent-0")) === "connected", 20_000);
    const slug = await newProject([
      {
        name: "first",
        kind: "script",
        roles: ["a0"],
        config: { script: 'echo "version=2.4.$((6 * 7))" >> "$FERRY_OUTPUT"\necho "home=$HOME" >> "$FERRY_OUTPUT"' },
      },
      {
        name: "second",
        kind: "script",
        roles: ["a0"],
        config: {
          // The task's directory is not listable by the step's account, but a path in it can be tested.
          script: [
            'echo "got[$VERSION]"',
            'case "$FIRST_HOME" in */script-*) echo "first[a step directory]";; esac',
            'if [ -e "$FIRST_HOME" ]; then echo "first[still there]"; else echo "first[gone]"; fi',
            'if [ -d "$HOME" ]; then echo "own[there]"; fi',
          ].join("\n"),
          env: { VERSION: "#{Ferry.Step[first].Output.version}", FIRST_HOME: "#{Ferry.Step[first].Output.home}" },
        },
      },
    ]);
    const taskId = await release(slug);
    const task = await test.waitForTask(taskId, 60_000);
    const log = await logText(taskId);
    expect(task.state, log).toBe("succeeded");
    expect(log).toContain("got[2.4.42]");
    expect(log).toContain("first[a step directory]");
    expect(log).toContain("first[gone]");
    expect(log).toContain("own[there]");
  });

  it("probes an address on the agent host's own loopback, which the server cannot reach", async () => {
    const host = hosts.hosts[0];
    if (!host) throw new Error("no host");
    await waitUntil(async () => (await agentState("agent-0")) === "connected", 20_000);
    const site = tempDir("ferry-agent-site-");
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
    }, 10_000);
    await expect(fetch(`http://127.0.0.1:${port}/health`, { signal: AbortSignal.timeout(2000) })).rejects.toThrow();
    const slug = await newProject([
      {
        name: "probe",
        kind: "health-check",
        roles: ["a0"],
        config: { url: `http://127.0.0.1:${port}/health`, intervalMs: 200, deadlineSeconds: 20 },
      },
      {
        name: "probe-missing",
        kind: "health-check",
        roles: ["a0"],
        required: false,
        // 6 s: under load a first probe through the agent took over 2 s, and the step then
        // failed on its deadline before any answer (404) came.
        config: { url: `http://127.0.0.1:${port}/missing`, intervalMs: 200, deadlineSeconds: 6 },
      },
    ]);
    const taskId = await release(slug);
    const task = await test.waitForTask(taskId, 60_000);
    const log = await logText(taskId);
    expect(task.state, log).toBe("succeeded");
    expect(log).toMatch(/optional step 'probe-missing' failed \(.*404/);
  });

  it("checks an agent target's health through its agent, and /metrics counts the agent connected", async () => {
    await waitUntil(async () => (await agentState("agent-0")) === "connected", 20_000);
    // The first check comes within a few seconds of the target's creation (the default schedule).
    let health: { state: string; reachable: boolean | null; diskFreeBytes: number | null } | undefined;
    await waitUntil(async () => {
      health = (await test.call<{ health: typeof health }>("GET", "/api/v1/targets/agent-0")).body.health;
      return health?.state === "up";
    }, 60_000);
    expect(health?.reachable).toBe(true);
    expect(health?.diskFreeBytes).toBeGreaterThan(0);
    const metrics = await (
      await fetch(new URL("/metrics", test.server.url), { headers: { authorization: `Bearer ${test.apiKey}` } })
    ).text();
    expect(metrics).toContain('ferry_target_up{target="agent-0"} 1');
    expect(Number(/^ferry_agent_connections (\d+)$/m.exec(metrics)?.[1])).toBeGreaterThanOrEqual(1);
  });

  it("a cancel mid-step stops the process on the agent's host, with what it started", async () => {
    await waitUntil(async () => (await agentState("agent-0")) === "connected", 20_000);
    const markerDir = tempDir("ferry-agent-cancel-");
    chmodSync(markerDir, 0o777);
    const slug = await newProject([
      {
        name: "slow",
        kind: "script",
        roles: ["a0"],
        config: {
          script: `(sleep 4; touch ${markerDir}/background) &\necho started\nsleep 4\ntouch ${markerDir}/foreground`,
        },
      },
    ]);
    const taskId = await release(slug);
    await waitForLine(taskId, "started");
    const cancelled = await test.call("POST", `/api/v1/tasks/${taskId}/cancel`);
    expect(cancelled.status, JSON.stringify(cancelled.body)).toBeLessThan(300);
    const task = await test.waitForTask(taskId, 30_000);
    expect(task.state).toBe("cancelled");
    // The namespaces share this machine's process table: none of the task's processes is left.
    await waitUntil(() => processesCarrying(`FERRY_TASK_ID=${taskId}`).length === 0, 10_000);
    await sleep(5_000);
    expect(readdirSync(markerDir)).toEqual([]);
  });

  it("kill -9 of the agent mid-step, then a restart: the step ran once and the task says what happened", async () => {
    const { stateDir, agent } = await enrolAgent(1, "agent-1", ["a1"]);
    const markerDir = tempDir("ferry-agent-once-");
    chmodSync(markerDir, 0o777);
    const marker = join(markerDir, "count");
    writeFileSync(marker, "");
    chmodSync(marker, 0o666);
    const slug = await newProject([
      {
        name: "once",
        kind: "script",
        roles: ["a1"],
        config: { script: `echo ran >> ${marker}\necho started\nsleep 20\necho ran-to-the-end >> ${marker}` },
      },
    ]);
    const taskId = await release(slug);
    await waitForLine(taskId, "started");
    agent.child.kill("SIGKILL");
    await agent.exited;
    const restarted = startAgent(1, stateDir);
    const task = await test.waitForTask(taskId, 60_000);
    const log = await logText(taskId);
    expect(task.state, log).toBe("failed");
    expect(String(task.error)).toMatch(/agent on target 'agent-1' restarted .* while this step ran .* not run again/);
    await waitUntil(async () => (await agentState("agent-1")) === "connected", 20_000);
    // The process the killed agent left was stopped by the new one: it never reaches its end.
    await sleep(1_000);
    expect(readFileSync(marker, "utf8")).toBe("ran\n");
    expect(restarted.output()).toContain("reported interrupted");
  });

  it("a link taken down mid-step fails the step within the timeout and marks the target lost", async () => {
    const host = hosts.hosts[1];
    if (!host) throw new Error("no host");
    await waitUntil(async () => (await agentState("agent-1")) === "connected", 20_000);
    const markerDir = tempDir("ferry-agent-link-");
    chmodSync(markerDir, 0o777);
    const slug = await newProject([
      {
        name: "long",
        kind: "script",
        roles: ["a1"],
        config: { script: `echo started\nsleep 15\ntouch ${join(markerDir, "unattended")}` },
      },
    ]);
    const taskId = await release(slug);
    await waitForLine(taskId, "started");
    const cutAt = Date.now();
    host.setLink(false);
    try {
      const task = await test.waitForTask(taskId, 60_000);
      const failedAfter = Date.now() - cutAt;
      const log = await logText(taskId);
      expect(task.state, log).toBe("failed");
      expect(String(task.error)).toContain("has not been heard from");
      // Within the configured timeout (6 s), not after a TCP or poll timeout of minutes; the
      // bound is loose (3×) because a loaded machine delays the check and the task's bookkeeping.
      expect(failedAfter).toBeLessThan(AGENT_TIMEOUT_MS * 3);
      expect(String(task.error)).toContain("FERRY_AGENT_TIMEOUT_SECONDS=6");
      expect(await agentState("agent-1")).toBe("lost");
    } finally {
      host.setLink(true);
    }
    // Cut off for the timeout, the agent stopped the step itself: it did not run on unattended.
    // Had it run on, its marker would be there 15 s after "started" (seen before the cut); 3 s
    // more for a loaded machine.
    await sleep(Math.max(0, cutAt + 15_000 + 3_000 - Date.now()));
    expect(readdirSync(markerDir)).toEqual([]);
    await waitUntil(async () => (await agentState("agent-1")) === "connected", 60_000);
  });

  it("a link taken down mid-deployment: with the environment's policy skip, that agent is left out and the rest deploys", async () => {
    const host = hosts.hosts[1];
    if (!host) throw new Error("no host");
    await waitUntil(async () => (await agentState("agent-1")) === "connected", 60_000);
    await waitUntil(async () => (await agentState("agent-0")) === "connected", 20_000);
    const policy = await test.call("PATCH", "/api/v1/environments/dev", { unavailableTargets: "skip" });
    expect(policy.status, JSON.stringify(policy.body)).toBe(200);
    const markerDir = tempDir("ferry-agent-policy-");
    chmodSync(markerDir, 0o777);
    const env = { MARKERS: markerDir, TARGET: "#{Ferry.Target.Name}" };
    const slug = await newProject([
      {
        name: "long",
        kind: "script",
        roles: ["a0", "a1"],
        rolling: { window: "100%" },
        config: {
          script:
            'echo "started on $TARGET"; if [ "$TARGET" = agent-1 ]; then sleep 15; fi; touch "$MARKERS/long-$TARGET"',
          env,
        },
      },
      { name: "after", kind: "script", roles: ["a0", "a1"], config: { script: 'touch "$MARKERS/after-$TARGET"', env } },
    ]);
    const taskId = await release(slug);
    await waitForLine(taskId, "started on agent-1");
    const cutAt = Date.now();
    host.setLink(false);
    try {
      const task = await test.waitForTask(taskId, 60_000);
      const log = await logText(taskId);
      expect(task.state, log).toBe("succeeded");
      // Marked failed within the configured timeout, then asked again: no answer, so left out.
      expect(Date.now() - cutAt).toBeLessThan(AGENT_TIMEOUT_MS * 5);
      expect(log).toContain("step 'long' failed on agent-1, which cannot be reached now");
      expect(log).toContain("left out of the rest of this deployment (dev's policy for unavailable targets is skip)");
      expect(readdirSync(markerDir).sort()).toEqual(["after-agent-0", "long-agent-0"]);
    } finally {
      host.setLink(true);
      await test.call("PATCH", "/api/v1/environments/dev", { unavailableTargets: "fail" });
    }
    await waitUntil(async () => (await agentState("agent-1")) === "connected", 60_000);
  });

  it("refuses used, expired and revoked enrolment tokens, and a revoked credential", async () => {
    const enrol = (token: string, name: string) =>
      fetch(new URL("/api/v1/agent/enrol", test.server.url), {
        method: "POST",
        headers: { "content-type": "application/json" },
        body: JSON.stringify({ token, name, environments: ["dev"] }),
      }).then(async (response) => ({ status: response.status, body: (await response.json()) as { detail?: string } }));
    const used = await newToken();
    expect((await enrol(used.token, "t-used")).status).toBe(201);
    const again = await enrol(used.token, "t-used-2");
    expect(again.status).toBe(401);
    expect(again.body.detail).toContain("already used");

    const expired = await newToken({ expiresInMinutes: 1 });
    // Time passes: the token's expiry moves into the past.
    await test.server.store.db
      .updateTable("agent_enrolment_tokens")
      .set({ expires_at: new Date(Date.now() - 1_000).toISOString() })
      .where("id", "=", expired.id)
      .execute();
    const late = await enrol(expired.token, "t-expired");
    expect(late.status).toBe(401);
    expect(late.body.detail).toContain("expired");

    const revoked = await newToken();
    expect((await test.call("DELETE", `/api/v1/agent-tokens/${revoked.id}`)).status).toBe(200);
    const refused = await enrol(revoked.token, "t-revoked");
    expect(refused.status).toBe(401);
    expect(refused.body.detail).toContain("revoked");
    expect((await test.call("GET", "/api/v1/targets/t-revoked")).status).toBe(404);

    // A running agent whose credential is revoked is refused at its next request and stops (exit 78).
    const { agent } = await enrolAgent(0, "agent-revoked", ["nothing"]);
    const answer = await test.call("POST", "/api/v1/targets/agent-revoked/agent/revoke");
    expect(answer.status, JSON.stringify(answer.body)).toBe(200);
    expect(await agent.exited).toBe(78);
    expect(agent.output()).toContain("was revoked");
    expect(await agentState("agent-revoked")).toBe("revoked");
  });

  it("rotates an agent's credential: the agent saves the new one, the old one is refused", async () => {
    const { stateDir } = await enrolAgent(0, "agent-rotated", ["nothing"]);
    const before = JSON.parse(readFileSync(join(stateDir, "agent.json"), "utf8")) as { credential: string };
    expect((await test.call("POST", "/api/v1/targets/agent-rotated/agent/rotate")).status).toBe(200);
    await waitUntil(
      () =>
        (JSON.parse(readFileSync(join(stateDir, "agent.json"), "utf8")) as { credential: string }).credential !==
        before.credential,
      30_000,
    );
    await waitUntil(
      async () =>
        !(await test.call<{ agent: { rotationPending: boolean } }>("GET", "/api/v1/targets/agent-rotated")).body.agent
          .rotationPending,
      30_000,
    );
    const old = await fetch(new URL("/api/v1/agent/poll", test.server.url), {
      method: "POST",
      headers: { "content-type": "application/json", authorization: `Bearer ${before.credential}` },
      body: JSON.stringify({ running: [], interrupted: [] }),
    });
    expect(old.status).toBe(401);
  });

  it("a container step through an agent drives the host's Docker engine through the agent's tunnel", async () => {
    await waitUntil(async () => (await agentState("agent-0")) === "connected", 20_000);
    const registry = await startRegistry();
    const docker = new DockerRuntime();
    let slug = "";
    let reference: string | undefined;
    try {
      const image = await buildDemoImage({ registryUrl: registry.url, repository: "agent/app", version: "1.0.0" });
      reference = image.reference;
      const hostPort = await freePort();
      slug = await newProject([
        {
          name: "web",
          kind: "container",
          roles: ["a0"],
          config: { image: image.reference, ports: [{ host: hostPort, container: 8080 }], settleSeconds: 1 },
        },
      ]);
      const taskId = await release(slug);
      const task = await test.waitForTask(taskId, 120_000);
      const log = await logText(taskId);
      expect(task.state, log).toBe("succeeded");
      expect(log).toContain("web on agent-0");
      // The namespaces share this machine's files, so the socket the agent opened is this
      // machine's engine (a separate engine per host is the data-plane work): what this shows
      // is the way there, through the agent.
      const containers = await docker.listByLabel("ferry.project", slug);
      expect(containers.map((container) => container.labels["ferry.release"])).toEqual([`1.0.${releaseCount}`]);
    } finally {
      if (slug) await docker.removeByLabel("ferry.project", slug);
      await registry.stop();
      if (reference) await removeImages([reference]);
    }
  });

  it("the CLI creates, lists and revokes tokens, shows agent targets, and rotates and revokes credentials", async () => {
    const home = tempDir("ferry-agent-cli-");
    const env = isolatedEnv(home, { FERRY_URL: test.server.url, FERRY_API_KEY: test.apiKey });
    const cli = (args: string[]) => runFerry(args, env, { timeoutMs: 60_000 });
    const created = await cli([
      "agent-token",
      "create",
      "--env",
      "dev",
      "--role",
      "web",
      "--role",
      "worker",
      "--expires",
      "5",
      "--note",
      "cli",
      "--json",
    ]);
    expectSuccess(created);
    const token = parseJson<{ id: string; token: string; environments: string[]; roles: string[] }>(created);
    expect(token.environments).toEqual(["dev"]);
    expect(token.roles).toEqual(["web", "worker"]);
    const listed = await cli(["agent-token", "list"]);
    expectSuccess(listed);
    expect(listed.stdout).toContain(token.id);
    expect(listed.stdout).toMatch(new RegExp(`${token.id} .*web, worker`));
    expect(listed.stdout).not.toContain(token.token);
    const revoked = await cli(["agent-token", "revoke", token.id]);
    expectSuccess(revoked);
    expect(revoked.stdout).toContain("revoked");

    await enrolAgent(0, "agent-cli", ["nothing"]);
    const targets = await cli(["target", "list"]);
    expectSuccess(targets);
    expect(targets.stdout).toMatch(/agent-cli .*agent .*connected/);
    const shown = await cli(["target", "show", "agent-cli"]);
    expectSuccess(shown);
    expect(shown.stdout).toMatch(/credential:\s+set/);
    expectSuccess(await cli(["target", "rotate-credential", "agent-cli"]));
    const gone = await cli(["target", "revoke-credential", "agent-cli"]);
    expectSuccess(gone);
    expect(gone.stdout).toContain("revoked");
  });

  it("SIGTERM mid-step: the step gets the grace period, then is stopped and reported, and the agent exits 0", async () => {
    const { agent } = await enrolAgent(1, "agent-term", ["term"]);
    const markerDir = tempDir("ferry-agent-term-");
    chmodSync(markerDir, 0o777);
    const slug = await newProject([
      {
        name: "outlives-grace",
        kind: "script",
        roles: ["term"],
        config: { script: `echo started\nsleep 20\ntouch ${markerDir}/finished` },
      },
    ]);
    const taskId = await release(slug);
    await waitForLine(taskId, "started");
    // The agent was started with --stop-grace 2.
    agent.child.kill("SIGTERM");
    expect(await agent.exited).toBe(0);
    const task = await test.waitForTask(taskId, 30_000);
    expect(task.state).toBe("failed");
    expect(String(task.error)).toContain("was stopped (SIGTERM) while this step ran");
    expect(agent.output()).toContain("waiting up to 2 s for 1 running call(s)");
    expect(processesCarrying(`FERRY_TASK_ID=${taskId}`)).toEqual([]);
    expect(readdirSync(markerDir)).toEqual([]);
  });

  it("SIGTERM stops the agent cleanly and the target shows it gone at once", async () => {
    const { agent } = await enrolAgent(0, "agent-stopped", ["nothing"]);
    agent.child.kill("SIGTERM");
    expect(await agent.exited).toBe(0);
    expect(await agentState("agent-stopped")).toBe("lost");
  });
});

async function waitUntil(
  condition: () => boolean | Promise<boolean>,
  timeoutMs: number,
  detail: () => string = () => "",
): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!(await condition())) {
    if (Date.now() > deadline) throw new Error(`condition not met within ${timeoutMs} ms ${detail()}`);
    await sleep(100);
  }
}
