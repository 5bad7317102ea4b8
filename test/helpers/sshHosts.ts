import { type ChildProcess, execFileSync, spawn } from "node:child_process";
import { randomBytes } from "node:crypto";
import { existsSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { connect } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { setTimeout as sleep } from "node:timers/promises";

/**
 * Real hosts for SSH targets on one machine (DESIGN.md "Proven on these machines"): each is
 * a network namespace joined to this one by a veth pair, with an address of its own
 * (10.231.N.2, this side 10.231.N.1) and Debian's sshd listening there with its own host key.
 * The namespaces share this machine's file system and users: work runs as root there.
 *
 * Namespace names carry the creating process's id, so parallel test files never collide and
 * leftovers of a killed run are removed by the next one. Subnets are claimed with an atomic
 * mkdir under /tmp/ferry-netns-slots.
 */

const SLOT_DIRECTORY = "/tmp/ferry-netns-slots";
const PREFIX = "ferry-ssh-";

interface SshHost {
  /** The namespace's name (for `ip netns exec`). */
  namespace: string;
  /** Where sshd listens, reachable from this namespace. */
  address: string;
  port: number;
  /** The host key's fingerprint as ssh-keygen -lf prints it. */
  fingerprint: string;
  /** Runs a command inside the host's namespace (argv, no shell); returns stdout. */
  exec(command: string, args: readonly string[]): string;
  /** Starts a long-running command inside the namespace; stopped by close(). */
  spawn(command: string, args: readonly string[]): ChildProcess;
  /** Gives sshd a new host key and restarts it; returns the new fingerprint. */
  replaceHostKey(): Promise<string>;
  /** Stops sshd: the host disappears. */
  stopSshd(): void;
  /** What sshd logged so far. */
  sshdLog(): string;
  /**
   * Starts a second sshd on the namespace's own loopback (127.0.0.1:port), with a host key of
   * its own: a host only this one can reach, as behind a bastion. Returns its fingerprint.
   */
  startLoopbackSshd(port: number): Promise<string>;
  /** Takes the host's network link down (or up again): the host is cut off, its processes go on. */
  setLink(up: boolean): void;
}

export interface SshHosts {
  hosts: SshHost[];
  /** The client key every host accepts (OpenSSH private key text). */
  privateKey: string;
  privateKeyFile: string;
  close(): Promise<void>;
}

const run = (command: string, args: readonly string[]) =>
  execFileSync(command, args, { encoding: "utf8", stdio: ["ignore", "pipe", "pipe"] });

function isAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
}

/** Namespaces and subnet claims of test processes that are gone (killed before they cleaned up). */
function removeStale(): void {
  const namespaces = run("ip", ["netns", "list"])
    .split("\n")
    .map((line) => line.split(" ")[0] ?? "")
    .filter((name) => name.startsWith(PREFIX));
  for (const namespace of namespaces) {
    const pid = Number(namespace.slice(PREFIX.length).split("-")[0]);
    if (Number.isInteger(pid) && !isAlive(pid)) deleteNamespace(namespace);
  }
  if (!existsSync(SLOT_DIRECTORY)) return;
  for (const slot of readdirSync(SLOT_DIRECTORY)) {
    const owner = Number(readFileSync(join(SLOT_DIRECTORY, slot, "pid"), "utf8").trim() || "0");
    if (!isAlive(owner)) rmSync(join(SLOT_DIRECTORY, slot), { recursive: true, force: true });
  }
}

function namespacePids(namespace: string): number[] {
  try {
    return run("ip", ["netns", "pids", namespace]).split("\n").filter(Boolean).map(Number);
  } catch {
    return [];
  }
}

function commandName(pid: number): string {
  try {
    return readFileSync(`/proc/${pid}/comm`, "utf8").trim();
  } catch {
    return "";
  }
}

function killQuietly(pid: number): void {
  try {
    process.kill(pid, "SIGKILL");
  } catch {
    // Gone already.
  }
}

function deleteNamespace(namespace: string): void {
  for (const pid of namespacePids(namespace)) killQuietly(pid);
  try {
    run("ip", ["netns", "del", namespace]);
  } catch {
    // Gone already.
  }
}

/** A free 10.231.N.0/24, claimed for this process. */
function claimSubnet(): number {
  mkdirSync(SLOT_DIRECTORY, { recursive: true });
  for (let attempt = 0; attempt < 500; attempt++) {
    const slot = 2 + Math.floor(Math.random() * 250);
    try {
      mkdirSync(join(SLOT_DIRECTORY, String(slot)));
    } catch {
      continue;
    }
    writeFileSync(join(SLOT_DIRECTORY, String(slot), "pid"), String(process.pid));
    return slot;
  }
  throw new Error("no free 10.231.N.0/24 for a test host");
}

/** An sshd configuration for a test host: key sign-in only, as root, forwarding allowed. */
function writeSshdConfig(
  file: string,
  options: { listen: string; port: number; hostKey: string; authorizedKeys: string; pidFile: string },
): void {
  writeFileSync(
    file,
    [
      `ListenAddress ${options.listen}`,
      `Port ${options.port}`,
      `HostKey ${options.hostKey}`,
      `AuthorizedKeysFile ${options.authorizedKeys}`,
      `PidFile ${options.pidFile}`,
      "PermitRootLogin prohibit-password",
      "PasswordAuthentication no",
      "KbdInteractiveAuthentication no",
      "UsePAM no",
      // The temporary directory is not root's home: skip the ownership checks meant for that.
      "StrictModes no",
      // As docs/targets.md recommends: sshd notices a server that went away (a cut link) and ends its session.
      "ClientAliveInterval 5",
      "ClientAliveCountMax 2",
      // DEBUG1 logs each forwarded channel (direct-streamlocal to the Docker socket…), which tests look for.
      "LogLevel DEBUG1",
      "AllowTcpForwarding yes",
      "AllowStreamLocalForwarding yes",
      "",
    ].join("\n"),
  );
}

function fingerprintOf(publicKeyFile: string): string {
  return run("ssh-keygen", ["-lf", publicKeyFile]).split(" ")[1] ?? "";
}

async function waitForPort(address: string, port: number, timeoutMs = 10_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const open = await new Promise<boolean>((resolve) => {
      const socket = connect({ host: address, port });
      socket.once("connect", () => {
        socket.destroy();
        resolve(true);
      });
      socket.once("error", () => resolve(false));
    });
    if (open) return;
    if (Date.now() > deadline) throw new Error(`nothing listens on ${address}:${port}`);
    await sleep(50);
  }
}

/** Starts `count` hosts, each with sshd accepting the returned key for root. */
export async function startSshHosts(count: number): Promise<SshHosts> {
  removeStale();
  // sshd's privilege separation directory (a systemd unit would create it).
  mkdirSync("/run/sshd", { recursive: true, mode: 0o755 });
  const directory = mkdtempSync(join(tmpdir(), "ferry-ssh-hosts-"));
  const privateKeyFile = join(directory, "client_key");
  run("ssh-keygen", ["-q", "-t", "ed25519", "-N", "", "-C", "ferry-test", "-f", privateKeyFile]);
  const authorizedKeys = join(directory, "authorized_keys");
  writeFileSync(authorizedKeys, readFileSync(`${privateKeyFile}.pub`), { mode: 0o600 });
  const hosts: SshHost[] = [];
  const cleanups: (() => void)[] = [];
  const tag = randomBytes(2).toString("hex");
  try {
    for (let index = 0; index < count; index++) {
      const slot = claimSubnet();
      cleanups.push(() => rmSync(join(SLOT_DIRECTORY, String(slot)), { recursive: true, force: true }));
      const namespace = `${PREFIX}${process.pid}-${tag}-${index}`;
      // Interface names have at most 15 characters.
      const outside = `fs${tag}${index}o`;
      const inside = `fs${tag}${index}i`;
      run("ip", ["netns", "add", namespace]);
      cleanups.push(() => deleteNamespace(namespace));
      run("ip", ["link", "add", outside, "type", "veth", "peer", "name", inside]);
      run("ip", ["link", "set", inside, "netns", namespace]);
      run("ip", ["addr", "add", `10.231.${slot}.1/24`, "dev", outside]);
      run("ip", ["link", "set", outside, "up"]);
      const inNamespace = (command: string, args: readonly string[]) =>
        run("ip", ["netns", "exec", namespace, command, ...args]);
      inNamespace("ip", ["addr", "add", `10.231.${slot}.2/24`, "dev", inside]);
      inNamespace("ip", ["link", "set", inside, "up"]);
      inNamespace("ip", ["link", "set", "lo", "up"]);
      const address = `10.231.${slot}.2`;
      const hostDirectory = join(directory, `host-${index}`);
      mkdirSync(hostDirectory);
      const hostKey = join(hostDirectory, "host_ed25519");
      const config = join(hostDirectory, "sshd_config");
      writeSshdConfig(config, {
        listen: address,
        port: 22,
        hostKey,
        authorizedKeys,
        pidFile: join(hostDirectory, "sshd.pid"),
      });
      let sshd: ChildProcess | undefined;
      const children: ChildProcess[] = [];
      const startSshd = async () => {
        sshd = spawn(
          "ip",
          ["netns", "exec", namespace, "/usr/sbin/sshd", "-D", "-f", config, "-E", join(hostDirectory, "sshd.log")],
          {
            stdio: "ignore",
          },
        );
        await waitForPort(address, 22);
      };
      // The listening sshd and every session it forked: open connections end with it, as when a host goes away.
      const stopSshd = () => {
        sshd?.kill("SIGKILL");
        sshd = undefined;
        for (const pid of namespacePids(namespace)) {
          if (commandName(pid) === "sshd") killQuietly(pid);
        }
      };
      const newHostKey = () => {
        rmSync(hostKey, { force: true });
        rmSync(`${hostKey}.pub`, { force: true });
        run("ssh-keygen", ["-q", "-t", "ed25519", "-N", "", "-f", hostKey]);
        return fingerprintOf(`${hostKey}.pub`);
      };
      const host: SshHost = {
        namespace,
        address,
        port: 22,
        fingerprint: newHostKey(),
        exec: inNamespace,
        spawn: (command, args) => {
          const child = spawn("ip", ["netns", "exec", namespace, command, ...args], { stdio: "ignore" });
          children.push(child);
          return child;
        },
        async replaceHostKey() {
          stopSshd();
          // Until the old sshd is gone its port is taken.
          for (let tries = 0; tries < 100; tries++) {
            try {
              await waitForPort(address, 22, 0);
              await sleep(20);
            } catch {
              break;
            }
          }
          host.fingerprint = newHostKey();
          await startSshd();
          return host.fingerprint;
        },
        stopSshd,
        async startLoopbackSshd(port) {
          const innerKey = join(hostDirectory, `inner_${port}`);
          run("ssh-keygen", ["-q", "-t", "ed25519", "-N", "", "-f", innerKey]);
          const innerConfig = join(hostDirectory, `sshd_inner_${port}`);
          writeSshdConfig(innerConfig, {
            listen: "127.0.0.1",
            port,
            hostKey: innerKey,
            authorizedKeys,
            pidFile: join(hostDirectory, `sshd_inner_${port}.pid`),
          });
          children.push(
            spawn(
              "ip",
              [
                "netns",
                "exec",
                namespace,
                "/usr/sbin/sshd",
                "-D",
                "-f",
                innerConfig,
                "-E",
                join(hostDirectory, `inner_${port}.log`),
              ],
              {
                stdio: "ignore",
              },
            ),
          );
          // Only reachable from inside the namespace: ask from there.
          for (let tries = 0; ; tries++) {
            try {
              inNamespace("bash", ["-c", 'exec 3<>"/dev/tcp/127.0.0.1/$1"', "probe", String(port)]);
              break;
            } catch (error) {
              if (tries > 100) throw error;
              await sleep(50);
            }
          }
          return fingerprintOf(`${innerKey}.pub`);
        },
        sshdLog: () => {
          try {
            return readFileSync(join(hostDirectory, "sshd.log"), "utf8");
          } catch {
            return "";
          }
        },
        setLink: (up) => run("ip", ["link", "set", outside, up ? "up" : "down"]),
      };
      cleanups.push(() => {
        stopSshd();
        for (const child of children) child.kill("SIGKILL");
      });
      await startSshd();
      hosts.push(host);
    }
  } catch (error) {
    for (const cleanup of cleanups.reverse()) cleanup();
    rmSync(directory, { recursive: true, force: true });
    throw error;
  }
  return {
    hosts,
    privateKey: readFileSync(privateKeyFile, "utf8"),
    privateKeyFile,
    async close() {
      for (const cleanup of cleanups.reverse()) cleanup();
      rmSync(directory, { recursive: true, force: true });
    },
  };
}
