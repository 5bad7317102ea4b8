import { z } from "zod";
import { packageNameSchema } from "../domain/packages.js";
import type { PinnedPackage } from "../domain/releases.js";
import { TaskFailure } from "../engine/types.js";
import { reported, runHostScript } from "./operations/hostScript.js";
import type { StepKind, StepRunContext } from "./types.js";

const TIMEOUT_SECONDS = 600;

/**
 * Checks the archive's sha256 against the pinned version's, then unpacks it into files/ beside it:
 * the bytes a deployment runs are exactly those the release pinned. The archive was checked
 * when it was pushed (no entry outside, no link pointing out); tar and unzip refuse such
 * entries by themselves too. Owners are not restored; everyone may read the files (a
 * package is no secret: anyone signed in may download it), so a process instance running as
 * another account than the task can copy them.
 */
const unpackScript = `set -euo pipefail
archive="$1"; expected="$2"; format="$3"; directory="$4"
actual=$(sha256sum "$archive" | cut -d' ' -f1)
if [ "$actual" != "$expected" ]; then
  echo "ferry:error=the archive on this host has sha256 $actual, the release pins $expected"
  exit 3
fi
umask 022
mkdir -p -- "$directory"
case "$format" in
  tar.gz) tar -xzf "$archive" -C "$directory" --no-same-owner --no-same-permissions ;;
  zip)
    if ! command -v unzip >/dev/null; then echo "ferry:error=unzip is not installed on this host; install it (apt-get install unzip) or push the package as a .tar.gz"; exit 4; fi
    unzip -q "$archive" -d "$directory" ;;
esac
chmod -R u+rwX,go+rX -- "$directory"
chmod go+x -- "$(dirname "$directory")"
rm -f -- "$archive"
echo "ferry:sha256=$actual"
`;

/** An unpacked package on the step's target. */
export interface UnpackedPackage {
  pinned: PinnedPackage;
  /** The absolute directory on the target holding the package's files. */
  directory: string;
}

/**
 * Unpacks the version of `name` the run's release pins on the step's target, through its
 * transport (local, SSH or agent alike), into a directory of its own for this release and
 * task: `<task's directory>/package-<name>-<release>-XXXX/files`. Removed with the task's
 * work files when the task ends; a process instance keeps its own copy (copyFrom).
 */
export async function unpackPackage(context: StepRunContext, name: string): Promise<UnpackedPackage> {
  const pinned = await context.packages.pinned(name);
  const transport = context.target.transport;
  const release = context.scope.subject.kind === "release" ? context.scope.subject.version : "run";
  const stepDirectory = await transport.stepDirectory(context.taskId, `package-${name}-${release}-`);
  const archive = `${stepDirectory}/archive.${pinned.format}`;
  const directory = `${stepDirectory}/files`;
  context.log.info(
    `unpacking package ${pinned.name} ${pinned.version} (${pinned.format}, ${pinned.size} bytes, sha256 ${pinned.sha256}) on ${context.target.name}`,
  );
  // Streamed from the feed to the host (Transport.upload): neither holds the whole archive,
  // and the host keeps it only when its size and sha256 are the pinned version's.
  await transport.upload(
    {
      taskId: context.taskId,
      path: archive,
      mode: 0o600,
      bytes: pinned.size,
      sha256: pinned.sha256,
      directories: "private",
      timeoutMs: TIMEOUT_SECONDS * 1000,
      signal: context.signal,
    },
    await context.packages.open(pinned),
  );
  const reports = await runHostScript(context, transport, {
    what: "unpacking the package",
    script: unpackScript,
    args: [archive, pinned.sha256, pinned.format, directory],
    env: {},
    cwd: stepDirectory,
    timeoutSeconds: TIMEOUT_SECONDS,
  });
  if (reported(reports, "sha256", "the unpacked package") !== pinned.sha256) {
    throw new TaskFailure(
      `package ${pinned.name} ${pinned.version}: the bytes on the target differ from the pinned version's (sha256 ${pinned.sha256})`,
    );
  }
  context.log.info(`unpacked ${pinned.name} ${pinned.version} into ${directory} (sha256 checked on the target)`);
  return { pinned, directory };
}

const packageConfigSchema = z.strictObject({
  /** The package (one of the process's `packages`) whose pinned version is unpacked. */
  package: packageNameSchema,
});
type PackageConfig = z.infer<typeof packageConfigSchema>;

/**
 * Unpacks the pinned version of a package (the release's, or the runbook version's) on the step's target (ADR 0044);
 * later steps find it at #{Ferry.Step[<name>].Output.directory}. A process step that says
 * `package:` unpacks its own and needs no package step before it.
 */
export const packageStep: StepKind<PackageConfig> = {
  kind: "package",
  config: packageConfigSchema,
  unpackedPackage: (config) => config.package,
  plan: (config) => [
    { description: `unpack the pinned version of package ${config.package} (sha256 checked on the target)` },
  ],
  async run(context, config) {
    const { pinned, directory } = await unpackPackage(context, config.package);
    return { outputs: { directory, version: pinned.version, sha256: pinned.sha256 } };
  },
};
