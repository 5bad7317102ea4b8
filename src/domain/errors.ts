/**
 * The handful of errors domain, store and engine code throw. They carry no HTTP
 * knowledge: `api/problems.ts` maps each to an RFC 9457 problem and `cli/` prints them.
 */

/** One bad field of an input, addressed by an RFC 6901 JSON pointer ("/phases/0/name"). */
export interface FieldIssue {
  readonly pointer: string;
  readonly detail: string;
  /** Where the field is when not in the body: a query-string or path parameter. */
  readonly in?: "query" | "path";
}

export abstract class FerryError extends Error {
  /** Stable machine-readable code; part of the public contract (`urn:ferry:problem:<code>`). */
  abstract readonly code: string;
}

export class InputError extends FerryError {
  readonly code = "invalid-input";
  constructor(
    message: string,
    readonly issues: readonly FieldIssue[] = [],
  ) {
    super(message);
  }
}

/** A request body that is not JSON at all (bad UTF-8, syntax error, empty). */
export class MalformedBodyError extends FerryError {
  readonly code = "malformed-body";
}

export class PreconditionError extends FerryError {
  readonly code = "precondition-failed";
}

export class NotFoundError extends FerryError {
  readonly code = "not-found";
}

export class ConflictError extends FerryError {
  readonly code = "conflict";
}

/** The resource exists but something else depends on it (delete refused). */
export class InUseError extends FerryError {
  readonly code = "in-use";
  constructor(
    message: string,
    readonly usedBy: readonly string[],
  ) {
    super(message);
  }
}

export class UnauthenticatedError extends FerryError {
  readonly code = "unauthenticated";
}

/** Authenticated, but not allowed to do this (an admin-only route called by a non-admin). */
export class ForbiddenError extends FerryError {
  readonly code = "forbidden";
}

/** A state-changing request authenticated by a session cookie without a matching CSRF token or from another origin. */
export class CsrfError extends FerryError {
  readonly code = "csrf-failed";
}

/** Too many failed sign-ins; the caller may try again after `retryAfterSeconds`. */
export class RateLimitedError extends FerryError {
  readonly code = "rate-limited";
  constructor(
    message: string,
    readonly retryAfterSeconds: number,
  ) {
    super(message);
  }
}

/** RFC 6901 pointer for a path such as ["phases", 0, "name"]. */
export function toJsonPointer(path: readonly PropertyKey[]): string {
  return path.map((segment) => `/${String(segment).replaceAll("~", "~0").replaceAll("/", "~1")}`).join("");
}
