import { z } from "zod";
import { TaskFailure } from "../engine/types.js";
import { dockerColours } from "../runtimes/dockerColours.js";
import { containerEnvSchema, timeoutSecondsSchema } from "./configFields.js";
import { findService, serviceShape } from "./operations/liveService.js";
import type { StepKind } from "./types.js";

const execConfigSchema = z.strictObject({
  /** The program and its arguments (argv, never a shell line); each a template. */
  command: z.array(z.string().max(8192)).min(1, "give the program and its arguments, e.g. [rake, db:migrate]").max(100),
  /** Environment variables for the command; each value a template (a sensitive variable stays out of every log). */
  env: containerEnvSchema,
  /** The user to run as inside the container ("1000", "app"); absent: the container's own. */
  user: z.string().min(1).max(256).optional(),
  /** Absolute working directory inside the container; absent: the container's own. */
  workingDirectory: z.string().startsWith("/", "use an absolute directory inside the container").max(4096).optional(),
  ...serviceShape,
  timeoutSeconds: timeoutSecondsSchema(600),
});
type ExecConfig = z.infer<typeof execConfigSchema>;

/**
 * Runs a command inside the live colour's container (the service's container when it is not
 * routed) through the target's Docker engine (`docker exec` over its API), its output
 * streamed into the task log; the command's exit code is the step's result.
 */
export const execStep: StepKind<ExecConfig> = {
  kind: "exec",
  config: execConfigSchema,

  plan(config, render) {
    const where =
      config.container === undefined ? "the live colour's container" : `container ${render(config.container)}`;
    return [{ description: `run ${config.command.map(render).join(" ")} in ${where}` }];
  },

  async run(context, config) {
    const command = config.command.map((argument) => context.render(argument));
    const env: Record<string, string> = {};
    for (const [name, template] of Object.entries(config.env)) env[name] = context.render(template);
    const docker = context.target.runtime("docker");
    // Only a container has an inside to run a command in.
    const { instance: container, routed } = await findService(context, config, [dockerColours(docker)]);
    if (container.state !== "running")
      throw new TaskFailure(`container ${container.name} is not running (${container.state})`);
    context.log.info(
      `running ${command[0]} (${command.length - 1} argument(s)) in container ${container.name}${
        routed ? `, the live colour of route ${routed.route.name}` : ""
      }${Object.keys(env).length > 0 ? `; env ${Object.keys(env).join(", ")}` : ""}`,
    );
    const exit = await docker.exec(
      container.id,
      {
        command,
        env,
        user: config.user,
        workingDir: config.workingDirectory,
        onLine: (stream, text, cut) => {
          const level = stream === "stdout" ? "info" : "warn";
          if (cut) context.log.writeCutLine(level, text);
          else context.log[level](text);
        },
      },
      { signal: context.signal, timeoutMs: config.timeoutSeconds * 1000 },
    );
    if (exit.timedOut) {
      throw new TaskFailure(
        `the command ran longer than ${config.timeoutSeconds} s; Ferry stopped reading it (the engine cannot stop a command it runs in a container: it may still be running in ${container.name})`,
      );
    }
    if (exit.exitCode !== 0) throw new TaskFailure(`the command exited with code ${exit.exitCode ?? "(unknown)"}`);
    context.log.info(`the command exited with code 0`);
    return { outputs: { container: container.name, exitCode: "0" } };
  },
};
