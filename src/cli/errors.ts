/** Exit codes of the CLI: the contract scripts rely on. */
export const EXIT_OK = 0;
export const EXIT_FAILED = 1;
export const EXIT_USAGE = 2;

/** A command line the CLI cannot act on (exit 2). */
export class UsageError extends Error {}

/** The operation was attempted and failed (exit 1): server problem, network error. */
export class OperationError extends Error {
  constructor(
    message: string,
    readonly details: string[] = [],
    /** The HTTP status of the server's refusal, when there was one. */
    readonly status?: number,
  ) {
    super(message);
  }
}
