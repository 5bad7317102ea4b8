import { join } from "node:path";
import { expect } from "vitest";
import { ROOT, runCommand } from "./cli.js";

/**
 * What the e2e tests of examples/ (example.e2e.test.ts: hello; examplePipeline.e2e.test.ts:
 * pipeline) share: the example's directory, the Docker CLI, the registry's digest of a tag and
 * rewriting the example's files for the test.
 */

/** The directory of examples/`name`. */
export const exampleDirectory = (name: string): string => join(ROOT, "examples", name);

const MANIFEST_V2 = "application/vnd.docker.distribution.manifest.v2+json";

/** Docker CLI calls for setup, checks and clean-up; a failure throws with its stderr. */
export async function docker(args: readonly string[], env: NodeJS.ProcessEnv = process.env): Promise<string> {
  const result = await runCommand("docker", args, env, { timeoutMs: 60_000 });
  if (result.code !== 0) throw new Error(`docker ${args.join(" ")} failed (${result.code}): ${result.stderr.trim()}`);
  return result.stdout;
}

/** The digest the registry at `registryUrl` serves for `repository`:`tag` now. */
export async function registryDigest(registryUrl: string, repository: string, tag: string): Promise<string> {
  const response = await fetch(`${registryUrl}/v2/${repository}/manifests/${tag}`, {
    method: "HEAD",
    headers: { accept: MANIFEST_V2 },
    signal: AbortSignal.timeout(5_000),
  });
  expect(response.status, `HEAD ${repository}:${tag}`).toBe(200);
  return response.headers.get("docker-content-digest") ?? "";
}

/**
 * Replaces `from` in `text` of the example's file `file`, which must hold it exactly `times`
 * times (the example changed otherwise).
 */
export function rewrite(file: string, text: string, from: string, to: string, times = 1): string {
  const found = text.split(from).length - 1;
  if (found !== times) throw new Error(`${file}: expected ${times} × ${JSON.stringify(from)}, found ${found}`);
  return text.replaceAll(from, to);
}
