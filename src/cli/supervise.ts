import type { Command } from "commander";

/**
 * `ferry supervise <directory>`: the supervisor of one instance of the process runtime
 * (src/runtimes/supervisor.ts). Hidden: the server starts it, detached, and nobody else
 * needs to; it shows in `ps` under this name.
 */
export function addSuperviseCommand(program: Command): void {
  program
    .command("supervise <directory>", { hidden: true })
    .description("supervise one instance of the process runtime (started by the server)")
    .action(async (directory: string) => {
      const { superviseInstance } = await import("../runtimes/supervisor.js");
      await superviseInstance(directory);
      // The loop ended (stopped, or the policy restarts nothing): nothing else may keep this process.
      process.exit(0);
    });
}
