import { createHash } from "node:crypto";
import { type Readable, Transform, type Writable } from "node:stream";
import { TaskFailure } from "../engine/types.js";

/**
 * A file to write on a host (Transport.upload). The bytes must be exactly `bytes` long with
 * exactly this sha256, or the file is not written: a stream cut short (a dropped link, a
 * source that failed part-way) never leaves a shorter file under `path`.
 */
export interface UploadSpec {
  /** The task it is written for: on a host with an account per task, written as that account. */
  readonly taskId: string;
  /** An absolute path on the host. Written through a temporary file beside it, renamed into place when complete. */
  readonly path: string;
  /** The file's permission bits (0o600 for anything sensitive), set before a byte is written. */
  readonly mode: number;
  readonly bytes: number;
  /** The sha256 of the bytes, in hex: checked on the host before the file takes its name. */
  readonly sha256: string;
  /**
   * Missing parent directories are created: `private` 0700 (backups, a task's files), `shared`
   * 0755 (a configuration directory other accounts' processes read).
   */
  readonly directories: "private" | "shared";
  readonly timeoutMs: number;
  /** Aborting stops the write; nothing is left under `path`. */
  readonly signal: AbortSignal;
}

/**
 * The bash a host runs to write one file from its standard input (argv: path, mode, bytes,
 * sha256, directories), as the account the task's work runs as there. Exit codes: 3 a
 * request refused, 4 the host could not write, 5 fewer bytes arrived than announced, 6 the
 * bytes' sha256 is not the announced one; in each case the temporary file is removed and
 * nothing takes the path. Every value is data ($1…$5), never part of the script. It holds
 * no single quote: the SSH launcher carries it inside one (sshLauncher.ts).
 */
export const UPLOAD_FILE_SCRIPT = `
path=$1; mode=$2; bytes=$3; expected=$4; directories=$5
refuse() { printf "%s\\n" "$1" >&2; exit 3; }
[[ $path == /* && $path != */ ]] || refuse "the path must be absolute and name a file"
[[ $mode =~ ^0?[0-7]{3}$ ]] || refuse "the mode must be three octal digits"
[[ $bytes =~ ^[0-9]{1,15}$ ]] || refuse "the size must be a number of bytes"
[[ $expected =~ ^[0-9a-f]{64}$ ]] || refuse "the sha256 must be 64 hexadecimal digits"
case $directories in private) umask 077 ;; shared) umask 022 ;; *) refuse "directories are private or shared" ;; esac
[ -d "$path" ] && refuse "$path is a directory"
directory=\${path%/*}
[ -n "$directory" ] || directory=/
mkdir -p -- "$directory" || exit 4
# What an upload cut off by a host that went down left here: untouched for a day (a live
# upload writes all the time, and times out long before).
find "$directory" -maxdepth 1 -type f -name ".ferry-upload-*" -mmin +1440 -delete 2>/dev/null || true
temporary=$(mktemp -- "$directory/.ferry-upload-XXXXXXXX") || exit 4
# Removed before a word is said: a server that went away (a closed stderr) must not leave it.
give_up() { rm -f -- "$temporary"; printf "%s\\n" "$2" >&2; exit "$1"; }
remove_temporary() { rm -f -- "$temporary"; }
trap remove_temporary EXIT
chmod "$mode" -- "$temporary" || give_up 4 "cannot set the mode of $temporary"
head -c "$bytes" >"$temporary" || give_up 4 "cannot write $temporary"
size=$(stat -c %s -- "$temporary") || give_up 4 "cannot read the size of $temporary"
[ "$size" = "$bytes" ] || give_up 5 "$size of $bytes bytes arrived"
actual=$(sha256sum <"$temporary") || give_up 4 "cannot read $temporary"
actual=\${actual%% *}
[ "$actual" = "$expected" ] || give_up 6 "the bytes that arrived have sha256 $actual, not $expected"
mv -f -- "$temporary" "$path" || give_up 4 "cannot rename $temporary to $path"
trap - EXIT
exit 0
`;

if (UPLOAD_FILE_SCRIPT.includes("'")) throw new Error("the upload script must not contain a single quote");

/** The upload script's arguments, after the spec was checked. */
export function uploadArguments(spec: UploadSpec): string[] {
  return [spec.path, spec.mode.toString(8).padStart(4, "0"), String(spec.bytes), spec.sha256, spec.directories];
}

/** Refuses an upload the host would refuse anyway, naming the field, before anything is sent. */
export function checkUpload(spec: UploadSpec): void {
  if (!spec.path.startsWith("/") || spec.path.endsWith("/") || spec.path.includes("\0") || spec.path.length > 4096) {
    throw new TaskFailure(`upload: path '${spec.path.slice(0, 200)}' is not an absolute path of a file on the host`);
  }
  if (!Number.isInteger(spec.mode) || spec.mode < 0 || spec.mode > 0o777) {
    throw new TaskFailure(`upload: mode ${String(spec.mode)} is not a file mode (0 to 0o777)`);
  }
  if (!Number.isSafeInteger(spec.bytes) || spec.bytes < 0) {
    throw new TaskFailure(`upload: bytes ${String(spec.bytes)} is not a size in bytes`);
  }
  if (!/^[0-9a-f]{64}$/.test(spec.sha256)) {
    throw new TaskFailure("upload: sha256 is not 64 lowercase hexadecimal digits");
  }
}

/**
 * Passes the source through, failing it when it gives more bytes than announced (the host
 * would stop reading at `bytes`, and the sender would wait on it forever) or, at its end,
 * other bytes than announced: the sender's own check, beside the host's.
 */
export function announcedBytes(spec: Pick<UploadSpec, "path" | "bytes" | "sha256">): Transform {
  const hash = createHash("sha256");
  let seen = 0;
  return new Transform({
    transform(chunk: Buffer, _encoding, callback) {
      seen += chunk.length;
      if (seen > spec.bytes) {
        callback(new TaskFailure(`upload of ${spec.path.slice(0, 200)}: the source has more than ${spec.bytes} bytes`));
        return;
      }
      hash.update(chunk);
      callback(null, chunk);
    },
    flush(callback) {
      if (seen !== spec.bytes) {
        callback(
          new TaskFailure(`upload of ${spec.path.slice(0, 200)}: the source has ${seen} of ${spec.bytes} bytes`),
        );
        return;
      }
      const actual = hash.digest("hex");
      if (actual !== spec.sha256) {
        callback(
          new TaskFailure(`upload of ${spec.path.slice(0, 200)}: the source's sha256 is ${actual}, not ${spec.sha256}`),
        );
        return;
      }
      callback();
    },
  });
}

/** What the upload script's exit code means, as a failure naming the path (never the bytes). */
function uploadFailure(path: string, code: number | null, stderr: string, where: string): TaskFailure {
  const shown = path.slice(0, 500);
  const detail = stderr.trim().slice(0, 300);
  switch (code) {
    case 3:
      return new TaskFailure(`${where} refused to write ${shown}: ${detail}`);
    case 5:
      return new TaskFailure(`the upload of ${shown} to ${where} was cut short (${detail}); nothing was written`);
    case 6:
      return new TaskFailure(`the upload of ${shown} to ${where} arrived changed (${detail}); nothing was written`);
    default:
      return new TaskFailure(
        `writing ${shown} on ${where} failed (${code === null ? "stopped" : `exit ${code}`})${detail ? `: ${detail}` : ""}`,
      );
  }
}

/**
 * The failures an upload can see, in the order that says what really happened: the sender
 * stopped it (cancel, timeout); its source failed or did not match what was announced (the
 * host then only saw its input end early); the host's script said why; the link to the host
 * failed. Undefined when the file was written (the host's script exited 0).
 */
export function uploadOutcome(outcome: {
  path: string;
  /** The host, as messages name it. */
  where: string;
  stopped: TaskFailure | undefined;
  sourceError: Error | undefined;
  /** The script's exit code: null when it was killed, undefined when it never said (a lost link). */
  code: number | null | undefined;
  stderr: string;
  /** Writing to the host failed (a closed pipe, a dropped tunnel). */
  sendError: Error | undefined;
}): TaskFailure | undefined {
  const shown = outcome.path.slice(0, 500);
  if (outcome.stopped) return outcome.stopped;
  if (outcome.sourceError) {
    return outcome.sourceError instanceof TaskFailure
      ? outcome.sourceError
      : new TaskFailure(
          `writing ${shown} on ${outcome.where} failed: its source failed (${outcome.sourceError.message})`,
        );
  }
  if (typeof outcome.code === "number" && outcome.code !== 0) {
    return uploadFailure(outcome.path, outcome.code, outcome.stderr, outcome.where);
  }
  // The host checked the size and sha256 and renamed the file: it is written. A send error
  // then is only the host closing its end first (its script exited once it had every byte,
  // before the sender's own end came round: "Premature close").
  if (outcome.code === 0) return undefined;
  if (outcome.sendError) {
    return new TaskFailure(`sending ${shown} to ${outcome.where} failed (${outcome.sendError.message})`);
  }
  if (outcome.code === undefined) {
    return new TaskFailure(`the link to ${outcome.where} was lost while ${shown} was written; nothing was written`);
  }
  if (outcome.code === null) return uploadFailure(outcome.path, null, outcome.stderr, outcome.where);
  return undefined;
}

/**
 * Records the first error of the source or of the announced-bytes check (the sender's side of
 * an upload). Not the source's own: an error that came from the destination first (pipeline()
 * then destroys every stream with it), one raised once the destination was gone, and the
 * errors pipeline() makes up to destroy a stream it is done with (ERR_STREAM_DESTROYED,
 * ERR_STREAM_PREMATURE_CLOSE: with `end: false` it destroys a source that had not closed yet).
 */
export function watchSource(source: Readable, checked: Transform, destination: Writable): () => Error | undefined {
  let error: Error | undefined;
  let destinationError: Error | undefined;
  destination.once("error", (cause: Error) => {
    destinationError ??= cause;
  });
  const record = (cause: Error & { code?: string }) => {
    if (cause === destinationError || destination.destroyed) return;
    if (cause.code === "ERR_STREAM_DESTROYED" || cause.code === "ERR_STREAM_PREMATURE_CLOSE") return;
    error ??= cause;
  };
  source.once("error", record);
  checked.once("error", record);
  return () => error;
}
