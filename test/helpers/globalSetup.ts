import { execFileSync } from "node:child_process";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";

/**
 * The end-to-end tests run the real `bin/ferry`, which loads dist/: build it once before
 * any test file starts, so they never test a stale build.
 */
export function setup(): void {
  // Each vitest project (vitest.config.ts) runs this setup; one build per run is enough.
  if (process.env.FERRY_TEST_DIST_BUILT === String(process.pid)) return;
  process.env.FERRY_TEST_DIST_BUILT = String(process.pid);
  const root = join(dirname(fileURLToPath(import.meta.url)), "..", "..");
  execFileSync(
    process.execPath,
    [join(root, "node_modules", "typescript", "bin", "tsc"), "-p", "tsconfig.build.json"],
    {
      cwd: root,
      stdio: "inherit",
    },
  );
}
