import { createHash, randomBytes } from "node:crypto";
import { chmodSync, mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import {
  CreateBucketCommand,
  GetObjectCommand,
  ListMultipartUploadsCommand,
  ListObjectsV2Command,
  S3Client,
} from "@aws-sdk/client-s3";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { parseOutboundAllow } from "../src/security/outboundGuard.js";
import { type BucketCopy, copyToBucket } from "../src/steps/operations/copyToBucket.js";
import type { StepRunContext } from "../src/steps/types.js";
import { LocalTransport } from "../src/transports/local.js";
import type { Target } from "../src/transports/types.js";
import { startObjectStore, type TestObjectStore } from "./helpers/objectStore.js";
import { runRunbook } from "./helpers/runbooks.js";
import { connectionConfig, type SeededDatabase, seedMysql, seedPostgres } from "./helpers/seededDatabases.js";
import { startTestServer, type TestServer } from "./helpers/server.js";

/**
 * Issue 14, the backup's second location in an S3-compatible bucket, against a real one:
 * Ceph's RADOS Gateway (Debian's radosgw) over a one-node Ceph cluster of the test's own
 * (test/helpers/objectStore.ts). A runbook backs up real PostgreSQL and MariaDB databases
 * into artifacts and objects whose bytes are the artifacts'; the secret key (a sensitive
 * variable) is in no log line, answer or command line. The copy itself: multipart and
 * single-part uploads byte for byte; bytes that are not the backup's leave no object and no
 * unfinished upload; wrong credentials, a missing bucket and an endpoint the outbound guard
 * refuses each fail with what to do and no credential.
 */

type Body = Record<string, unknown>;

describe("backups copied to an S3-compatible bucket (Ceph RADOS Gateway)", () => {
  let store: TestObjectStore;
  let s3: S3Client;
  let test: TestServer;
  let postgres: SeededDatabase;
  let mysql: SeededDatabase;
  const bucket = "shop-backups";
  const root = mkdtempSync(join(tmpdir(), "ferry-s3copy-"));

  const objects = async (prefix: string) =>
    ((await s3.send(new ListObjectsV2Command({ Bucket: bucket, Prefix: prefix }))).Contents ?? []).map(
      (object) => object.Key,
    );
  const objectBytes = async (key: string) =>
    Buffer.from(
      await ((await s3.send(new GetObjectCommand({ Bucket: bucket, Key: key }))).Body?.transformToByteArray() ?? []),
    );
  const sha256 = (bytes: Buffer) => createHash("sha256").update(bytes).digest("hex");

  async function admin<T = Body>(method: string, path: string, body?: unknown): Promise<T> {
    const response = await test.call<T>(method, path, body);
    expect(response.status, `${method} ${path}: ${JSON.stringify(response.body)}`).toBeLessThan(300);
    return response.body;
  }

  beforeAll(async () => {
    [store, postgres, mysql] = await Promise.all([startObjectStore(), seedPostgres(), seedMysql()]);
    test = await startTestServer({ outbound: parseOutboundAllow(new URL(store.endpoint).host) });
    s3 = new S3Client({
      endpoint: store.endpoint,
      region: "us-east-1",
      forcePathStyle: true,
      credentials: { accessKeyId: store.accessKeyId, secretAccessKey: store.secretAccessKey },
    });
    await s3.send(new CreateBucketCommand({ Bucket: bucket }));
    await admin("POST", "/api/v1/environments", { name: "prod" });
    await admin("POST", "/api/v1/lifecycles", { name: "standard", phases: [{ environments: ["prod"] }] });
    await admin("POST", "/api/v1/projects", { name: "shop", lifecycle: "standard" });
    for (const [name, value, sensitive] of [
      ["PgPassword", postgres.password, true],
      ["MyPassword", mysql.password, true],
      ["S3.Endpoint", store.endpoint, false],
      ["S3.AccessKeyId", store.accessKeyId, false],
      ["S3.SecretAccessKey", store.secretAccessKey, true],
    ] as const) {
      await admin("POST", "/api/v1/projects/shop/variables", { name, value, sensitive });
    }
  }, 180_000);

  afterAll(async () => {
    s3?.destroy();
    await test?.close();
    await postgres?.drop();
    await mysql?.drop();
    await store?.close();
    rmSync(root, { recursive: true, force: true });
  });

  it("backs up PostgreSQL and MariaDB into artifacts and objects in the bucket with the same bytes; the secret key shows nowhere", async () => {
    const s3Copy = (prefix: string) => ({
      s3: {
        bucket,
        prefix,
        endpoint: "#{S3.Endpoint}",
        accessKeyId: "#{S3.AccessKeyId}",
        secretAccessKey: "#{S3.SecretAccessKey}",
      },
    });
    const { state, taskId, log, exposed } = await runRunbook(test, "shop", {
      name: "Backup to S3",
      steps: [
        {
          name: "pg",
          kind: "postgres-backup",
          config: {
            ...connectionConfig(postgres, "#{PgPassword}"),
            copyTo: s3Copy("shop/#{Ferry.Environment.Name}/pg/"),
          },
        },
        {
          name: "my",
          kind: "mysql-backup",
          config: { ...connectionConfig(mysql, "#{MyPassword}"), copyTo: s3Copy("shop/#{Ferry.Environment.Name}/my/") },
        },
      ],
      timeoutMs: 240_000,
      watch: [store.secretAccessKey],
    });
    expect(state, log).toBe("succeeded");

    const listed = await admin<unknown>("GET", `/api/v1/tasks/${taskId}/artifacts`);
    const artifacts = (Array.isArray(listed) ? listed : (listed as { items: unknown[] }).items) as {
      id: string;
      name: string;
      sha256: string;
      step: string;
    }[];
    expect(artifacts.map((artifact) => artifact.step)).toEqual(["pg", "my"]);
    for (const [artifact, prefix] of [
      [artifacts[0], "shop/prod/pg/"],
      [artifacts[1], "shop/prod/my/"],
    ] as const) {
      const key = `${prefix}${artifact?.name}`;
      expect(await objects(prefix)).toEqual([key]);
      const stored = await objectBytes(key);
      expect(sha256(stored)).toBe(artifact?.sha256);
      const response = await fetch(new URL(`/api/v1/artifacts/${artifact?.id}/content`, test.server.url), {
        headers: { authorization: `Bearer ${test.apiKey}` },
      });
      expect(Buffer.from(await response.arrayBuffer()).equals(stored)).toBe(true);
      expect(log).toContain(
        `copied to s3://${bucket}/${key} (${stored.length} bytes, sha256 ${artifact?.sha256}, read back)`,
      );
    }

    // The step's outputs name the copy; the secret is in no log line, answer or command line.
    const steps = JSON.stringify(await admin<unknown>("GET", `/api/v1/tasks/${taskId}`));
    expect(steps).not.toContain(store.secretAccessKey);
    expect(log).not.toContain(store.secretAccessKey);
    const audit = JSON.stringify(await admin<unknown>("GET", "/api/v1/audit?limit=200"));
    expect(audit).not.toContain(store.secretAccessKey);
    expect(exposed).toEqual([]);
  }, 300_000);

  describe("the copy itself", () => {
    const lines: string[] = [];
    const host = new LocalTransport(join(root, "work"));
    const policy = () => parseOutboundAllow(new URL(store.endpoint).host);
    const context = () =>
      ({
        taskId: "task_s3copytest",
        stepName: "backup",
        signal: new AbortController().signal,
        outbound: policy(),
        log: {
          info: (text: string) => lines.push(text),
          warn: (text: string) => lines.push(text),
          error: (text: string) => lines.push(text),
          redact: (text: string) => text,
        },
        target: { id: "db-1", slug: "db-1", name: "db-1", roles: [], transport: host } as unknown as Target,
      }) as unknown as StepRunContext;
    const copyConfig = (overrides: Partial<BucketCopy> = {}): BucketCopy => ({
      bucket,
      prefix: "direct/",
      region: "us-east-1",
      endpoint: new URL(store.endpoint),
      forcePathStyle: true,
      credentials: { accessKeyId: store.accessKeyId, secretAccessKey: store.secretAccessKey },
      storageClass: undefined,
      ...overrides,
    });
    const file = (name: string, size: number) => {
      const bytes = randomBytes(size);
      const path = join(root, name);
      writeFileSync(path, bytes);
      chmodSync(root, 0o755);
      return { path, name, bytes: size, sha256: sha256(bytes), content: bytes };
    };

    it("uploads a file of several parts byte for byte and one of a single part", async () => {
      for (const { name, size } of [
        { name: "big.sql.gz", size: 19 * 1024 * 1024 + 4321 },
        { name: "small.sql.gz", size: 70_000 },
      ]) {
        const source = file(name, size);
        const copied = await copyToBucket(context(), source, copyConfig(), 120);
        expect(copied).toEqual({ url: `s3://${bucket}/direct/${name}`, key: `direct/${name}` });
        expect((await objectBytes(`direct/${name}`)).equals(source.content)).toBe(true);
      }
    }, 180_000);

    it("leaves no object and no unfinished upload when the bytes read are not the backup's", async () => {
      for (const { name, size } of [
        { name: "changed-big.sql.gz", size: 18 * 1024 * 1024 },
        { name: "changed-small.sql.gz", size: 5000 },
      ]) {
        const source = file(name, size);
        await expect(
          copyToBucket(context(), { ...source, sha256: "0".repeat(64) }, copyConfig({ prefix: "changed/" }), 120),
        ).rejects.toThrow(
          new RegExp(
            `the copy to s3://${bucket}/changed/${name} failed: the bytes read were ${size} with sha256 ${source.sha256}, the backup ${size} with sha256 0{64}; nothing was stored`,
          ),
        );
      }
      expect(await objects("changed/")).toEqual([]);
      const uploads = await s3.send(new ListMultipartUploadsCommand({ Bucket: bucket, Prefix: "changed/" }));
      expect(uploads.Uploads ?? []).toEqual([]);
    }, 180_000);

    it("says what to do about a wrong secret key or a missing bucket, and never shows the secret", async () => {
      const source = file("refused.sql.gz", 1000);
      const wrongSecret = `wrong-${randomBytes(12).toString("hex")}`;
      const failure = await copyToBucket(
        context(),
        source,
        copyConfig({ credentials: { accessKeyId: store.accessKeyId, secretAccessKey: wrongSecret } }),
        60,
      ).catch((error: Error) => error.message);
      expect(failure).toMatch(
        /answered 403 SignatureDoesNotMatch.*; check the variable copyTo\.s3\.secretAccessKey names/,
      );
      expect(failure).not.toContain(wrongSecret);
      await expect(copyToBucket(context(), source, copyConfig({ bucket: "no-such-bucket" }), 60)).rejects.toThrow(
        /answered 404 NoSuchBucket.*; create the bucket first \(Ferry never creates buckets\)/,
      );
    }, 120_000);

    it("refuses an endpoint the outbound guard refuses (the cloud metadata address) before connecting", async () => {
      const source = file("metadata.sql.gz", 1000);
      await expect(
        copyToBucket(context(), source, copyConfig({ endpoint: new URL("http://169.254.169.254/") }), 60),
      ).rejects.toThrow(
        "copyTo.s3.endpoint http://169.254.169.254 points at a link-local/metadata address (169.254.169.254); allow it with FERRY_OUTBOUND_ALLOW if you mean it",
      );
    });
  });
});
