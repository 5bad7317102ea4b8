import { createHash } from "node:crypto";
import { Transform, type TransformCallback } from "node:stream";
import type { S3Client } from "@aws-sdk/client-s3";
import { z } from "zod";
import { TaskFailure } from "../../engine/types.js";
import {
  checkOutboundUrl,
  defaultOutboundPolicy,
  guardedAgents,
  guardRefusalIn,
  OutboundRefusedError,
} from "../../security/outboundGuard.js";
import type { StepRunContext } from "../types.js";

/**
 * A backup's second location in an S3-compatible bucket (AWS S3, Ceph RADOS Gateway, MinIO,
 * Garage, Cloudflare R2, …), written through the AWS SDK from the server (ADR 0074): the
 * step's host streams the file to the server (Transport.readStream), which streams it on
 * to the bucket in parts — a few parts in memory at a time, never the whole file.
 */

const template = (max: number, missing: string) =>
  z
    .string({ error: (issue) => (issue.input === undefined ? missing : undefined) })
    .min(1)
    .max(max);

/** `copyTo: { s3: … }`. Every text field is a template. */
export const bucketCopySchema = z.strictObject({
  /** The bucket; it must exist (Ferry never creates buckets). */
  bucket: template(255, "give the bucket's name, e.g. bucket: shop-backups"),
  /** Put before the file name to make the object's key ("shop/prod/"); none by default. */
  prefix: z.string().max(900).optional(),
  /** The bucket's region (AWS), or whatever region an S3-compatible store expects. */
  region: z.string().min(1).max(64).default("us-east-1"),
  /**
   * The store's URL for S3-compatible stores ("https://s3.example.com:7480"); absent: AWS S3 of
   * the region. It is called from the server, through the outbound guard (FERRY_OUTBOUND_ALLOW).
   */
  endpoint: z.string().min(1).max(2048).optional(),
  /** Buckets in the path ("https://host/bucket/key"); default: with an endpoint, yes, on AWS, no. */
  forcePathStyle: z.boolean().optional(),
  /** From a variable: "#{Backup.S3.AccessKeyId}". */
  accessKeyId: template(256, "give the access key id, e.g. accessKeyId: '#{Backup.S3.AccessKeyId}'"),
  /** From a sensitive variable: "#{Backup.S3.SecretAccessKey}". Never in a log, an answer or an error. */
  secretAccessKey: template(
    4096,
    "give the secret access key from a sensitive variable, e.g. secretAccessKey: '#{Backup.S3.SecretAccessKey}'",
  ),
  /** With temporary credentials (AWS STS), from a sensitive variable. */
  sessionToken: z.string().min(1).max(8192).optional(),
  /** The object's storage class ("STANDARD_IA", "GLACIER_IR", …); the bucket's default when absent. */
  storageClass: z
    .string()
    .regex(/^[A-Z][A-Z0-9_]{0,63}$/, "write a storage class, e.g. STANDARD_IA")
    .optional(),
});
export type BucketCopyConfig = z.infer<typeof bucketCopySchema>;

/** A bucket copy with every template rendered, checked before any work starts. */
export interface BucketCopy {
  bucket: string;
  prefix: string;
  region: string;
  endpoint: URL | undefined;
  forcePathStyle: boolean;
  credentials: { accessKeyId: string; secretAccessKey: string; sessionToken?: string };
  storageClass: string | undefined;
}

/** "s3://shop-backups/shop/prod/": where the plan says the copy goes. */
export function describeBucket(config: BucketCopyConfig, render: (text: string) => string): string {
  const endpoint = config.endpoint === undefined ? "" : ` at ${render(config.endpoint)}`;
  return `s3://${render(config.bucket)}/${render(config.prefix ?? "")}${endpoint}`;
}

/** Renders and checks the fields; a value no S3 store takes fails the step, naming the field. */
export function renderBucketCopy(context: StepRunContext, config: BucketCopyConfig): BucketCopy {
  const field = (name: string, value: string, pattern: RegExp, hint: string) => {
    if (!pattern.test(value)) throw new TaskFailure(`copyTo.s3.${name} ${hint}`);
    return value;
  };
  const bucket = field(
    "bucket",
    context.render(config.bucket),
    /^[A-Za-z0-9][A-Za-z0-9._-]{1,254}$/,
    "is not a bucket name: letters, digits, '.', '-' and '_', 2-255 of them",
  );
  const prefix = context.render(config.prefix ?? "");
  // Object keys: no control characters, no leading "/" (it would make an empty first segment), ≤ 1024 bytes with the file name.
  if (/[\p{Cc}]/u.test(prefix) || prefix.startsWith("/") || Buffer.byteLength(prefix) > 900) {
    throw new TaskFailure("copyTo.s3.prefix must not start with '/' or hold control characters, and fit in 900 bytes");
  }
  const region = field("region", context.render(config.region), /^[a-z0-9-]{1,64}$/, "is not a region, e.g. us-east-1");
  let endpoint: URL | undefined;
  if (config.endpoint !== undefined) {
    const text = context.render(config.endpoint);
    try {
      endpoint = new URL(text);
    } catch {
      throw new TaskFailure("copyTo.s3.endpoint is not a URL: write e.g. https://s3.example.com");
    }
    if (endpoint.protocol !== "http:" && endpoint.protocol !== "https:") {
      throw new TaskFailure("copyTo.s3.endpoint must start with http:// or https://");
    }
    if (endpoint.username || endpoint.password || endpoint.search || endpoint.hash) {
      throw new TaskFailure(
        "copyTo.s3.endpoint must be the store's address alone: credentials go in accessKeyId and secretAccessKey",
      );
    }
  }
  const sessionToken = config.sessionToken === undefined ? undefined : context.render(config.sessionToken);
  return {
    bucket,
    prefix,
    region,
    endpoint,
    forcePathStyle: config.forcePathStyle ?? endpoint !== undefined,
    credentials: {
      accessKeyId: context.render(config.accessKeyId),
      secretAccessKey: context.render(config.secretAccessKey),
      ...(sessionToken !== undefined && { sessionToken }),
    },
    storageClass: config.storageClass,
  };
}

/** Parts of 8 MiB, two in flight: what the server holds of a copy at a time. */
const PART_BYTES = 8 * 1024 * 1024;
const PARTS_IN_FLIGHT = 2;

/**
 * Copies a file of the step's host into the bucket as `prefix + name`, with its sha256 in the
 * object's metadata (`x-amz-meta-sha256`). The bytes are counted and hashed on their way
 * through: a source that ends short or differs fails the stream before its last part, so the
 * upload is aborted and no object is made; the stored object's size and sha256 are read back
 * (HeadObject) before the copy counts. Resolves with "s3://bucket/key".
 */
export async function copyToBucket(
  context: StepRunContext,
  file: { path: string; name: string; bytes: number; sha256: string },
  copy: BucketCopy,
  timeoutSeconds: number,
): Promise<{ url: string; key: string }> {
  const key = `${copy.prefix}${file.name}`;
  const url = `s3://${copy.bucket}/${key}`;
  const named = copy.endpoint ? `copyTo.s3.endpoint ${copy.endpoint.origin}` : `AWS S3 (${copy.region})`;
  const policy = context.outbound ?? defaultOutboundPolicy;
  if (copy.endpoint) {
    try {
      await checkOutboundUrl(copy.endpoint, policy, { what: "copyTo.s3.endpoint", originOnly: true });
    } catch (error) {
      if (error instanceof OutboundRefusedError) throw new TaskFailure(error.message);
      throw error;
    }
  }
  context.log.info(
    `copying ${file.name} (${file.bytes} bytes) to ${url}${copy.endpoint ? ` at ${copy.endpoint.origin}` : ""}`,
  );
  const signal = AbortSignal.any([context.signal, AbortSignal.timeout(timeoutSeconds * 1000)]);
  const { client, close } = await s3Client(copy, policy);
  try {
    const { Upload } = await import("@aws-sdk/lib-storage");
    const source = await context.target.transport.readStream(context.taskId, file.path, signal);
    const body = source.pipe(new Verifying(file));
    source.once("error", (error) => body.destroy(error));
    const upload = new Upload({
      client,
      params: {
        Bucket: copy.bucket,
        Key: key,
        Body: body,
        ContentType: "application/gzip",
        Metadata: { sha256: file.sha256 },
        ...(copy.storageClass !== undefined && { StorageClass: copy.storageClass as never }),
      },
      partSize: PART_BYTES,
      queueSize: PARTS_IN_FLIGHT,
      leavePartsOnError: false,
    });
    const abort = () => void upload.abort().catch(() => undefined);
    signal.addEventListener("abort", abort, { once: true });
    try {
      await upload.done();
    } catch (error) {
      // The store gave up (or was never reached): stop reading the host's file too.
      body.destroy();
      source.destroy();
      throw new TaskFailure(`the copy to ${url} failed: ${describeS3Error(error, named, signal)}`);
    } finally {
      signal.removeEventListener("abort", abort);
    }

    const { HeadObjectCommand } = await import("@aws-sdk/client-s3");
    const stored = await client
      .send(new HeadObjectCommand({ Bucket: copy.bucket, Key: key }), { abortSignal: signal })
      .catch((error: unknown) => {
        throw new TaskFailure(`the copy to ${url} could not be read back: ${describeS3Error(error, named, signal)}`);
      });
    if (stored.ContentLength !== file.bytes || stored.Metadata?.sha256 !== file.sha256) {
      throw new TaskFailure(
        `the copy at ${url} holds ${stored.ContentLength ?? "?"} bytes with sha256 ${stored.Metadata?.sha256 ?? "none"}, the file ${file.bytes} bytes with sha256 ${file.sha256}`,
      );
    }
    context.log.info(`copied to ${url} (${file.bytes} bytes, sha256 ${file.sha256}, read back)`);
    return { url, key };
  } finally {
    close();
  }
}

/** An S3 client whose connections go through the outbound guard, and how to let them go. */
async function s3Client(copy: BucketCopy, policy: typeof defaultOutboundPolicy) {
  const { S3Client } = await import("@aws-sdk/client-s3");
  const port = copy.endpoint ? Number(copy.endpoint.port) || (copy.endpoint.protocol === "https:" ? 443 : 80) : 443;
  const agents = guardedAgents(policy, port);
  const client: S3Client = new S3Client({
    region: copy.region,
    ...(copy.endpoint && { endpoint: copy.endpoint.href.replace(/\/$/, "") }),
    forcePathStyle: copy.forcePathStyle,
    credentials: copy.credentials,
    requestHandler: {
      httpAgent: agents.http,
      httpsAgent: agents.https,
      connectionTimeout: 10_000,
      requestTimeout: 120_000,
    },
    maxAttempts: 3,
    // S3-compatible stores differ in which of the newer checksum headers and trailers they take;
    // the copy is checked end to end (sha256 on the way, size and sha256 read back) instead.
    ...(copy.endpoint && {
      requestChecksumCalculation: "WHEN_REQUIRED" as const,
      responseChecksumValidation: "WHEN_REQUIRED" as const,
    }),
  });
  return {
    client,
    close: () => {
      client.destroy();
      agents.http.destroy();
      agents.https.destroy();
    },
  };
}

/** What went wrong, for the task log: the store's error code and message and what to do; never a credential. */
function describeS3Error(error: unknown, named: string, signal: AbortSignal): string {
  if (error instanceof ChangedOnTheWay) return error.message;
  if (signal.aborted) {
    return signal.reason instanceof Error && signal.reason.name === "TimeoutError"
      ? "it took longer than the step's timeoutSeconds"
      : "the task was cancelled";
  }
  const refused = guardRefusalIn(error, named);
  if (refused) return refused;
  const failure = error as { name?: string; message?: string; code?: string; $metadata?: { httpStatusCode?: number } };
  const status = failure.$metadata?.httpStatusCode;
  const hint = hints[failure.name ?? ""] ?? "";
  if (status === undefined) {
    // No answer: the network (connection refused, name not found, TLS).
    const cause = (error as { cause?: { code?: string } }).cause?.code ?? failure.code;
    return `${named} did not answer: ${failure.message ?? String(error)}${cause ? ` (${cause})` : ""}`;
  }
  const message = failure.message && failure.message !== "UnknownError" ? `: ${failure.message}` : "";
  return `${named} answered ${status} ${failure.name ?? "error"}${message}${hint ? `; ${hint}` : ""}`;
}

const hints: Record<string, string> = {
  NoSuchBucket: "create the bucket first (Ferry never creates buckets) or check copyTo.s3.bucket",
  InvalidAccessKeyId: "check the variable copyTo.s3.accessKeyId names",
  SignatureDoesNotMatch: "check the variable copyTo.s3.secretAccessKey names",
  AccessDenied: "the credentials may not write to this bucket: allow s3:PutObject (and multipart uploads) on it",
  PermanentRedirect: "the bucket is in another region: set copyTo.s3.region",
  AuthorizationHeaderMalformed: "the bucket is in another region: set copyTo.s3.region",
};

/** The bytes read from the host were not the backup's: nothing was stored. */
class ChangedOnTheWay extends Error {}

/**
 * Passes the bytes on while counting and hashing them; at the end it fails unless they were
 * exactly the file's. Failing before the stream ends means the uploader never sends its last
 * part nor completes the upload.
 */
class Verifying extends Transform {
  private readonly hash = createHash("sha256");
  private seen = 0;

  constructor(private readonly file: { bytes: number; sha256: string }) {
    super();
  }

  override _transform(chunk: Buffer, _encoding: BufferEncoding, callback: TransformCallback): void {
    this.seen += chunk.length;
    if (this.seen > this.file.bytes) {
      callback(new ChangedOnTheWay(`the file grew past its ${this.file.bytes} bytes while it was copied`));
      return;
    }
    this.hash.update(chunk);
    callback(null, chunk);
  }

  override _flush(callback: TransformCallback): void {
    const sha256 = this.hash.digest("hex");
    if (this.seen !== this.file.bytes || sha256 !== this.file.sha256) {
      callback(
        new ChangedOnTheWay(
          `the bytes read were ${this.seen} with sha256 ${sha256}, the backup ${this.file.bytes} with sha256 ${this.file.sha256}; nothing was stored`,
        ),
      );
      return;
    }
    callback();
  }
}
