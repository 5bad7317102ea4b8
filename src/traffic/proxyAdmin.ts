import { timingSafeEqual } from "node:crypto";
import { chmod, lstat, unlink } from "node:fs/promises";
import http from "node:http";
import { type AddressInfo, connect } from "node:net";
import type { z } from "zod";
import { FerryError } from "../domain/errors.js";
import type { ProxyControl } from "./proxy.js";
import {
  canaryBodySchema,
  drainBodySchema,
  modeBodySchema,
  routeDefinitionSchema,
  routeNameSchema,
  switchBodySchema,
} from "./proxyState.js";

/**
 * The proxy's admin API: what the Ferry server (or an operator with curl) uses to read and
 * switch routes, drain an upstream and read counters. It listens on a unix socket (0600) or on
 * a loopback port, and every request needs the bearer token from the state dir.
 */

const MAX_BODY_BYTES = 64 * 1024;

export type AdminListen = { socketPath: string } | { port: number };

export interface RunningAdmin {
  /** `unix:/path/admin.sock` or `http://127.0.0.1:PORT`. */
  address: string;
  close(): Promise<void>;
}

interface FieldIssue {
  pointer: string;
  detail: string;
  in?: "path";
}

class AdminProblem extends Error {
  constructor(
    readonly status: number,
    readonly code: string,
    readonly title: string,
    detail: string,
    readonly errors: FieldIssue[] = [],
  ) {
    super(detail);
  }
}

/** Domain errors the proxy throws, as problems (same codes as the Ferry server's API). */
const PROBLEM_BY_CODE: Record<string, { status: number; title: string }> = {
  "invalid-input": { status: 400, title: "Invalid input" },
  "not-found": { status: 404, title: "Not found" },
  conflict: { status: 409, title: "Conflict" },
};

export async function startProxyAdmin(proxy: ProxyControl, listen: AdminListen, token: string): Promise<RunningAdmin> {
  const expected = Buffer.from(`Bearer ${token}`);
  const server = http.createServer((request, response) => {
    handle(proxy, expected, request).then(
      ({ status, body }) => sendJson(response, status, body),
      (error: unknown) => sendProblem(response, toProblem(error)),
    );
  });
  if ("socketPath" in listen) await removeStaleSocket(listen.socketPath);
  await new Promise<void>((resolve, reject) => {
    server.once("error", reject);
    const done = () => {
      server.off("error", reject);
      resolve();
    };
    if ("socketPath" in listen) server.listen(listen.socketPath, done);
    else server.listen(listen.port, "127.0.0.1", done);
  });
  let address: string;
  if ("socketPath" in listen) {
    await chmod(listen.socketPath, 0o600);
    address = `unix:${listen.socketPath}`;
  } else {
    address = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
  }
  return {
    address,
    close: () =>
      new Promise<void>((resolve) => {
        server.close(() => resolve());
        server.closeAllConnections();
      }),
  };
}

async function handle(
  proxy: ProxyControl,
  expected: Buffer,
  request: http.IncomingMessage,
): Promise<{ status: number; body: unknown }> {
  const presented = Buffer.from(request.headers.authorization ?? "");
  if (presented.length !== expected.length || !timingSafeEqual(presented, expected)) {
    request.resume();
    throw new AdminProblem(
      401,
      "unauthenticated",
      "Authentication required",
      "send 'Authorization: Bearer <token>' with the token from the proxy's state dir (admin-token)",
    );
  }
  const url = new URL(request.url ?? "/", "http://admin");
  const segments = url.pathname.split("/").filter((segment) => segment !== "");
  const method = request.method ?? "GET";
  const [first, second, third] = segments;

  if (first === "routes" && segments.length === 1 && method === "GET") {
    return { status: 200, body: { routes: proxy.listRoutes() } };
  }
  if (first === "routes" && second !== undefined && segments.length === 2 && method === "PUT") {
    const name = parseName(second);
    const definition = parseBody(routeDefinitionSchema, await readJson(request));
    const result = await proxy.putRoute(name, definition);
    return { status: result.created ? 201 : 200, body: result };
  }
  if (first === "routes" && second !== undefined && third === "switch" && segments.length === 3 && method === "POST") {
    const name = parseName(second);
    const body = parseBody(switchBodySchema, await readJson(request));
    return { status: 200, body: await proxy.setRoute(name, body.upstream, body.colour) };
  }
  if (first === "routes" && second !== undefined && third === "canary" && segments.length === 3) {
    const name = parseName(second);
    if (method === "PUT") {
      const body = parseBody(canaryBodySchema, await readJson(request));
      return { status: 200, body: await proxy.setCanary(name, body) };
    }
    if (method === "DELETE") {
      request.resume();
      return { status: 200, body: await proxy.setCanary(name, null) };
    }
  }
  if (first === "routes" && second !== undefined && third === "mode" && segments.length === 3) {
    const name = parseName(second);
    if (method === "PUT") {
      const body = parseBody(modeBodySchema, await readJson(request));
      return { status: 200, body: await proxy.setMode(name, body) };
    }
    if (method === "DELETE") {
      request.resume();
      return { status: 200, body: await proxy.setMode(name, null) };
    }
  }
  if (first === "drain" && segments.length === 1 && method === "POST") {
    const body = parseBody(drainBodySchema, await readJson(request));
    return { status: 200, body: await proxy.drain(body.upstream, body.deadlineMs) };
  }
  if (first === "stats" && segments.length === 1 && method === "GET") {
    const routes = await proxy.stats();
    const workers = proxy.workers?.();
    return { status: 200, body: { routes, ...(workers !== undefined && { workers }) } };
  }
  request.resume();
  throw new AdminProblem(
    404,
    "route-not-found",
    "No such route",
    `${method} ${url.pathname} is not part of the proxy admin API (GET /routes, PUT /routes/:name, POST /routes/:name/switch, PUT|DELETE /routes/:name/canary, PUT|DELETE /routes/:name/mode, POST /drain, GET /stats)`,
  );
}

function parseName(value: string): string {
  const parsed = routeNameSchema.safeParse(decodeURIComponent(value));
  if (!parsed.success) {
    const detail = parsed.error.issues[0]?.message ?? "invalid route name";
    throw new AdminProblem(400, "invalid-input", "Invalid input", `route name: ${detail}`, [
      { pointer: "/name", detail, in: "path" },
    ]);
  }
  return parsed.data;
}

function parseBody<T extends z.ZodType>(schema: T, body: unknown): z.output<T> {
  const parsed = schema.safeParse(body);
  if (parsed.success) return parsed.data;
  const errors = parsed.error.issues.map((issue) => ({
    pointer: issue.path.map((part) => `/${String(part)}`).join(""),
    detail: issue.message,
  }));
  throw new AdminProblem(
    400,
    "invalid-input",
    "Invalid input",
    `the body has ${errors.length} invalid field(s); see errors`,
    errors,
  );
}

async function readJson(request: http.IncomingMessage): Promise<unknown> {
  const type = request.headers["content-type"] ?? "";
  if (!type.toLowerCase().startsWith("application/json")) {
    request.resume();
    throw new AdminProblem(
      415,
      "unsupported-media-type",
      "Unsupported media type",
      "send the body as JSON with 'Content-Type: application/json'",
    );
  }
  const chunks: Buffer[] = [];
  let size = 0;
  for await (const chunk of request) {
    size += (chunk as Buffer).length;
    if (size > MAX_BODY_BYTES) {
      throw new AdminProblem(413, "body-too-large", "Request body too large", `send at most ${MAX_BODY_BYTES} bytes`);
    }
    chunks.push(chunk as Buffer);
  }
  try {
    return JSON.parse(Buffer.concat(chunks).toString("utf8"));
  } catch {
    throw new AdminProblem(400, "malformed-body", "Malformed request body", "the body is not JSON; send a JSON object");
  }
}

function toProblem(error: unknown): AdminProblem {
  if (error instanceof AdminProblem) return error;
  if (error instanceof FerryError) {
    const known = PROBLEM_BY_CODE[error.code] ?? { status: 400, title: "Bad request" };
    return new AdminProblem(known.status, error.code, known.title, error.message);
  }
  return new AdminProblem(500, "internal", "Internal error", (error as Error).message ?? String(error));
}

function sendJson(response: http.ServerResponse, status: number, body: unknown): void {
  const text = JSON.stringify(body);
  response.writeHead(status, {
    "content-type": "application/json; charset=utf-8",
    "content-length": Buffer.byteLength(text),
  });
  response.end(text);
}

function sendProblem(response: http.ServerResponse, problem: AdminProblem): void {
  const text = JSON.stringify({
    type: `urn:ferry:problem:${problem.code}`,
    title: problem.title,
    status: problem.status,
    detail: problem.message,
    ...(problem.errors.length > 0 && { errors: problem.errors }),
  });
  response.writeHead(problem.status, {
    "content-type": "application/problem+json; charset=utf-8",
    "content-length": Buffer.byteLength(text),
    ...(problem.status === 401 && { "www-authenticate": "Bearer" }),
  });
  response.end(text);
}

/** A socket file left by a proxy that died is removed; one a live proxy answers on is not. */
async function removeStaleSocket(path: string): Promise<void> {
  try {
    const stat = await lstat(path);
    if (!stat.isSocket()) throw new Error(`${path} exists and is not a socket; choose another --admin-socket`);
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code === "ENOENT") return;
    throw error;
  }
  const live = await new Promise<boolean>((resolve) => {
    const probe = connect(path);
    probe.once("connect", () => {
      probe.destroy();
      resolve(true);
    });
    probe.once("error", () => resolve(false));
  });
  if (live)
    throw new Error(`another process answers on ${path}; is a Ferry proxy already running with this state dir?`);
  await unlink(path);
}
