import { z } from "zod";
import { ConflictError, InputError } from "../domain/errors.js";
import { NginxRouter, type NginxRouterOptions } from "./nginx.js";

/*
 * The host side of nginx as a remote target's router (`ferry nginx-router`, run through the
 * target's transport as a host service: docs/decisions/0039-nginx-on-remote-hosts.md). One
 * request as JSON on standard input and one answer as a JSON line on stdout, as for
 * `ferry processes`. The work is the server's own nginx driver (nginx.ts) run on the host: the
 * files are written there atomically, `nginx -t` checks them, the master there is reloaded,
 * and the reload is confirmed from that host's /proc. Nothing lives in this process between
 * requests: the files in the sites directory are the record of the routes, so reconciliation
 * reads them back like any other request.
 */

const settingsSchema = z.strictObject({
  binary: z.string(),
  config: z.string(),
  sitesDir: z.string(),
  pidFile: z.string(),
  listen: z.string(),
  clientKeepalive: z.boolean(),
});
export type NginxHostSettings = z.infer<typeof settingsSchema>;

const nginxHostRequestSchema = z.discriminatedUnion("operation", [
  z.strictObject({ operation: z.literal("inUse"), settings: settingsSchema }),
  z.strictObject({ operation: z.literal("routes"), settings: settingsSchema }),
  z.strictObject({
    operation: z.literal("switch"),
    settings: settingsSchema,
    route: z.strictObject({ name: z.string(), host: z.string(), pathPrefix: z.string() }),
    target: z.strictObject({ upstream: z.string(), colour: z.string().nullable() }),
  }),
  z.strictObject({
    operation: z.literal("drain"),
    settings: settingsSchema,
    upstream: z.string(),
    deadlineMs: z.number().int().min(0).max(3_600_000),
  }),
  z.strictObject({ operation: z.literal("traffic"), settings: settingsSchema }),
]);
export type NginxHostRequest = z.infer<typeof nginxHostRequestSchema>;

/** What `ferry nginx-router` prints: the operation's value, or why it failed (the kind keeps the server's error mapping). */
export type NginxHostAnswer =
  | { ok: true; value: unknown }
  | { ok: false; kind: "input" | "conflict" | "failed"; message: string };

/** Carries out one request; every failure becomes an answer (the exit code stays 0 when the answer was written). */
export async function answerNginxHostRequest(input: string): Promise<NginxHostAnswer> {
  try {
    const request = nginxHostRequestSchema.parse(JSON.parse(input));
    const router = new NginxRouter(optionsOf(request.settings));
    try {
      return { ok: true, value: (await perform(router, request)) ?? null };
    } finally {
      await router.close();
    }
  } catch (error) {
    const message = error instanceof Error ? error.message : String(error);
    if (error instanceof z.ZodError || error instanceof SyntaxError)
      return { ok: false, kind: "input", message: `the request is not one ferry nginx-router understands: ${message}` };
    if (error instanceof InputError) return { ok: false, kind: "input", message };
    if (error instanceof ConflictError) return { ok: false, kind: "conflict", message };
    return { ok: false, kind: "failed", message };
  }
}

function optionsOf(settings: NginxHostSettings): NginxRouterOptions {
  return {
    nginx: settings.binary,
    config: settings.config,
    sitesDir: settings.sitesDir,
    pidFile: settings.pidFile,
    listen: settings.listen,
    clientKeepalive: settings.clientKeepalive,
  };
}

async function perform(router: NginxRouter, request: NginxHostRequest): Promise<unknown> {
  switch (request.operation) {
    case "inUse":
      return router.bringBack();
    case "routes":
      return router.routes();
    case "switch":
      return router.switch(request.route, request.target);
    case "drain":
      return router.drain(request.upstream, request.deadlineMs);
    case "traffic":
      return router.traffic();
    default: {
      const unknown: never = request;
      return unknown;
    }
  }
}
