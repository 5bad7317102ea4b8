import type { FastifyError, FastifyReply, FastifyRequest } from "fastify";
import { FerryError, type FieldIssue, InputError, InUseError } from "../domain/errors.js";

const PROBLEM_CONTENT_TYPE = "application/problem+json";

/** RFC 9457 problem details, with Ferry's extensions. */
export interface Problem {
  type: string;
  title: string;
  status: number;
  detail: string;
  /** Every bad field of an input error (RFC 9457 §3 "errors" extension style). */
  errors?: FieldIssue[];
  usedBy?: readonly string[];
  requestId?: string;
}

/** Stable problem types: the code is the contract, documented in docs/problems.md. */
const problemTypes: Record<string, { status: number; title: string }> = {
  "invalid-input": { status: 400, title: "Invalid input" },
  "malformed-body": { status: 400, title: "Malformed request body" },
  "bad-request": { status: 400, title: "Bad request" },
  unauthenticated: { status: 401, title: "Authentication required" },
  forbidden: { status: 403, title: "Forbidden" },
  "csrf-failed": { status: 403, title: "Cross-site request refused" },
  "not-found": { status: 404, title: "Not found" },
  "route-not-found": { status: 404, title: "No such route" },
  "method-not-allowed": { status: 405, title: "Method not allowed" },
  conflict: { status: 409, title: "Conflict" },
  "in-use": { status: 409, title: "In use" },
  "precondition-failed": { status: 409, title: "Precondition failed" },
  "body-too-large": { status: 413, title: "Request body too large" },
  "rate-limited": { status: 429, title: "Too many attempts" },
  "feed-error": { status: 502, title: "Feed error" },
  "identity-provider-error": { status: 502, title: "Identity provider error" },
  "unsupported-media-type": { status: 415, title: "Unsupported media type" },
  internal: { status: 500, title: "Internal server error" },
  unavailable: { status: 503, title: "Service unavailable" },
};

function problemType(code: string): string {
  return `urn:ferry:problem:${code}`;
}

export function makeProblem(code: string, detail: string, extra: Partial<Problem> = {}): Problem {
  const known = problemTypes[code] ?? problemTypes["bad-request"];
  return {
    type: problemType(code),
    title: known?.title ?? "Bad request",
    status: known?.status ?? 400,
    detail,
    ...extra,
  };
}

export function sendProblem(reply: FastifyReply, problem: Problem): FastifyReply {
  return reply.code(problem.status).header("content-type", `${PROBLEM_CONTENT_TYPE}; charset=utf-8`).send(problem);
}

/** Fastify's own 4xx errors, by code, mapped to our problem codes and to a detail that says what to do. */
const fastifyErrors: Record<string, [code: string, detail: (error: FastifyError) => string]> = {
  FST_ERR_CTP_BODY_TOO_LARGE: ["body-too-large", () => "the request body is larger than the server accepts; send less"],
  FST_ERR_CTP_INVALID_MEDIA_TYPE: [
    "unsupported-media-type",
    () => "send the body as JSON with 'Content-Type: application/json'",
  ],
  FST_ERR_CTP_EMPTY_JSON_BODY: ["malformed-body", () => "the body is empty; send a JSON object"],
  FST_ERR_CTP_INVALID_CONTENT_LENGTH: ["malformed-body", () => "Content-Length does not match the body sent"],
  FST_ERR_CTP_INVALID_TYPE: ["unsupported-media-type", () => "the Content-Type header is not valid"],
  FST_ERR_BAD_URL: ["bad-request", () => "the URL is not valid; check its percent-encoding"],
  FST_ERR_ASYNC_CONSTRAINT: ["bad-request", () => "the request could not be routed"],
};

/** The one place errors become HTTP responses. Nothing internal (stack, SQL, values) leaks. */
export function errorToProblem(error: unknown, request: FastifyRequest): Problem {
  const requestId = String(request.id);
  if (error instanceof FerryError) {
    return makeProblem(error.code, error.message, {
      ...(error instanceof InputError && error.issues.length > 0 && { errors: [...error.issues] }),
      ...(error instanceof InUseError && { usedBy: error.usedBy }),
      requestId,
    });
  }
  const fastifyError = error as Partial<FastifyError>;
  const mapped = fastifyError.code ? fastifyErrors[fastifyError.code] : undefined;
  if (mapped) return makeProblem(mapped[0], mapped[1](fastifyError as FastifyError), { requestId });
  const status = fastifyError.statusCode;
  if (typeof status === "number" && status >= 400 && status < 500) {
    return {
      ...makeProblem("bad-request", "the request could not be processed; check its headers and body", { requestId }),
      status,
    };
  }
  request.log.error({ err: error }, "unhandled error");
  return makeProblem(
    "internal",
    `an unexpected error happened; the server log has the details under request id ${requestId}`,
    {
      requestId,
    },
  );
}
