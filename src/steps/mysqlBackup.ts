import { type BackupConfig, backupConfigSchema, describeBackup, runBackup } from "./operations/backup.js";
import { mysqlEngine } from "./operations/database.js";
import type { StepKind } from "./types.js";

/**
 * `mariadb-dump` (or `mysqldump`) of a MariaDB or MySQL database reached from the target
 * (on the host, or inside a named container), gzip-compressed and sha256-checksummed, kept
 * as an artifact and copied to a directory on another target (docs/runbooks.md, ADR 0038).
 * The password reaches the client in a 0600 defaults file written from standard input and
 * removed after, never on a command line.
 */
export const mysqlBackupStep: StepKind<BackupConfig> = {
  kind: "mysql-backup",
  config: backupConfigSchema,
  plan: (config, render) => [{ description: describeBackup(mysqlEngine, config, render) }],
  run: (context, config) => runBackup(mysqlEngine, context, config),
};
