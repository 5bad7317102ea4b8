import { timingSafeEqual } from "node:crypto";
import type { IncomingMessage, ServerResponse } from "node:http";
import Fastify, { type FastifyBaseLogger, type FastifyInstance, type FastifyReply, type FastifyRequest } from "fastify";
import type { Access } from "../domain/access.js";
import { CsrfError, RateLimitedError, UnauthenticatedError } from "../domain/errors.js";
import type { ArtifactRetention } from "../engine/artifactRetention.js";
import { type DeploymentServices, processRunnerServices } from "../engine/deployments.js";
import type { TaskEngine } from "../engine/engine.js";
import { tearDownEnvironment } from "../engine/ephemeralEnvironments.js";
import type { MasterKeyRotation } from "../engine/masterKeyRotation.js";
import type { ServerMetrics } from "../observability/serverMetrics.js";
import { isWellFormedApiKey } from "../security/apiKeys.js";
import type { OidcClient } from "../security/oidc.js";
import type { OutboundPolicy } from "../security/outboundGuard.js";
import { inAmbientTransaction } from "../store/ambientTransaction.js";
import { authenticateApiKey, type Identity } from "../store/apiKeys.js";
import type { StoreContext } from "../store/common.js";
import type { Store } from "../store/db.js";
import { authenticateSession } from "../store/users.js";
import type { AgentHub } from "../transports/agent.js";
import type { SshTimeouts } from "../transports/ssh.js";
import { accessOf, accessOfRequest, authorize, authorizePath } from "./access.js";
import { AddressQueue } from "./addressQueue.js";
import { agentRoutes, registerAgentProtocol } from "./agents.js";
import { artifactRoutes } from "./artifacts.js";
import { auditedRoute, auditRoutes } from "./audit.js";
import { configRoutes } from "./configAsCode.js";
import { dashboardRoutes } from "./dashboard.js";
import { doraRoutes } from "./dora.js";
import { feedTriggerRoutes } from "./feedTriggers.js";
import { parseJsonBody } from "./json.js";
import { masterKeyRoutes } from "./masterKey.js";
import { metricsRoutes } from "./metrics.js";
import { oidcRoutes } from "./oidc.js";
import { buildOpenApiDocument } from "./openapi.js";
import { packageRoutes } from "./packages.js";
import { errorToProblem, makeProblem, type Problem, sendProblem } from "./problems.js";
import { progressionRoutes } from "./progression.js";
import { releaseRoutes } from "./releases.js";
import { resourceRoutes } from "./resources.js";
import { defineRoute, isPublic, parseInput, type RouteSpec } from "./route.js";
import { runbookScheduleRoutes } from "./runbookSchedules.js";
import { runbookRoutes } from "./runbooks.js";
import { signInMethodRoutes } from "./signInMethods.js";
import { targetRouteRoutes } from "./targetRoutes.js";
import { targetTrustRoutes } from "./targetTrust.js";
import { taskRoutes } from "./tasks.js";
import { teamRoutes } from "./teams.js";
import { checkOrigin, sessionTokenOf, userRoutes } from "./users.js";
import { variableSetRoutes } from "./variableSets.js";
import { webhookRoutes } from "./webhooks.js";
import { WebUi } from "./webUi.js";

declare module "fastify" {
  interface FastifyContextConfig {
    /** Answers without an API key or session (health, readiness and sign-in only). */
    public?: boolean;
    /** Not counted against the client address's requests at once (RouteSpec.unqueued). */
    unqueued?: boolean;
  }
  interface FastifyRequest {
    identity?: Identity;
    access?: Access;
  }
}

export interface AppOptions {
  store: Store;
  context: StoreContext;
  logger: FastifyBaseLogger;
  version: string;
  /** The task engine and deployment services; without them only the resource routes exist. */
  engine?: TaskEngine;
  deployments?: DeploymentServices;
  /** Artifact retention, applied at once when a runbook's policy changes. */
  artifactRetention?: ArtifactRetention | undefined;
  /** Largest accepted request body in bytes (default 1 MiB). */
  bodyLimit?: number;
  /** Serves GET /metrics (with an API key) when given. */
  metrics?: ServerMetrics;
  /** Feed and webhook URLs the server may call (FERRY_OUTBOUND_ALLOW); default: no exception to the deny list. */
  outbound?: OutboundPolicy;
  /**
   * Addresses and ranges of the reverse proxies whose X-Forwarded-For, -Proto and -Host are
   * believed (FERRY_TRUSTED_PROXIES); default none: request.ip, protocol and host are the socket's.
   */
  trustedProxies?: readonly string[];
  /** OIDC sign-in (FERRY_OIDC_*); without it the OIDC routes answer that it is not configured. */
  oidc?: OidcClient;
  /** Requests of one client address that run at once (FERRY_REQUESTS_PER_ADDRESS; default 8). */
  requestsPerAddress?: number | undefined;
  /** The built web dashboard's directory (default: dist/web of the package). */
  webRoot?: string;
  /** Rotates the master key (POST /api/v1/admin/master-key/rotate, ADR 0046); the route exists only with it. */
  masterKeyRotation?: MasterKeyRotation | undefined;
  /** The agents' hub: with it the server speaks ferry agent's protocol (docs/decisions/0030-agents.md). */
  agents?: AgentHub;
  /** FERRY_SSH_CONNECT_TIMEOUT_SECONDS and FERRY_SSH_OPERATION_TIMEOUT_SECONDS, for `ferry target trust`'s connection. */
  sshTimeouts?: SshTimeouts | undefined;
}

const DEFAULT_BODY_LIMIT = 1024 * 1024;
const REQUESTS_PER_ADDRESS = 8;

/** A request's error once its client left: nothing to answer (see buildApp). */
function clientLeft(): void {}

/** Builds the HTTP application. It does not listen: `server/start.ts` does, tests use inject(). */
export async function buildApp(options: AppOptions): Promise<FastifyInstance> {
  const app = Fastify({
    loggerInstance: options.logger,
    bodyLimit: options.bodyLimit ?? DEFAULT_BODY_LIMIT,
    // Request ids in logs and problems let an operator find the log line of a 500.
    genReqId: () => crypto.randomUUID(),
    return503OnClosing: true,
    // Behind a TLS-terminating proxy the socket is plain HTTP from the proxy: only the proxies
    // named here may say otherwise (Secure cookie, Origin check) and name the client (sign-in
    // limit, audit source). Anyone else's X-Forwarded-* headers are ignored.
    trustProxy: options.trustedProxies?.length ? [...options.trustedProxies] : false,
    // Errors Fastify raises before routing (a URL with broken percent-encoding) get the same problem format.
    frameworkErrors: (error, request, reply) => {
      sendProblem(reply, errorToProblem(error, request));
    },
  });

  // A client that leaves mid-request (an agent's host killed, a browser closed) is not an
  // error of the server. Node emits a request's "aborted" error only if the request has an
  // 'error' listener when it decides to, a tick before it emits; a reader of the body that
  // lets go in between, or a stream that hands the error on to a consumer with no listener
  // (an agent tunnel), turned it into an uncaught exception, which ends `ferry server`. CI saw
  // it when twenty agents were killed at once (agents.rolling.e2e). Whoever reads a request
  // still gets its error through its own listener; this one only keeps it from being uncaught.
  app.server.prependListener("request", (request: IncomingMessage) => {
    request.on("error", clientLeft);
  });

  app.removeAllContentTypeParsers();
  app.addContentTypeParser(/^application\/([\w.-]+\+)?json$/, { parseAs: "buffer" }, (_request, body, done) => {
    try {
      done(null, parseJsonBody(body as Buffer));
    } catch (error) {
      done(error as Error, undefined);
    }
  });

  // Package archives (ADR 0044): the body is handed to the route as the request stream, read
  // (and size-limited) by the package feed, never buffered whole. Other routes validate their
  // body with a schema, which a stream does not pass.
  app.addContentTypeParser("application/octet-stream", (_request, payload, done) => {
    done(null, payload);
  });

  app.setErrorHandler((error, request, reply) => {
    if (error instanceof RateLimitedError) reply.header("retry-after", String(error.retryAfterSeconds));
    return sendProblem(reply, errorToProblem(error, request));
  });
  // The web dashboard: its pages (deep links included) are index.html, its assets are files.
  const webUi = new WebUi(options.webRoot);
  webUi.register(app);
  app.setNotFoundHandler((request, reply) =>
    webUi.isPage(request) ? webUi.sendPage(request, reply) : sendProblem(reply, routeNotFound(request)),
  );

  // Decided by the route that matched, never by the raw URL: the router decodes
  // percent-escapes, so "/%61pi/v1/…" reaches the same handlers as "/api/v1/…".
  // Every route that is not marked public needs a key; so does an unknown path that
  // decodes to /api/… (a 401 there does not reveal which routes exist).
  // The router matches "//", "." and ".." literally: "/api//v1/projects" matches nothing, but
  // "/api/v1/projects/.." reaches the project route with the name "..". No client sends such a
  // path (browsers, fetch and curl resolve them first), so any path with an empty or dot segment
  // answers 404 before the key check, matched or not: no handler runs, and the answer is the
  // same for every such path, so it does not reveal which routes exist either.
  // One client's requests run a few at a time, so that it cannot fill every turn of the
  // event loop (src/api/addressQueue.ts); first, before any work is done for them.
  const queue = new AddressQueue(options.requestsPerAddress ?? REQUESTS_PER_ADDRESS);
  app.addHook("onRequest", async (request, reply) => {
    // The requests `ferry apply` replays inside its transaction (src/api/configAsCode.ts) run
    // within the apply's own place in the line: queueing them behind it could wait for ever.
    if (request.routeOptions.config?.unqueued || inAmbientTransaction()) return;
    if (!(await queue.acquire(request, reply))) {
      // Its client left while it waited: nobody reads an answer, so no work is done for it.
      reply.hijack();
      reply.raw.destroy();
      return reply;
    }
  });
  app.addHook("onRequest", async (request, reply) => {
    if (hasEmptyOrDotSegment(request.url)) return sendProblem(reply, routeNotFound(request));
    if (request.routeOptions.config?.public) return;
    if (request.routeOptions.url === undefined && !decodedPath(request.url).startsWith("/api/")) return;
    request.identity = await authenticate(options.context, request);
    request.access = await accessOf(options.context.db, request.identity);
  });

  const routes: RouteSpec[] = [
    ...healthRoutes(options.store),
    ...resourceRoutes(
      options.context,
      options.outbound,
      options.deployments &&
        (
          (services: DeploymentServices) => (reference: string) =>
            tearDownEnvironment({ context: options.context, target: processRunnerServices(services).target }, reference)
        )(options.deployments),
    ),
    ...variableSetRoutes(options.context),
    ...targetTrustRoutes(options.context, options.sshTimeouts),
    ...(options.deployments
      ? targetRouteRoutes(options.context, processRunnerServices(options.deployments).target)
      : []),
    ...agentRoutes(options.context, options.agents),
    ...dashboardRoutes(options.context, options.engine),
    ...(options.deployments ? releaseRoutes(options.deployments, options.outbound) : []),
    ...(options.deployments ? runbookRoutes(options.deployments) : []),
    ...(options.deployments ? runbookScheduleRoutes(options.context) : []),
    ...(options.deployments ? feedTriggerRoutes(options.deployments) : []),
    ...(options.deployments?.artifacts
      ? artifactRoutes(options.context, options.deployments.artifacts, options.artifactRetention)
      : []),
    ...(options.deployments?.packages ? packageRoutes(options.deployments.packages) : []),
    ...progressionRoutes(options.context),
    ...(options.engine ? taskRoutes(options.context, options.engine) : []),
    ...webhookRoutes(options.context, options.outbound),
    ...doraRoutes(options.context),
    ...auditRoutes(options.context),
    ...masterKeyRoutes(options.masterKeyRotation),
    ...userRoutes(options.context),
    ...teamRoutes(options.context),
    ...oidcRoutes(options.context, options.oidc),
    ...signInMethodRoutes(options.context, options.oidc),
    ...(options.metrics ? metricsRoutes(options.metrics) : []),
    ...configRoutes(options.context, () => app),
    defineRoute({
      method: "GET",
      path: "/api/v1/schema/ferry.json",
      tag: "Meta",
      summary: "The JSON Schema of ferry.yml (for editors and CI checks)",
      access: { kind: "signedIn" },
      // Loaded on first request: the YAML parser is not needed to serve anything else.
      handler: async () => (await import("../config/ferryFile.js")).ferryFileJsonSchema(),
    }),
  ];
  // Built on first request, not at start: it walks every schema (readiness in under a second).
  let openApi: Record<string, unknown> | undefined;
  routes.push(
    defineRoute({
      method: "GET",
      path: "/api/v1/openapi.json",
      tag: "Meta",
      summary: "This API's OpenAPI 3.1 document",
      access: { kind: "signedIn" },
      handler: async () => {
        openApi ??= buildOpenApiDocument(routes, options.version);
        return openApi;
      },
    }),
  );
  // Every state-changing route writes an audit entry when it succeeds (src/api/audit.ts).
  // Event streams (task logs, dashboard changes) never end on their own while a page is
  // open: a closing server ends them, or its close would wait for every browser to leave.
  const streams = new Set<ServerResponse>();
  app.addHook("preClose", async () => {
    for (const stream of streams) stream.end();
  });
  for (const route of routes) {
    registerRoute(app, auditedRoute(route, options.context), options.context, queue, (response) => {
      // A stream goes on after its handler: its place in the address's line is given back now.
      queue.release(response.request);
      streams.add(response.raw);
      response.raw.on("close", () => streams.delete(response.raw));
    });
  }
  if (options.agents) registerAgentProtocol(app, options.context, options.agents, queue);
  return app;
}

function registerRoute(
  app: FastifyInstance,
  route: RouteSpec,
  context: StoreContext,
  queue: AddressQueue,
  streamStarted: (reply: FastifyReply) => void,
): void {
  app.route({
    method: route.method,
    url: route.path,
    config: { public: isPublic(route), unqueued: route.unqueued === true },
    handler: async (request, reply) => {
      // Its client left before its work began (its place in the line went back then): nobody
      // reads the answer, and work done now would run outside the line.
      if (reply.raw.closed) {
        reply.hijack();
        return reply;
      }
      // A client that leaves from here on gets its place back when the handler ends.
      return queue.working(request, () => handle(request, reply));
    },
  });
  async function handle(request: FastifyRequest, reply: FastifyReply) {
    // The one place every route's access is decided (src/api/access.ts): what the path
    // names first, then what the query and body ask for.
    const access = accessOfRequest(request);
    const params = parseInput(route.params, request.params, "path");
    const found = await authorizePath(context.db, route.access, access, params);
    const query = parseInput(route.query, request.query, "query");
    const body = parseInput(route.body, request.body);
    await authorize(context.db, route.access, access, { params, query, body }, found);
    const result = await route.handler({ params, query, body, access, request, reply });
    if (reply.sent) {
      // A stream (SSE) took over the response: ended when the client leaves or the server closes.
      if (!reply.raw.writableEnded) streamStarted(reply);
      return reply;
    }
    reply.code(route.status ?? 200);
    return route.status === 204 ? reply.send() : result;
  }
}

function routeNotFound(request: FastifyRequest): Problem {
  return makeProblem(
    "route-not-found",
    `there is no route ${request.method} ${request.url.split("?")[0]}; the routes are listed in /api/v1/openapi.json`,
    { requestId: String(request.id) },
  );
}

/** "//" inside the path, or a "." or ".." segment, also percent-encoded ("%2e%2e", "%2f%2f"); one trailing "/" is not. */
function hasEmptyOrDotSegment(url: string): boolean {
  const segments = decodedPath(url).split("/").slice(1);
  return segments.some(
    (segment, index) => segment === "." || segment === ".." || (segment === "" && index < segments.length - 1),
  );
}

function decodedPath(url: string): string {
  const path = url.split("?")[0] ?? "";
  try {
    return decodeURIComponent(path).toLowerCase();
  } catch {
    return path.toLowerCase();
  }
}

/**
 * An API key (Authorization: Bearer) or a session cookie. A key is sent deliberately by its
 * holder, so it needs no CSRF check; a cookie is sent by the browser with any request, also
 * one another site makes it send, so a state-changing request with a cookie must carry the
 * session's CSRF token and, when the browser names an Origin, come from this server's own.
 */
async function authenticate(context: StoreContext, request: FastifyRequest): Promise<Identity> {
  const header = request.headers.authorization;
  if (header !== undefined) {
    const match = /^Bearer\s+(\S+)\s*$/i.exec(header);
    const key = match?.[1];
    const identity = key && isWellFormedApiKey(key) ? await authenticateApiKey(context, key) : undefined;
    if (!identity) {
      throw new UnauthenticatedError("the API key is not valid, expired or revoked; use another key");
    }
    return identity;
  }
  const token = sessionTokenOf(request);
  if (!token) {
    throw new UnauthenticatedError(
      "this route needs an API key or a session: send 'Authorization: Bearer ferry_…' (the admin key is printed on the server's first start) or sign in with POST /api/v1/session",
    );
  }
  const session = await authenticateSession(context, token);
  if (!session) throw new UnauthenticatedError("the session has ended or is not valid; sign in again");
  if (!SAFE_METHODS.has(request.method)) {
    checkOrigin(request);
    const sent = request.headers["x-csrf-token"];
    if (typeof sent !== "string" || !sameSecret(sent, session.csrfToken)) {
      throw new CsrfError(
        "a request signed in by cookie that changes something needs the session's CSRF token in X-CSRF-Token (GET /api/v1/session returns it)",
      );
    }
  }
  return {
    via: "session",
    id: session.user.id,
    name: session.user.username,
    userId: session.user.id,
    isAdmin: session.user.isAdmin,
    session: { id: session.sessionId, csrfToken: session.csrfToken },
  };
}

const SAFE_METHODS = new Set(["GET", "HEAD", "OPTIONS"]);

function sameSecret(sent: string, expected: string): boolean {
  const a = Buffer.from(sent, "utf8");
  const b = Buffer.from(expected, "utf8");
  return a.length === b.length && timingSafeEqual(a, b);
}

function healthRoutes(store: Store): RouteSpec[] {
  return [
    defineRoute({
      method: "GET",
      path: "/healthz",
      tag: "Meta",
      summary: "Liveness: the process answers",
      access: { kind: "public" },
      unqueued: true,
      handler: async () => ({ status: "ok" }),
    }),
    defineRoute({
      method: "GET",
      path: "/readyz",
      tag: "Meta",
      summary: "Readiness: the database answers",
      access: { kind: "public" },
      unqueued: true,
      handler: async ({ reply }) => {
        try {
          await store.ping();
          return { status: "ready", database: store.dialect };
        } catch {
          reply.code(503);
          return { status: "unavailable", database: store.dialect };
        }
      },
    }),
  ];
}
