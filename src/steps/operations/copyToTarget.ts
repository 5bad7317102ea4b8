import { TaskFailure } from "../../engine/types.js";
import type { Target } from "../../transports/types.js";
import type { StepRunContext } from "../types.js";
import { reported, runHostScript } from "./hostScript.js";

/**
 * Bytes of the file read from the source host per round: a chunk travels as base64 lines
 * (60,000 characters, under every transport's 64 KiB line limit) to the server, then as the
 * standard input of a process on the destination host (an agent takes up to 16 MiB). So the
 * server holds one chunk at a time, never the whole file.
 */
const CHUNK_BYTES = 4 * 1024 * 1024;

const readChunkScript = `set -euo pipefail
dd if="$1" bs=${CHUNK_BYTES} skip="$2" count=1 status=none | base64 -w 60000
`;

/** Appends standard input (base64) to the partial file, creating the directory (0700) for the first chunk. */
const appendChunkScript = `set -euo pipefail
umask 077
if [ "$3" = 0 ]; then mkdir -p -- "$1"; rm -f -- "$2"; fi
base64 -d >> "$2"
`;

/** The copy is complete: its sha256 must be the source's before it takes its final name. */
const finishScript = `set -euo pipefail
actual=$(sha256sum "$1" | cut -d' ' -f1)
if [ "$actual" != "$3" ]; then rm -f -- "$1"; echo "ferry:error=the copy's sha256 is $actual, the file's is $3"; exit 3; fi
mv -f -- "$1" "$2"
echo "ferry:sha256=$actual"
`;

const removeScript = `rm -f -- "$1"`;

/**
 * Copies a file from the step's host to a directory on another target, through both
 * targets' transports (neither host needs to reach the other). It is written under a
 * `.partial` name and renamed only once its sha256 matches: a copy that was cut short is
 * never taken for a backup.
 */
export async function copyToTarget(
  context: StepRunContext,
  file: { path: string; name: string; bytes: number; sha256: string },
  destination: { target: Target; directory: string },
  timeoutSeconds: number,
): Promise<string> {
  const from = context.target.transport;
  const to = destination.target.transport;
  const directory = destination.directory.replace(/\/+$/, "") || "/";
  const finalPath = `${directory === "/" ? "" : directory}/${file.name}`;
  const partialPath = `${finalPath}.partial`;
  const sourceDirectory = await from.stepDirectory(context.taskId, "copy-");
  const targetDirectory = await to.stepDirectory(context.taskId, "copy-");
  const chunks = Math.max(1, Math.ceil(file.bytes / CHUNK_BYTES));
  context.log.info(
    `copying ${file.name} (${file.bytes} bytes) to ${finalPath} on target ${destination.target.name}${chunks > 1 ? ` in ${chunks} chunks` : ""}`,
  );
  try {
    for (let chunk = 0; chunk < chunks; chunk += 1) {
      const lines: string[] = [];
      await runHostScript(context, from, {
        what: "reading the backup for the copy",
        script: readChunkScript,
        args: [file.path, String(chunk)],
        env: {},
        cwd: sourceDirectory,
        timeoutSeconds,
        collect: lines,
      });
      await runHostScript(context, to, {
        what: `writing the copy on target ${destination.target.name}`,
        script: appendChunkScript,
        args: [directory, partialPath, String(chunk)],
        env: {},
        cwd: targetDirectory,
        timeoutSeconds,
        stdin: `${lines.join("\n")}\n`,
      });
    }
    const reports = await runHostScript(context, to, {
      what: `checking the copy on target ${destination.target.name}`,
      script: finishScript,
      args: [partialPath, finalPath, file.sha256],
      env: {},
      cwd: targetDirectory,
      timeoutSeconds,
    });
    if (reported(reports, "sha256", "the copy") !== file.sha256) throw new TaskFailure("the copy's sha256 differs");
    context.log.info(`copied to ${destination.target.name}:${finalPath} (sha256 ${file.sha256}, checked there)`);
    return finalPath;
  } catch (error) {
    await runHostScript(context, to, {
      what: "removing the partial copy",
      script: removeScript,
      args: [partialPath],
      env: {},
      cwd: targetDirectory,
      timeoutSeconds: 30,
    }).catch(() => undefined);
    throw error;
  } finally {
    await from.removeDirectory(sourceDirectory).catch(() => undefined);
    await to.removeDirectory(targetDirectory).catch(() => undefined);
  }
}
