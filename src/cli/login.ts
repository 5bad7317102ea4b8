import type { Command } from "commander";
import type { FerryEnvironment } from "../config/env.js";
import { ApiClient } from "./client.js";
import { UsageError } from "./errors.js";
import { writeOutput } from "./output.js";
import { DEFAULT_SERVER_URL, saveSettings, settingsPath } from "./settings.js";
import { readSecretFromStdin } from "./stdin.js";

export function addLoginCommand(program: Command, environment: () => FerryEnvironment): void {
  program
    .command("login")
    .description("check an API key against a server and remember both for later commands")
    .option("--url <url>", "server URL", DEFAULT_SERVER_URL)
    .option("--api-key-stdin", "read the API key from standard input (default: FERRY_API_KEY)")
    .action(async (options: { url: string; apiKeyStdin?: boolean }) => {
      const env = environment();
      try {
        new URL(options.url);
      } catch {
        throw new UsageError(`--url '${options.url}' is not a URL; use e.g. http://127.0.0.1:8080`);
      }
      const apiKey = options.apiKeyStdin ? await readSecretFromStdin("API key") : env.FERRY_API_KEY;
      if (!apiKey) throw new UsageError("pipe the key in with --api-key-stdin, or set FERRY_API_KEY");
      await new ApiClient(options.url, apiKey).get("/api/v1/environments?limit=1");
      const path = settingsPath(env);
      await saveSettings(path, { url: options.url, apiKey });
      writeOutput(`logged in to ${options.url}; saved in ${path}\n`);
    });
}
