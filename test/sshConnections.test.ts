import { execFileSync } from "node:child_process";
import { readFileSync } from "node:fs";
import { setTimeout as sleep } from "node:timers/promises";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import type { SshConnectionSettings } from "../src/store/targets.js";
import { SshConnections, SshTransport } from "../src/transports/ssh.js";
import { type SshHosts, startSshHosts, TEST_SSH_KEEPALIVE } from "./helpers/sshHosts.js";

/**
 * The SSH connection pool against a real sshd in a network namespace: operations on one
 * target share one connection, an unused one closes after the idle time, and changed settings
 * (a newly trusted key) get a new connection while the old one finishes its work.
 */
describe("SSH connection pool (real sshd)", () => {
  let hosts: SshHosts;
  let settings: SshConnectionSettings;

  /** Sign-ins sshd logged so far: one per connection. */
  const signIns = () => hosts.hosts[0]?.sshdLog().split("Accepted publickey").length ?? 1;

  beforeAll(async () => {
    hosts = await startSshHosts(1);
    const host = hosts.hosts[0];
    if (!host) throw new Error("no host");
    settings = {
      targetId: "tgt_pool",
      targetName: "pool",
      host: host.address,
      port: host.port,
      user: "root",
      jumpHost: null,
      privateKey: hosts.privateKey,
      passphrase: undefined,
      hostKey: host.fingerprint,
      version: "1",
    };
  });
  afterAll(async () => {
    await hosts?.close();
  });

  it("shares one connection between operations and closes it once unused for the idle time", async () => {
    const pool = new SshConnections(async () => settings, 1_000);
    const transport = new SshTransport(pool, settings.targetId);
    const before = signIns();
    const directories = await Promise.all(
      ["a-", "b-", "c-"].map((prefix) => transport.stepDirectory("task_pool", prefix)),
    );
    expect(new Set(directories).size).toBe(3);
    expect(await transport.readFile(`${directories[0]}/missing`)).toBeUndefined();
    expect(signIns() - before).toBe(1);
    expect(pool.size).toBe(1);
    await sleep(1_500);
    expect(pool.size).toBe(0);
    // The next operation connects again.
    await transport.finishTask("task_pool");
    expect(signIns() - before).toBe(2);
    await pool.close();
  });

  it("connects anew when the settings changed, and refuses a host key that is not the trusted one", async () => {
    let current = settings;
    const pool = new SshConnections(async () => current, 60_000);
    const transport = new SshTransport(pool, settings.targetId);
    const before = signIns();
    await transport.finishTask("task_pool");
    current = { ...settings, version: "2" };
    await transport.finishTask("task_pool");
    expect(signIns() - before).toBe(2);
    current = { ...settings, hostKey: `SHA256:${"B".repeat(43)}`, version: "3" };
    await expect(transport.stepDirectory("task_pool", "x-")).rejects.toThrow(
      `Ferry trusts SHA256:${"B".repeat(43)}, the host presents ssh-ed25519 ${settings.hostKey}`,
    );
    expect(signIns() - before).toBe(2);
    await pool.close();
    await expect(transport.stepDirectory("task_pool", "x-")).rejects.toThrow(/shutting down/);
  });

  /** Stops (or lets go on) every sshd of the host: the listener and each connection's, as a host that hangs. */
  const freezeSshd = (frozen: boolean) => {
    const host = hosts.hosts[0];
    if (!host) throw new Error("no host");
    const pids = execFileSync("ip", ["netns", "pids", host.namespace], { encoding: "utf8" })
      .split("\n")
      .filter(Boolean)
      .map(Number)
      .filter((pid) => {
        try {
          return readFileSync(`/proc/${pid}/comm`, "utf8").trim() === "sshd";
        } catch {
          return false;
        }
      });
    expect(pids.length).toBeGreaterThan(0);
    for (const pid of pids) process.kill(pid, frozen ? "SIGSTOP" : "SIGCONT");
  };

  it("gives up on a host that does not answer after the connect timeout, and never crashes on ssh2's later errors", async () => {
    // ssh2 emits "Timed out while waiting for handshake", then "Connection lost before
    // handshake" when it drops the socket: unheard, the second was an uncaught exception that
    // ended ferry server. The test listens for one, so that it fails instead of crashing.
    const uncaught: Error[] = [];
    const onUncaught = (error: Error) => uncaught.push(error);
    process.on("uncaughtException", onUncaught);
    const pool = new SshConnections(async () => ({ ...settings, version: "timeouts" }), 60_000, TEST_SSH_KEEPALIVE, {
      connectMs: 1_000,
      operationMs: 30_000,
    });
    const transport = new SshTransport(pool, settings.targetId);
    freezeSshd(true);
    try {
      const started = Date.now();
      await expect(transport.stepDirectory("task_pool", "x-")).rejects.toThrow(
        /no SSH answer from target 'pool' \(root@[0-9.]+:22\) within 1 s \(FERRY_SSH_CONNECT_TIMEOUT_SECONDS\)/,
      );
      expect(Date.now() - started).toBeLessThan(10_000);
      // What ssh2 raises after its timeout comes within moments of it.
      await sleep(3_000);
    } finally {
      freezeSshd(false);
      process.off("uncaughtException", onUncaught);
    }
    expect(uncaught.map((error) => error.message)).toEqual([]);
    // The host answering again, the next operation connects.
    expect(await transport.stepDirectory("task_pool", "x-")).toMatch(/x-/);
    await pool.close();
  });

  it("fails an operation the host leaves unanswered after the operation timeout, then works again", async () => {
    const pool = new SshConnections(async () => ({ ...settings, version: "operation" }), 60_000, TEST_SSH_KEEPALIVE, {
      connectMs: 15_000,
      operationMs: 1_500,
    });
    const transport = new SshTransport(pool, settings.targetId);
    // Connected first: it is the operation, not the connection, that hangs.
    await transport.stepDirectory("task_pool", "y-");
    freezeSshd(true);
    try {
      const started = Date.now();
      await expect(transport.stepDirectory("task_pool", "y-")).rejects.toThrow(
        /within 1\.5 s \(FERRY_SSH_OPERATION_TIMEOUT_SECONDS\)|longer than 1\.5 s \(FERRY_SSH_OPERATION_TIMEOUT_SECONDS\)/,
      );
      expect(Date.now() - started).toBeLessThan(10_000);
    } finally {
      freezeSshd(false);
    }
    expect(await transport.stepDirectory("task_pool", "y-")).toMatch(/y-/);
    await transport.finishTask("task_pool");
    await pool.close();
  });
});
