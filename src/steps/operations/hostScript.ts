import { TaskFailure } from "../../engine/types.js";
import type { Transport } from "../../transports/types.js";
import type { StepRunContext } from "../types.js";

/** What a host script reported: its `name=value` lines on standard output that start with `ferry:`. */
export type Reports = ReadonlyMap<string, string>;

/**
 * Runs one of the operations steps' constant bash scripts on a host, in a step directory:
 * values travel as argv and environment (or standard input), never spliced into the script.
 * Lines `ferry:name=value` on standard output are reports for the step; every other line
 * goes to the task log (standard error as warnings).
 */
export async function runHostScript(
  context: StepRunContext,
  transport: Transport,
  options: {
    what: string;
    script: string;
    args: readonly string[];
    env: Readonly<Record<string, string>>;
    cwd: string;
    timeoutSeconds: number;
    stdin?: string;
    /** Standard output lines that are not reports are kept (not logged) here, when given. */
    collect?: string[];
    quiet?: boolean;
  },
): Promise<Reports> {
  const reports = new Map<string, string>();
  const timeoutMs = options.timeoutSeconds * 1000;
  const exit = await transport.run({
    command: "bash",
    args: [
      "--noprofile",
      "--norc",
      "-c",
      options.script,
      `ferry-${options.what.replace(/\W+/g, "-")}`,
      ...options.args,
    ],
    env: { LANG: "C.UTF-8", HOME: options.cwd, ...options.env },
    cwd: options.cwd,
    taskId: context.taskId,
    timeoutMs,
    signal: context.signal,
    ...(options.stdin !== undefined && { stdin: options.stdin }),
    onLine: (stream, text, cut) => {
      const report = stream === "stdout" ? /^ferry:([a-zA-Z0-9]+)=(.*)$/.exec(text) : null;
      if (report?.[1] !== undefined) {
        reports.set(report[1], report[2] ?? "");
      } else if (stream === "stdout" && options.collect) {
        options.collect.push(text);
      } else if (!options.quiet || stream === "stderr") {
        const level = stream === "stdout" ? "info" : "warn";
        if (cut) context.log.writeCutLine(level, text);
        else context.log[level](text);
      }
    },
  });
  if (context.signal.aborted) throw context.signal.reason ?? new TaskFailure("cancelled");
  if (exit.timedOut)
    throw new TaskFailure(`${options.what} ran longer than ${options.timeoutSeconds} s and was stopped`);
  if (exit.code !== 0) {
    const reason = reports.get("error");
    throw new TaskFailure(`${options.what} failed${reason ? `: ${reason}` : ` (exit code ${exit.code ?? "killed"})`}`);
  }
  return reports;
}

/** A report the script must have made. */
export function reported(reports: Reports, name: string, what: string): string {
  const value = reports.get(name);
  if (value === undefined || value === "") throw new TaskFailure(`${what} did not report its ${name}`);
  return value;
}
