import { homedir } from "node:os";
import { join } from "node:path";
import { z } from "zod";
import { ConflictError, InputError, NotFoundError } from "../domain/errors.js";
import { resolveLocalUser } from "./localUser.js";
import { instanceAccount, ProcessRuntime } from "./process.js";

/*
 * The host side of the process runtime on a remote target (`ferry processes`, run through the
 * target's transport as a host service: docs/decisions/0035-process-runtime-on-every-target.md).
 * One request as JSON on standard input — never on the command line or in the environment,
 * since an instance's env values may be secrets — and one answer as a JSON line on stdout.
 * The instances and their supervisors are the same as on the server's own host (ADR 0029):
 * this process starts or signals them and exits; they outlive it, the connection and the server.
 */

const restartPolicy = z.enum(["no", "on-failure", "always"]);
const specSchema = z.strictObject({
  name: z.string(),
  command: z.string(),
  args: z.array(z.string()).optional(),
  env: z.record(z.string(), z.string()).optional(),
  copyFrom: z.string().optional(),
  workingDirectory: z.string().optional(),
  labels: z.record(z.string(), z.string()).optional(),
  restartPolicy: restartPolicy.optional(),
  port: z.union([z.number().int(), z.literal("auto")]).optional(),
  limits: z
    .strictObject({ addressSpaceMb: z.number().int().optional(), openFiles: z.number().int().optional() })
    .optional(),
});
const stopTimeout = z.number().int().min(0).max(3600).optional();

const processHostRequestSchema = z.discriminatedUnion("operation", [
  z.strictObject({ operation: z.literal("createAndStart"), spec: specSchema }),
  z.strictObject({
    operation: z.literal("clone"),
    name: z.string(),
    as: z.string(),
    labels: z.record(z.string(), z.string()),
  }),
  z.strictObject({ operation: z.literal("start"), name: z.string() }),
  z.strictObject({ operation: z.literal("stop"), name: z.string(), stopTimeoutSeconds: stopTimeout }),
  z.strictObject({ operation: z.literal("stopAndRemove"), name: z.string(), stopTimeoutSeconds: stopTimeout }),
  z.strictObject({ operation: z.literal("inspect"), name: z.string() }),
  z.strictObject({ operation: z.literal("listByLabel"), label: z.string(), value: z.string() }),
  z.strictObject({ operation: z.literal("logTail"), name: z.string(), lines: z.number().int().min(1).max(10_000) }),
]);
export type ProcessHostRequest = z.infer<typeof processHostRequestSchema>;

/** What `ferry processes` prints: the operation's value, or why it failed (the kind keeps the server's error mapping). */
export type ProcessHostAnswer =
  | { ok: true; value: unknown }
  | { ok: false; kind: "input" | "notFound" | "conflict" | "failed"; message: string };

/** A target's scope: its instances are kept apart from other targets' that share the host (or its file system). */
const scopePattern = /^[a-z0-9][a-z0-9-]{0,99}$/;

/**
 * Where a target's instances live on the host and the account they run as. FERRY_WORK_DIR
 * (an agent passes its own work root) or, for an SSH account, a lasting directory of its own
 * (root: /var/lib/ferry, whose parents `nobody` may pass through; others: their
 * ~/.local/state/ferry). Instances run as the account FERRY_RUN_AS names; without it, as the
 * SSH account itself, or as `nobody` when that is root (as on the server: ADR 0029).
 */
export function processRuntimeOnHost(
  scope: string,
  settings: { workDir?: string | undefined; runAs?: string | undefined },
): ProcessRuntime {
  if (!scopePattern.test(scope)) throw new InputError(`'${scope.slice(0, 100)}' is not a target's scope`);
  const uid = process.getuid?.() ?? 0;
  const base =
    settings.workDir !== undefined
      ? join(settings.workDir, "processes")
      : uid === 0
        ? "/var/lib/ferry/processes"
        : join(homedir(), ".local/state/ferry/processes");
  const user = resolveLocalUser(settings.runAs ?? (uid === 0 ? undefined : "server"), uid);
  return new ProcessRuntime({ directory: join(base, scope), account: instanceAccount(user) });
}

/** Carries out one request; every failure becomes an answer (the exit code stays 0 when the answer was written). */
export async function answerProcessHostRequest(runtime: ProcessRuntime, input: string): Promise<ProcessHostAnswer> {
  try {
    const request = processHostRequestSchema.parse(JSON.parse(input));
    return { ok: true, value: (await perform(runtime, request)) ?? null };
  } catch (error) {
    const message = error instanceof Error ? error.message : String(error);
    if (error instanceof z.ZodError || error instanceof SyntaxError)
      return { ok: false, kind: "input", message: `the request is not one ferry processes understands: ${message}` };
    if (error instanceof InputError) return { ok: false, kind: "input", message };
    if (error instanceof NotFoundError) return { ok: false, kind: "notFound", message };
    if (error instanceof ConflictError) return { ok: false, kind: "conflict", message };
    return { ok: false, kind: "failed", message };
  }
}

function perform(runtime: ProcessRuntime, request: ProcessHostRequest): Promise<unknown> {
  switch (request.operation) {
    case "createAndStart": {
      const { spec } = request;
      return runtime.createAndStart({
        ...spec,
        ...(spec.limits && {
          limits: {
            ...(spec.limits.addressSpaceMb !== undefined && { addressSpaceMb: spec.limits.addressSpaceMb }),
            ...(spec.limits.openFiles !== undefined && { openFiles: spec.limits.openFiles }),
          },
        }),
      });
    }
    case "clone":
      return runtime.clone(request.name, request.as, request.labels);
    case "start":
      return runtime.start(request.name);
    case "stop":
      return runtime.stop(request.name, withTimeout(request.stopTimeoutSeconds));
    case "stopAndRemove":
      return runtime.stopAndRemove(request.name, withTimeout(request.stopTimeoutSeconds));
    case "inspect":
      return runtime.inspect(request.name);
    case "listByLabel":
      return runtime.listByLabel(request.label, request.value);
    case "logTail":
      return runtime.logTail(request.name, request.lines);
    default: {
      const unknown: never = request;
      throw new Error(`unknown operation ${JSON.stringify(unknown)}`);
    }
  }
}

function withTimeout(seconds: number | undefined): { stopTimeoutSeconds?: number } {
  return seconds === undefined ? {} : { stopTimeoutSeconds: seconds };
}
