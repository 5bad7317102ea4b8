import { type BackupConfig, backupConfigSchema, describeBackup, runBackup } from "./operations/backup.js";
import { postgresEngine } from "./operations/database.js";
import type { StepKind } from "./types.js";

/**
 * `pg_dump` of a PostgreSQL database reached from the target (on the host, or inside a
 * named container), gzip-compressed and sha256-checksummed, kept as an artifact and copied
 * to a directory on another target (docs/runbooks.md, ADR 0038). The password reaches
 * pg_dump as PGPASSWORD, never on a command line.
 */
export const postgresBackupStep: StepKind<BackupConfig> = {
  kind: "postgres-backup",
  config: backupConfigSchema,
  plan: (config, render) => [{ description: describeBackup(postgresEngine, config, render) }],
  run: (context, config) => runBackup(postgresEngine, context, config),
};
