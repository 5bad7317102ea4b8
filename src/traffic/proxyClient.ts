import { Agent, fetch } from "undici";
import type { CanaryResult, DrainResult, PutRouteResult, RouteStats, SwitchResult } from "./proxy.js";
import type { Route, RouteDefinition } from "./proxyState.js";

/** One HTTP exchange with the admin API, for an admin API reached some other way (from a target's host). */
export type AdminSender = (
  url: URL,
  init: { method: string; headers: Record<string, string>; body?: string; timeoutMs: number },
) => Promise<{ status: number; text: string }>;

/**
 * Where a proxy's admin API listens: its unix socket, or its loopback URL; with `send`, the
 * URL is called through it (a loopback URL of another host, through that host's transport).
 */
export type ProxyAdminAddress = { socketPath: string } | { url: string } | { url: string; send: AdminSender };

/** The admin API answered with a problem (or not at all: status 0). */
export class ProxyAdminError extends Error {
  constructor(
    message: string,
    readonly status: number,
    readonly problem?: { type?: string; title?: string; detail?: string },
  ) {
    super(message);
  }
}

/** A typed client of `ferry proxy`'s admin API. Every call has a timeout. */
export class ProxyAdminClient {
  private readonly dispatcher: Agent | undefined;
  private readonly send: AdminSender;
  private readonly baseUrl: string;

  constructor(
    address: ProxyAdminAddress,
    private readonly token: string,
    private readonly timeoutMs = 10_000,
  ) {
    if ("send" in address) {
      this.send = address.send;
      this.baseUrl = address.url;
      return;
    }
    const dispatcher =
      "socketPath" in address ? new Agent({ connect: { socketPath: address.socketPath } }) : new Agent();
    this.dispatcher = dispatcher;
    this.baseUrl = "socketPath" in address ? "http://localhost" : address.url;
    this.send = async (url, init) => {
      const response = await fetch(url, {
        method: init.method,
        dispatcher,
        headers: init.headers,
        ...(init.body !== undefined && { body: init.body }),
        signal: AbortSignal.timeout(init.timeoutMs),
      });
      return { status: response.status, text: await response.text() };
    };
  }

  async listRoutes(): Promise<Route[]> {
    return (await this.request<{ routes: Route[] }>("GET", "/routes")).routes;
  }

  putRoute(name: string, definition: RouteDefinition): Promise<PutRouteResult> {
    return this.request("PUT", `/routes/${encodeURIComponent(name)}`, definition);
  }

  /** Switches a route to another upstream; returns the previous one. */
  switchRoute(name: string, target: { upstream: string; colour?: string }): Promise<SwitchResult> {
    return this.request("POST", `/routes/${encodeURIComponent(name)}/switch`, target);
  }

  /** Sends `weight` per cent of the route's visitors to a second upstream (null: none any more). */
  setCanary(name: string, canary: { upstream: string; colour?: string; weight: number } | null): Promise<CanaryResult> {
    const path = `/routes/${encodeURIComponent(name)}/canary`;
    return canary === null ? this.request("DELETE", path) : this.request("PUT", path, canary);
  }

  /** Maintenance (503 page) or paused (requests held); null: the route serves again. */
  setMode(
    name: string,
    mode: { mode: "maintenance"; page?: string } | { mode: "paused"; timeoutSeconds: number } | null,
  ): Promise<{ route: Route }> {
    const path = `/routes/${encodeURIComponent(name)}/mode`;
    return mode === null ? this.request("DELETE", path) : this.request("PUT", path, mode);
  }

  /** Waits (up to the deadline) until nothing is in flight on the upstream. */
  drain(upstream: string, deadlineMs: number): Promise<DrainResult> {
    // The call itself lasts up to the deadline: the timeout runs on top of it.
    return this.request("POST", "/drain", { upstream, deadlineMs }, deadlineMs + this.timeoutMs);
  }

  async stats(): Promise<RouteStats[]> {
    return (await this.request<{ routes: RouteStats[] }>("GET", "/stats")).routes;
  }

  async close(): Promise<void> {
    await this.dispatcher?.close();
  }

  private async request<T>(method: string, path: string, body?: unknown, timeoutMs = this.timeoutMs): Promise<T> {
    let response: { status: number; text: string };
    try {
      response = await this.send(new URL(path, this.baseUrl), {
        method,
        headers: {
          authorization: `Bearer ${this.token}`,
          accept: "application/json, application/problem+json",
          ...(body !== undefined && { "content-type": "application/json" }),
        },
        ...(body !== undefined && { body: JSON.stringify(body) }),
        timeoutMs,
      });
    } catch (error) {
      const reason = (error as Error).name === "TimeoutError" ? "timed out talking" : "could not connect";
      throw new ProxyAdminError(
        `${reason} to the Ferry proxy admin API at ${this.baseUrl}; is 'ferry proxy' running?`,
        0,
      );
    }
    const { text } = response;
    const parsed: unknown = text === "" ? undefined : JSON.parse(text);
    if (response.status < 200 || response.status > 299) {
      const problem = (parsed ?? {}) as { type?: string; title?: string; detail?: string };
      throw new ProxyAdminError(
        `${problem.title ?? `HTTP ${response.status}`}: ${problem.detail ?? "the proxy refused the request"}`,
        response.status,
        problem,
      );
    }
    return parsed as T;
  }
}
