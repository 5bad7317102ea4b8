import type { Command } from "commander";
import type { FerryEnvironment } from "../config/env.js";
import { UsageError } from "./errors.js";

/**
 * `ferry processes --scope TARGET`: the process runtime on a remote target's host, driven by
 * the server through the target's transport (src/runtimes/remoteProcess.ts). Hidden: the
 * server runs it, and nobody else needs to. The request comes on standard input so that an
 * instance's env values never show in `ps`; the answer is one JSON line.
 */
export function addProcessesCommand(program: Command, environment: () => FerryEnvironment): void {
  program
    .command("processes", { hidden: true })
    .description("run one operation of the process runtime on this host (started by the server)")
    .requiredOption("--scope <target>", "the target whose instances these are (its slug)")
    .action(async (options: { scope: string }) => {
      if (process.stdin.isTTY) throw new UsageError("ferry processes reads its request from standard input");
      const { answerProcessHostRequest, processRuntimeOnHost } = await import("../runtimes/processHost.js");
      const env = environment();
      const chunks: Buffer[] = [];
      for await (const chunk of process.stdin) chunks.push(chunk as Buffer);
      const runtime = processRuntimeOnHost(options.scope, { workDir: env.FERRY_WORK_DIR, runAs: env.FERRY_RUN_AS });
      const answer = await answerProcessHostRequest(runtime, Buffer.concat(chunks).toString("utf8"));
      process.stdout.write(`${JSON.stringify(answer)}\n`);
      // Supervisors it started are detached and unreferenced: nothing else may keep this process.
      process.exit(0);
    });
}
