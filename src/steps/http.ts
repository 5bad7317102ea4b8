import { TaskFailure } from "../engine/types.js";

/** What the health-check and http-test steps share: URL checks, bounded requests, readable errors. */

/** An http(s) URL, or a TaskFailure naming the field; other schemes (file:, data:) are refused. */
export function httpUrl(text: string, field: string): URL {
  let url: URL;
  try {
    url = new URL(text);
  } catch {
    throw new TaskFailure(`${field} '${text.slice(0, 500)}' is not a URL; write e.g. http://127.0.0.1:8080/health`);
  }
  if (url.protocol !== "http:" && url.protocol !== "https:") {
    throw new TaskFailure(`${field} must be an http:// or https:// URL, not ${url.protocol}`);
  }
  return url;
}

export interface HttpRequest {
  method?: string;
  headers?: Record<string, string>;
  body?: string;
  timeoutMs: number;
  /** The task's signal: a cancel stops the request at once. */
  signal: AbortSignal;
  followRedirects?: boolean;
}

export type HttpOutcome =
  | { ok: true; response: Response }
  | {
      ok: false;
      /** "no answer within 5 s", "connection refused (ECONNREFUSED)"… */
      problem: string;
    };

/**
 * One request with its own deadline. Redirects are not followed unless asked: a health
 * endpoint that redirects to a login page is not healthy.
 */
export async function sendRequest(url: URL, request: HttpRequest): Promise<HttpOutcome> {
  request.signal.throwIfAborted();
  const timeout = AbortSignal.timeout(request.timeoutMs);
  try {
    const response = await fetch(url, {
      method: request.method ?? "GET",
      ...(request.headers && { headers: request.headers }),
      ...(request.body !== undefined && { body: request.body }),
      redirect: request.followRedirects ? "follow" : "manual",
      signal: AbortSignal.any([request.signal, timeout]),
    });
    return { ok: true, response };
  } catch (error) {
    if (request.signal.aborted) throw request.signal.reason;
    if (timeout.aborted) return { ok: false, problem: `no answer within ${request.timeoutMs / 1000} s` };
    return { ok: false, problem: describeFetchError(error) };
  }
}

/** Undici says "fetch failed" and puts the reason in `cause`: show the reason. */
function describeFetchError(error: unknown): string {
  const cause = (error as { cause?: { code?: string; message?: string } }).cause;
  if (cause?.code === "ECONNREFUSED") return "connection refused (ECONNREFUSED)";
  if (cause?.code === "ECONNRESET") return "connection reset (ECONNRESET)";
  if (cause?.code) return `${cause.message ?? "request failed"} (${cause.code})`;
  if (cause?.message) return cause.message;
  return error instanceof Error ? error.message : String(error);
}

/**
 * The body as text, at most `maxBytes` of it (the rest is not read): a test never holds
 * a huge or endless response in the server's memory. The request's signal (its deadline
 * and the task's cancel) also ends the reading of the body.
 */
export async function readBodyText(
  response: Response,
  maxBytes: number,
): Promise<{ text: string; truncated: boolean }> {
  if (!response.body) return { text: "", truncated: false };
  const reader = response.body.getReader();
  const chunks: Uint8Array[] = [];
  let size = 0;
  for (;;) {
    const { done, value } = await reader.read();
    if (done) return { text: Buffer.concat(chunks).toString("utf8"), truncated: false };
    chunks.push(value);
    size += value.length;
    if (size > maxBytes) {
      await reader.cancel();
      return { text: Buffer.concat(chunks).subarray(0, maxBytes).toString("utf8"), truncated: true };
    }
  }
}
