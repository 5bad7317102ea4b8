import type { ServerResponse } from "node:http";
import type { FastifyReply } from "fastify";

/**
 * Takes the reply out of Fastify's hands and starts a Server-Sent Events stream on it: no
 * caching, kept alive, and not buffered by a proxy in front (nginx's X-Accel-Buffering).
 */
export function openEventStream(reply: FastifyReply): ServerResponse {
  reply.hijack();
  const response = reply.raw;
  response.writeHead(200, {
    "content-type": "text/event-stream; charset=utf-8",
    "cache-control": "no-cache",
    connection: "keep-alive",
    "x-accel-buffering": "no",
  });
  return response;
}
