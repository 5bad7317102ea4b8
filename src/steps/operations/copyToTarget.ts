import type { Target } from "../../transports/types.js";
import type { StepRunContext } from "../types.js";

/**
 * Copies a file from the step's host to a directory on another target, through both
 * targets' transports (neither host needs to reach the other): the source host's file is
 * streamed (Transport.readStream, read as the task's account) into the destination's
 * Transport.upload, so the server holds a few buffers of it at a time, never the whole file.
 * The copy takes its name only once its size and sha256 are the file's: a copy that was cut
 * short is never taken for a backup, and leaves nothing behind.
 */
export async function copyToTarget(
  context: StepRunContext,
  file: { path: string; name: string; bytes: number; sha256: string },
  destination: { target: Target; directory: string },
  timeoutSeconds: number,
): Promise<string> {
  const directory = destination.directory.replace(/\/+$/, "") || "/";
  const finalPath = `${directory === "/" ? "" : directory}/${file.name}`;
  context.log.info(`copying ${file.name} (${file.bytes} bytes) to ${finalPath} on target ${destination.target.name}`);
  const source = await context.target.transport.readStream(context.taskId, file.path, context.signal);
  await destination.target.transport.upload(
    {
      taskId: context.taskId,
      path: finalPath,
      // A backup is for its owner alone, and so is a directory made for it.
      mode: 0o600,
      bytes: file.bytes,
      sha256: file.sha256,
      directories: "private",
      timeoutMs: timeoutSeconds * 1000,
      signal: context.signal,
    },
    source,
  );
  context.log.info(`copied to ${destination.target.name}:${finalPath} (sha256 ${file.sha256}, checked there)`);
  return finalPath;
}
