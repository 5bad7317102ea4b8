import type { FastifyReply, FastifyRequest } from "fastify";
import { z } from "zod";
import type { Access } from "../domain/access.js";
import type { AuditChange } from "../domain/audit.js";
import { InputError } from "../domain/errors.js";
import { toFieldIssues } from "../domain/validation.js";
import type { RouteAccess } from "./access.js";

type HttpMethod = "GET" | "POST" | "PATCH" | "PUT" | "DELETE";

/**
 * One API route: its schemas (which validate input and document it in OpenAPI) and its
 * handler. Handlers receive parsed, typed input and return the response body; they throw
 * domain errors, never HTTP ones.
 */
export interface RouteSpec<P = unknown, Q = unknown, B = unknown> {
  method: HttpMethod;
  /** Fastify path, e.g. "/api/v1/projects/:project". */
  path: string;
  summary: string;
  tag: string;
  params?: z.ZodType<P>;
  query?: z.ZodType<Q>;
  body?: z.ZodType<B>;
  /** Response body schema, for the OpenAPI document. */
  response?: z.ZodType;
  /** Success status: 200 unless given (201 for creates, 204 for deletes). */
  status?: 200 | 201 | 204;
  /** Who may call it (src/api/access.ts decides, before the handler runs). */
  access: RouteAccess<NoInfer<P>, NoInfer<Q>, NoInfer<B>>;
  /**
   * What the route writes to the audit log when its handler succeeds (POST, PUT, PATCH and
   * DELETE routes; src/api/audit.ts). A state-changing route without it is still recorded,
   * by method and path only.
   */
  audit?: RouteAudit<NoInfer<P>, NoInfer<B>>;
  /**
   * Not counted against its client address's requests at once (src/api/addressQueue.ts):
   * routes that hold their answer open (event streams, long polls) or answer without work
   * (liveness, readiness).
   */
  unqueued?: true;
  handler(input: {
    params: P;
    query: Q;
    body: B;
    /** The caller's grants: lists pass it to the store so that they return only what the caller may view. */
    access: Access;
    request: FastifyRequest;
    reply: FastifyReply;
  }): Promise<unknown>;
}

export interface RouteAudit<P = unknown, B = unknown> {
  /** "project.update": the resource's type, then what happened to it. */
  action: string;
  /** Reads the resource as the API shows it, before the handler runs: the diff's "from" side. */
  before?(input: { params: P; body: B }): Promise<unknown>;
  /** The change, from the request, the state before (undefined when not read) and the handler's result. */
  change(input: { params: P; body: B; before: unknown; result: unknown }): AuditChange;
}

/** True for routes that answer without credentials: health, readiness, sign-in. */
export function isPublic(route: RouteSpec): boolean {
  return route.access.kind === "public";
}

/** Keeps the generic types of one route while collecting routes of different types in a list. */
export function defineRoute<P, Q, B>(spec: RouteSpec<P, Q, B>): RouteSpec {
  return spec as RouteSpec;
}

export function parseInput<T>(schema: z.ZodType<T> | undefined, value: unknown, location?: "query" | "path"): T {
  if (!schema) return undefined as T;
  const result = schema.safeParse(value, { error: friendlierMessage });
  if (result.success) return result.data;
  const what = location === "query" ? "query string" : location === "path" ? "path" : "request body";
  throw new InputError(
    `the ${what} is not valid; fix the fields listed in 'errors'`,
    toFieldIssues(result.error, location),
  );
}

/** Path parameters are plain strings (an id or a slug); these only bound their length. */
export function pathParams<K extends string>(...names: K[]) {
  return z.strictObject(
    Object.fromEntries(names.map((name) => [name, z.string().min(1).max(200)])) as Record<K, z.ZodString>,
  );
}

/** Zod's default texts, made to say what to do where they do not already. */
function friendlierMessage(issue: z.core.$ZodRawIssue): string | undefined {
  if (issue.code === "invalid_type" && issue.input === undefined) return `required: add this field (${issue.expected})`;
  return undefined;
}
