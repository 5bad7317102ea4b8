import { chmod, mkdir, readFile, writeFile } from "node:fs/promises";
import { dirname, join } from "node:path";
import type { FerryEnvironment } from "../config/env.js";
import { ApiClient } from "./client.js";
import { UsageError } from "./errors.js";

export const DEFAULT_SERVER_URL = "http://127.0.0.1:8080";

interface SavedSettings {
  url?: string;
  apiKey?: string;
}

export function settingsPath(environment: FerryEnvironment): string {
  if (environment.FERRY_CONFIG) return environment.FERRY_CONFIG;
  const base = environment.XDG_CONFIG_HOME ?? join(environment.HOME ?? ".", ".config");
  return join(base, "ferry", "config.json");
}

async function readSettings(path: string): Promise<SavedSettings> {
  try {
    const value = JSON.parse(await readFile(path, "utf8")) as SavedSettings;
    return typeof value === "object" && value !== null ? value : {};
  } catch {
    return {};
  }
}

/** Saves the login readable by the owner only: it holds an API key. */
export async function saveSettings(path: string, settings: SavedSettings): Promise<void> {
  await mkdir(dirname(path), { recursive: true, mode: 0o700 });
  await writeFile(path, `${JSON.stringify(settings, null, 2)}\n`, { mode: 0o600 });
  await chmod(path, 0o600);
}

/** The client for this invocation: FERRY_URL / FERRY_API_KEY win over the saved login. */
export async function clientFor(environment: FerryEnvironment): Promise<ApiClient> {
  const saved = await readSettings(settingsPath(environment));
  const url = environment.FERRY_URL ?? saved.url ?? DEFAULT_SERVER_URL;
  const apiKey = environment.FERRY_API_KEY ?? saved.apiKey;
  if (!apiKey) {
    throw new UsageError("no API key: set FERRY_API_KEY or run 'ferry login --url URL --api-key-stdin'");
  }
  return new ApiClient(url, apiKey);
}
