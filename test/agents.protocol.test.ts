import { chmodSync, existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import type { PollAnswer } from "../src/domain/agents.js";
import { AgentHost, ServerClient } from "../src/transports/agentHost.js";
import { LocalTransport } from "../src/transports/local.js";
import { startTestServer, type TestServer } from "./helpers/server.js";

/**
 * Exactly once when the way between server and agent loses or repeats answers: a real
 * server and ferry agent's own code (AgentHost) in this process, talking real HTTP, with a
 * client that drops the poll answer carrying a step (as a connection that died on the way
 * would) or hands it over several times. The step runs once either way.
 */
class FaultyClient extends ServerClient {
  mode: "drop" | "repeat" = "drop";
  dropped = 0;
  repeated = 0;
  #seen: PollAnswer["calls"] = [];
  /** Calls slipped into the next poll answer, as a server (or whoever answers in its place) might send them. */
  inject: PollAnswer["calls"] = [];
  /** The agent's answers to injected calls, by call id. */
  readonly injectedAnswers = new Map<string, unknown>();

  override async json(method: string, path: string, body: unknown, timeoutMs: number, signal?: AbortSignal) {
    if (path === "/api/v1/agent/events") {
      const events = (body as { events: { call: string }[] }).events;
      for (const event of events) {
        if (event.call.startsWith("injected-")) this.injectedAnswers.set(event.call, event);
      }
    }
    const answer = await super.json(method, path, body, timeoutMs, signal);
    if (path !== "/api/v1/agent/poll") return answer;
    const poll = answer as PollAnswer;
    if (this.inject.length > 0) {
      const calls = this.inject;
      this.inject = [];
      return { ...poll, calls: [...poll.calls, ...calls] };
    }
    const runs = poll.calls.filter((call) => call.operation === "run");
    if (this.mode === "drop" && runs.length > 0 && this.dropped === 0) {
      this.dropped++;
      throw new Error("socket hang up (the answer was lost on the way)");
    }
    if (this.mode === "repeat") {
      this.#seen.push(...runs);
      if (this.#seen.length > 0 && this.repeated < 5) {
        this.repeated++;
        return { ...poll, calls: [...poll.calls, ...this.#seen] };
      }
    }
    return answer;
  }
}

describe("agent calls when answers are lost or repeated", { timeout: 120_000 }, () => {
  let test: TestServer;
  const directory = mkdtempSync(join(tmpdir(), "ferry-agent-protocol-"));
  const stop = new AbortController();
  let client: FaultyClient;
  let running: Promise<number>;
  let releases = 0;

  beforeAll(async () => {
    test = await startTestServer({ agentTimeoutMs: 9_000 });
    await test.call("POST", "/api/v1/environments", { name: "dev" });
    await test.call("POST", "/api/v1/lifecycles", {
      name: "auto",
      phases: [{ environments: ["dev"], autoDeploy: true }],
    });
    const token = (await test.call<{ token: string }>("POST", "/api/v1/agent-tokens", {})).body.token;
    const enrolled = await fetch(new URL("/api/v1/agent/enrol", test.server.url), {
      method: "POST",
      headers: { "content-type": "application/json" },
      body: JSON.stringify({ token, name: "lossy", environments: ["dev"], roles: ["w"] }),
    });
    const { credential } = (await enrolled.json()) as { credential: string };
    client = new FaultyClient(new URL(test.server.url), credential);
    const workRoot = join(directory, "work");
    const host = new AgentHost({
      client,
      stateDir: join(directory, "state"),
      local: new LocalTransport(workRoot, { kind: "server" }),
      workRoot,
      dockerSocket: "/var/run/docker.sock",
      stopGraceMs: 1_000,
      log: () => {},
      saveCredential: async () => {},
    });
    running = host.run(stop.signal);
    for (let tries = 0; tries < 100; tries++) {
      const target = await test.call<{ agent: { state: string } }>("GET", "/api/v1/targets/lossy");
      if (target.body.agent.state === "connected") break;
      await new Promise((resolve) => setTimeout(resolve, 100));
    }
  });

  afterAll(async () => {
    stop.abort();
    await running;
    await test?.close();
    rmSync(directory, { recursive: true, force: true });
  });

  const deployCounting = async (name: string) => {
    const marker = join(directory, `${name}.count`);
    writeFileSync(marker, "");
    chmodSync(marker, 0o666);
    const project = await test.call<{ slug: string }>("POST", "/api/v1/projects", { name, lifecycle: "auto" });
    await test.call("PUT", `/api/v1/projects/${project.body.slug}/process`, {
      steps: [
        { name: "count", kind: "script", roles: ["w"], config: { script: `echo ran >> ${marker}; echo counted` } },
      ],
    });
    const created = await test.call<{ deployments: { taskId: string }[] }>(
      "POST",
      `/api/v1/projects/${project.body.slug}/releases`,
      { version: `1.0.${++releases}` },
    );
    const task = await test.waitForTask(created.body.deployments[0]?.taskId ?? "", 60_000);
    return { task, count: readFileSync(marker, "utf8") };
  };

  it("delivers a step again when the answer carrying it was lost, and it runs once", async () => {
    client.mode = "drop";
    const { task, count } = await deployCounting("dropped");
    expect(client.dropped).toBe(1);
    expect(task.state, JSON.stringify(task)).toBe("succeeded");
    expect(count).toBe("ran\n");
  });

  it("runs as a host service only its own ferry proxy or ferry processes, whatever program the call names", async () => {
    const marker = join(directory, "host-service-ran");
    client.inject = [
      {
        id: "injected-1",
        operation: "run",
        input: {
          command: "/bin/sh",
          args: ["-c", `touch ${marker}`],
          env: {},
          cwd: "/",
          taskId: "ferry-host",
          timeoutMs: 10_000,
          hostService: true,
        },
      },
    ];
    for (let tries = 0; tries < 200 && !client.injectedAnswers.has("injected-1"); tries++)
      await new Promise((resolve) => setTimeout(resolve, 50));
    expect(client.injectedAnswers.get("injected-1")).toMatchObject({
      kind: "error",
      message: expect.stringMatching(/only its own 'ferry proxy' and 'ferry processes'/),
    });
    expect(existsSync(marker)).toBe(false);
  });

  it("runs a step handed over several times once", async () => {
    client.mode = "repeat";
    const { task, count } = await deployCounting("repeated");
    // Give the repeats time to arrive after the step ended, too.
    for (let tries = 0; tries < 100 && client.repeated < 5; tries++)
      await new Promise((resolve) => setTimeout(resolve, 100));
    expect(client.repeated).toBeGreaterThan(1);
    expect(task.state, JSON.stringify(task)).toBe("succeeded");
    expect(readFileSync(join(directory, "repeated.count"), "utf8")).toBe("ran\n");
    expect(count).toBe("ran\n");
  });
});
