import { createHash } from "node:crypto";
import { isAbsolute, normalize } from "node:path";
import { TaskFailure } from "../../engine/types.js";
import type { ProcessInstanceSpec } from "../../runtimes/process.js";
import type { UnpackedPackage } from "../package.js";
import type { StepRunContext } from "../types.js";
import type { ProcessConfig } from "./config.js";

/** What the recreate and blue/green strategies of the process step share. */

/** The label saying what a colour runs: a hash of its command, arguments and files' source. */
export const COMMAND_LABEL = "ferry.command";

/**
 * Renders every template of the step before anything changes: a missing variable must not
 * leave the environment with the old instance stopped and no new one.
 */
export function renderProcessInputs(
  context: StepRunContext,
  config: ProcessConfig,
  /** The package the step names, unpacked on the target: its directory is what is copied. */
  unpacked?: UnpackedPackage,
) {
  const command = context.render(config.command);
  const args = config.args.map((argument) => context.render(argument));
  const env: Record<string, string> = {};
  for (const [variable, template] of Object.entries(config.env)) env[variable] = context.render(template);
  const copyFrom =
    unpacked !== undefined
      ? unpacked.directory
      : config.copyFrom === undefined
        ? undefined
        : absolute("copyFrom", context.render(config.copyFrom));
  const workingDirectory =
    config.workingDirectory === undefined
      ? undefined
      : absolute("workingDirectory", context.render(config.workingDirectory));
  const identity = createHash("sha256")
    // A package's identity is its bytes (the directory is new for every task).
    .update(
      JSON.stringify([
        command,
        args,
        unpacked !== undefined ? `package:${unpacked.pinned.sha256}` : (copyFrom ?? null),
        workingDirectory ?? null,
      ]),
    )
    .digest("hex")
    .slice(0, 16);
  const spec: Omit<ProcessInstanceSpec, "name" | "labels" | "port"> = {
    command,
    args,
    env,
    copyFrom,
    workingDirectory,
    restartPolicy: config.restartPolicy,
    limits: config.limits,
  };
  return { spec, identity: `sha256:${identity}` };
}

function absolute(field: string, path: string): string {
  if (!isAbsolute(path) || path.includes("\0") || normalize(path) !== path.replace(/(.)\/+$/, "$1")) {
    throw new TaskFailure(`${field} '${path.slice(0, 200)}' must be a normalised absolute path on the target`);
  }
  return path;
}

/** "starting <what> <name>: node server.js (copy of /srv/app); env A, B": env values may be secrets, so only their names. */
export function describeProcessStart(
  what: string,
  name: string,
  spec: Pick<ProcessInstanceSpec, "command" | "args" | "env" | "copyFrom" | "workingDirectory" | "limits">,
): string {
  const names = Object.keys(spec.env ?? {});
  return `starting ${what} ${name}: ${[spec.command, ...(spec.args ?? [])].join(" ")}${
    spec.copyFrom !== undefined ? ` (in a copy of ${spec.copyFrom})` : ""
  }${spec.workingDirectory !== undefined ? ` (in ${spec.workingDirectory})` : ""}${describeProcessLimits(spec)}${
    names.length > 0 ? `; env ${names.join(", ")}` : ""
  }`;
}

export function describeProcessLimits(spec: Pick<ProcessInstanceSpec, "limits">): string {
  const limits = spec.limits ?? {};
  return `${limits.addressSpaceMb !== undefined ? `; address space ${limits.addressSpaceMb} MiB` : ""}${
    limits.openFiles !== undefined ? `; open files ${limits.openFiles}` : ""
  }`;
}
