import { z } from "zod";
import { isPublic, type RouteSpec } from "./route.js";

const problemSchema = {
  type: "object",
  required: ["type", "title", "status", "detail"],
  properties: {
    type: { type: "string", description: "urn:ferry:problem:<code>; stable" },
    title: { type: "string" },
    status: { type: "integer" },
    detail: { type: "string", description: "what went wrong and what to do" },
    errors: {
      type: "array",
      items: {
        type: "object",
        required: ["pointer", "detail"],
        properties: {
          pointer: { type: "string", description: "RFC 6901 JSON pointer to the bad field" },
          detail: { type: "string" },
          in: { type: "string", enum: ["query", "path"] },
        },
      },
    },
    requestId: { type: "string" },
  },
} as const;

function jsonSchema(schema: z.ZodType, io: "input" | "output"): Record<string, unknown> {
  const { $schema: _ignored, ...rest } = z.toJSONSchema(schema, { io, unrepresentable: "any" }) as Record<
    string,
    unknown
  >;
  return rest;
}

/** Query and path parameters as OpenAPI parameter objects, from an object schema. */
function parameters(schema: z.ZodType | undefined, location: "query" | "path") {
  if (!schema) return [];
  const object = jsonSchema(schema, "input") as { properties?: Record<string, unknown>; required?: string[] };
  return Object.entries(object.properties ?? {}).map(([name, property]) => ({
    name,
    in: location,
    required: location === "path" || (object.required ?? []).includes(name),
    schema: property,
  }));
}

/** The OpenAPI 3.1 document of the given routes: the same zod schemas that validate requests. */
export function buildOpenApiDocument(routes: readonly RouteSpec[], version: string): Record<string, unknown> {
  const paths: Record<string, Record<string, unknown>> = {};
  for (const route of routes) {
    const path = route.path.replace(/:([A-Za-z]+)/g, "{$1}");
    const status = String(route.status ?? 200);
    const operation: Record<string, unknown> = {
      summary: route.summary,
      tags: [route.tag],
      operationId: `${route.method.toLowerCase()}${path.replace(/[{}]/g, "").replace(/\/(\w)/g, (_, c: string) => c.toUpperCase())}`,
      parameters: [...parameters(route.params, "path"), ...parameters(route.query, "query")],
      responses: {
        [status]: {
          description: status === "204" ? "No content" : "Success",
          ...(route.response && {
            content: { "application/json": { schema: jsonSchema(route.response, "output") } },
          }),
        },
        "4XX": {
          description: "Problem (RFC 9457)",
          content: { "application/problem+json": { schema: { $ref: "#/components/schemas/Problem" } } },
        },
      },
      ...(isPublic(route) && { security: [] }),
    };
    if (route.body) {
      operation.requestBody = {
        required: true,
        content: { "application/json": { schema: jsonSchema(route.body, "input") } },
      };
    }
    paths[path] = { ...paths[path], [route.method.toLowerCase()]: operation };
  }
  return {
    openapi: "3.1.0",
    info: {
      title: "Ferry API",
      version,
      description:
        "Release management, deployment automation and runbooks. Every route needs an API key or a signed-in session (whose POST, PUT, PATCH and DELETE requests also send X-CSRF-Token).",
    },
    servers: [{ url: "/" }],
    security: [{ apiKey: [] }, { session: [] }],
    components: {
      securitySchemes: {
        apiKey: { type: "http", scheme: "bearer", description: "Authorization: Bearer ferry_…" },
        session: {
          type: "apiKey",
          in: "cookie",
          name: "ferry_session",
          description: "set by POST /api/v1/session; state-changing requests also need X-CSRF-Token",
        },
      },
      schemas: { Problem: problemSchema },
    },
    paths,
  };
}
