import { z } from "zod";
import { TaskFailure } from "../../engine/types.js";
import type { StepRunContext } from "../types.js";
import { bucketCopySchema, copyToBucket, describeBucket, renderBucketCopy } from "./copyToBucket.js";
import { copyToTarget } from "./copyToTarget.js";
import {
  connectionShape,
  type DatabaseEngine,
  describeConnection,
  fileNamePart,
  renderConnection,
} from "./database.js";
import { reported, runHostScript } from "./hostScript.js";

/** The config of postgres-backup and mysql-backup: a connection and where the copy goes. */
export const backupConfigSchema = z.strictObject({
  ...connectionShape,
  /**
   * The second location: a directory on another target of the environment (by its slug or
   * name), written through that target's transport, or an S3-compatible bucket (`s3`).
   */
  copyTo: z
    .strictObject({
      target: z.string().min(1).max(200).optional(),
      /** Template: an absolute directory on that target; created (0700) when missing. */
      directory: z.string().startsWith("/", "use an absolute directory, e.g. /var/backups/shop").max(4096).optional(),
      s3: bucketCopySchema.optional(),
    })
    .superRefine((copy, context) => {
      const issue = (path: string, message: string) => context.addIssue({ code: "custom", path: [path], message });
      if (copy.s3 !== undefined) {
        if (copy.target !== undefined || copy.directory !== undefined)
          issue("s3", "copy to a bucket or to a target's directory, not both: remove target and directory, or s3");
        return;
      }
      if (copy.target === undefined)
        issue("target", "give the target to copy to, e.g. target: vault-1 (or s3: { bucket: … } for a bucket)");
      if (copy.directory === undefined)
        issue("directory", "give the directory on that target, e.g. directory: /var/backups/shop");
    })
    .optional(),
});
export type BackupConfig = z.infer<typeof backupConfigSchema>;

/** "20261203T124500Z": when a backup was taken, in its file name. */
function stamp(date: Date): string {
  return date
    .toISOString()
    .replace(/[-:]/g, "")
    .replace(/\.\d+Z$/, "Z");
}

export function describeBackup(engine: DatabaseEngine, config: BackupConfig, render: (text: string) => string) {
  const where = config.container === undefined ? "" : ` in container ${render(config.container)}`;
  const copy = !config.copyTo
    ? ""
    : config.copyTo.s3
      ? `, copy it to ${describeBucket(config.copyTo.s3, render)}`
      : `, copy it to ${render(config.copyTo.directory ?? "")} on target ${config.copyTo.target}`;
  return `dump ${engine.title} database ${render(config.database)} on ${render(config.host)}${where}, gzip and sha256 it, keep it as an artifact${copy}`;
}

/**
 * Dumps a database reached from the target into a gzip file in the step's directory on the
 * host, records its sha256, keeps it as the task's artifact (ADR 0037) and copies it to the second
 * location. The file stays in the task's work directory until the task ends, so a later
 * step of the same run (restore-verify) finds it at the `file` output.
 */
export async function runBackup(engine: DatabaseEngine, context: StepRunContext, config: BackupConfig) {
  const { transport } = context.target;
  // Everything is rendered first: a missing variable must fail before any work.
  const connection = renderConnection(context, config);
  const bucket = config.copyTo?.s3 && renderBucketCopy(context, config.copyTo.s3);
  const destination = config.copyTo && !bucket ? await renderTargetCopy(context, config.copyTo) : undefined;

  const directory = await transport.stepDirectory(context.taskId, "backup-");
  const name = `${fileNamePart(connection.database)}-${stamp(new Date())}.sql.gz`;
  const path = `${directory}/${name}`;
  let kept = false;
  try {
    context.log.info(`dumping ${engine.title} database ${describeConnection(connection)} to ${name}`);
    const { env, stdin } = engine.connect(connection);
    const reports = await runHostScript(context, transport, {
      what: `the dump of ${connection.database}`,
      script: engine.dumpScript,
      args: [path],
      env,
      stdin,
      cwd: directory,
      timeoutSeconds: config.timeoutSeconds,
    });
    const sha256 = reported(reports, "sha256", "the dump");
    const bytes = Number(reported(reports, "bytes", "the dump"));
    context.log.info(`backup ${name}: ${bytes} bytes (gzip), sha256 ${sha256}`);

    // Kept as the task's artifact: the server hashes the bytes it stores, which must be the dump's.
    const artifact = await context.artifacts.attach({ name, fromTargetPath: path });
    if (artifact.sha256 !== sha256 || artifact.size !== bytes) {
      throw new TaskFailure(
        `the artifact stored from ${name} has sha256 ${artifact.sha256} (${artifact.size} bytes), the dump ${sha256} (${bytes} bytes): it changed on the way`,
      );
    }
    context.log.info(`kept as artifact ${artifact.name} (${artifact.id}), sha256 checked`);

    const outputs: Record<string, string> = {
      file: path,
      fileName: name,
      sha256,
      bytes: String(bytes),
      artifact: artifact.id,
    };
    if (destination) {
      const copy = await copyToTarget(context, { path, name, bytes, sha256 }, destination, config.timeoutSeconds);
      outputs.copy = `${destination.target.name}:${copy}`;
      outputs.copyPath = copy;
    }
    if (bucket) {
      const copy = await copyToBucket(context, { path, name, bytes, sha256 }, bucket, config.timeoutSeconds);
      outputs.copy = copy.url;
      outputs.copyKey = copy.key;
    }
    kept = true;
    return { outputs };
  } finally {
    // A failed backup leaves nothing behind; a good one stays for the run's later steps.
    if (!kept) await transport.removeDirectory(directory).catch(() => undefined);
  }
}

/** The target and directory of a copy to a target, rendered and looked up. */
async function renderTargetCopy(context: StepRunContext, copyTo: { target?: string; directory?: string }) {
  const directory = context.render(copyTo.directory ?? "");
  if (!directory.startsWith("/") || /[\r\n\0]/.test(directory)) {
    throw new TaskFailure(`copyTo.directory '${directory.slice(0, 200)}' is not an absolute directory`);
  }
  if (!context.environmentTarget)
    throw new TaskFailure("copyTo needs a run with targets (a deployment or runbook run)");
  return { target: await context.environmentTarget(copyTo.target ?? ""), directory };
}
