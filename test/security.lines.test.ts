import { execFileSync } from "node:child_process";
import { mkdtempSync, readFileSync, rmSync } from "node:fs";
import { type AddressInfo, connect, createServer, type Server, type Socket } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { setTimeout as sleep } from "node:timers/promises";
import { afterAll, beforeAll, describe, expect, it, onTestFinished } from "vitest";
import { startTestServer, type TestServer } from "./helpers/server.js";

/**
 * The per-address request line (src/api/addressQueue.ts, ADR 0026) attacked from outside,
 * against a real server over real TCP, with FERRY_REQUESTS_PER_ADDRESS=1 so that one held
 * request fills a client's line. 127.0.0.1 is the attacking client; 127.0.0.2 (another
 * loopback source address) is everyone else, whose requests show the server is answering.
 *
 * Found in the review of the agents and the line (both landed together):
 * 1. The agent protocol's routes were outside the line before they checked the credential:
 *    anyone could send any number of 1 MiB JSON bodies to /api/v1/agent/poll at once and have
 *    each parsed and looked up, the very flood the line bounds everywhere else.
 * 2. A request whose client left gave its place back at once, though its handler went on
 *    working (and a request that waited got to run, its place given back the moment it got
 *    it): a client that sent many requests and closed them all had them all run together.
 */

/** A raw HTTP/1.1 exchange; resolves with what came back once the server closes the connection. */
function exchange(port: number, text: string, from = "127.0.0.1"): { socket: Socket; answer: Promise<string> } {
  const socket = connect({ port, host: "127.0.0.1", localAddress: from });
  const answer = new Promise<string>((resolve) => {
    let received = "";
    socket.on("data", (chunk) => {
      received += chunk.toString("utf8");
    });
    socket.on("error", () => undefined);
    socket.on("close", () => resolve(received));
  });
  socket.write(text);
  return { socket, answer };
}

function request(method: string, path: string, headers: Record<string, string>, body?: string): string {
  const lines = [`${method} ${path} HTTP/1.1`, "host: ferry.test", "connection: close"];
  for (const [name, value] of Object.entries(headers)) lines.push(`${name}: ${value}`);
  if (body !== undefined) lines.push("content-type: application/json", `content-length: ${Buffer.byteLength(body)}`);
  return `${lines.join("\r\n")}\r\n\r\n${body ?? ""}`;
}

const statusOf = (answer: string) => Number(/^HTTP\/1\.1 (\d{3})/.exec(answer)?.[1] ?? 0);

/** Whether `answer` settles within `ms` (used only to show something is NOT answered while a line is full). */
async function settlesWithin(answer: Promise<unknown>, ms: number): Promise<boolean> {
  return Promise.race([answer.then(() => true), sleep(ms).then(() => false)]);
}

describe("the per-address line against a client that attacks it", { timeout: 30_000 }, () => {
  let test: TestServer;
  let port: number;
  const auth = () => ({ authorization: `Bearer ${test.apiKey}` });

  /**
   * Fills 127.0.0.1's only place: a sign-in whose body never finishes (its place is taken when
   * its headers arrive). Checked by another client's answered request, so the hold is in place.
   */
  async function holdTheLine(): Promise<() => void> {
    const hold = exchange(
      port,
      `POST /api/v1/session HTTP/1.1\r\nhost: ferry.test\r\ncontent-type: application/json\r\ncontent-length: 1000\r\n\r\n{"user`,
    );
    await sleep(200);
    expect(statusOf(await exchange(port, request("GET", "/healthz", {}), "127.0.0.2").answer)).toBe(200);
    return () => hold.socket.destroy();
  }

  /** A request from 127.0.0.1 answers (the line is free again). */
  async function lineIsFree(): Promise<void> {
    expect(statusOf(await exchange(port, request("GET", "/api/v1/projects", auth())).answer)).toBe(200);
  }

  beforeAll(async () => {
    test = await startTestServer({ requestsPerAddress: 1, agentTimeoutMs: 60_000 });
    port = Number(new URL(test.server.url).port);
    await test.call("POST", "/api/v1/environments", { name: "dev" });
  });

  afterAll(async () => {
    await test?.close();
  });

  it("keeps an unauthenticated request to the agent routes in its address's line", async () => {
    const release = await holdTheLine();
    onTestFinished(release);
    const poll = exchange(
      port,
      request(
        "POST",
        "/api/v1/agent/poll",
        { authorization: "Bearer ferry_agent_guessed" },
        JSON.stringify({ running: [], interrupted: [] }),
      ),
    );
    const tunnel = exchange(
      port,
      request("POST", "/api/v1/agent/tunnels/0000", { authorization: "Bearer ferry_agent_guessed" }, "{}"),
    );
    // Another client is answered meanwhile; these wait behind the held request, as a sign-in would.
    expect(statusOf(await exchange(port, request("GET", "/api/v1/projects", auth()), "127.0.0.2").answer)).toBe(200);
    expect(await settlesWithin(poll.answer, 700)).toBe(false);
    expect(await settlesWithin(tunnel.answer, 10)).toBe(false);
    release();
    // Then refused for what they are.
    expect(statusOf(await poll.answer)).toBe(401);
    expect(statusOf(await tunnel.answer)).toBe(401);
    await lineIsFree();
  });

  it("still lets an enrolled agent's held poll out of the line once its credential is checked", async () => {
    const token = (await test.call<{ token: string }>("POST", "/api/v1/agent-tokens", {})).body.token;
    const enrolled = await fetch(new URL("/api/v1/agent/enrol", test.server.url), {
      method: "POST",
      headers: { "content-type": "application/json" },
      body: JSON.stringify({ token, name: "behind-nat", environments: ["dev"] }),
    });
    expect(enrolled.status).toBe(201);
    const { credential } = (await enrolled.json()) as { credential: string };
    const poll = exchange(
      port,
      request(
        "POST",
        "/api/v1/agent/poll",
        { authorization: `Bearer ${credential}` },
        JSON.stringify({ running: [], interrupted: [] }),
      ),
    );
    // Held (the server has no work for it), yet the same address's next request is answered.
    for (let tries = 0; tries < 100; tries++) {
      const target = await test.call<{ agent: { state: string } }>("GET", "/api/v1/targets/behind-nat");
      if (target.body.agent.state === "connected") break;
      await sleep(50);
    }
    await lineIsFree();
    expect(await settlesWithin(poll.answer, 10)).toBe(false);
    poll.socket.destroy();
    // A tunnel the server never asked for is refused with a problem, not a reset connection.
    const tunnel = await exchange(
      port,
      request("POST", "/api/v1/agent/tunnels/never-asked", { authorization: `Bearer ${credential}` }, "{}"),
    ).answer;
    expect(statusOf(tunnel), tunnel).toBe(404);
    expect(tunnel).toContain("no such tunnel is waiting");
  });

  describe("a client that leaves", () => {
    let sshPort: number;
    let silent: Server;
    const connections: Socket[] = [];
    const directory = mkdtempSync(join(tmpdir(), "ferry-lines-"));

    beforeAll(async () => {
      // An "SSH host" that takes connections and never says a word: a trust request's handler
      // waits on it (up to its connect timeout) until the test ends the connection.
      silent = createServer((socket) => {
        socket.on("error", () => undefined);
        connections.push(socket);
      });
      await new Promise<void>((resolve) => silent.listen(0, "127.0.0.1", resolve));
      sshPort = (silent.address() as AddressInfo).port;
      execFileSync("ssh-keygen", ["-q", "-t", "ed25519", "-N", "", "-f", join(directory, "key")]);
      const created = await test.call("POST", "/api/v1/targets", {
        name: "silent",
        environments: ["dev"],
        transport: "ssh",
        ssh: {
          host: "127.0.0.1",
          port: sshPort,
          user: "deploy",
          privateKey: readFileSync(join(directory, "key"), "utf8"),
        },
      });
      expect(created.status, JSON.stringify(created.body)).toBe(201);
    });

    afterAll(async () => {
      for (const socket of connections) socket.destroy();
      await new Promise((resolve) => silent.close(resolve));
      rmSync(directory, { recursive: true, force: true });
    });

    it("keeps its place while its request's handler still works, so the next one waits", async () => {
      onTestFinished(() => {
        for (const socket of connections.splice(0)) socket.destroy();
      });
      const first = exchange(port, request("POST", "/api/v1/targets/silent/trust", auth(), "{}"));
      for (let tries = 0; tries < 200 && connections.length < 1; tries++) await sleep(25);
      expect(connections).toHaveLength(1);
      // The client gives up; the server's handler is still connecting to the host.
      first.socket.destroy();
      const second = exchange(port, request("POST", "/api/v1/targets/silent/trust", auth(), "{}"));
      expect(statusOf(await exchange(port, request("GET", "/healthz", {}), "127.0.0.2").answer)).toBe(200);
      await sleep(700);
      // One request of this client at a time: the second has not started its work.
      expect(connections).toHaveLength(1);
      // The first handler ends (the host hangs up): then the second runs.
      connections[0]?.destroy();
      for (let tries = 0; tries < 200 && connections.length < 2; tries++) await sleep(25);
      expect(connections).toHaveLength(2);
      connections[1]?.destroy();
      // Answered (the host hung up before showing a key), not dropped.
      expect(statusOf(await second.answer)).toBeGreaterThanOrEqual(400);
      await lineIsFree();
    });

    it("does no work at all for a request whose client left while it waited", async () => {
      const probe = (await test.call<{ key: string; id: string }>("POST", "/api/v1/api-keys", { name: "gone" })).body;
      const release = await holdTheLine();
      onTestFinished(release);
      const gone = exchange(port, request("GET", "/api/v1/projects", { authorization: `Bearer ${probe.key}` }));
      await sleep(200);
      gone.socket.destroy();
      release();
      await lineIsFree();
      await sleep(300);
      // Its key was never even checked (a checked key records when it was last used).
      const keys = await test.call<{ items: { id: string; lastUsedAt: string | null }[] }>("GET", "/api/v1/api-keys");
      expect(keys.body.items.find((key) => key.id === probe.id)?.lastUsedAt).toBeNull();
    });
  });
});
