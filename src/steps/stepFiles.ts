import { createHash } from "node:crypto";
import { posix } from "node:path";
import { Readable } from "node:stream";
import type { Step } from "../domain/process.js";
import { type StepFile, substituteStepFile } from "../domain/stepFiles.js";
import { TaskFailure } from "../engine/types.js";
import type { StepRunContext } from "./types.js";

/** The most text of a package's file substituted: configuration files, rendered in memory, not data. */
const MAX_PACKAGE_FILE_BYTES = 4 * 1024 * 1024;

/**
 * Renders a step's template files for this target with its variables and writes each
 * through the target's transport (local, SSH or agent alike). `unpacked`: the directory of
 * the package the step unpacked, where its package files are read and relative paths go.
 * The rendered text is never logged; a file that holds a sensitive value is written 0600,
 * others 0644. A template naming an unknown variable fails the step naming file, line and
 * variable.
 */
export async function writeStepFiles(
  context: StepRunContext,
  step: Step,
  files: readonly StepFile[],
  unpacked?: string,
): Promise<void> {
  const transport = context.target.transport;
  for (const file of files) {
    context.signal.throwIfAborted();
    const source = file.package ? packagePath(file, unpacked) : undefined;
    const text = source === undefined ? file.content : await transport.readFile(source);
    if (text === undefined) {
      throw new TaskFailure(
        source === undefined
          ? `${file.file} was not captured into the release (its content is empty); apply ferry.yml again and create a new release`
          : `${file.file} is not in package ${file.package} (looked for ${source}); name a file the package has`,
      );
    }
    if (Buffer.byteLength(text) > MAX_PACKAGE_FILE_BYTES) {
      throw new TaskFailure(
        `${file.file} is larger than ${MAX_PACKAGE_FILE_BYTES / 1024 / 1024} MiB; substitute into configuration files, not data`,
      );
    }
    const destination = destinationOf(context, step, file, unpacked, source);
    let rendered: string;
    try {
      rendered = substituteStepFile(file, text, context.variables);
    } catch (error) {
      throw new TaskFailure(`file substitution: ${(error as Error).message}`);
    }
    // Anything the masker would hide is a sensitive value: the file is for its owner alone.
    const sensitive = context.log.redact(rendered) !== rendered;
    const mode = sensitive ? "0600" : "0644";
    // Written through a temporary file beside it, renamed into place (Transport.upload): a
    // reader never sees half a file, and a file that holds a sensitive value is never
    // readable by others, not even for a moment (the mode is set before a byte is written).
    const bytes = Buffer.from(rendered);
    await transport.upload(
      {
        taskId: context.taskId,
        path: destination,
        mode: sensitive ? 0o600 : 0o644,
        bytes: bytes.length,
        sha256: createHash("sha256").update(bytes).digest("hex"),
        directories: "shared",
        timeoutMs: 120_000,
        signal: context.signal,
      },
      Readable.from([bytes]),
    );
    context.log.info(
      `wrote ${file.package ? `${file.package}:` : ""}${file.file} to ${destination} on ${context.target.name} (mode ${mode}${sensitive ? ": it holds a sensitive value" : ""})`,
    );
  }
}

function packagePath(file: StepFile, unpacked: string | undefined): string {
  if (unpacked === undefined) {
    throw new TaskFailure(`${file.file}: package ${file.package} was not unpacked by this step`);
  }
  return posix.join(unpacked, file.file);
}

/** Where a file goes: its `path` rendered (relative: in the unpacked package), else in place. */
function destinationOf(
  context: StepRunContext,
  step: Step,
  file: StepFile,
  unpacked: string | undefined,
  source: string | undefined,
): string {
  if (file.path === undefined) {
    if (source !== undefined) return source;
    if (unpacked !== undefined) return posix.join(unpacked, file.file);
    throw new TaskFailure(`step '${step.name}': ${file.file} has no path; say where it goes on the target`);
  }
  let path: string;
  try {
    path = context.render(file.path);
  } catch (error) {
    throw new TaskFailure(`file substitution: ${file.file}: its path: ${(error as Error).message}`);
  }
  if (posix.isAbsolute(path)) return posix.normalize(path);
  if (unpacked !== undefined && !path.split("/").includes("..")) return posix.join(unpacked, path);
  throw new TaskFailure(
    `${file.file}: path '${path}' is not absolute; write where the file goes on the target (/srv/app/${posix.basename(file.file)})`,
  );
}
