import { z } from "zod";
import { TaskFailure } from "../../engine/types.js";
import { isContainerName } from "../../runtimes/docker.js";
import { timeoutSecondsSchema } from "../configFields.js";
import type { StepRunContext } from "../types.js";

/*
 * How the database operations steps (postgres-backup, mysql-backup, restore-verify) reach a
 * database from their target, and what each engine's client programs do there. Every
 * program runs on the target's host — or inside a named container on it, through the host's
 * `docker exec` — from constant bash scripts; values travel as environment variables, argv
 * or standard input, never spliced into a command line. The password travels only on
 * standard input: PostgreSQL's clients read a password file, MariaDB's a defaults file (0600, in the step's
 * own 0700 directory or a mktemp file inside the container) that the script writes from its
 * standard input and removes when it ends.
 */

/** A template field; `missing` says what to write when it is left out. */
const template = (max: number, missing?: string) =>
  z
    .string({ error: (issue) => (issue.input === undefined && missing ? missing : undefined) })
    .min(1)
    .max(max);

/** The connection fields every database operations step shares. */
export const connectionShape = {
  /** Template: the database to dump (or to compare a restore with). */
  database: template(256, "give the database's name, e.g. database: shop"),
  /** Template: the database server's address as seen from the target (or from inside the container). */
  host: template(253).default("127.0.0.1"),
  port: z.number().int().min(1).max(65535).optional(),
  /** Template: the database user. */
  user: template(256, "give the database user to sign in as, e.g. user: backup"),
  /**
   * Template: the user's password, from a sensitive variable ("#{DbPassword}"); it never
   * reaches a command line or the log.
   */
  password: z.string().max(4096).optional(),
  /**
   * Template: a container on the target that runs the database's client programs (`docker
   * exec`); absent: they run on the target's host. The host needs the docker CLI and access
   * to its engine then.
   */
  container: template(256).optional(),
  /** How long the dump (or the restore and the comparison) may take. */
  timeoutSeconds: timeoutSecondsSchema(3600),
};

const connectionSchema = z.strictObject(connectionShape);
type ConnectionConfig = z.infer<typeof connectionSchema>;

/** A connection with every template rendered. */
export interface Connection {
  database: string;
  host: string;
  port: number | undefined;
  user: string;
  password: string | undefined;
  container: string | undefined;
}

/** Renders the connection fields; a missing variable or a value no client could take fails the step, naming the field. */
export function renderConnection(context: StepRunContext, config: ConnectionConfig): Connection {
  const field = (name: string, value: string) => {
    // A line break would end a defaults-file line (and no database name or user has one).
    if (/[\r\n\0]/.test(value))
      throw new TaskFailure(`${name} holds a line break or NUL, which no database client takes`);
    return value;
  };
  const container = config.container === undefined ? undefined : context.render(config.container);
  if (container !== undefined && !isContainerName(container)) {
    throw new TaskFailure(`container '${container.slice(0, 100)}' is not a container name`);
  }
  return {
    database: field("database", context.render(config.database)),
    host: field("host", context.render(config.host)),
    port: config.port,
    user: field("user", context.render(config.user)),
    password: config.password === undefined ? undefined : field("password", context.render(config.password)),
    container,
  };
}

/** "shop on 127.0.0.1:5432 as backup (in container db)": what the log may say about a connection. */
export function describeConnection(connection: Connection): string {
  return `${connection.database} on ${connection.host}${connection.port === undefined ? "" : `:${connection.port}`} as ${connection.user}${
    connection.container ? ` (in container ${connection.container})` : ""
  }`;
}

/** The rows and the checksum of one table, as the engine's client reports them. */
export interface TableFigures {
  table: string;
  rows: string;
  checksum: string;
}

/** What a restore-verify and a backup need from a database engine: its scripts and how they get the connection. */
export interface DatabaseEngine {
  readonly kind: "postgres" | "mysql";
  readonly title: string;
  /** The environment and standard input that give a script the connection (and the password, never in argv). */
  connect(connection: Connection, database?: string): { env: Record<string, string>; stdin: string };
  /** `$1` = the dump file to write (gzip); reports `ferry:sha256=` and `ferry:bytes=`. */
  readonly dumpScript: string;
  /** `$1` = the scratch database to create. */
  readonly createScript: string;
  /** `$1` = the dump file, `$2` = the scratch database to restore it into. */
  readonly restoreScript: string;
  /** `$1` = the scratch database to drop. */
  readonly dropScript: string;
  /** Prints `table<TAB>name<TAB>rows<TAB>checksum` for every table of the connected database. */
  readonly figuresScript: string;
}

/** Runs client programs on the host or in `$FERRY_CONTAINER`, passing the named environment variables into it. */
const prelude = (passed: readonly string[]) => `set -euo pipefail
umask 077
in_db() {
  if [ -n "\${FERRY_CONTAINER:-}" ]; then
    docker exec -i ${passed.map((name) => `-e ${name}`).join(" ")} "$FERRY_CONTAINER" "$@"
  else
    "$@"
  fi
}
fail() { echo "ferry:error=$*"; exit 3; }
`;

/** Counts a file's bytes and its sha256 for the step, as reports. */
const reportFile = `
echo "ferry:sha256=$(sha256sum "$1" | cut -d' ' -f1)"
echo "ferry:bytes=$(stat -c %s "$1")"
`;

const PG_ENV = ["PGHOST", "PGPORT", "PGUSER", "PGPASSFILE", "PGDATABASE", "PGCONNECT_TIMEOUT"];

/** A password-file field: `:` and `\` escaped (libpq's .pgpass syntax). */
const passFileField = (value: string) => value.replace(/[\\:]/g, (character) => `\\${character}`);

/**
 * PostgreSQL's clients read the password from a password file (PGPASSFILE) that the script
 * gets on standard input and keeps 0600 for as long as it runs: on the host in the step's
 * directory, or in a mktemp file inside the container. Not PGPASSWORD: an environment value
 * can show on a command line on its way to the program (a transport's launcher, `env`).
 */
const postgresPrelude = `${prelude(PG_ENV)}
if [ -n "\${FERRY_CONTAINER:-}" ]; then
  PGPASSFILE=$(docker exec -i "$FERRY_CONTAINER" sh -c 'umask 077; f=$(mktemp); cat > "$f"; echo "$f"')
  trap 'docker exec "$FERRY_CONTAINER" rm -f "$PGPASSFILE"' EXIT
else
  PGPASSFILE="$PWD/pgpass-$$"
  trap 'rm -f "$PGPASSFILE"' EXIT
  cat > "$PGPASSFILE"
fi
export PGPASSFILE
`;

export const postgresEngine: DatabaseEngine = {
  kind: "postgres",
  title: "PostgreSQL",
  connect(connection, database) {
    const env: Record<string, string> = {
      PGHOST: connection.host,
      PGUSER: connection.user,
      PGDATABASE: database ?? connection.database,
      PGCONNECT_TIMEOUT: "15",
    };
    if (connection.port !== undefined) env.PGPORT = String(connection.port);
    if (connection.container !== undefined) env.FERRY_CONTAINER = connection.container;
    const stdin = connection.password === undefined ? "" : `*:*:*:*:${passFileField(connection.password)}\n`;
    return { env, stdin };
  },
  // Plain SQL without owners or grants: it restores as whoever restores it, into any database.
  dumpScript: `${postgresPrelude}
in_db pg_dump --no-owner --no-privileges --quote-all-identifiers | gzip -6 > "$1"
${reportFile}`,
  createScript: `${postgresPrelude}
in_db psql -X -q -v ON_ERROR_STOP=1 -c "CREATE DATABASE \\"$1\\""
`,
  restoreScript: `${postgresPrelude}
export PGDATABASE="$2"
gzip -dc "$1" | in_db psql -X -q -v ON_ERROR_STOP=1 --single-transaction -o /dev/null
`,
  dropScript: `${postgresPrelude}
in_db psql -X -q -v ON_ERROR_STOP=1 -c "DROP DATABASE IF EXISTS \\"$1\\" WITH (FORCE)"
`,
  // A table's checksum: md5 of its rows as text, in the order of that text (the same rows give the same sum whatever their physical order).
  figuresScript: `${postgresPrelude}
tables=$(in_db psql -X -A -t -v ON_ERROR_STOP=1 -c "SELECT format('%I.%I', schemaname, tablename) FROM pg_tables WHERE schemaname NOT IN ('pg_catalog', 'information_schema') ORDER BY 1")
while IFS= read -r table <&3; do
  [ -n "$table" ] || continue
  figures=$(in_db psql -X -A -t -F $'\\t' -v ON_ERROR_STOP=1 -c "SELECT count(*), coalesce(md5(string_agg(t::text, E'\\\\n' ORDER BY t::text)), md5('')) FROM $table t")
  printf 'table\\t%s\\t%s\\n' "$table" "$figures"
done 3<<< "$tables"
`,
};

/** A defaults-file value: quoted, with backslashes and quotes escaped (MariaDB's option-file syntax). */
const optionValue = (value: string) => `"${value.replace(/\\/g, "\\\\").replace(/"/g, '\\"')}"`;

/**
 * MariaDB's (and MySQL's) clients read the connection from a defaults file that the script
 * gets on standard input and keeps 0600 for as long as it runs: on the host in the step's
 * directory, or in a mktemp file inside the container.
 */
const mysqlPrelude = `${prelude([])}
if [ -n "\${FERRY_CONTAINER:-}" ]; then
  cnf=$(docker exec -i "$FERRY_CONTAINER" sh -c 'umask 077; f=$(mktemp); cat > "$f"; echo "$f"')
  trap 'docker exec "$FERRY_CONTAINER" rm -f "$cnf"' EXIT
else
  cnf="$PWD/client-$$.cnf"
  trap 'rm -f "$cnf"' EXIT
  cat > "$cnf"
fi
has() { in_db sh -c 'command -v "$1"' sh "$1" >/dev/null 2>&1; }
client=mariadb; has mariadb || client=mysql
dump=mariadb-dump; has mariadb-dump || dump=mysqldump
sql() { in_db "$client" --defaults-extra-file="$cnf" "$@"; }
`;

export const mysqlEngine: DatabaseEngine = {
  kind: "mysql",
  title: "MariaDB/MySQL",
  connect(connection, database) {
    const lines = [
      "[client]",
      `user=${optionValue(connection.user)}`,
      `host=${optionValue(connection.host)}`,
      ...(connection.port === undefined ? [] : [`port=${connection.port}`]),
      ...(connection.password === undefined ? [] : [`password=${optionValue(connection.password)}`]),
    ];
    const env: Record<string, string> = { FERRY_DATABASE: database ?? connection.database };
    if (connection.container !== undefined) env.FERRY_CONTAINER = connection.container;
    return { env, stdin: `${lines.join("\n")}\n` };
  },
  // One consistent snapshot of InnoDB tables, with routines and triggers; no CREATE DATABASE, so it restores into any database.
  dumpScript: `${mysqlPrelude}
in_db "$dump" --defaults-extra-file="$cnf" --single-transaction --routines --triggers --events --hex-blob -- "$FERRY_DATABASE" | gzip -6 > "$1"
${reportFile}`,
  createScript: `${mysqlPrelude}
sql -e "CREATE DATABASE \\\`$1\\\`"
`,
  restoreScript: `${mysqlPrelude}
gzip -dc "$1" | sql -D "$2"
`,
  dropScript: `${mysqlPrelude}
sql -e "DROP DATABASE IF EXISTS \\\`$1\\\`"
`,
  // CHECKSUM TABLE … EXTENDED reads every row: the same rows in the same table definition give the same sum.
  figuresScript: `${mysqlPrelude}
tables=$(sql -N -B -D "$FERRY_DATABASE" -e "SELECT table_name FROM information_schema.tables WHERE table_schema = DATABASE() AND table_type = 'BASE TABLE' ORDER BY 1")
while IFS= read -r table <&3; do
  [ -n "$table" ] || continue
  quoted=\${table//\\\`/\\\`\\\`}
  rows=$(sql -N -B -D "$FERRY_DATABASE" -e "SELECT COUNT(*) FROM \\\`$quoted\\\`")
  checksum=$(sql -N -B -D "$FERRY_DATABASE" -e "CHECKSUM TABLE \\\`$quoted\\\` EXTENDED" | cut -f2)
  printf 'table\\t%s\\t%s\\t%s\\n' "$table" "$rows" "$checksum"
done 3<<< "$tables"
`,
};

/*
 * The figures scripts read the table list on descriptor 3: `docker exec -i` inside the loop
 * reads standard input, and would swallow the rest of the list.
 */

/** Parses the lines of a figures script. */
export function parseFigures(lines: readonly string[]): TableFigures[] {
  const figures: TableFigures[] = [];
  for (const line of lines) {
    const [marker, table, rows, checksum] = line.split("\t");
    if (marker !== "table" || table === undefined || rows === undefined || checksum === undefined) continue;
    figures.push({ table, rows, checksum });
  }
  return figures;
}

/** A file name part made of the database's name: letters, digits, '.', '_' and '-'. */
export function fileNamePart(value: string): string {
  return value.replace(/[^A-Za-z0-9._-]+/g, "_").slice(0, 100) || "database";
}
