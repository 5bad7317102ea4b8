import type { FastifyInstance, FastifyRequest } from "fastify";
import { z } from "zod";
import {
  createdEnrolmentTokenSchema,
  createEnrolmentTokenSchema,
  type EnrolmentToken,
  enrolAnswerSchema,
  enrolmentTokenSchema,
  enrolSchema,
  eventsRequestSchema,
  pollRequestSchema,
} from "../domain/agents.js";
import { NotFoundError, UnauthenticatedError } from "../domain/errors.js";
import * as agents from "../store/agents.js";
import type { StoreContext } from "../store/common.js";
import type { AgentHub } from "../transports/agent.js";
import { errorToProblem, sendProblem } from "./problems.js";
import { defineRoute, parseInput, pathParams, type RouteSpec } from "./route.js";

const tokenChange = (token: EnrolmentToken) => ({
  note: token.note,
  environments: token.environments,
  expiresAt: token.expiresAt,
  state: token.state,
});

/**
 * Enrolment tokens (administrators create, list and revoke them), enrolment itself (public:
 * the token is the credential) and an agent credential's rotation and revocation. Each is
 * audited; no token or credential is ever part of an audit entry.
 */
export function agentRoutes(context: StoreContext, hub: AgentHub | undefined): RouteSpec[] {
  return [
    defineRoute({
      method: "POST",
      path: "/api/v1/agent-tokens",
      tag: "Agents",
      summary: "Create a one-time enrolment token for ferry agent (shown once)",
      body: createEnrolmentTokenSchema,
      response: createdEnrolmentTokenSchema,
      status: 201,
      access: { kind: "administer" },
      audit: {
        action: "agentToken.create",
        change: ({ result }) => {
          const token = result as EnrolmentToken;
          return {
            resource: { type: "agentToken", id: token.id, name: token.note || null },
            after: tokenChange(token),
          };
        },
      },
      handler: ({ body }) => agents.createEnrolmentToken(context, body),
    }),
    defineRoute({
      method: "GET",
      path: "/api/v1/agent-tokens",
      tag: "Agents",
      summary: "List enrolment tokens (never the tokens themselves)",
      response: z.object({ items: z.array(enrolmentTokenSchema) }),
      access: { kind: "administer" },
      handler: async () => ({ items: await agents.listEnrolmentTokens(context) }),
    }),
    defineRoute({
      method: "DELETE",
      path: "/api/v1/agent-tokens/:token",
      tag: "Agents",
      summary: "Revoke an enrolment token that was not used yet",
      params: pathParams("token"),
      response: enrolmentTokenSchema,
      access: { kind: "administer" },
      audit: {
        action: "agentToken.revoke",
        change: ({ result, params }) => {
          const token = result as EnrolmentToken | undefined;
          return {
            resource: { type: "agentToken", id: token?.id ?? params.token, name: token?.note || null },
            after: token ? tokenChange(token) : null,
          };
        },
      },
      handler: ({ params }) => agents.revokeEnrolmentToken(context, params.token),
    }),
    defineRoute({
      method: "POST",
      path: "/api/v1/agent/enrol",
      tag: "Agents",
      summary: "Enrol a host running ferry agent with a one-time token; answers the agent's own credential once",
      body: enrolSchema,
      response: enrolAnswerSchema,
      status: 201,
      // The one-time token is the credential.
      access: { kind: "public" },
      audit: {
        action: "agent.enrol",
        change: ({ result, body }) => {
          const answer = result as { target: { id: string; name: string } } | undefined;
          return {
            resource: { type: "target", id: answer?.target.id ?? null, name: answer?.target.name ?? body.name },
            after: { environments: body.environments, roles: body.roles, transport: "agent" },
          };
        },
      },
      handler: async ({ body }) => {
        const { target, credential } = await agents.enrolAgent(context, body);
        return { target: { id: target.id, slug: target.slug, name: target.name }, credential };
      },
    }),
    defineRoute({
      method: "POST",
      path: "/api/v1/targets/:target/agent/rotate",
      tag: "Agents",
      summary: "Rotate an agent's credential: the agent picks the new one up on its next poll",
      params: pathParams("target"),
      response: z.object({ target: z.string(), rotationPending: z.boolean() }),
      access: { kind: "administer" },
      audit: {
        action: "agent.rotate",
        change: ({ params, result }) => ({
          resource: {
            type: "target",
            id: null,
            name: (result as { target?: string } | undefined)?.target ?? params.target,
          },
          after: { credential: "rotated" },
        }),
      },
      handler: async ({ params }) => ({
        ...(await agents.rotateAgentCredential(context, params.target)),
        rotationPending: true,
      }),
    }),
    defineRoute({
      method: "POST",
      path: "/api/v1/targets/:target/agent/revoke",
      tag: "Agents",
      summary: "Revoke an agent's credential: its next request is refused and steps on it fail",
      params: pathParams("target"),
      response: z.object({ target: z.string(), revoked: z.boolean() }),
      access: { kind: "administer" },
      audit: {
        action: "agent.revoke",
        change: ({ params, result }) => ({
          resource: {
            type: "target",
            id: null,
            name: (result as { target?: string } | undefined)?.target ?? params.target,
          },
          after: { credential: "revoked" },
        }),
      },
      handler: async ({ params }) => {
        const revoked = await agents.revokeAgentCredential(context, params.target);
        hub?.revoked(revoked.targetId);
        return { target: revoked.target, revoked: true };
      },
    }),
  ];
}

function credentialOf(request: FastifyRequest): string {
  const header = request.headers.authorization ?? "";
  const match = /^Bearer (\S+)$/.exec(header);
  if (!match?.[1]) throw new UnauthenticatedError("send the agent's credential as Authorization: Bearer ferry_agent_…");
  return match[1];
}

/**
 * The work protocol of `ferry agent` (docs/decisions/0030-agents.md): long polls, events and
 * Docker tunnels. Plain routes rather than API routes: they are called all the time by
 * machines, so they are neither audited per request nor in the OpenAPI document, and they
 * authenticate with the agent's own credential (nothing else is accepted).
 */
export function registerAgentProtocol(
  app: FastifyInstance,
  context: StoreContext,
  hub: AgentHub,
  line: { release(request: FastifyRequest): void },
): void {
  const fail = (error: unknown, request: FastifyRequest, reply: import("fastify").FastifyReply) =>
    sendProblem(reply, errorToProblem(error, request));
  app.register(async (scope) => {
    // A tunnel's body is a byte stream the handler reads itself from the raw request, for as
    // long as the tunnel lasts: unlike the package feed (src/api/app.ts hands the stream to its
    // route as the body), nothing here gets it as a body. With the app's parser a client that
    // left mid-tunnel once surfaced as an uncaught "aborted" error in the server (CI, 17:41).
    scope.removeContentTypeParser("application/octet-stream");
    scope.addContentTypeParser("application/octet-stream", (_request, _payload, done) => done(null, undefined));
    // Held open (a long poll, a tunnel): in the address's line (src/api/addressQueue.ts) only
    // until the credential is checked and the body read, then out of it, or agents behind one
    // NAT address would wait behind each other's polls. Not before: these routes take anyone's
    // request, and one client's unauthenticated ones must not run more at once than elsewhere.
    scope.post("/api/v1/agent/poll", { config: { public: true } }, async (request, reply) => {
      try {
        const identity = await agents.authenticateAgent(context, credentialOf(request));
        const body = parseInput(pollRequestSchema, request.body);
        line.release(request);
        // The agent went away (its connection closed): the held poll ends, its calls stay for the next one.
        const gone = new AbortController();
        request.raw.once("close", () => gone.abort());
        reply.raw.once("close", () => gone.abort());
        return await hub.poll(identity, body, gone.signal);
      } catch (error) {
        return fail(error, request, reply);
      }
    });
    scope.post("/api/v1/agent/events", { config: { public: true } }, async (request, reply) => {
      try {
        const identity = await agents.authenticateAgent(context, credentialOf(request));
        hub.events(identity, parseInput(eventsRequestSchema, request.body));
        return reply.code(204).send();
      } catch (error) {
        return fail(error, request, reply);
      }
    });
    scope.post<{ Params: { tunnel: string } }>(
      "/api/v1/agent/tunnels/:tunnel",
      { config: { public: true } },
      async (request, reply) => {
        try {
          const identity = await agents.authenticateAgent(context, credentialOf(request));
          line.release(request);
          request.raw.setTimeout(0);
          // Taken over only when the tunnel is there: a hijacked reply counts as sent, so the
          // refusal below would have been a reset connection instead of this 404.
          if (!hub.tunnel(identity, request.params.tunnel, request.raw, reply.raw)) {
            throw new NotFoundError("no such tunnel is waiting (it timed out or was never asked for)");
          }
          reply.hijack();
        } catch (error) {
          if (reply.sent || reply.raw.headersSent) {
            reply.raw.destroy();
            return;
          }
          const problem = errorToProblem(error, request);
          reply.raw.writeHead(problem.status, { "content-type": "application/problem+json" });
          reply.raw.end(JSON.stringify(problem));
        }
      },
    );
  });
}
