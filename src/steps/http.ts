import { type Dispatcher, fetch, type Response } from "undici";
import { z } from "zod";
import { templatePieces } from "../domain/templates.js";
import { TaskFailure } from "../engine/types.js";
import {
  defaultOutboundPolicy,
  describeNetworkError,
  guardedFetch,
  type OutboundPolicy,
  OutboundRefusedError,
} from "../security/outboundGuard.js";
import type { StepRunContext } from "./types.js";

/** What the health-check and http-test steps share: URL checks, bounded requests, readable errors. */

// Built from text: Biome refuses control characters in regular expression literals.
const controls = "\\u0000-\\u001f\\u007f";
const controlsAndSpace = "\\u0000-\\u0020";
const controlCharacter = new RegExp(`[${controls}]`);
const spaceOrControlCharacter = new RegExp(`[\\s${controls}]`);
const leadingSpacesAndControls = new RegExp(`^[${controlsAndSpace}]+`);

/**
 * A step's URL template. Line breaks, tabs and other control characters are refused when the
 * process is saved: the URL parser would silently drop them, so the URL called would not be
 * the one written (a space, possible inside `#{…}`, is refused once rendered: httpUrl).
 */
export const urlTemplateSchema = z
  .string()
  .min(1)
  .max(4096)
  .refine((template) => !controlCharacter.test(template), {
    message: "remove the line break, tab or control character: a URL cannot hold one (percent-encode it)",
  });

/**
 * An http(s) URL, or a TaskFailure naming the field; other schemes (file:, data:) are refused,
 * and so are spaces and control characters, which the URL parser would drop or encode: the
 * URL called must be the URL written.
 */
export function httpUrl(text: string, field: string): URL {
  const unusual = spaceOrControlCharacter.exec(text);
  if (unusual) {
    throw new TaskFailure(
      `${field} has a ${unusual[0] === " " ? "space" : "line break, tab or control character"} at position ${unusual.index + 1}; percent-encode it (%20 for a space) or remove it`,
    );
  }
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

/** A step's rendered URL, and the outbound policy it is called through when a variable chose where it goes. */
export interface StepUrl {
  url: URL;
  /** Undefined: the scheme, host and port are written in the process, and the URL is called as it is. */
  guard: OutboundPolicy | undefined;
}

/**
 * Renders a step's URL template and decides how it is called (docs/decisions/0022): a URL
 * whose scheme, host and port are written in the process is called as it is (editing the
 * process needs the edit-process permission, and a single-host install checks its app on
 * 127.0.0.1); one where a variable may have chosen them goes through the outbound guard,
 * with the step context's policy (FERRY_OUTBOUND_ALLOW, and a blue/green colour's own address).
 */
export function renderStepUrl(
  context: Pick<StepRunContext, "render" | "outbound">,
  template: string,
  field: string,
): StepUrl {
  const url = httpUrl(context.render(template), field);
  return { url, guard: originIsWritten(template) ? undefined : (context.outbound ?? defaultOutboundPolicy) };
}

/** Stand-ins for a value of the process (trusted) and a value a variable chose, in a template's shape. */
const WRITTEN_VALUE = "\u{e001}";
const CHOSEN_VALUE = "\u{e000}";

/**
 * Whether the scheme, host and port of a URL template are written in the process: literal
 * text, outputs of earlier steps (Ferry.Step[web].Output.hostPort: what a container step
 * published) and the preview URL of the colour being checked (Ferry.Route.PreviewUrl). A
 * project variable or an `#{if}`/`#{each}` block before the path begins means a variable may
 * choose where the request goes. A template that does not parse is not written (rendering
 * it fails first anyway).
 */
export function originIsWritten(template: string): boolean {
  let shape = "";
  try {
    for (const piece of templatePieces(template)) {
      if (piece.kind === "text") shape += piece.text;
      else shape += piece.kind === "variable" && isProcessValue(piece.name) ? WRITTEN_VALUE : CHOSEN_VALUE;
    }
  } catch {
    return false;
  }
  // As the URL parser reads it: leading spaces and control characters dropped, tabs and line
  // breaks removed anywhere, any number of (back)slashes after an http(s) scheme.
  const cleaned = shape.replace(/[\t\n\r]/g, "").replace(leadingSpacesAndControls, "");
  let authority: string;
  if (cleaned.startsWith(WRITTEN_VALUE)) {
    authority = cleaned;
  } else {
    const scheme = /^[a-z][a-z0-9+.-]*:[/\\]*/i.exec(cleaned);
    if (!scheme) return false;
    authority = cleaned.slice(scheme[0].length);
  }
  // The authority (user info, host, port) ends where the path, query or fragment begins.
  const end = authority.search(/[/\\?#]/);
  return !(end < 0 ? authority : authority.slice(0, end)).includes(CHOSEN_VALUE);
}

/** Variables only Ferry and the process set: users cannot name a variable "Ferry.…". */
function isProcessValue(name: string): boolean {
  return (
    /^Ferry\.Step\[[^\]]+\]\.Output\./.test(name) ||
    name === "Ferry.Route.PreviewUrl" ||
    // An isolated group's published addresses (ADR 0045): the group wrote them, no variable chose them.
    /^Ferry\.Isolated\.(Url|Service\[[a-z][a-z0-9-]*\]\.(Url|InternalUrl))$/.test(name)
  );
}

export interface HttpRequest {
  method?: string;
  headers?: Record<string, string>;
  body?: string;
  timeoutMs: number;
  /** The task's signal: a cancel stops the request at once. */
  signal: AbortSignal;
  followRedirects?: boolean;
  /** Through the outbound guard with this policy (the URL, each redirect, each connection); undefined: called as it is. */
  guard?: OutboundPolicy | undefined;
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
 * endpoint that redirects to a login page is not healthy. A destination the outbound guard
 * refuses is a TaskFailure at once: waiting would not change the answer. `dispatcher` makes
 * the connections somewhere else than from the server (a target's host); with a guard it
 * checks each connection itself.
 */
export async function sendRequest(url: URL, request: HttpRequest, dispatcher?: Dispatcher): Promise<HttpOutcome> {
  request.signal.throwIfAborted();
  const timeout = AbortSignal.timeout(request.timeoutMs);
  const signal = AbortSignal.any([request.signal, timeout]);
  const redirect = request.followRedirects ? "follow" : "manual";
  const options = {
    method: request.method ?? "GET",
    ...(request.headers && { headers: request.headers }),
    ...(request.body !== undefined && { body: request.body }),
    signal,
  };
  try {
    const response = request.guard
      ? await guardedFetch(
          url,
          { ...options, redirect, name: guardedName(url), ...(dispatcher && { dispatcher }) },
          request.guard,
        )
      : await fetch(url, { ...options, redirect, ...(dispatcher && { dispatcher }) });
    return { ok: true, response };
  } catch (error) {
    if (request.signal.aborted) throw request.signal.reason;
    if (error instanceof OutboundRefusedError) {
      throw new TaskFailure(
        `${error.message}. The outbound guard checked it because a variable chose its address; a URL written in the step itself is not checked`,
      );
    }
    if (timeout.aborted) return { ok: false, problem: `no answer within ${request.timeoutMs / 1000} s` };
    return { ok: false, problem: describeNetworkError(error) };
  }
}

/** How a refusal names the URL: origin and path, never a query. */
function guardedName(url: URL): string {
  return `url ${url.origin}${url.pathname}`;
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
