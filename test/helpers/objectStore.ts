import { type ChildProcess, execFile, spawn } from "node:child_process";
import { randomBytes } from "node:crypto";
import { mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { promisify } from "node:util";
import { freePort } from "./registry.js";

/**
 * A real S3-compatible object store for tests: Ceph's RADOS Gateway (Debian's `radosgw`,
 * Ceph 16) over a one-node Ceph cluster of its own — one monitor and one in-memory OSD
 * (memstore) — on loopback ports, in a temporary directory, with one S3 user. Each caller
 * starts its own, so test files run in parallel and leave nothing behind.
 * scripts/test-services.sh installs the packages and starts nothing.
 */

const run = promisify(execFile);
const START_TIMEOUT_MS = 90_000;

export interface TestObjectStore {
  /** "http://127.0.0.1:PORT": the gateway's S3 endpoint (path-style buckets). */
  endpoint: string;
  accessKeyId: string;
  secretAccessKey: string;
  close(): Promise<void>;
}

/**
 * Now and then (2 of ~6 starts here, under load) the new OSD is refused by its monitor at boot
 * ("mon_cmd_maybe_osd_create fail: 'wrong fsid'") and never comes up: a fresh cluster (new
 * directory, ports and fsid) is started then, up to three times.
 */
export async function startObjectStore(): Promise<TestObjectStore> {
  for (let attempt = 1; ; attempt++) {
    try {
      return await startCluster(attempt < 3 ? 40_000 : START_TIMEOUT_MS);
    } catch (error) {
      if (attempt >= 3) throw error;
      process.stderr.write(
        `[objectStore] attempt ${attempt} failed, starting a fresh cluster: ${(error as Error).message.split("\n")[0]}\n`,
      );
    }
  }
}

async function startCluster(osdTimeoutMs: number): Promise<TestObjectStore> {
  const directory = mkdtempSync(join(tmpdir(), "ferry-ceph-"));
  const daemons: ChildProcess[] = [];
  const close = async () => {
    await Promise.all(daemons.map(stop));
    rmSync(directory, { recursive: true, force: true });
  };
  try {
    const [monPort, gatewayPort] = [await freePort(), await freePort()];
    const conf = join(directory, "ceph.conf");
    for (const sub of ["mon", "osd", "run", "log", "rgw"]) mkdirSync(join(directory, sub));
    writeFileSync(conf, cephConf(directory, monPort, gatewayPort));
    const ceph = (program: string, ...args: string[]) =>
      run(program, ["--conf", conf, ...args], { timeout: START_TIMEOUT_MS, maxBuffer: 16 * 1024 * 1024 });
    const daemon = (program: string, ...args: string[]) => {
      // -f: in the foreground, so the daemon is this process's child and dies with close().
      const child = spawn(program, ["--conf", conf, "-f", ...args], { stdio: ["ignore", "ignore", "pipe"] });
      let errors = "";
      child.stderr?.on("data", (chunk: Buffer) => {
        errors = (errors + chunk.toString()).slice(-4000);
      });
      child.on("exit", (code) => {
        if (code) process.stderr.write(`[objectStore] ${program} exited ${code}: ${errors}\n`);
      });
      daemons.push(child);
    };

    await ceph("ceph-mon", "--mkfs", "-i", "a", "--keyring", "/dev/null");
    daemon("ceph-mon", "-i", "a");
    // The OSD's uuid given both times: one the monitor made up would not be the one mkfs writes.
    const osdUuid = crypto.randomUUID();
    await ceph("ceph", "osd", "create", osdUuid, "0");
    await ceph("ceph", "osd", "crush", "add", "osd.0", "1", "root=default", "host=localhost");
    await ceph("ceph-osd", "-i", "0", "--mkfs", "--osd-uuid", osdUuid);
    daemon("ceph-osd", "-i", "0");
    await until("the OSD is up", async () => (await ceph("ceph", "osd", "stat")).stdout.includes("1 up"), osdTimeoutMs);
    daemon("radosgw", "-n", "client.rgw");
    const endpoint = `http://127.0.0.1:${gatewayPort}`;
    await until("the gateway answers", async () => {
      const response = await fetch(endpoint).catch(() => undefined);
      return response?.status === 200;
    });
    const accessKeyId = `FERRYTEST${randomBytes(6).toString("hex").toUpperCase()}`;
    const secretAccessKey = randomBytes(24).toString("base64url");
    await ceph(
      "radosgw-admin",
      "-n",
      "client.rgw",
      "user",
      "create",
      "--uid",
      "ferry-test",
      "--display-name",
      "Ferry tests",
      "--access-key",
      accessKeyId,
      "--secret",
      secretAccessKey,
    );
    return { endpoint, accessKeyId, secretAccessKey, close };
  } catch (error) {
    const logs = ["mon.a", "osd.0", "client.rgw"]
      .map((name) => {
        try {
          return `--- ${name}\n${readFileSync(join(directory, "log", `${name}.log`), "utf8").slice(-2000)}`;
        } catch {
          return "";
        }
      })
      .join("\n");
    await close();
    throw new Error(`the test object store did not start: ${(error as Error).message}\n${logs}`);
  }
}

/** No authentication inside the cluster (it listens on loopback only); S3 requests are signed as usual. */
function cephConf(directory: string, monPort: number, gatewayPort: number): string {
  return `[global]
fsid = ${crypto.randomUUID()}
mon host = v1:127.0.0.1:${monPort}
mon initial members = a
auth cluster required = none
auth service required = none
auth client required = none
osd pool default size = 1
osd pool default min size = 1
osd pool default pg num = 8
osd pool default pgp num = 8
osd crush chooseleaf type = 0
mon allow pool size one = true
mon warn on pool no redundancy = false
mon data avail warn = 2
mon data avail crit = 1
ms bind ipv4 = true
ms bind ipv6 = false
run dir = ${directory}/run
log file = ${directory}/log/$name.log
pid file = ${directory}/run/$name.pid
admin socket = ${directory}/run/$name.asok
keyring = /dev/null
[mon.a]
mon data = ${directory}/mon
public addr = v1:127.0.0.1:${monPort}
[osd.0]
osd data = ${directory}/osd
public addr = 127.0.0.1
cluster addr = 127.0.0.1
osd objectstore = memstore
memstore device bytes = 2147483648
[client.rgw]
rgw frontends = beast endpoint=127.0.0.1:${gatewayPort}
rgw data = ${directory}/rgw
`;
}

async function until(what: string, check: () => Promise<boolean>, timeoutMs = START_TIMEOUT_MS): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    if (await check().catch(() => false)) return;
    if (Date.now() > deadline) throw new Error(`timed out waiting until ${what}`);
    await new Promise((resolve) => setTimeout(resolve, 250));
  }
}

async function stop(child: ChildProcess): Promise<void> {
  if (child.exitCode !== null || child.signalCode !== null) return;
  const exited = new Promise<void>((resolve) => child.once("exit", () => resolve()));
  child.kill("SIGTERM");
  const timer = setTimeout(() => child.kill("SIGKILL"), 10_000);
  await exited;
  clearTimeout(timer);
}
