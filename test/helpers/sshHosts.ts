import { type ChildProcess, execFileSync, spawn } from "node:child_process";
import { randomBytes } from "node:crypto";
import {
  existsSync,
  mkdirSync,
  mkdtempSync,
  readdirSync,
  readFileSync,
  rmdirSync,
  rmSync,
  statSync,
  writeFileSync,
} from "node:fs";
import { connect, createServer } from "node:net";
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

/**
 * The keep-alives of a test server whose tests cut these hosts' links (FERRY_SSH_KEEPALIVE_*):
 * it gives up on a cut host after 6–8 s instead of the default 30–40 s. Three unanswered in a
 * row still leaves a loaded machine's sshd seconds to answer one.
 */
export const TEST_SSH_KEEPALIVE = { intervalMs: 2000, countMax: 3 };

const SLOT_DIRECTORY = "/tmp/ferry-netns-slots";
const PREFIX = "ferry-ssh-";
/** Engines' directories, one per namespace host (short: containerd's socket path under it must fit 108 bytes). */
const ENGINE_DIRECTORY = "/tmp/ferry-netns-engines";
/** Containers of test engines run under this cgroup parent (+ the namespace), so a killed run's are found. */
const CGROUP_PREFIX = "ferry-netns-";

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
  /** The host's own Docker engine, for hosts started with one (`engines` of startSshHosts). */
  engine: HostEngine | undefined;
}

/** A dockerd of one namespace host, whose socket its sshd sees at /var/run/docker.sock. */
interface HostEngine {
  /** The engine's socket on this machine (for dockerode or `docker -H unix://…` from the test). */
  socket: string;
  /** Runs the docker CLI against this engine (argv, no shell); returns stdout. */
  docker(args: readonly string[]): string;
}

export interface StartSshHostsOptions {
  /** How many of the hosts (the first ones) run a Docker engine of their own. */
  engines?: number;
  /**
   * Registries (http://127.0.0.1:PORT) the engines pull from: each host's loopback gets the
   * same address, forwarded over its namespace link to the registry on this machine, so a
   * release's image reference means the same on every host.
   */
  registries?: readonly string[];
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
/**
 * The test hosts share this machine's /root, whose .bashrc runs `pyenv init` (a pyenv rehash)
 * in every SSH session. A session killed during a rehash (as tests that cut links do) leaves
 * pyenv's lock behind, and every later session waits on it until its operations time out.
 * pyenv holds the lock for milliseconds: one older than a minute is stale. Not Ferry's: this
 * machine's (a fresh CI machine of this kind has pyenv too).
 */
function removeStalePyenvLock(): void {
  const lock = "/root/.pyenv/shims/.pyenv-shim";
  try {
    if (Date.now() - statSync(lock).mtimeMs > 60_000) rmSync(lock, { force: true });
  } catch {
    // No pyenv, or no lock: nothing to do.
  }
}

function removeStale(): void {
  const namespaces = run("ip", ["netns", "list"])
    .split("\n")
    .map((line) => line.split(" ")[0] ?? "")
    .filter((name) => name.startsWith(PREFIX));
  for (const namespace of namespaces) {
    const pid = Number(namespace.slice(PREFIX.length).split("-")[0]);
    if (Number.isInteger(pid) && !isAlive(pid)) {
      removeEngineLeftovers(namespace);
      deleteNamespace(namespace);
    }
  }
  const leftovers = new Set<string>();
  if (existsSync(ENGINE_DIRECTORY)) for (const entry of readdirSync(ENGINE_DIRECTORY)) leftovers.add(entry);
  for (const entry of existsSync("/sys/fs/cgroup/pids") ? readdirSync("/sys/fs/cgroup/pids") : []) {
    if (entry.startsWith(CGROUP_PREFIX)) leftovers.add(entry.slice(CGROUP_PREFIX.length));
  }
  for (const entry of leftovers) {
    const pid = Number(entry.split("-")[0]);
    if (Number.isInteger(pid) && !isAlive(pid)) removeEngineLeftovers(`${PREFIX}${entry}`);
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

function engineDirectory(namespace: string): string {
  return join(ENGINE_DIRECTORY, namespace.slice(PREFIX.length));
}

/** Processes in the containers of a test engine (every cgroup controller's view of its parent). */
function containerProcesses(namespace: string): number[] {
  const pids = new Set<number>();
  const parent = `${CGROUP_PREFIX}${namespace.slice(PREFIX.length)}`;
  for (const controller of ["pids", "memory", "cpu", "systemd", "unified"]) {
    const root = join("/sys/fs/cgroup", controller, parent);
    if (!existsSync(root)) continue;
    for (const child of readdirSync(root, { withFileTypes: true })) {
      if (!child.isDirectory()) continue;
      try {
        for (const line of readFileSync(join(root, child.name, "cgroup.procs"), "utf8").split("\n")) {
          if (line) pids.add(Number(line));
        }
      } catch {
        // Gone meanwhile.
      }
    }
  }
  return [...pids];
}

/** Processes whose command line names a path under the directory (dockerd, containerd, shims). */
function processesUnder(directory: string): number[] {
  const found: number[] = [];
  for (const entry of readdirSync("/proc")) {
    if (!/^\d+$/.test(entry)) continue;
    try {
      if (readFileSync(`/proc/${entry}/cmdline`, "utf8").includes(directory)) found.push(Number(entry));
    } catch {
      // Gone meanwhile.
    }
  }
  return found;
}

/** Mount points under a directory (overlay layers, netns and shm mounts of an engine), deepest first. */
function mountsUnder(directory: string): string[] {
  return readFileSync("/proc/mounts", "utf8")
    .split("\n")
    .map((line) => line.split(" ")[1] ?? "")
    .filter((point) => point.startsWith(`${directory}/`))
    .sort((a, b) => b.length - a.length);
}

function removeCgroup(path: string): void {
  try {
    rmdirSync(path);
  } catch {
    // Still has processes (or is gone): the next run tries again.
  }
}

/**
 * What an engine of a namespace host leaves when its test process was killed: its daemons,
 * its containers' processes, their mounts and its directory. Idempotent.
 */
function removeEngineLeftovers(namespace: string): void {
  const directory = engineDirectory(namespace);
  for (const pid of [...processesUnder(directory), ...containerProcesses(namespace)]) killQuietly(pid);
  for (const point of mountsUnder(directory)) {
    try {
      run("umount", ["-l", point]);
    } catch {
      // Not mounted any more.
    }
  }
  // A cgroup directory goes with rmdir (its files are the kernel's), once its processes are gone.
  const parent = `${CGROUP_PREFIX}${namespace.slice(PREFIX.length)}`;
  for (const controller of readdirSync("/sys/fs/cgroup")) {
    const root = join("/sys/fs/cgroup", controller, parent);
    if (!existsSync(root)) continue;
    for (const child of readdirSync(root, { withFileTypes: true })) {
      if (child.isDirectory()) removeCgroup(join(root, child.name));
    }
    removeCgroup(root);
  }
  rmSync(directory, { recursive: true, force: true });
}

/**
 * Starts the host's own dockerd inside its namespace (network only: `nsenter --net`, since
 * `ip netns exec` remounts /sys and hides the cgroup hierarchies dockerd needs), with its own
 * data root, exec root, socket, pid file, cgroup parent and a bridge subnet of the host's own
 * (172.30.N.0/24), so nothing is shared with this machine's engine.
 */
async function startEngine(namespace: string, slot: number): Promise<{ engine: HostEngine; stop(): Promise<void> }> {
  const directory = engineDirectory(namespace);
  removeEngineLeftovers(namespace);
  mkdirSync(directory, { recursive: true });
  const socket = join(directory, "docker.sock");
  const daemon = spawn(
    "nsenter",
    [
      `--net=/var/run/netns/${namespace}`,
      "dockerd",
      "--data-root",
      join(directory, "data"),
      "--exec-root",
      join(directory, "exec"),
      "-H",
      `unix://${socket}`,
      "--pidfile",
      join(directory, "docker.pid"),
      "--bip",
      `172.30.${slot}.1/24`,
      "--cgroup-parent",
      `/${CGROUP_PREFIX}${namespace.slice(PREFIX.length)}`,
      "--log-level",
      "warn",
    ],
    { stdio: ["ignore", "ignore", "pipe"] },
  );
  let log = "";
  daemon.stderr?.on("data", (chunk: Buffer) => {
    log = (log + chunk.toString("utf8")).slice(-4000);
  });
  const docker = (args: readonly string[]) => run("docker", ["-H", `unix://${socket}`, ...args]);
  const deadline = Date.now() + 60_000;
  for (;;) {
    try {
      docker(["version", "--format", "{{.Server.Version}}"]);
      break;
    } catch (error) {
      if (daemon.exitCode !== null || Date.now() > deadline) {
        daemon.kill("SIGKILL");
        throw new Error(`dockerd of ${namespace} did not start: ${log || (error as Error).message}`);
      }
      await sleep(200);
    }
  }
  const stop = async () => {
    try {
      const containers = docker(["ps", "-aq"]).split("\n").filter(Boolean);
      if (containers.length > 0) docker(["rm", "-f", ...containers]);
    } catch {
      // The engine is gone already: the leftovers are removed below.
    }
    daemon.kill("SIGTERM");
    const stopped = await Promise.race([
      new Promise<boolean>((resolve) =>
        daemon.exitCode !== null ? resolve(true) : daemon.once("exit", () => resolve(true)),
      ),
      sleep(15_000).then(() => false),
    ]);
    if (!stopped) daemon.kill("SIGKILL");
    removeEngineLeftovers(namespace);
  };
  return { engine: { socket, docker }, stop };
}

/**
 * Makes 127.0.0.1:PORT inside the namespace reach 127.0.0.1:PORT of this machine (a test
 * registry), over the namespace link: a forwarder inside the namespace connects to the link's
 * address on this side, where one in this process passes the connection on. Two plain TCP
 * relays; the registry itself stays on this machine's loopback.
 */
async function forwardIntoNamespace(
  namespace: string,
  outsideAddress: string,
  port: number,
  children: ChildProcess[],
  cleanups: (() => void)[],
): Promise<void> {
  const outside = createServer((client) => {
    const upstream = connect({ host: "127.0.0.1", port });
    client.pipe(upstream).pipe(client);
    client.on("error", () => upstream.destroy());
    upstream.on("error", () => client.destroy());
  });
  await new Promise<void>((resolve, reject) => {
    outside.once("error", reject);
    outside.listen(port, outsideAddress, resolve);
  });
  cleanups.push(() => outside.close());
  const relay = [
    'const net = require("node:net");',
    "const [port, host] = process.argv.slice(1);",
    "net.createServer((client) => {",
    "  const upstream = net.connect({ host, port: Number(port) });",
    "  client.pipe(upstream).pipe(client);",
    '  client.on("error", () => upstream.destroy());',
    '  upstream.on("error", () => client.destroy());',
    '}).listen(Number(port), "127.0.0.1");',
  ].join("\n");
  children.push(
    spawn("ip", ["netns", "exec", namespace, process.execPath, "-e", relay, String(port), outsideAddress], {
      stdio: "ignore",
    }),
  );
  for (let tries = 0; ; tries++) {
    try {
      run("ip", ["netns", "exec", namespace, "bash", "-c", 'exec 3<>"/dev/tcp/127.0.0.1/$1"', "probe", String(port)]);
      return;
    } catch (error) {
      if (tries > 100) throw error;
      await sleep(50);
    }
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
      // As docs/targets.md recommends: sshd notices a server that went away (a cut link) and ends
      // its session. Not shorter: a session killed while root's shell starts can leave pyenv's
      // rehash lock (~/.pyenv/shims/.pyenv-shim) behind on this machine, and every later root
      // session (all namespaces share the home directory) then waits 60 s for it.
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

/**
 * Starts `count` hosts, each with sshd accepting the returned key for root; the first
 * `options.engines` of them with a Docker engine of their own, which their sshd (and so a
 * Ferry target there) sees as /var/run/docker.sock.
 */
export async function startSshHosts(count: number, options: StartSshHostsOptions = {}): Promise<SshHosts> {
  removeStale();
  removeStalePyenvLock();
  // sshd's privilege separation directory (a systemd unit would create it).
  mkdirSync("/run/sshd", { recursive: true, mode: 0o755 });
  const directory = mkdtempSync(join(tmpdir(), "ferry-ssh-hosts-"));
  const privateKeyFile = join(directory, "client_key");
  run("ssh-keygen", ["-q", "-t", "ed25519", "-N", "", "-C", "ferry-test", "-f", privateKeyFile]);
  const authorizedKeys = join(directory, "authorized_keys");
  writeFileSync(authorizedKeys, readFileSync(`${privateKeyFile}.pub`), { mode: 0o600 });
  const hosts: SshHost[] = [];
  const cleanups: (() => void)[] = [];
  /** Engines stop first (their containers removed while the namespace still exists). */
  const engineStops: (() => Promise<void>)[] = [];
  const tag = randomBytes(2).toString("hex");
  /** One host; the hosts start side by side (their engines and sshds take seconds each). */
  const startHost = async (index: number): Promise<SshHost> => {
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
    let engine: HostEngine | undefined;
    if (index < (options.engines ?? 0)) {
      for (const registry of options.registries ?? []) {
        await forwardIntoNamespace(namespace, `10.231.${slot}.1`, Number(new URL(registry).port), children, cleanups);
      }
      const started = await startEngine(namespace, slot);
      engine = started.engine;
      engineStops.push(started.stop);
    }
    // Sessions run root's shell start-up files, and this machine's (a test machine's, not
    // a target host's) may run slow tools: pyenv's rehash there waits up to 60 s on a lock
    // that a session cut mid-start leaves behind. The hosts' sessions see empty ones.
    const emptyStartup = join(hostDirectory, "empty-startup");
    writeFileSync(emptyStartup, "");
    const startSshd = async () => {
      // `ip netns exec` gives sshd a mount namespace of its own: there the host's engine
      // socket is bound over /run/docker.sock, so its sessions (and the Docker socket
      // forwarded over SSH) reach this host's engine, as on a real host; and the empty
      // start-up files are bound over root's.
      const sshdCommand = ["/usr/sbin/sshd", "-D", "-f", config, "-E", join(hostDirectory, "sshd.log")];
      const prelude = [
        'if [ -n "$0" ]; then mount --bind "$0" /run/docker.sock; fi',
        'for file in /root/.bashrc /root/.profile /root/.bash_profile; do if [ -f "$file" ]; then mount --bind "$1" "$file"; fi; done',
        "shift",
        'exec "$@"',
      ].join("; ");
      sshd = spawn(
        "ip",
        ["netns", "exec", namespace, "sh", "-ec", prelude, engine?.socket ?? "", emptyStartup, ...sshdCommand],
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
      engine,
    };
    cleanups.push(() => {
      stopSshd();
      for (const child of children) child.kill("SIGKILL");
    });
    await startSshd();
    return host;
  };
  try {
    // Each host's synchronous set-up (its subnet, namespace and link) runs before its first
    // await, so they still happen one after another; the waits overlap.
    const started = await Promise.allSettled(Array.from({ length: count }, (_, index) => startHost(index)));
    for (const result of started) {
      if (result.status === "rejected") throw result.reason;
      hosts.push(result.value);
    }
  } catch (error) {
    await Promise.all(engineStops.map((stop) => stop()));
    for (const cleanup of cleanups.reverse()) cleanup();
    rmSync(directory, { recursive: true, force: true });
    throw error;
  }
  return {
    hosts,
    privateKey: readFileSync(privateKeyFile, "utf8"),
    privateKeyFile,
    async close() {
      await Promise.all(engineStops.map((stop) => stop()));
      for (const cleanup of cleanups.reverse()) cleanup();
      rmSync(directory, { recursive: true, force: true });
    },
  };
}
