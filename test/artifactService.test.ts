import { randomBytes } from "node:crypto";
import { chmodSync, existsSync, mkdtempSync, readdirSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { PassThrough, Readable } from "node:stream";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { ArtifactService } from "../src/engine/artifacts.js";
import { LogMasker } from "../src/engine/logMasker.js";
import type { RunScope } from "../src/engine/processRunner.js";
import { TaskLog } from "../src/engine/taskLog.js";
import { directoryContent, largeObjectContent } from "../src/store/artifactContent.js";
import { listTaskArtifacts } from "../src/store/artifacts.js";
import { LocalTransport, localTarget } from "../src/transports/local.js";
import { dialects, openTestDatabase, type TestDatabase } from "./helpers/databases.js";

/**
 * The attach seam itself (ADR 0037) on a real store of each kind — files in a data directory
 * on SQLite, large objects on PostgreSQL — and the server's own host: what is over the size
 * limit, cancelled part-way or not a regular file is refused and leaves nothing stored.
 */
describe.each(dialects)("attaching artifacts (%s)", (dialect) => {
  let database: TestDatabase;
  let service: ArtifactService;
  let workRoot: string;
  let files: string;
  const scope: RunScope = {
    project: { id: "prj_test", slug: "shop", name: "Shop" },
    environment: { id: "env_test", slug: "prod", name: "Prod" },
    subject: { kind: "runbook", id: "rbk_test", slug: "backup", version: 1 },
  };

  /** The step context's seam for a fresh task (its own id: listings do not mix). */
  function stepArtifacts(signal = new AbortController().signal) {
    const taskId = `task_${randomBytes(6).toString("hex")}`;
    const log = new TaskLog(database.store.db, taskId);
    log.setMasker(new LogMasker(["s3cret-token-value"]));
    const target = localTarget(new LocalTransport(workRoot), undefined, { id: null, name: "this host", roles: [] });
    return { taskId, artifacts: service.forStep({ taskId, stepName: "dump", scope, target, log, signal }) };
  }

  /** What holds bytes now: files of the directory store, or large objects. */
  async function storedObjects(): Promise<number> {
    if (dialect === "sqlite") {
      const directory = join(database.dataDir, "artifacts");
      return existsSync(directory) ? readdirSync(directory).filter((name) => name.startsWith("art_")).length : 0;
    }
    const { rows } = await (await import("kysely")).sql<{
      n: string;
    }>`select count(*) as n from pg_largeobject_metadata`.execute(database.store.db);
    return Number(rows[0]?.n);
  }

  beforeAll(async () => {
    database = await openTestDatabase(dialect);
    workRoot = mkdtempSync(join(tmpdir(), "ferry-artifact-work-"));
    files = mkdtempSync(join(tmpdir(), "ferry-artifact-files-"));
    chmodSync(files, 0o755);
    service = new ArtifactService({
      context: database.context,
      content:
        dialect === "sqlite"
          ? directoryContent(database.store.db, join(database.dataDir, "artifacts"))
          : largeObjectContent(database.store.pgPool as NonNullable<typeof database.store.pgPool>),
      maxBytes: 1024 * 1024,
    });
  });

  afterAll(async () => {
    await database?.dispose();
    rmSync(workRoot, { recursive: true, force: true });
    rmSync(files, { recursive: true, force: true });
  });

  it("stores a host's file and bytes a step makes, with their size and SHA-256", async () => {
    const path = join(files, "dump.sql");
    const content = randomBytes(300_000);
    writeFileSync(path, content, { mode: 0o644 });
    const { taskId, artifacts } = stepArtifacts();
    const fromFile = await artifacts.attach({ name: "dump.sql", fromTargetPath: path });
    const made = await artifacts.attach({ name: "made.txt", stream: Readable.from([Buffer.from("hello\n")]) });
    const { createHash } = await import("node:crypto");
    expect(fromFile).toMatchObject({ size: 300_000, sha256: createHash("sha256").update(content).digest("hex") });
    expect(made).toMatchObject({ size: 6, sha256: createHash("sha256").update("hello\n").digest("hex") });
    const rows = await listTaskArtifacts(database.store.db, taskId);
    expect(rows.map((row) => [row.name, Number(row.size), row.runbook_id])).toEqual([
      ["dump.sql", 300_000, "rbk_test"],
      ["made.txt", 6, "rbk_test"],
    ]);
    const read: Buffer[] = [];
    for await (const chunk of service.content.read(rows[0]?.location ?? "")) read.push(chunk as Buffer);
    expect(Buffer.concat(read).equals(content)).toBe(true);
  });

  it("reads back bytes that span several reads exactly, and a removed one fails its read only", async () => {
    // 256 KiB per read on PostgreSQL (ADR 0043): two full slices and a partial one, in odd-sized chunks.
    const content = randomBytes(2 * 256 * 1024 + 12_345);
    const chunks = [content.subarray(0, 1), content.subarray(1, 70_001), content.subarray(70_001)];
    const { taskId, artifacts } = stepArtifacts();
    await artifacts.attach({ name: "odd.bin", stream: Readable.from(chunks) });
    await artifacts.attach({ name: "other.bin", stream: Readable.from([Buffer.from("still readable\n")]) });
    const [odd, other] = await listTaskArtifacts(database.store.db, taskId);
    const readAll = async (location: string) => {
      const read: Buffer[] = [];
      for await (const chunk of service.content.read(location)) read.push(chunk as Buffer);
      return Buffer.concat(read);
    };
    expect((await readAll(odd?.location ?? "")).equals(content)).toBe(true);
    await service.content.remove(odd?.location ?? "", database.store.db);
    await expect(readAll(odd?.location ?? "")).rejects.toThrow(dialect === "sqlite" ? "ENOENT" : "does not exist");
    // Another read, and a write, on the same pool afterwards.
    expect((await readAll(other?.location ?? "")).toString()).toBe("still readable\n");
    const again = await artifacts.attach({ name: "after.bin", stream: Readable.from([content.subarray(0, 1000)]) });
    expect(again.size).toBe(1000);
  });

  it("refuses what passes the size limit, keeping nothing of it", async () => {
    const before = await storedObjects();
    const { taskId, artifacts } = stepArtifacts();
    await expect(
      artifacts.attach({ name: "big.bin", stream: Readable.from([randomBytes(700_000), randomBytes(700_000)]) }),
    ).rejects.toThrow("larger than the server's limit of 1048576 bytes (FERRY_ARTIFACT_MAX_BYTES); nothing was kept");
    expect(await listTaskArtifacts(database.store.db, taskId)).toEqual([]);
    expect(await storedObjects()).toBe(before);
  });

  it("keeps nothing of an attach cancelled part-way", async () => {
    const before = await storedObjects();
    const controller = new AbortController();
    const { taskId, artifacts } = stepArtifacts(controller.signal);
    const source = new PassThrough();
    source.write(randomBytes(100_000));
    const attached = artifacts.attach({ name: "slow.bin", stream: source });
    setTimeout(() => controller.abort(new Error("cancelled by a person")), 200);
    await expect(attached).rejects.toThrow("cancelled by a person");
    expect(await listTaskArtifacts(database.store.db, taskId)).toEqual([]);
    expect(await storedObjects()).toBe(before);
  });

  it("refuses what is not a regular file, a missing one, and a name with a sensitive value or a path", async () => {
    const { taskId, artifacts } = stepArtifacts();
    await expect(artifacts.attach({ name: "zero", fromTargetPath: "/dev/zero" })).rejects.toThrow(
      "there is no regular file /dev/zero on this host",
    );
    await expect(artifacts.attach({ name: "dir", fromTargetPath: files })).rejects.toThrow("no regular file");
    await expect(artifacts.attach({ name: "gone", fromTargetPath: join(files, "missing") })).rejects.toThrow(
      "no regular file",
    );
    await expect(artifacts.attach({ name: "rel", fromTargetPath: "relative/path" })).rejects.toThrow("absolute path");
    const secret = artifacts.attach({ name: "dump-s3cret-token-value.sql", stream: Readable.from([Buffer.from("x")]) });
    await expect(secret).rejects.toThrow("its name holds a sensitive value");
    await expect(secret).rejects.not.toThrow("s3cret-token-value");
    const secretPath = artifacts.attach({ name: "x.sql", fromTargetPath: join(files, "s3cret-token-value.sql") });
    await expect(secretPath).rejects.toThrow("its path holds a sensitive value");
    await expect(secretPath).rejects.not.toThrow("s3cret-token-value");
    await expect(artifacts.attach({ name: "../x", stream: Readable.from([Buffer.from("x")]) })).rejects.toThrow(
      "one file name",
    );
    expect(await listTaskArtifacts(database.store.db, taskId)).toEqual([]);
  });
});
