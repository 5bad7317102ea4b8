/*
 * SSH carries one command string to the host, which the account's login shell parses. Ferry
 * never builds that string from a value: every exec sends the same constant command (a bash
 * script, LAUNCHER_COMMAND), and what changes — the operation, the argv, the environment, the
 * working directory, a path — follows on the channel's standard input as NUL-terminated
 * fields, which the script reads with `read -r -d ''` into variables and only ever uses
 * quoted. A NUL cannot occur in an argument, an environment entry or a path, so a field can
 * neither end early nor run into the next one.
 *
 * Operations (the first field):
 *   run TASK CWD N ENV×N M ARGV×M IN
 *                                   starts ARGV (in CWD, with exactly ENV, PATH added from the
 *                                   host when ENV has none, IN as its standard input — none
 *                                   when empty; ENV and IN pass through pipes, never a command
 *                                   line) in a new session via setsid, so it
 *                                   leads its own process group; the group id is recorded in
 *                                   <work root>/TASK/<pgid>.pgid and printed as the first line
 *                                   of stdout before the program starts. When standard input
 *                                   ends (the server closed it, or the SSH session died) or the
 *                                   program exits, the whole group is killed: nothing the step
 *                                   started outlives it. Exits with the program's code.
 *   mkstep TASK PREFIX              a new 0700 directory under <work root>/TASK; prints its path
 *   read PATH                       prints a file under the work root (exit 3: there is none)
 *   cat PATH                        streams any file the account may read (an artifact a step
 *                                   attaches): exit 3 when it is not a regular file, 4 when
 *                                   the account cannot read it
 *   upload PATH MODE BYTES SHA256 DIRECTORIES
 *                                   writes the rest of standard input (exactly BYTES bytes) to
 *                                   PATH through a temporary file beside it, renamed into place
 *                                   only when its size and sha256 are the announced ones
 *                                   (UPLOAD_FILE_SCRIPT in upload.ts: exit 3 refused, 4 not
 *                                   writable, 5 cut short, 6 changed)
 *   rmdir PATH                      removes a directory under the work root
 *   finish TASK                     removes <work root>/TASK
 *   kill PGID                       SIGKILLs a process group
 *   killtask TASK                   kills TASK's recorded groups whose leader carries
 *                                   FERRY_TASK_ID=TASK and every process of the account that
 *                                   carries it, removes <work root>/TASK, prints the count
 *   resolve NAME                    the addresses NAME resolves to on the host, one a line
 *
 * The work root is $HOME/.cache/ferry/work: the account's own, so no other local user can
 * prepare or read it (a fixed path in a shared /tmp could be created by anyone first).
 *
 * The script holds no single quote (it travels inside one) and needs bash ≥ 4 (`read -d`,
 * arrays, [[ =~ ]]), setsid (util-linux) and env (coreutils) on the host.
 */
import { UPLOAD_FILE_SCRIPT } from "./upload.js";

// A template literal: \${ and \\n below are bash's ${ and \n.
const LAUNCHER_SCRIPT = `
if [ "\${1-}" = child ]; then
  printf "%s\\n" "$$" >"$2/$$.pgid" || exit 125
  printf "%s\\n" "$$"
  cd -- "$3" || exit 125
  n=$4
  shift 4
  # Exactly the environment of the step, read from fd 3 and exported by a builtin: a value is never
  # an argument of a process (ps and /proc/PID/cmdline would show it).
  for name in $(compgen -e); do unset "$name" 2>/dev/null || export -n "$name"; done
  own_shlvl=no
  for ((i = 0; i < n; i++)); do
    IFS= read -r -d "" entry <&3 || exit 125
    [[ $entry == SHLVL=* ]] && own_shlvl=yes
    export "$entry"
  done
  exec 3<&-
  # bash exports SHLVL to what it execs; env takes it out again unless the step set it.
  if [ "$own_shlvl" = yes ]; then exec -- "$@"; fi
  exec env -u SHLVL -- "$@"
fi
set -u
unset CDPATH
fail() { printf "ferry launcher: %s\\n" "$1" >&2; exit 125; }
field() { IFS= read -r -d "" "$1" || fail "the request ended early"; }
task_id() { [[ $1 =~ ^[A-Za-z0-9_-]{1,100}$ ]] || fail "a task id has letters, digits, _ and - only"; }
count() { [[ $1 =~ ^[0-9]{1,5}$ ]] || fail "a count is a number"; }
[ -n "\${HOME-}" ] && [ "\${HOME:0:1}" = / ] || fail "HOME is not set to a directory for this account"
ferry_dir=$HOME/.cache/ferry
root=$ferry_dir/work
under_root() {
  case $1 in "$root"/?*) ;; *) fail "only paths under $root are handled" ;; esac
  case /$1/ in */../* | */./*) fail "a path with . or .. segments is refused" ;; esac
}
carries_task() {
  local entry
  { while IFS= read -r -d "" entry; do [ "$entry" = "FERRY_TASK_ID=$2" ] && return 0; done <"/proc/$1/environ"; } 2>/dev/null
  return 1
}
task_dir() {
  mkdir -p -- "$root/$1" && chmod 700 -- "$ferry_dir" "$root/$1" || fail "cannot create $root/$1"
}
field operation
case $operation in
run)
  field task; task_id "$task"
  field cwd
  [[ $cwd == /* ]] || fail "the working directory must be an absolute path"
  field n; count "$n"
  environment=()
  has_path=no
  for ((i = 0; i < n; i++)); do
    field entry
    [[ $entry =~ ^[A-Za-z_][A-Za-z0-9_]*= ]] || fail "an environment entry is NAME=value with a name of letters, digits and _"
    [[ $entry == PATH=* ]] && has_path=yes
    environment+=("$entry")
  done
  [ "$has_path" = yes ] || environment+=("PATH=$PATH")
  field n; count "$n"
  ((n >= 1)) || fail "no program to run"
  argv=()
  for ((i = 0; i < n; i++)); do field argument; argv+=("$argument"); done
  [[ \${argv[0]} == -* || \${argv[0]} == *=* || -z \${argv[0]} ]] && fail "the program name must not be empty, start with - or hold ="
  field input
  task_dir "$task"
  if [ -z "$input" ]; then
    setsid bash -c "$BASH_EXECUTION_STRING" ferry child "$root/$task" "$cwd" "\${#environment[@]}" "\${argv[@]}" </dev/null 3< <(printf "%s\\0" "\${environment[@]}") &
  else
    # printf is a builtin: the text goes through a pipe, never onto a command line ps could show.
    setsid bash -c "$BASH_EXECUTION_STRING" ferry child "$root/$task" "$cwd" "\${#environment[@]}" "\${argv[@]}" < <(printf "%s" "$input") 3< <(printf "%s\\0" "\${environment[@]}") &
  fi
  group=$!
  # Without job control a background job reads /dev/null unless told otherwise: 0<&0 keeps the channel.
  { cat >/dev/null; [ -e "$root/$task/$group.pgid" ] && kill -KILL -- "-$group"; } 0<&0 >/dev/null 2>&1 &
  watcher=$!
  wait "$group"
  code=$?
  kill -KILL -- "-$group" 2>/dev/null
  rm -f -- "$root/$task/$group.pgid"
  kill -KILL "$watcher" 2>/dev/null
  exit "$code"
  ;;
mkstep)
  field task; task_id "$task"
  field prefix
  [[ $prefix =~ ^[A-Za-z0-9_.-]{0,50}$ ]] || fail "a directory prefix has letters, digits, _, . and - only"
  task_dir "$task"
  exec mktemp -d -- "$root/$task/\${prefix}XXXXXXXX"
  ;;
read)
  field path; under_root "$path"
  [ -f "$path" ] || exit 3
  exec cat -- "$path"
  ;;
cat)
  field path
  [[ $path == /* ]] || fail "the path must be absolute"
  [ -f "$path" ] || exit 3
  [ -r "$path" ] || exit 4
  exec cat -- "$path"
  ;;
upload)
  field path; field mode; field bytes; field expected; field directories
  set -- "$path" "$mode" "$bytes" "$expected" "$directories"
  # bash reads the fields above a byte at a time from the channel (it is not seekable), so
  # the bytes of the file that follow them are all left for head -c in the script.
  ${UPLOAD_FILE_SCRIPT}
  ;;
rmdir)
  field path; under_root "$path"
  exec rm -rf -- "$path"
  ;;
finish)
  field task; task_id "$task"
  exec rm -rf -- "$root/$task"
  ;;
kill)
  field group
  [[ $group =~ ^[0-9]{1,10}$ ]] && ((group > 1)) || fail "a process group id is a number above 1"
  kill -KILL -- "-$group" 2>/dev/null
  exit 0
  ;;
killtask)
  field task; task_id "$task"
  killed=0
  for file in "$root/$task"/*.pgid; do
    [ -e "$file" ] || continue
    group=\${file##*/}
    group=\${group%.pgid}
    [[ $group =~ ^[0-9]{1,10}$ ]] && ((group > 1)) || continue
    if carries_task "$group" "$task" && kill -KILL -- "-$group" 2>/dev/null; then killed=$((killed + 1)); fi
  done
  for entry in /proc/[0-9]*; do
    process=\${entry#/proc/}
    [ "$process" = "$$" ] && continue
    if carries_task "$process" "$task" && kill -KILL "$process" 2>/dev/null; then killed=$((killed + 1)); fi
  done
  rm -rf -- "$root/$task"
  printf "%s\\n" "$killed"
  ;;
resolve)
  field name
  [[ $name =~ ^[A-Za-z0-9][A-Za-z0-9.:-]{0,252}$ ]] || fail "not a host name"
  exec getent ahosts "$name"
  ;;
*)
  fail "unknown operation"
  ;;
esac
`;

if (LAUNCHER_SCRIPT.includes("'")) throw new Error("the SSH launcher must not contain a single quote");

/** The one command string Ferry ever sends to an SSH host: the launcher, as a constant. */
export const LAUNCHER_COMMAND = `exec bash --noprofile --norc -c '${LAUNCHER_SCRIPT}' ferry`;

/** The launcher's exit code when it refused a request (before any program ran). */
export const LAUNCHER_REFUSED = 125;

/** Why a field cannot travel to the launcher, or undefined. */
function fieldProblem(value: string): string | undefined {
  return value.includes("\0") ? "holds a NUL character, which no program can receive" : undefined;
}

/** A launcher request: NUL-terminated fields. `names` says, for an error, what each field is. */
export function launcherRequest(fields: readonly { name: string; value: string }[]): Buffer {
  for (const field of fields) {
    const problem = fieldProblem(field.value);
    if (problem) throw new LauncherInputError(`${field.name} ${problem}`);
  }
  return Buffer.from(fields.map((field) => `${field.value}\0`).join(""), "utf8");
}

/** A value the launcher cannot be given (a NUL inside it); the message names the field, never the value. */
export class LauncherInputError extends Error {
  override readonly name = "LauncherInputError";
}

/** The request that runs a program: argv and env as fields, never as text of a command line. */
export function runRequest(spec: {
  taskId: string;
  cwd: string;
  env: Readonly<Record<string, string>>;
  command: string;
  args: readonly string[];
  stdin?: string | undefined;
}): Buffer {
  const environment = Object.entries(spec.env);
  for (const [name] of environment) {
    if (!/^[A-Za-z_][A-Za-z0-9_]*$/.test(name)) {
      throw new LauncherInputError(
        `the environment variable name '${name.slice(0, 100)}' is not valid: use letters, digits and _`,
      );
    }
  }
  return launcherRequest([
    { name: "the operation", value: "run" },
    { name: "the task id", value: spec.taskId },
    { name: "the working directory", value: spec.cwd },
    { name: "the number of environment variables", value: String(environment.length) },
    ...environment.map(([name, value]) => ({ name: `environment variable ${name}`, value: `${name}=${value}` })),
    { name: "the number of arguments", value: String(spec.args.length + 1) },
    { name: "the program", value: spec.command },
    ...spec.args.map((value, index) => ({ name: `argument ${index + 1}`, value })),
    { name: "the standard input", value: spec.stdin ?? "" },
  ]);
}
