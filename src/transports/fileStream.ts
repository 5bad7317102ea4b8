import { PassThrough, type Readable } from "node:stream";
import { TaskFailure } from "../engine/types.js";

/**
 * The bash a host runs, as the task's account, to stream one file (argv: the path): a path
 * that is not a regular file (a directory, /dev/zero, a FIFO) or that the account cannot read
 * is refused with its own exit code before a byte is sent. The path is data ($1), never part
 * of the script.
 */
export const READ_FILE_SCRIPT = '[ -f "$1" ] || exit 3; [ -r "$1" ] || exit 4; exec cat -- "$1"';

/** What a host's file reader's exit code means, as a failure naming the path (never its content). */
export function readFailure(path: string, code: number | null, stderr: string, where: string): TaskFailure {
  const shown = path.slice(0, 500);
  if (code === 3) return new TaskFailure(`there is no regular file ${shown} on ${where}`);
  if (code === 4) return new TaskFailure(`${shown} on ${where} cannot be read by the account steps run as there`);
  const detail = stderr.trim().slice(0, 300);
  return new TaskFailure(
    `reading ${shown} on ${where} failed (${code === null ? "stopped" : `exit ${code}`})${detail ? `: ${detail}` : ""}`,
  );
}

/**
 * A file's bytes as one Readable with backpressure: `source` is piped in without ending it,
 * and the result ends only when `source` ended *and* `finished` resolved (the reader on the
 * host exited 0, the agent said the whole file was sent). `finished` rejecting — or `source`
 * failing — destroys it with that error, so a consumer never takes a cut-off file for a whole
 * one. Destroying the result (a consumer that gives up) calls `stop`, which ends the read on
 * the host.
 */
export function completedStream(source: Readable, finished: Promise<void>, stop: () => void): Readable {
  const output = new PassThrough({ highWaterMark: 256 * 1024 });
  let sourceEnded = false;
  let done = false;
  let settled: "ok" | Error | undefined;
  const finish = () => {
    if (done) return;
    if (settled instanceof Error) {
      done = true;
      output.destroy(settled);
      return;
    }
    if (settled === "ok" && sourceEnded) {
      done = true;
      output.end();
    }
  };
  source.pipe(output, { end: false });
  source.once("end", () => {
    sourceEnded = true;
    finish();
  });
  source.once("error", (error: Error) => {
    settled ??= error;
    finish();
  });
  finished.then(
    () => {
      settled ??= "ok";
      finish();
    },
    (error: unknown) => {
      settled = error instanceof Error ? error : new Error(String(error));
      finish();
    },
  );
  output.once("close", () => {
    if (done && settled === "ok") return;
    done = true;
    source.unpipe(output);
    source.destroy();
    stop();
  });
  return output;
}
