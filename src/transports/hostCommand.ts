import { ConflictError, InputError, NotFoundError } from "../domain/errors.js";
import { TaskFailure } from "../engine/types.js";
import type { Transport } from "./types.js";

/** The task id host services run under (ADR 0035): it only names where their process groups are recorded. */
export const HOST_SERVICE_WORK = "ferry-host";

/** The shell's "command not found". */
const NOT_FOUND_EXIT = 127;

/** What a hidden `ferry …` host command prints: its value, or why it failed (the kind keeps the server's error mapping). */
type HostCommandAnswer =
  | { ok: true; value: unknown }
  | { ok: false; kind: "input" | "notFound" | "conflict" | "failed"; message: string };

/** The host has no Ferry to run the command. */
export class FerryMissing extends TaskFailure {}

/**
 * Runs a hidden `ferry` command on a target's host (`ferry processes`, `ferry nginx-router`)
 * with the request as JSON on its standard input — never on a command line or in an
 * environment — and returns its answer's value, its failure thrown as the server's own error.
 */
export async function callFerryOnHost<T>(
  transport: Transport,
  call: {
    /** The ferry executable on the host. */
    command: string;
    args: string[];
    request: unknown;
    timeoutMs: number;
    signal?: AbortSignal | undefined;
    /** Names it in messages: "the process runtime on target 'web-1'". */
    what: string;
  },
): Promise<T> {
  const stdout: string[] = [];
  const stderr: string[] = [];
  const exit = await transport.run({
    command: call.command,
    args: call.args,
    env: {},
    cwd: "/",
    taskId: HOST_SERVICE_WORK,
    hostService: true,
    stdin: JSON.stringify(call.request),
    timeoutMs: call.timeoutMs,
    signal: call.signal ?? new AbortController().signal,
    onLine: (stream, text) => (stream === "stdout" ? stdout : stderr).push(text),
  });
  if (exit.timedOut) throw new TaskFailure(`${call.what} did not answer within ${call.timeoutMs / 1000} s`);
  if (exit.code === NOT_FOUND_EXIT) {
    throw new FerryMissing(
      `${call.what} needs Ferry on the host: '${call.command}' is not on its PATH. Install Ferry there (Node.js 20 or later, as for ferry agent) or set the target's router.command to its path`,
    );
  }
  const line = [...stdout].reverse().find((text) => text.startsWith("{"));
  let answer: HostCommandAnswer;
  try {
    answer = JSON.parse(line ?? "") as HostCommandAnswer;
  } catch {
    const reason = stderr.join(" ").trim().slice(-500) || `exit ${exit.code ?? "by a signal"}`;
    throw new TaskFailure(
      `${call.what} gave no answer Ferry understands (${reason}): is Ferry on the host of this version?`,
    );
  }
  if (answer.ok) return answer.value as T;
  switch (answer.kind) {
    case "input":
      throw new InputError(answer.message);
    case "notFound":
      throw new NotFoundError(answer.message);
    case "conflict":
      throw new ConflictError(answer.message);
    default:
      throw new Error(answer.message);
  }
}
