import type { Page } from "../domain/common.js";
import { OperationError } from "./errors.js";

interface ProblemBody {
  title?: string;
  detail?: string;
  errors?: { pointer: string; detail: string; in?: string }[];
  /** With `in-use`: what still uses the resource. */
  usedBy?: string[];
}

/** A thin client of the Ferry API: JSON in, JSON out, problems become OperationErrors. */
export class ApiClient {
  constructor(
    readonly baseUrl: string,
    private readonly apiKey: string | undefined,
    private readonly timeoutMs = 30_000,
  ) {}

  /** `timeoutMs` replaces the client's own for this request (an apply of many files takes longer). */
  async request<T>(method: string, path: string, body?: unknown, timeoutMs = this.timeoutMs): Promise<T> {
    const { status, text } = await this.send(method, path, body, timeoutMs);
    if (status === 204) return undefined as T;
    const parsed = text === "" ? undefined : safeJson(text);
    if (status < 200 || status > 299) {
      const problem = (parsed ?? {}) as ProblemBody;
      throw new OperationError(
        `${problem.title ?? `HTTP ${status}`}: ${problem.detail ?? "the server refused the request"}`,
        [
          ...(problem.errors ?? []).map(
            (issue) => `${issue.in ? `${issue.in} ` : ""}${issue.pointer || "/"}: ${issue.detail}`,
          ),
          ...(problem.usedBy ?? []).map((user) => `used by ${user}`),
        ],
        status,
      );
    }
    return parsed as T;
  }

  /** One request over HTTP: its status and body text. */
  protected async send(
    method: string,
    path: string,
    body: unknown,
    timeoutMs: number,
  ): Promise<{ status: number; text: string }> {
    const url = new URL(path, this.baseUrl);
    let response: Response;
    try {
      response = await fetch(url, {
        method,
        headers: {
          accept: "application/json, application/problem+json",
          ...(this.apiKey && { authorization: `Bearer ${this.apiKey}` }),
          ...(body !== undefined && { "content-type": "application/json" }),
        },
        ...(body !== undefined && { body: JSON.stringify(body) }),
        signal: AbortSignal.timeout(timeoutMs),
      });
    } catch (error) {
      const reason = (error as Error).name === "TimeoutError" ? "timed out" : "could not connect";
      throw new OperationError(
        `${reason} to the Ferry server at ${this.baseUrl}; is it running? (set FERRY_URL or run 'ferry login')`,
      );
    }
    return { status: response.status, text: await response.text() };
  }

  /** Headers that authenticate a request made outside `request` (a streaming fetch). */
  authorization(): Record<string, string> {
    return this.apiKey ? { authorization: `Bearer ${this.apiKey}` } : {};
  }

  get<T>(path: string): Promise<T> {
    return this.request<T>("GET", path);
  }

  /** Every item of a paged collection, fetched page by page. */
  async getAll<T>(path: string): Promise<T[]> {
    const items: T[] = [];
    for (let offset = 0; ; ) {
      const separator = path.includes("?") ? "&" : "?";
      const page = await this.get<Page<T>>(`${path}${separator}limit=500&offset=${offset}`);
      items.push(...page.items);
      offset += page.items.length;
      if (page.items.length === 0 || offset >= page.total) return items;
    }
  }
}

function safeJson(text: string): unknown {
  try {
    return JSON.parse(text);
  } catch {
    return undefined;
  }
}

/** Percent-encodes a path segment taken from the command line. */
export function segment(value: string): string {
  return encodeURIComponent(value);
}
