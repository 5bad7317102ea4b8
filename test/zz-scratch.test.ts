import { expect, it } from "vitest";
import { SshConnections, SshTransport } from "../src/transports/ssh.js";
import { FERRY } from "./helpers/cli.js";
import { startSshHosts } from "./helpers/sshHosts.js";

it("debug detach over ssh", { timeout: 120_000 }, async () => {
  const hosts = await startSshHosts(1, { engines: 1 });
  const host = hosts.hosts[0]!;
  const pool = new SshConnections(async () => ({
    targetId: "t", targetName: "t", host: host.address, port: 22, user: "root", jumpHost: null,
    privateKey: hosts.privateKey, passphrase: undefined, hostKey: host.fingerprint, version: "1",
  }));
  const transport = new SshTransport(pool, "t");
  const lines: string[] = [];
  const started = Date.now();
  const exit = await transport.run({
    command: FERRY, args: ["proxy", "--detach", "--json", "--state-dir", "/tmp/pxtest2", "--listen", "0.0.0.0:8000", "--admin-port", "7999"],
    env: {}, cwd: "/", taskId: "ferry-router", timeoutMs: 60_000, signal: new AbortController().signal,
    onLine: (stream, text) => lines.push(`${Date.now() - started} ${stream}: ${text}`),
  });
  console.log(exit, Date.now() - started, lines);
  await pool.close();
  await hosts.close();
  expect(exit.code).toBe(0);
});
