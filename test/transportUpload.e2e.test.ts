import { type ChildProcess, spawn } from "node:child_process";
import { createHash, randomBytes } from "node:crypto";
import {
  chmodSync,
  existsSync,
  mkdtempSync,
  readdirSync,
  readFileSync,
  rmSync,
  statSync,
  utimesSync,
  writeFileSync,
} from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { Readable } from "node:stream";
import { setTimeout as sleep } from "node:timers/promises";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { TaskFailure } from "../src/engine/types.js";
import type { SshConnectionSettings } from "../src/store/targets.js";
import { LocalTransport } from "../src/transports/local.js";
import { SshConnections, SshTransport } from "../src/transports/ssh.js";
import type { Transport } from "../src/transports/types.js";
import type { UploadSpec } from "../src/transports/upload.js";
import { FERRY } from "./helpers/cli.js";
import { waitUntil } from "./helpers/remoteHosts.js";
import { startTestServer, type TestServer } from "./helpers/server.js";
import { type SshHosts, startSshHosts } from "./helpers/sshHosts.js";

/**
 * Transport.upload on real hosts: the server's own, a namespace host over its real sshd, and
 * a real `ferry agent` (bin/ferry, the build) in a namespace dialling out to a real server.
 * What a user notices: a file arrives whole, with its mode, while its source is still being
 * read (never held whole in memory); a source that fails or lies, or a cancel, leaves nothing
 * under the path and no temporary file beside it. The namespaces share this machine's files,
 * so the test reads what each host wrote directly.
 */

const MiB = 1024 * 1024;
const TRANSPORTS = ["local", "ssh", "agent"] as const;
type Kind = (typeof TRANSPORTS)[number];

/** Deterministic bytes of a given size, produced chunk by chunk as they are read. */
function pattern(bytes: number, seed: string): { sha256: string; stream: (options?: StreamOptions) => Readable } {
  const chunk = (index: number, size: number) => {
    const block = createHash("sha256").update(`${seed}:${index}`).digest();
    return Buffer.alloc(size, block);
  };
  const CHUNK = 256 * 1024;
  const hash = createHash("sha256");
  for (let offset = 0, index = 0; offset < bytes; offset += CHUNK, index++) {
    hash.update(chunk(index, Math.min(CHUNK, bytes - offset)));
  }
  return {
    sha256: hash.digest("hex"),
    stream: (options = {}) => {
      let offset = 0;
      let index = 0;
      return new Readable({
        highWaterMark: CHUNK,
        async read() {
          if (options.failAt !== undefined && offset >= options.failAt) {
            this.destroy(new Error("the source's disk failed"));
            return;
          }
          if (offset >= bytes) {
            this.push(null);
            return;
          }
          await options.before?.(offset);
          const size = Math.min(CHUNK, bytes - offset);
          offset += size;
          this.push(chunk(index++, size));
        },
      });
    },
  };
}

interface StreamOptions {
  /** The source fails once it has given this many bytes. */
  failAt?: number;
  /** Awaited before each chunk, with the bytes given so far. */
  before?: (offset: number) => Promise<void>;
}

/** Temporary files an upload left in a directory (there should be none). */
const leftovers = (directory: string) =>
  existsSync(directory) ? readdirSync(directory).filter((name) => name.startsWith(".ferry-upload-")) : [];

describe("Transport.upload on the server's host, over SSH and through ferry agent (real sshd, real agent)", {
  timeout: 240_000,
}, () => {
  let hosts: SshHosts;
  let test: TestServer;
  let agent: ChildProcess | undefined;
  let agentOutput = "";
  const transports = new Map<Kind, Transport>();
  const temporary: string[] = [];
  const tempDir = (prefix: string) => {
    const directory = mkdtempSync(join(tmpdir(), prefix));
    temporary.push(directory);
    return directory;
  };
  /** A directory any account may write and replace files in (the agent writes as the task's own uid). */
  const sharedDir = (prefix: string) => {
    const directory = tempDir(prefix);
    chmodSync(directory, 0o777);
    return directory;
  };
  const transport = (kind: Kind) => {
    const found = transports.get(kind);
    if (!found) throw new Error(`no ${kind} transport`);
    return found;
  };
  const spec = (
    kind: Kind,
    path: string,
    bytes: number,
    sha256: string,
    extra: Partial<UploadSpec> = {},
  ): UploadSpec => ({
    taskId: `task_upload_${kind}`,
    path,
    mode: 0o640,
    bytes,
    sha256,
    directories: "private",
    timeoutMs: 120_000,
    signal: new AbortController().signal,
    ...extra,
  });

  beforeAll(async () => {
    hosts = await startSshHosts(1);
    const host = hosts.hosts[0];
    if (!host) throw new Error("no host");
    const gateway = host.address.replace(/\.2$/, ".1");
    host.exec("ip", ["route", "add", "default", "via", gateway]);
    test = await startTestServer({ host: gateway, agentTimeoutMs: 10_000 });
    transports.set("local", new LocalTransport(tempDir("ferry-upload-work-")));
    const settings: SshConnectionSettings = {
      targetId: "tgt_upload",
      targetName: "upload",
      host: host.address,
      port: host.port,
      user: "root",
      jumpHost: null,
      privateKey: hosts.privateKey,
      passphrase: undefined,
      hostKey: host.fingerprint,
      version: "1",
    };
    const pool = new SshConnections(async () => settings);
    transports.set("ssh", new SshTransport(pool, settings.targetId));

    expect((await test.call("POST", "/api/v1/environments", { name: "dev" })).status).toBe(201);
    const token = await test.call<{ token: string }>("POST", "/api/v1/agent-tokens", {});
    expect(token.status).toBe(201);
    const stateDir = tempDir("ferry-upload-agent-");
    writeFileSync(join(stateDir, "token"), token.body.token, { mode: 0o600 });
    const name = `upload-${randomBytes(3).toString("hex")}`;
    agent = spawn(
      "ip",
      [
        ...["netns", "exec", host.namespace, process.execPath, FERRY, "agent", "--server", test.server.url],
        ...["--state-dir", stateDir, "--stop-grace", "2", "--token-file", join(stateDir, "token")],
        ...["--name", name, "--environments", "dev", "--roles", "upload"],
      ],
      { stdio: ["ignore", "pipe", "pipe"] },
    );
    agent.stdout?.on("data", (chunk: Buffer) => {
      agentOutput += chunk.toString();
    });
    agent.stderr?.on("data", (chunk: Buffer) => {
      agentOutput += chunk.toString();
    });
    const targetOf = () => test.call<{ id: string; agent: { state: string } | null }>("GET", `/api/v1/targets/${name}`);
    await waitUntil(
      async () => (await targetOf()).body.agent?.state === "connected",
      "the agent is connected",
      30_000,
    ).catch((error: Error) => {
      throw new Error(`${error.message}\n${agentOutput}`);
    });
    transports.set("agent", test.server.agents.transport((await targetOf()).body.id, name));
  }, 120_000);

  afterAll(async () => {
    agent?.kill("SIGKILL");
    for (const kind of TRANSPORTS)
      await transports
        .get(kind)
        ?.finishTask(`task_upload_${kind}`)
        .catch(() => undefined);
    await test?.close();
    await hosts?.close();
    for (const directory of temporary) rmSync(directory, { recursive: true, force: true });
  });

  it.each(TRANSPORTS)(
    "%s: a 32 MiB file arrives whole, with its mode, in new private directories, while its source is still read",
    async (kind) => {
      const root = sharedDir(`ferry-upload-${kind}-`);
      const directory = join(root, "new", "deeper");
      const path = join(directory, "archive.bin");
      const bytes = 32 * MiB;
      const source = pattern(bytes, kind);
      let highestLag = 0;
      // Past 24 MiB, the source waits until the host has written all but 8 MiB of what it gave:
      // an upload that read its source whole before sending would never get there.
      const before = async (offset: number) => {
        if (offset < 24 * MiB) return;
        const written = () => {
          const [temporaryFile] = leftovers(directory);
          return temporaryFile === undefined ? 0 : statSync(join(directory, temporaryFile)).size;
        };
        await waitUntil(() => offset - written() <= 8 * MiB, `the host has written close to ${offset} bytes`, 60_000);
        highestLag = Math.max(highestLag, offset - written());
      };
      await transport(kind).upload(spec(kind, path, bytes, source.sha256), source.stream({ before }));
      expect(highestLag).toBeLessThanOrEqual(8 * MiB);
      expect(createHash("sha256").update(readFileSync(path)).digest("hex")).toBe(source.sha256);
      expect(statSync(path).mode & 0o777).toBe(0o640);
      expect(statSync(join(root, "new")).mode & 0o777).toBe(0o700);
      expect(leftovers(directory)).toEqual([]);
      if (kind === "agent") {
        // Written as the task's own account (the agent runs as root and gives each task a uid), never as the agent.
        expect(statSync(path).uid).not.toBe(0);
      }
    },
  );

  it.each(TRANSPORTS)("%s: takes a file another host streams (readStream, as the backup copy does)", async (kind) => {
    const sourceHost = new LocalTransport(tempDir("ferry-upload-source-work-"));
    const directory = await sourceHost.stepDirectory("task_upload_source", "backup-");
    const body = randomBytes(915_223);
    writeFileSync(join(directory, "dump.sql.gz"), body);
    const root = sharedDir(`ferry-upload-${kind}-`);
    const path = join(root, "vault", "dump.sql.gz");
    const source = await sourceHost.readStream(
      "task_upload_source",
      join(directory, "dump.sql.gz"),
      new AbortController().signal,
    );
    await transport(kind).upload(
      spec(kind, path, body.length, createHash("sha256").update(body).digest("hex"), { mode: 0o600 }),
      source,
    );
    expect(readFileSync(path).equals(body)).toBe(true);
    await sourceHost.finishTask("task_upload_source");
  });

  it.each(TRANSPORTS)("%s: replaces a file in place, and an empty file is a file", async (kind) => {
    const root = sharedDir(`ferry-upload-${kind}-`);
    const path = join(root, "config.yml");
    writeFileSync(path, "old: true\n");
    chmodSync(path, 0o666);
    const text = Buffer.from("new: true\n");
    const sha256 = createHash("sha256").update(text).digest("hex");
    await transport(kind).upload(
      spec(kind, path, text.length, sha256, { mode: 0o644, directories: "shared" }),
      Readable.from([text]),
    );
    expect(readFileSync(path, "utf8")).toBe("new: true\n");
    expect(statSync(path).mode & 0o777).toBe(0o644);
    const empty = join(root, "empty");
    await transport(kind).upload(
      spec(kind, empty, 0, createHash("sha256").digest("hex"), { mode: 0o600 }),
      Readable.from([]),
    );
    expect(statSync(empty).size).toBe(0);
    expect(leftovers(root)).toEqual([]);
  });

  it.each(TRANSPORTS)("%s: removes what an upload cut off a day ago left, never a fresh one", async (kind) => {
    const root = sharedDir(`ferry-upload-${kind}-`);
    for (const name of [".ferry-upload-stale123", ".ferry-upload-fresh456"]) {
      writeFileSync(join(root, name), "half a backup");
      chmodSync(join(root, name), 0o666);
    }
    const twoDaysAgo = new Date(Date.now() - 2 * 24 * 3600 * 1000);
    utimesSync(join(root, ".ferry-upload-stale123"), twoDaysAgo, twoDaysAgo);
    const text = Buffer.from("whole\n");
    await transport(kind).upload(
      spec(kind, join(root, "dump.sql.gz"), text.length, createHash("sha256").update(text).digest("hex")),
      Readable.from([text]),
    );
    expect(leftovers(root)).toEqual([".ferry-upload-fresh456"]);
  });

  it.each(TRANSPORTS)(
    "%s: a source that fails part-way writes nothing, leaves no temporary file, and says so",
    async (kind) => {
      const root = sharedDir(`ferry-upload-${kind}-`);
      const path = join(root, "backup.sql.gz");
      writeFileSync(path, "the previous backup");
      const source = pattern(8 * MiB, `${kind}-fail`);
      const failure = await transport(kind)
        .upload(spec(kind, path, 8 * MiB, source.sha256), source.stream({ failAt: 3 * MiB }))
        .then(
          () => undefined,
          (error: unknown) => error,
        );
      expect(failure).toBeInstanceOf(TaskFailure);
      expect((failure as Error).message).toContain(path);
      expect((failure as Error).message).toContain("the source's disk failed");
      expect(readFileSync(path, "utf8")).toBe("the previous backup");
      await waitUntil(() => leftovers(root).length === 0, "the temporary file is removed", 20_000);
    },
  );

  it.each(TRANSPORTS)(
    "%s: bytes other than announced (fewer, more, changed) are refused and write nothing",
    async (kind) => {
      const root = sharedDir(`ferry-upload-${kind}-`);
      const path = join(root, "package.tar.gz");
      const body = randomBytes(100_000);
      const sha256 = createHash("sha256").update(body).digest("hex");
      const attempt = (bytes: number, announced: string, source: Buffer) =>
        transport(kind)
          .upload(spec(kind, path, bytes, announced), Readable.from([source]))
          .then(
            () => "written",
            (error: Error) => error.message,
          );
      expect(await attempt(body.length + 1, sha256, body)).toContain(`has ${body.length} of ${body.length + 1} bytes`);
      expect(await attempt(body.length - 1, sha256, body)).toContain(`more than ${body.length - 1} bytes`);
      const changed = Buffer.from(body);
      changed[500] = (changed[500] ?? 0) ^ 1;
      expect(await attempt(body.length, sha256, changed)).toContain(`not ${sha256}`);
      expect(existsSync(path)).toBe(false);
      await waitUntil(() => leftovers(root).length === 0, "no temporary file is left", 20_000);
      // A request the host cannot take is refused before a byte goes, naming what is wrong.
      expect(await attempt(1, "not-a-sha", body.subarray(0, 1))).toContain("sha256");
      expect(
        await transport(kind)
          .upload(spec(kind, "relative/path", 1, sha256), Readable.from([body.subarray(0, 1)]))
          .then(
            () => "written",
            (error: Error) => error.message,
          ),
      ).toContain("not an absolute path");
    },
  );

  it.each(TRANSPORTS)("%s: a cancel mid-upload stops it: nothing written, no temporary file", async (kind) => {
    const root = sharedDir(`ferry-upload-${kind}-`);
    const path = join(root, "slow.bin");
    const source = pattern(16 * MiB, `${kind}-slow`);
    const controller = new AbortController();
    const before = async (offset: number) => {
      if (offset >= 2 * MiB) {
        controller.abort(new TaskFailure("cancelled"));
        await sleep(50);
      }
    };
    const failure = await transport(kind)
      .upload(spec(kind, path, 16 * MiB, source.sha256, { signal: controller.signal }), source.stream({ before }))
      .then(
        () => undefined,
        (error: unknown) => error,
      );
    expect(failure).toBeInstanceOf(TaskFailure);
    expect(existsSync(path)).toBe(false);
    await waitUntil(() => leftovers(root).length === 0, "the temporary file is removed", 20_000);
  });
});
