import { createHash } from "node:crypto";
import { type Readable, Transform } from "node:stream";
import { artifactNameProblem } from "../domain/artifacts.js";
import type { ArtifactContent } from "../store/artifactContent.js";
import { insertArtifact } from "../store/artifacts.js";
import { newId, nowIso, type StoreContext } from "../store/common.js";
import type { Target } from "../transports/types.js";
import type { RunScope } from "./processRunner.js";
import type { StepLog } from "./taskLog.js";
import { TaskFailure } from "./types.js";

/** Artifacts bigger than this are refused unless FERRY_ARTIFACT_MAX_BYTES says otherwise. */
export const DEFAULT_ARTIFACT_MAX_BYTES = 10 * 1024 ** 3;

/** What a step gives to attach a file: one on its target, or bytes it makes itself. */
export type AttachInput =
  | {
      /** The artifact's name (one file name: letters, digits, '.', '_', '+', '-'). */
      name: string;
      /** An absolute path on the step's target, read as the account the step's work runs as there. */
      fromTargetPath: string;
    }
  | {
      name: string;
      /** Bytes the step produces (an archive it builds, a stream from a runtime), read to their end. */
      stream: Readable;
    };

/** An attached artifact, as stored. */
export interface AttachedArtifact {
  id: string;
  name: string;
  /** Hex SHA-256 of the bytes stored. */
  sha256: string;
  /** Bytes stored. */
  size: number;
}

/**
 * The step context's seam to attach files to the task (`context.artifacts`): usable by any
 * step kind on any target (local, ssh, agent). Each call streams the bytes once — through the
 * hash and the size limit into storage — and records them; it resolves when they are stored
 * and fails, storing nothing, when the file cannot be read, passes the size limit, or the
 * task is cancelled.
 */
export interface StepArtifacts {
  attach(input: AttachInput): Promise<AttachedArtifact>;
}

export interface ArtifactServiceOptions {
  context: StoreContext;
  content: ArtifactContent;
  /** FERRY_ARTIFACT_MAX_BYTES: the most bytes one artifact may have. */
  maxBytes: number;
}

/** Where one step attaches: its task, step, scope, target, log (for its masker) and cancel signal. */
export interface ArtifactStep {
  taskId: string;
  stepName: string;
  scope: RunScope;
  target: Target;
  log: StepLog;
  signal: AbortSignal;
}

/** Artifacts for the steps of a server: storage, limits and the row each attach writes. */
export class ArtifactService {
  constructor(readonly options: ArtifactServiceOptions) {}

  get content(): ArtifactContent {
    return this.options.content;
  }

  forStep(step: ArtifactStep): StepArtifacts {
    return { attach: (input) => this.#attach(step, input) };
  }

  async #attach(step: ArtifactStep, input: AttachInput): Promise<AttachedArtifact> {
    const { name } = input;
    const problem = artifactNameProblem(name);
    if (problem) throw new TaskFailure(`cannot attach an artifact: ${problem}`);
    // The name is shown by the API and the CLI unmasked: a sensitive value must not get there.
    if (step.log.redact(name) !== name) {
      throw new TaskFailure("cannot attach an artifact: its name holds a sensitive value; name it without one");
    }
    // The path goes on a command line on the host (`cat`), which `ps` shows: not with a secret in it.
    if ("fromTargetPath" in input && step.log.redact(input.fromTargetPath) !== input.fromTargetPath) {
      throw new TaskFailure("cannot attach an artifact: its path holds a sensitive value; use a path without one");
    }
    step.signal.throwIfAborted();
    const source =
      "stream" in input
        ? input.stream
        : await step.target.transport.readStream(step.taskId, input.fromTargetPath, step.signal);
    const { maxBytes } = this.options;
    const hash = createHash("sha256");
    let size = 0;
    const measured = new Transform({
      highWaterMark: 256 * 1024,
      transform(chunk: Buffer, _encoding, callback) {
        size += chunk.length;
        if (size > maxBytes) {
          callback(
            new TaskFailure(
              `artifact ${name} is larger than the server's limit of ${maxBytes} bytes (FERRY_ARTIFACT_MAX_BYTES); nothing was kept`,
            ),
          );
          return;
        }
        hash.update(chunk);
        callback(null, chunk);
      },
    });
    const onAbort = () =>
      measured.destroy(step.signal.reason instanceof Error ? step.signal.reason : new TaskFailure("cancelled"));
    step.signal.addEventListener("abort", onAbort, { once: true });
    // A source error reaches the writer through `measured`; destroying one destroys the other.
    source.once("error", (error: Error) => measured.destroy(error));
    measured.once("close", () => {
      if (!source.destroyed && !source.readableEnded) source.destroy();
    });
    // The writer may not be reading yet (its file or transaction is still opening) when a
    // source fails at once (no such file): the error waits in `measured` for the writer's
    // iteration, which throws it, instead of being an unhandled 'error' event meanwhile.
    measured.on("error", () => {});
    source.pipe(measured);
    const id = newId("art");
    const subject = step.scope.subject;
    try {
      const stored = await this.options.content.write(id, measured, async (location, db) => {
        const row = {
          id,
          task_id: step.taskId,
          project_id: step.scope.project.id,
          environment_id: step.scope.environment.id,
          runbook_id: subject.kind === "runbook" ? subject.id : null,
          step_name: step.stepName,
          target_name: step.target.id === null ? null : step.target.name,
          name,
          size,
          sha256: hash.digest("hex"),
          storage: this.options.content.storage,
          location,
          created_at: nowIso(),
        };
        await insertArtifact(db, row);
        return { id, name, sha256: row.sha256, size };
      });
      return stored;
    } catch (error) {
      if (step.signal.aborted) throw step.signal.reason ?? error;
      if (error instanceof TaskFailure) throw error;
      throw new TaskFailure(`could not store artifact ${name}: ${(error as Error).message}`);
    } finally {
      step.signal.removeEventListener("abort", onAbort);
    }
  }
}

/** For a runner without storage (an engine embedded in a test): every attach fails, saying why. */
export const noArtifacts: StepArtifacts = {
  attach: async () => {
    throw new TaskFailure("this server keeps no artifacts (it was started without artifact storage)");
  },
};
