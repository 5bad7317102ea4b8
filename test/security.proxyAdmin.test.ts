import { type ChildProcess, spawn } from "node:child_process";
import { mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, describe, expect, it } from "vitest";
import { expectSuccess, isolatedEnv, parseJson, runFerry } from "./helpers/cli.js";

/**
 * The admin API of a remote host's proxy (ADR 0031) listens on the host's 127.0.0.1 at the
 * target's adminPort, and `ferry proxy --detach`, which the server runs on the host, sends it
 * the bearer token. A loopback port belongs to whoever listens first: any account on the host
 * can take it while the proxy is down (a reboot, a proxy that fails to start). Found in review:
 * that account was sent the admin token, and Ferry then took it for the proxy. Here, a real
 * listener runs as another account (nobody) on the port, and the real bin/ferry is run as the
 * proxy's account would be.
 */

const NOBODY = 65534;

/** A listener as another account that prints each Authorization header it is sent and answers like a proxy with no routes. */
function squatAs(uid: number): Promise<{ port: number; child: ChildProcess; received: () => string }> {
  const script = `
    const http = require("node:http");
    const server = http.createServer((request, response) => {
      process.stdout.write("AUTH " + (request.headers.authorization ?? "") + "\\n");
      response.setHeader("content-type", "application/json");
      response.end('{"routes":[]}');
    });
    server.listen(0, "127.0.0.1", () => process.stdout.write("PORT " + server.address().port + "\\n"));
  `;
  const child = spawn(process.execPath, ["-e", script], { uid, gid: uid, cwd: "/", stdio: ["ignore", "pipe", "pipe"] });
  let output = "";
  child.stdout?.on("data", (chunk: Buffer) => {
    output += chunk.toString("utf8");
  });
  return new Promise((resolve, reject) => {
    child.once("exit", (code) => reject(new Error(`the listener exited (${code})`)));
    const timer = setInterval(() => {
      const port = /PORT (\d+)/.exec(output)?.[1];
      if (port) {
        clearInterval(timer);
        resolve({ port: Number(port), child, received: () => output });
      }
    }, 20);
  });
}

describe("a proxy's admin token and a loopback port another account took", { timeout: 60_000 }, () => {
  const directory = mkdtempSync(join(tmpdir(), "ferry-proxy-admin-"));
  const stateDir = join(directory, "state");
  const env = isolatedEnv(directory);
  let squatter: ChildProcess | undefined;

  afterAll(() => {
    squatter?.kill();
    // The proxy this test started (found by its state dir on its command line).
    for (const entry of readdirSync("/proc")) {
      if (!/^\d+$/.test(entry)) continue;
      try {
        if (readFileSync(`/proc/${entry}/cmdline`, "latin1").includes(stateDir)) process.kill(Number(entry));
      } catch {
        // Gone meanwhile.
      }
    }
    rmSync(directory, { recursive: true, force: true });
  });

  it.skipIf(process.getuid?.() !== 0)(
    "refuses to send the token to another account's listener, then serves the port once it is free",
    async () => {
      // A proxy ran here before (its token is in the state dir) and is down now; nobody took its port.
      mkdirSync(stateDir, { recursive: true, mode: 0o700 });
      const token = "token-of-the-proxy-that-ran-before-0123456789abcdef";
      writeFileSync(join(stateDir, "admin-token"), `${token}\n`, { mode: 0o600 });
      const squat = await squatAs(NOBODY);
      squatter = squat.child;

      const args = ["proxy", "--detach", "--json", "--state-dir", stateDir, "--listen", "127.0.0.1:0"];
      const refused = await runFerry([...args, "--admin-port", String(squat.port)], env);
      expect(refused.code, refused.stdout).not.toBe(0);
      expect(refused.stderr).toContain(`127.0.0.1:${squat.port} is held by another account (uid ${NOBODY})`);
      expect(refused.stderr).toContain("adminPort");
      expect(refused.stdout).not.toContain(token);
      // The other account was sent nothing with the token (nothing at all, in fact).
      expect(squat.received()).not.toContain(token);
      expect(squat.received()).not.toContain("AUTH");

      // Once that listener is gone, the proxy is started on the port and reported as usual.
      const exited = new Promise((resolve) => squat.child.once("exit", resolve));
      squat.child.kill();
      await exited;
      squatter = undefined;
      const started = await runFerry([...args, "--admin-port", String(squat.port)], env);
      expectSuccess(started);
      const answer = parseJson<{ running: boolean; started: boolean; admin: string; token: string }>(started);
      expect(answer).toMatchObject({ running: true, started: true, admin: `http://127.0.0.1:${squat.port}` });
      expect(answer.token).toBe(token);
    },
  );
});
