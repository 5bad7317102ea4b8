import { randomBytes } from "node:crypto";
import { z } from "zod";
import { TaskFailure } from "../engine/types.js";
import {
  type Connection,
  connectionShape,
  type DatabaseEngine,
  describeConnection,
  mysqlEngine,
  parseFigures,
  postgresEngine,
  renderConnection,
  type TableFigures,
} from "./operations/database.js";
import { runHostScript } from "./operations/hostScript.js";
import type { StepKind, StepRunContext } from "./types.js";

const engines: Record<"postgres" | "mysql", DatabaseEngine> = { postgres: postgresEngine, mysql: mysqlEngine };

const restoreVerifyConfigSchema = z.strictObject({
  /** Which kind of dump it is: `postgres` (of postgres-backup) or `mysql` (of mysql-backup). */
  engine: z.enum(["postgres", "mysql"], { message: "write engine: postgres or engine: mysql" }),
  /** Template: the backup file on the target, usually "#{Ferry.Step[backup].Output.file}". */
  file: z
    .string({
      error: (issue) =>
        issue.input === undefined
          ? "give the backup file on the target, e.g. #{Ferry.Step[backup].Output.file}"
          : undefined,
    })
    .min(1)
    .max(4096),
  /**
   * Template: the sha256 the backup had when it was taken ("#{Ferry.Step[backup].Output.sha256}");
   * checked before anything is restored.
   */
  sha256: z.string().min(1).max(200).optional(),
  /** The source database (whose figures the restore must match) and the server the scratch database is made on. */
  ...connectionShape,
});
type RestoreVerifyConfig = z.infer<typeof restoreVerifyConfigSchema>;

/** Checks the file's sha256 (when expected) and that it is a whole gzip stream. */
const checkFileScript = `set -euo pipefail
[ -f "$1" ] || { echo "ferry:error=there is no backup file $1 on this host"; exit 3; }
actual=$(sha256sum "$1" | cut -d' ' -f1)
echo "ferry:sha256=$actual"
if [ -n "\${2:-}" ] && [ "$actual" != "$2" ]; then
  echo "ferry:error=sha256 mismatch: the backup should be $2 but the file is $actual (it changed or was corrupted since it was taken)"
  exit 3
fi
gzip -t "$1" 2>/dev/null || { echo "ferry:error=the backup is not a whole gzip file (corrupted or cut short)"; exit 3; }
`;

/** "ferry_verify_3fa9c1_0b7e": a scratch database's name, unique to the run and safe in any quoting. */
function scratchName(taskId: string): string {
  return `ferry_verify_${taskId.replace(/[^a-zA-Z0-9]/g, "").slice(-8)}_${randomBytes(3).toString("hex")}`.toLowerCase();
}

/**
 * Restores a backup into a scratch database on the source's server, compares each table's
 * row count and checksum with the source, failing on any difference (naming the table and
 * both figures), and drops the scratch database — also when something failed.
 */
export const restoreVerifyStep: StepKind<RestoreVerifyConfig> = {
  kind: "restore-verify",
  config: restoreVerifyConfigSchema,

  plan(config, render) {
    const engine = engines[config.engine];
    return [
      {
        description: `restore ${render(config.file)} into a scratch ${engine.title} database beside ${render(config.database)}, compare every table's rows and checksum with it, drop the scratch database`,
      },
    ];
  },

  async run(context, config) {
    const engine = engines[config.engine];
    const { transport } = context.target;
    const connection = renderConnection(context, config);
    const file = context.render(config.file);
    if (!file.startsWith("/") || /[\r\n\0]/.test(file)) {
      throw new TaskFailure(
        `file '${file.slice(0, 200)}' is not an absolute path on the target; use the backup's, e.g. #{Ferry.Step[backup].Output.file}`,
      );
    }
    const expected = config.sha256 === undefined ? "" : context.render(config.sha256).trim().toLowerCase();
    if (expected !== "" && !/^[0-9a-f]{64}$/.test(expected)) {
      throw new TaskFailure(`sha256 '${expected.slice(0, 80)}' is not a sha256 (64 hexadecimal digits)`);
    }
    const directory = await transport.stepDirectory(context.taskId, "restore-verify-");
    const scratch = scratchName(context.taskId);
    let created = false;
    try {
      const check = await runHostScript(context, transport, {
        what: "the check of the backup file",
        script: checkFileScript,
        args: [file, expected],
        env: {},
        cwd: directory,
        timeoutSeconds: config.timeoutSeconds,
      });
      context.log.info(
        expected === ""
          ? `backup ${file}: sha256 ${check.get("sha256")} (no sha256 to compare with was given), a whole gzip file`
          : `backup ${file}: sha256 ${expected} as when it was taken, a whole gzip file`,
      );

      const run = (what: string, script: string, args: string[], database?: string, collect?: string[]) => {
        const { env, stdin } = engine.connect(connection, database);
        return runHostScript(context, transport, {
          what,
          script,
          args,
          env,
          stdin,
          cwd: directory,
          timeoutSeconds: config.timeoutSeconds,
          ...(collect && { collect }),
        });
      };
      context.log.info(`creating scratch database ${scratch} beside ${describeConnection(connection)}`);
      await run(`creating scratch database ${scratch}`, engine.createScript, [scratch]);
      created = true;
      context.log.info(`restoring ${file} into ${scratch}`);
      await run(`the restore into ${scratch}`, engine.restoreScript, [file, scratch]);

      const figuresOf = async (database: string) => {
        const lines: string[] = [];
        await run(`reading the tables of ${database}`, engine.figuresScript, [], database, lines);
        return parseFigures(lines);
      };
      const source = await figuresOf(connection.database);
      const restored = await figuresOf(scratch);
      const differences = compare(connection, source, restored);
      for (const table of source) {
        const twin = restored.find((candidate) => candidate.table === table.table);
        if (twin && twin.rows === table.rows && twin.checksum === table.checksum) {
          context.log.info(`${table.table}: ${table.rows} rows, checksum ${table.checksum}: identical`);
        }
      }
      if (differences.length > 0) {
        for (const difference of differences) context.log.error(difference);
        throw new TaskFailure(
          `the restore differs from ${connection.database}: ${differences.slice(0, 5).join("; ")}${
            differences.length > 5 ? ` (and ${differences.length - 5} more)` : ""
          }`,
        );
      }
      const rows = source.reduce((total, table) => total + Number(table.rows), 0);
      context.log.info(
        `the restore of ${file} matches ${connection.database}: ${source.length} table(s), ${rows} rows, every checksum identical`,
      );
      return { outputs: { tables: String(source.length), rows: String(rows), sha256: check.get("sha256") ?? "" } };
    } finally {
      if (created) await dropScratch(context, engine, connection, scratch, directory);
      await transport.removeDirectory(directory).catch(() => undefined);
    }
  },
};

/** Every difference between the source's tables and the restore's, each naming the table and both figures. */
function compare(connection: Connection, source: readonly TableFigures[], restored: readonly TableFigures[]): string[] {
  const differences: string[] = [];
  if (source.length === 0) differences.push(`${connection.database} has no tables to compare`);
  for (const table of source) {
    const twin = restored.find((candidate) => candidate.table === table.table);
    if (!twin) {
      differences.push(`table ${table.table} (${table.rows} rows in the source) is missing from the restore`);
    } else if (twin.rows !== table.rows) {
      differences.push(`table ${table.table}: ${table.rows} rows in the source, ${twin.rows} in the restore`);
    } else if (twin.checksum !== table.checksum) {
      differences.push(
        `table ${table.table}: checksum ${table.checksum} in the source, ${twin.checksum} in the restore (same ${table.rows} rows)`,
      );
    }
  }
  for (const table of restored) {
    if (!source.some((candidate) => candidate.table === table.table)) {
      differences.push(`table ${table.table} is in the restore (${table.rows} rows) but not in the source`);
    }
  }
  return differences;
}

/** Drops the scratch database even when the step was cancelled or timed out: a signal of its own. */
async function dropScratch(
  context: StepRunContext,
  engine: DatabaseEngine,
  connection: Connection,
  scratch: string,
  directory: string,
) {
  const { env, stdin } = engine.connect(connection);
  try {
    await runHostScript({ ...context, signal: AbortSignal.timeout(120_000) }, context.target.transport, {
      what: `dropping scratch database ${scratch}`,
      script: engine.dropScript,
      args: [scratch],
      env,
      stdin,
      cwd: directory,
      timeoutSeconds: 120,
    });
    context.log.info(`dropped scratch database ${scratch}`);
  } catch (error) {
    context.log.error(`could not drop scratch database ${scratch} (${(error as Error).message}): drop it by hand`);
  }
}
