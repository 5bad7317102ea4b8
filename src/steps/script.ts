import { spawn } from "node:child_process";
import { mkdtemp, readFile, rm } from "node:fs/promises";
import { join } from "node:path";
import { z } from "zod";
import { LineSplitter } from "../engine/lineSplitter.js";
import { TaskFailure } from "../engine/types.js";
import { giveToLocalUser, spawnCredentials } from "../runtimes/localUser.js";
import { recordProcessGroup } from "../runtimes/processGroups.js";
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
  timeoutSeconds: z
    .number()
    .int()
    .min(1)
    .max(24 * 3600)
    .default(600),
});
type ScriptConfig = z.infer<typeof scriptConfigSchema>;

/** Lines of `name=value` the script writes to $FERRY_OUTPUT become the step's output variables. */
function parseOutputs(text: string): Record<string, string> {
  const outputs: Record<string, string> = {};
  for (const line of text.split(/\r?\n/)) {
    const match = /^([A-Za-z_][A-Za-z0-9_.-]*)=(.*)$/.exec(line);
    if (match?.[1]) outputs[match[1]] = match[2] ?? "";
  }
  return outputs;
}

/** Runs a bash or node script as its own process group, streaming its output into the task log. */
export const scriptStep: StepKind<ScriptConfig> = {
  kind: "script",
  config: scriptConfigSchema,

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
    const directory = await mkdtemp(join(context.workDirectory, "script-"));
    // The script's own directory (its HOME and $FERRY_OUTPUT) belongs to the account it runs as.
    await giveToLocalUser(directory, context.localUser);
    const outputFile = join(directory, "output");
    try {
      const env: Record<string, string> = {
        PATH: process.env.PATH ?? "/usr/local/bin:/usr/bin:/bin",
        HOME: directory,
        LANG: "C.UTF-8",
        FERRY_OUTPUT: outputFile,
        FERRY_TASK_ID: context.taskId,
      };
      for (const [name, template] of Object.entries(config.env)) env[name] = context.render(template);
      const args = config.arguments.map((argument) => context.render(argument));
      const [command, commandArgs] =
        config.interpreter === "bash"
          ? ["bash", ["--noprofile", "--norc", "-e", "-c", config.script, `ferry-step`, ...args]]
          : [process.execPath, ["-e", config.script, "--", ...args]];
      await runProcess(context, command, commandArgs, env, directory, config.timeoutSeconds * 1000);
      const outputs = await readFile(outputFile, "utf8").then(parseOutputs, () => ({}));
      return { outputs };
    } finally {
      await rm(directory, { recursive: true, force: true });
    }
  },
};

/**
 * Spawns with an argument array (no shell line is ever built), in its own process group
 * so a cancel or timeout kills the script and everything it started.
 */
async function runProcess(
  context: StepRunContext,
  command: string,
  args: string[],
  env: Record<string, string>,
  cwd: string,
  timeoutMs: number,
): Promise<void> {
  // Never with the server's rights unless the operator chose so (FERRY_RUN_AS, docs/security.md).
  const credentials = spawnCredentials(context.localUser);
  const child = spawn(command, args, { env, cwd, detached: true, stdio: ["ignore", "pipe", "pipe"], ...credentials });
  // Listen before any await: a quick script may have exited by the time we look again.
  const exited = new Promise<number | null>((resolve, reject) => {
    child.on("error", reject);
    child.on("close", (exitCode) => resolve(exitCode));
  });
  exited.catch(() => {}); // handled where it is awaited below; this only keeps Node from calling it unhandled
  // Recorded at once, so that if this server dies, the one that interrupts the task can kill the group.
  if (child.pid !== undefined) recordProcessGroup(context.workDirectory, child.pid);
  // The whole group, even when its leader has exited: a background job the script started
  // (`sleep 30 &`) keeps running, and holds stdout open, after bash itself is gone.
  const killGroup = () => {
    if (child.pid === undefined) return;
    try {
      process.kill(-child.pid, "SIGKILL");
    } catch {
      // The group is already gone.
    }
  };
  let timedOut = false;
  const timer = setTimeout(() => {
    timedOut = true;
    killGroup();
  }, timeoutMs);
  const onAbort = () => killGroup();
  context.signal.addEventListener("abort", onAbort, { once: true });
  // Lines of at most 64 KiB: a longer one is cut, and its rest dropped as it arrives.
  const pipeLines = (stream: NodeJS.ReadableStream, level: "info" | "warn") => {
    const splitter = new LineSplitter((text, cut) =>
      cut ? context.log.writeCutLine(level, text) : context.log[level](text),
    );
    stream.setEncoding("utf8");
    stream.on("data", (chunk: string) => splitter.push(chunk));
    stream.on("end", () => splitter.end());
  };
  pipeLines(child.stdout, "info");
  pipeLines(child.stderr, "warn");
  try {
    const code = await exited;
    if (context.signal.aborted) throw context.signal.reason ?? new TaskFailure("cancelled");
    if (timedOut) throw new TaskFailure(`the script ran longer than ${timeoutMs / 1000} s and was stopped`);
    if (code !== 0) throw new TaskFailure(`the script exited with code ${code ?? "(killed)"}`);
  } finally {
    clearTimeout(timer);
    context.signal.removeEventListener("abort", onAbort);
    killGroup();
  }
}
