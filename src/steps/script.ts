import { posix } from "node:path";
import { z } from "zod";
import { type ArtifactMessage, baseName, parseArtifactMessage } from "../domain/artifacts.js";
import { TaskFailure } from "../engine/types.js";
import { timeoutSecondsSchema } from "./configFields.js";
import type { StepKind, StepRunContext } from "./types.js";

const scriptConfigSchema = z.strictObject({
  interpreter: z.enum(["bash", "node"]).default("bash"),
  /**
   * The script's text, run as is: it is never templated, because splicing values into
   * code is how injection happens. Values reach it through `env` and `arguments`.
   */
  script: z
    .string()
    .min(1)
    .max(256 * 1024),
  /** Arguments ($1… / process.argv); each is a template rendered with the variables. */
  arguments: z.array(z.string().max(8192)).max(100).default([]),
  /** Environment variables for the script; each value is a template. */
  env: z
    .record(z.string().regex(/^[A-Za-z_][A-Za-z0-9_]*$/, { message: "use letters, digits and '_'" }), z.string())
    .default({}),
  timeoutSeconds: timeoutSecondsSchema(600),
});
type ScriptConfig = z.infer<typeof scriptConfigSchema>;

/** The file in the step's directory that $FERRY_OUTPUT names. */
const OUTPUT_FILE = "output";

/** Lines of `name=value` the script writes to $FERRY_OUTPUT become the step's output variables. */
function parseOutputs(text: string): Record<string, string> {
  const outputs: Record<string, string> = {};
  for (const line of text.split(/\r?\n/)) {
    const match = /^([A-Za-z_][A-Za-z0-9_.-]*)=(.*)$/.exec(line);
    if (match?.[1]) outputs[match[1]] = match[2] ?? "";
  }
  return outputs;
}

/** At most this many artifact messages of one script are acted on; more are reported, not attached. */
const MAX_ARTIFACT_MESSAGES = 100;

/**
 * Attaches the files a script announced (`##ferry[artifact path='…' name='…']`), in order,
 * from the script's host, once it has exited: by then each is written, and the step's
 * directory (a relative path's base) is still there. Returns the first failure's message.
 */
async function attachAnnounced(
  context: StepRunContext,
  directory: string,
  announced: readonly ArtifactMessage[],
): Promise<string | undefined> {
  let firstFailure: string | undefined;
  for (const message of announced) {
    const path = posix.resolve(directory, message.path);
    const name = message.name ?? baseName(path);
    try {
      const artifact = await context.artifacts.attach({ name, fromTargetPath: path });
      context.log.info(`attached artifact ${artifact.name} (${artifact.size} bytes, sha256 ${artifact.sha256})`);
    } catch (error) {
      if (context.signal.aborted) throw error;
      const reason = `could not attach ${path}: ${(error as Error).message}`;
      context.log.warn(reason);
      firstFailure ??= reason;
    }
  }
  return firstFailure;
}

/** Runs a bash or node script as its own process group, streaming its output into the task log. */
export const scriptStep: StepKind<ScriptConfig> = {
  kind: "script",
  config: scriptConfigSchema,
  deploysFiles: true,

  plan(config, render) {
    return [
      {
        description: `run a ${config.interpreter} script (${config.script.split("\n").length} lines) with ${
          Object.keys(config.env).length
        } environment variables${config.arguments.length > 0 ? ` and arguments ${config.arguments.map(render).join(" ")}` : ""}`,
      },
    ];
  },

  async run(context: StepRunContext, config: ScriptConfig) {
    const { transport } = context.target;
    const directory = await transport.stepDirectory(context.taskId, "script-");
    const outputFile = `${directory}/${OUTPUT_FILE}`;
    let finished = false;
    try {
      const env: Record<string, string> = {
        HOME: directory,
        LANG: "C.UTF-8",
        FERRY_OUTPUT: outputFile,
        FERRY_TASK_ID: context.taskId,
      };
      for (const [name, template] of Object.entries(config.env)) env[name] = context.render(template);
      const args = config.arguments.map((argument) => context.render(argument));
      const [command, commandArgs] =
        config.interpreter === "bash"
          ? ["bash", ["--noprofile", "--norc", "-e", "-c", config.script, "ferry-step", ...args]]
          : ["node", ["-e", config.script, "--", ...args]];
      const timeoutMs = config.timeoutSeconds * 1000;
      const announced: ArtifactMessage[] = [];
      let ignored = 0;
      const exit = await transport.run({
        command,
        args: commandArgs,
        env,
        cwd: directory,
        taskId: context.taskId,
        timeoutMs,
        signal: context.signal,
        onLine: (stream, text, cut) => {
          // A service message on stdout attaches a file (ADR 0037); the line is logged like any other.
          const message = stream === "stdout" && !cut ? parseArtifactMessage(text) : undefined;
          if (message && "problem" in message) context.log.warn(`${message.problem}; nothing was attached`);
          else if (message && announced.length < MAX_ARTIFACT_MESSAGES) announced.push(message);
          else if (message) ignored++;
          const level = stream === "stdout" ? "info" : "warn";
          if (cut) context.log.writeCutLine(level, text);
          else context.log[level](text);
        },
      });
      if (context.signal.aborted) throw context.signal.reason ?? new TaskFailure("cancelled");
      if (ignored > 0) {
        context.log.warn(`${ignored} artifact message(s) beyond the first ${MAX_ARTIFACT_MESSAGES} were not attached`);
      }
      // Whatever the exit code: a failed run's dump or log is what someone will want to look at.
      const attachFailure = await attachAnnounced(context, directory, announced);
      if (exit.timedOut) throw new TaskFailure(`the script ran longer than ${timeoutMs / 1000} s and was stopped`);
      if (exit.code !== 0) throw new TaskFailure(`the script exited with code ${exit.code ?? "(killed)"}`);
      if (attachFailure) throw new TaskFailure(attachFailure);
      // Read and removed in one go (on an agent each call is a round trip), after the files a
      // script announced in its directory were attached.
      const outputs = parseOutputs((await transport.finishStep(directory, OUTPUT_FILE)) ?? "");
      finished = true;
      return { outputs };
    } finally {
      // A failure to tidy up (the host went away mid-step) must not hide how the step went: it is only logged.
      if (!finished)
        await transport.removeDirectory(directory).catch((error: unknown) => {
          context.log.warn(`could not remove the step's directory on the host (${(error as Error).message})`);
        });
    }
  },
};
