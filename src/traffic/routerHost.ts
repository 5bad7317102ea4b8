import { z } from "zod";
import { ConflictError, InputError, NotFoundError } from "../domain/errors.js";
import { modeBodySchema } from "./proxyState.js";
import type { Router } from "./router.js";

/*
 * The host side of a router a remote target's host runs itself (`ferry nginx-router`, ADR
 * 0039; `ferry haproxy-router`, ADR 0048), run through the target's transport as a host
 * service. One request as JSON on standard input and one answer as a JSON line on stdout, as
 * for `ferry processes`. The work is the server's own driver run on the host (nginx.ts,
 * haproxy.ts): its files on the host are the record of the routes, so nothing lives in this
 * process between requests, and the router is started there (daemonised, in a session of
 * its own) by the first switch or by `inUse` when the files record routes and none runs.
 * The two drivers differ only in their settings and how the driver is opened from them.
 */

const nginxSettingsSchema = z.strictObject({
  binary: z.string(),
  config: z.string(),
  sitesDir: z.string(),
  pidFile: z.string(),
  listen: z.string(),
  clientKeepalive: z.boolean(),
});

const haproxySettingsSchema = z.strictObject({
  binary: z.string(),
  stateDir: z.string(),
  listen: z.string(),
});

/** A driver the host runs for the server, as `ferry <command>` answers for it. */
interface HostDriver<S extends z.ZodType> {
  readonly command: string;
  /** Whether it implements `Router.split` (canary stages, ADR 0049 and 0053). */
  readonly splits: boolean;
  /** Whether it implements `Router.setMode` (maintenance and pause, ADR 0071). */
  readonly modes: boolean;
  readonly settings: S;
  open(settings: z.infer<S>): Promise<Router & { bringBack(): Promise<boolean> }>;
}

const hostDrivers = {
  nginx: {
    command: "nginx-router",
    splits: false,
    modes: false,
    settings: nginxSettingsSchema,
    open: async ({ binary, ...settings }) =>
      new (await import("./nginx.js")).NginxRouter({ nginx: binary, ...settings }),
  } satisfies HostDriver<typeof nginxSettingsSchema>,
  haproxy: {
    command: "haproxy-router",
    splits: true,
    modes: true,
    settings: haproxySettingsSchema,
    open: async ({ binary, stateDir, listen }) =>
      new (await import("./haproxy.js")).HaproxyRouter({ haproxy: binary, stateDir, listen }),
  } satisfies HostDriver<typeof haproxySettingsSchema>,
};

export type HostDriverName = keyof typeof hostDrivers;
export type HostRouterSettings<D extends HostDriverName> = z.infer<(typeof hostDrivers)[D]["settings"]>;

/** The `ferry <command>` that answers for a driver on the host. */
export function hostRouterCommand(driver: HostDriverName): string {
  return hostDrivers[driver].command;
}

/** Whether the driver on the host can split a route's traffic (a canary). */
export function hostRouterSplits(driver: HostDriverName): boolean {
  return hostDrivers[driver].splits;
}

/** Whether the driver on the host has route modes (maintenance, pause). */
export function hostRouterModes(driver: HostDriverName): boolean {
  return hostDrivers[driver].modes;
}

function requestSchema<S extends z.ZodType>(settings: S) {
  return z.discriminatedUnion("operation", [
    z.strictObject({ operation: z.literal("inUse"), settings }),
    z.strictObject({ operation: z.literal("routes"), settings }),
    z.strictObject({
      operation: z.literal("switch"),
      settings,
      route: z.strictObject({ name: z.string(), host: z.string(), pathPrefix: z.string() }),
      target: z.strictObject({ upstream: z.string(), colour: z.string().nullable() }),
    }),
    z.strictObject({
      operation: z.literal("drain"),
      settings,
      upstream: z.string(),
      deadlineMs: z.number().int().min(0).max(3_600_000),
    }),
    z.strictObject({ operation: z.literal("traffic"), settings }),
    z.strictObject({
      operation: z.literal("split"),
      settings,
      route: z.string(),
      split: z
        .strictObject({ upstream: z.string(), colour: z.string().nullable(), weight: z.number().int().min(0).max(100) })
        .nullable(),
    }),
    z.strictObject({ operation: z.literal("mode"), settings, route: z.string(), mode: modeBodySchema.nullable() }),
  ]);
}

/** One request to a host's router: an operation of `Router` (or `inUse`) and the driver's settings. */
export type HostRouterRequest<S> = z.infer<ReturnType<typeof requestSchema<z.ZodType<S>>>>;

/** What `ferry <driver>-router` prints: the operation's value, or why it failed (the kind keeps the server's error mapping). */
export type HostRouterAnswer =
  | { ok: true; value: unknown }
  | { ok: false; kind: "input" | "notFound" | "conflict" | "failed"; message: string };

/** Carries out one request; every failure becomes an answer (the exit code stays 0 when the answer was written). */
export async function answerHostRouterRequest(driver: HostDriverName, input: string): Promise<HostRouterAnswer> {
  const { command, settings, open } = hostDrivers[driver] as HostDriver<z.ZodType>;
  try {
    const request = requestSchema(settings).parse(JSON.parse(input));
    const router = await open(request.settings);
    try {
      return { ok: true, value: (await perform(router, request)) ?? null };
    } finally {
      await router.close();
    }
  } catch (error) {
    const message = error instanceof Error ? error.message : String(error);
    if (error instanceof z.ZodError || error instanceof SyntaxError)
      return { ok: false, kind: "input", message: `the request is not one ferry ${command} understands: ${message}` };
    if (error instanceof InputError) return { ok: false, kind: "input", message };
    if (error instanceof NotFoundError) return { ok: false, kind: "notFound", message };
    if (error instanceof ConflictError) return { ok: false, kind: "conflict", message };
    return { ok: false, kind: "failed", message };
  }
}

async function perform(
  router: Router & { bringBack(): Promise<boolean> },
  request: HostRouterRequest<unknown>,
): Promise<unknown> {
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
    case "split":
      if (!router.split) throw new InputError(`the ${router.driver} router cannot split a route's traffic (ADR 0049)`);
      return router.split(request.route, request.split);
    case "mode":
      if (!router.setMode) {
        throw new ConflictError(`the ${router.driver} router cannot put a route in maintenance or pause it (ADR 0071)`);
      }
      return router.setMode(request.route, request.mode);
    default: {
      const unknown: never = request;
      return unknown;
    }
  }
}
