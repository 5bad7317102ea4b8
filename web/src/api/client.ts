/**
 * The one way the dashboard talks to Ferry: JSON over /api/v1 on this origin, with the
 * session cookie (HttpOnly: scripts never see it) and, on every request that changes
 * something, the session's CSRF token. The token lives in memory only; a reload asks
 * GET /api/v1/session for it again. No API key is ever kept in the browser.
 */

let csrfToken: string | undefined;

export function setCsrfToken(token: string | undefined): void {
  csrfToken = token;
}

/** A problem answer (RFC 9457) from the API. */
export class ApiError extends Error {
  constructor(
    readonly status: number,
    readonly type: string,
    detail: string,
    /** Field errors of a 400: where (a JSON pointer) and what to fix. */
    readonly errors: readonly { pointer?: string; detail: string }[] = [],
  ) {
    super(detail);
    this.name = "ApiError";
  }
}

/** Told when the API answers 401: the session ended (the app then shows the sign-in page). */
let onUnauthenticated: (() => void) | undefined;
export function whenUnauthenticated(listener: () => void): void {
  onUnauthenticated = listener;
}

export async function api<T>(method: string, path: string, body?: unknown): Promise<T> {
  const headers: Record<string, string> = { accept: "application/json" };
  if (body !== undefined) headers["content-type"] = "application/json";
  if (method !== "GET" && csrfToken !== undefined) headers["x-csrf-token"] = csrfToken;
  const response = await fetch(`/api/v1${path}`, {
    method,
    headers,
    credentials: "same-origin",
    ...(body !== undefined && { body: JSON.stringify(body) }),
  });
  if (response.status === 204) return undefined as T;
  const text = await response.text();
  const parsed: unknown = text === "" ? undefined : safeJson(text);
  if (!response.ok) {
    const problem = (parsed ?? {}) as { type?: string; detail?: string; title?: string; errors?: ApiError["errors"] };
    const error = new ApiError(
      response.status,
      problem.type ?? "about:blank",
      problem.detail ?? problem.title ?? `the server answered ${response.status}`,
      problem.errors ?? [],
    );
    if (response.status === 401 && path !== "/session") onUnauthenticated?.();
    throw error;
  }
  return parsed as T;
}

function safeJson(text: string): unknown {
  try {
    return JSON.parse(text);
  } catch {
    return undefined;
  }
}

/** A query string from the defined values. */
export function query(values: Record<string, string | number | boolean | undefined | null>): string {
  const search = new URLSearchParams();
  for (const [key, value] of Object.entries(values)) {
    if (value !== undefined && value !== null && value !== "") search.set(key, String(value));
  }
  const text = search.toString();
  return text === "" ? "" : `?${text}`;
}

/** What to tell a person about a failed request: the server's detail and its field errors. */
export function describeError(error: unknown): string {
  if (error instanceof ApiError) {
    const fields = error.errors.map((issue) => `${issue.pointer ? `${issue.pointer}: ` : ""}${issue.detail}`);
    return [error.message, ...fields].join(" — ");
  }
  if (error instanceof Error) return error.message;
  return String(error);
}
