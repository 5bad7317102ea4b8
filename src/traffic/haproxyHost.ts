import { z } from "zod";
import { ConflictError, InputError } from "../domain/errors.js";
import { HaproxyRouter } from "./haproxy.js";

/*
 * The host side of HAProxy as a remote target's router (`ferry haproxy-router`, run through
 * the target's transport as a host service, as `ferry nginx-router` is: ADR 0039, 0048). One
 * request as JSON on standard input and one answer as a JSON line on stdout. The work is the
 * server's own haproxy driver run on the host: its haproxy.cfg is the record of the routes,
 * switches go through that host's runtime API socket, and HAProxy is started there
 * (daemonised, in a session of its own) by the first switch or by `inUse` when the file
 * records routes and none runs.
 */

const settingsSchema = z.strictObject({
  binary: z.string(),
  stateDir: z.string(),
  listen: z.string(),
});
export type HaproxyHostSettings = z.infer<typeof settingsSchema>;

const haproxyHostRequestSchema = z.discriminatedUnion("operation", [
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
export type HaproxyHostRequest = z.infer<typeof haproxyHostRequestSchema>;

/** What `ferry haproxy-router` prints: the operation's value, or why it failed (the kind keeps the server's error mapping). */
export type HaproxyHostAnswer =
  | { ok: true; value: unknown }
  | { ok: false; kind: "input" | "conflict" | "failed"; message: string };

/** Carries out one request; every failure becomes an answer (the exit code stays 0 when the answer was written). */
export async function answerHaproxyHostRequest(input: string): Promise<HaproxyHostAnswer> {
  try {
    const request = haproxyHostRequestSchema.parse(JSON.parse(input));
    const { binary, stateDir, listen } = request.settings;
    const router = new HaproxyRouter({ haproxy: binary, stateDir, listen });
    try {
      return { ok: true, value: (await perform(router, request)) ?? null };
    } finally {
      await router.close();
    }
  } catch (error) {
    const message = error instanceof Error ? error.message : String(error);
    if (error instanceof z.ZodError || error instanceof SyntaxError)
      return {
        ok: false,
        kind: "input",
        message: `the request is not one ferry haproxy-router understands: ${message}`,
      };
    if (error instanceof InputError) return { ok: false, kind: "input", message };
    if (error instanceof ConflictError) return { ok: false, kind: "conflict", message };
    return { ok: false, kind: "failed", message };
  }
}

async function perform(router: HaproxyRouter, request: HaproxyHostRequest): Promise<unknown> {
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
