import { setTimeout as sleep } from "node:timers/promises";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import type { SshConnectionSettings } from "../src/store/targets.js";
import { SshConnections, SshTransport } from "../src/transports/ssh.js";
import { type SshHosts, startSshHosts } from "./helpers/sshHosts.js";

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
});
