import { Readable } from "node:stream";
import type { FastifyRequest } from "fastify";
import { z } from "zod";
import { type AuditActor, auditEventSchema, auditVerificationSchema, diffOf } from "../domain/audit.js";
import { appendAuditEvent, listAuditEvents, readAuditEvents, verifyAuditChain } from "../store/audit.js";
import type { StoreContext } from "../store/common.js";
import { defineRoute, isPublic, type RouteAudit, type RouteSpec } from "./route.js";

const auditQuerySchema = z.strictObject({
  after: z.coerce.number().int().min(0).default(0).describe("entries with a seq above this one"),
  limit: z.coerce.number().int().min(1).max(500).default(50),
  resource: z.string().min(1).max(300).optional().describe("'project' or 'project:<id or name>'"),
  action: z.string().min(1).max(100).optional().describe("e.g. 'variable.update'"),
});

const exportQuerySchema = z.strictObject({
  after: z.coerce.number().int().min(0).default(0).describe("entries with a seq above this one"),
});

/**
 * Records every state-changing request: once the route's handler succeeded, one entry
 * with the caller's key, address, the route's action and a field-level diff (secrets
 * masked, see src/domain/audit.ts). GET routes and public routes change nothing and are
 * passed through as they are.
 *
 * The entry is written after the change committed, not in its transaction (store
 * functions own their transactions, and holding the chain's lock through every change
 * would serialise all writes). If writing it fails, the change stands and the failure is
 * logged at error level with the entry's action and resource.
 */
export function auditedRoute(route: RouteSpec, context: StoreContext): RouteSpec {
  if (route.method === "GET" || isPublic(route)) return route;
  const audit = route.audit ?? routeOnlyAudit(route);
  return {
    ...route,
    handler: async (input) => {
      const { params, body, request } = input;
      let before: unknown;
      if (audit.before) {
        // A resource that cannot be read fails the handler itself, with its own message.
        before = await audit.before({ params, body }).catch(() => undefined);
      }
      const result = await route.handler(input);
      const change = audit.change({ params, body, before, result });
      try {
        await appendAuditEvent(context, {
          actor: actorOf(request),
          source: request.ip,
          action: audit.action,
          resource: change.resource,
          diff: diffOf(change),
        });
      } catch (error) {
        request.log.error(
          { err: error, audit: audit.action, resource: change.resource },
          "the change was made but could not be written to the audit log",
        );
      }
      return result;
    },
  };
}

/** Who called: the API key that authenticated the request. */
function actorOf(request: FastifyRequest): AuditActor {
  return request.identity ? { id: request.identity.id, name: request.identity.name } : { id: null, name: "anonymous" };
}

/**
 * For a state-changing route that says nothing about auditing: its method, path and
 * path parameters, never its body (whose fields are not known to be free of secrets).
 */
function routeOnlyAudit(route: RouteSpec): RouteAudit {
  return {
    action: `${route.method} ${route.path}`,
    change: ({ params }) => {
      const values = (params ?? {}) as Record<string, string>;
      return {
        resource: { type: "route", name: route.path.replace(/:(\w+)/g, (_, name: string) => values[name] ?? "") },
      };
    },
  };
}

/** GET /api/v1/audit, its JSON-lines export and the chain's verification. */
export function auditRoutes(context: StoreContext): RouteSpec[] {
  return [
    defineRoute({
      method: "GET",
      path: "/api/v1/audit",
      tag: "Audit",
      summary: "List audit entries, oldest first (page with after = the previous page's next)",
      access: { kind: "administer" },
      query: auditQuerySchema,
      response: z.object({
        items: z.array(auditEventSchema),
        total: z.number().int(),
        limit: z.number().int(),
        next: z.number().int().nullable(),
      }),
      handler: ({ query }) => listAuditEvents(context, query),
    }),
    defineRoute({
      method: "GET",
      path: "/api/v1/audit/export",
      tag: "Audit",
      summary: "Every audit entry after `after` as JSON lines (application/x-ndjson), streamed",
      access: { kind: "administer" },
      query: exportQuerySchema,
      handler: async ({ query, reply }) => {
        reply.type("application/x-ndjson; charset=utf-8");
        return Readable.from(
          (async function* () {
            for await (const event of readAuditEvents(context, query.after)) yield `${JSON.stringify(event)}\n`;
          })(),
        );
      },
    }),
    defineRoute({
      method: "GET",
      path: "/api/v1/audit/verify",
      tag: "Audit",
      summary: "Re-compute the audit log's hash chain; firstBad names the first entry edited, removed or forged",
      access: { kind: "administer" },
      response: auditVerificationSchema,
      handler: () => verifyAuditChain(context),
    }),
  ];
}
