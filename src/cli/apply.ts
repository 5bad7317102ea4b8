import { readFile } from "node:fs/promises";
import { dirname, resolve } from "node:path";
import type { Command } from "commander";
import type { AppliedChange } from "../config/apply.js";
import { UsageError } from "./errors.js";
import { printJson, writeError, writeOutput } from "./output.js";
import type { CliContext } from "./resourceGroup.js";

/**
 * `ferry apply -f ferry.yml`: makes the server match the file. An invalid file exits 2 with
 * one `file:line:column pointer: detail` line per problem (an InputError, which main.ts
 * reports as a usage error) before anything is sent.
 *
 * `secretSource` is the process environment, passed in by main.ts (the one place that reads
 * it): ferry.yml names the variables its secrets come from, so they cannot be parsed up front
 * with the rest of the environment.
 */
export function addApplyCommand(
  program: Command,
  context: CliContext,
  secretSource: Readonly<Record<string, string | undefined>>,
): void {
  program
    .command("apply")
    .description("create or update a project and what it needs from a ferry.yml (docs/ferry-yml.md)")
    .option("-f, --file <path>", "the file to apply", "ferry.yml")
    .option("--update-secrets", "also overwrite stored secrets from their environment variables (rotation)")
    .option("--json", "print the changes as JSON (an array)")
    .action(async (options: { file: string; updateSecrets?: boolean; json?: boolean }) => {
      // Loaded here, not at start: only `ferry apply` needs the YAML parser.
      const { parseFerryFile } = await import("../config/ferryFile.js");
      const { applyFerryFile, describeChange } = await import("../config/apply.js");
      const config = parseFerryFile(await readText(options.file), options.file);
      const client = await context.client();
      const changes = await applyFerryFile(client, config, secretSource, {
        updateSecrets: options.updateSecrets ?? false,
        // Files a ferry.yml names (an SSH key) are relative to the ferry.yml, as docker-compose's are.
        readFile: (path) => readFile(resolve(dirname(options.file), path), "utf8").catch(() => undefined),
      });
      if (options.json) printJson(changes);
      else writeOutput(`${[...changes.map(describeChange), summary(changes)].join("\n")}\n`);
      for (const change of changes) {
        if (change.warning) writeError(`ferry: warning: ${change.resource} ${change.name}: ${change.warning}\n`);
      }
    });
}

export async function readText(path: string): Promise<string> {
  try {
    return await readFile(path, "utf8");
  } catch (error) {
    const code = (error as NodeJS.ErrnoException).code;
    if (code === "ENOENT") throw new UsageError(`there is no file ${path}; pass the project's file with -f <path>`);
    throw new UsageError(`cannot read ${path}: ${(error as Error).message}`);
  }
}

function summary(changes: readonly AppliedChange[]): string {
  const count = (action: AppliedChange["action"]) => changes.filter((change) => change.action === action).length;
  const changed = count("created") + count("updated") + count("deleted");
  const parts = [
    `${count("created")} created`,
    `${count("updated")} updated`,
    `${count("deleted")} deleted`,
    `${count("unchanged")} unchanged`,
    ...(count("skipped") > 0 ? [`${count("skipped")} skipped`] : []),
  ];
  return `${changed === 0 ? "no changes" : "applied"}: ${parts.join(", ")}`;
}
