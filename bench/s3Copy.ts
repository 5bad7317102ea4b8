import { createHash, randomBytes } from "node:crypto";
import { chmodSync, closeSync, mkdtempSync, openSync, rmSync, writeSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { CreateBucketCommand, S3Client } from "@aws-sdk/client-s3";
import { parseOutboundAllow } from "../src/security/outboundGuard.js";
import { copyToBucket } from "../src/steps/operations/copyToBucket.js";
import { copyToTarget } from "../src/steps/operations/copyToTarget.js";
import type { StepRunContext } from "../src/steps/types.js";
import { LocalTransport } from "../src/transports/local.js";
import type { Target } from "../src/transports/types.js";
import { startObjectStore } from "../test/helpers/objectStore.js";
import { numberFlag } from "./blueGreenBench.js";
import type { BenchmarkResult } from "./run.js";

const RSS_INTERVAL_MS = 50;
const RSS_GOAL_MB = 200;

/**
 * `s3-copy [--size-mb 1024]`: a backup file of that size copied by the backup step's code
 * (copyToBucket, in this process as in the server's) from a local target's host into a
 * bucket of a real S3-compatible store (Ceph RADOS Gateway, test/helpers/objectStore.ts),
 * streamed in parts and hashed on the way. This process's RSS is read every 50 ms: how much
 * the copy adds over what the process held before it. Baseline: the same file copied to a
 * directory on another target (copyToTarget, Transport.upload), measured the same way.
 */
export async function s3Copy(): Promise<BenchmarkResult> {
  const sizeMb = numberFlag("--size-mb", 1024);
  const root = mkdtempSync(join(tmpdir(), "ferry-bench-s3-"));
  const store = await startObjectStore();
  const s3 = new S3Client({
    endpoint: store.endpoint,
    region: "us-east-1",
    forcePathStyle: true,
    credentials: { accessKeyId: store.accessKeyId, secretAccessKey: store.secretAccessKey },
  });
  try {
    await s3.send(new CreateBucketCommand({ Bucket: "bench" }));
    const file = writeRandomFile(join(root, "bench.sql.gz"), sizeMb);
    chmodSync(root, 0o755);
    const target = (name: string) =>
      ({
        id: name,
        slug: name,
        name,
        roles: [],
        transport: new LocalTransport(join(root, `${name}-work`)),
      }) as unknown as Target;
    const context = {
      taskId: "task_bench_s3",
      stepName: "backup",
      signal: new AbortController().signal,
      outbound: parseOutboundAllow(new URL(store.endpoint).host),
      log: { info: () => undefined, warn: () => undefined, error: () => undefined, redact: (text: string) => text },
      target: target("db-1"),
    } as unknown as StepRunContext;

    const baseline = await measured(() =>
      copyToTarget(context, file, { target: target("vault-1"), directory: join(root, "vault") }, 3600),
    );
    const bucket = await measured(() =>
      copyToBucket(
        context,
        file,
        {
          bucket: "bench",
          prefix: "",
          region: "us-east-1",
          endpoint: new URL(store.endpoint),
          forcePathStyle: true,
          credentials: { accessKeyId: store.accessKeyId, secretAccessKey: store.secretAccessKey },
          storageClass: undefined,
        },
        3600,
      ),
    );
    const mbS = (seconds: number) => sizeMb / seconds;
    return {
      name: "s3-copy",
      rows: [
        {
          figure: `a ${sizeMb} MiB backup copied to an S3 bucket (Ceph RADOS Gateway), hashed on the way, read back`,
          goal: "-",
          measured: `${mbS(bucket.seconds).toFixed(0)} MiB/s (${bucket.seconds.toFixed(1)} s)`,
          baseline: `to another target's directory: ${mbS(baseline.seconds).toFixed(0)} MiB/s`,
          met: undefined,
        },
        {
          figure: `RSS the copy adds (read every ${RSS_INTERVAL_MS} ms)`,
          goal: `< ${RSS_GOAL_MB} MB`,
          measured: `${bucket.addedMb.toFixed(0)} MB`,
          baseline: `to another target's directory: ${baseline.addedMb.toFixed(0)} MB`,
          met: bucket.addedMb < RSS_GOAL_MB,
        },
      ],
      values: {
        size_mb: sizeMb,
        s3_mb_s: Math.round(mbS(bucket.seconds)),
        s3_added_rss_mb: Math.round(bucket.addedMb),
        baseline_target_mb_s: Math.round(mbS(baseline.seconds)),
        baseline_target_added_rss_mb: Math.round(baseline.addedMb),
      },
    };
  } finally {
    s3.destroy();
    await store.close();
    rmSync(root, { recursive: true, force: true });
  }
}

function writeRandomFile(path: string, sizeMb: number) {
  const hash = createHash("sha256");
  const fd = openSync(path, "w");
  const chunk = randomBytes(1024 * 1024);
  for (let mb = 0; mb < sizeMb; mb++) {
    // A different MiB each time (the first byte), without generating 1 GiB of randomness.
    chunk[0] = mb % 256;
    chunk[1] = Math.floor(mb / 256) % 256;
    writeSync(fd, chunk);
    hash.update(chunk);
  }
  closeSync(fd);
  return { path, name: "bench.sql.gz", bytes: sizeMb * 1024 * 1024, sha256: hash.digest("hex") };
}

/** How long `copy` takes and how far above its starting RSS this process goes meanwhile. */
async function measured(copy: () => Promise<unknown>): Promise<{ seconds: number; addedMb: number }> {
  globalThis.gc?.();
  const before = process.memoryUsage.rss();
  let peak = before;
  const timer = setInterval(() => {
    peak = Math.max(peak, process.memoryUsage.rss());
  }, RSS_INTERVAL_MS);
  const started = performance.now();
  try {
    await copy();
  } finally {
    clearInterval(timer);
  }
  return { seconds: (performance.now() - started) / 1000, addedMb: (peak - before) / 1024 / 1024 };
}
