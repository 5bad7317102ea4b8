import { randomBytes } from "node:crypto";
import { mkdir, readFile } from "node:fs/promises";
import { join } from "node:path";
import { z } from "zod";
import { writeFileAtomic } from "./atomicFile.js";

/**
 * The proxy's own state: its routes and its admin token, kept in one state directory.
 * This file is the source of truth for "which colour is live" (DESIGN.md, data plane), so
 * every write is atomic: a crash leaves either the old file or the new one, never half.
 */

const ROUTES_FILE = "routes.json";
const TOKEN_FILE = "admin-token";

export const routeNameSchema = z
  .string()
  .regex(/^[a-z0-9][a-z0-9._-]{0,62}$/i, "a route name is 1–63 letters, digits, '.', '_' or '-'");

/** An upstream is an HTTP origin (`http://127.0.0.1:8001`); it is stored normalised to that origin. */
const upstreamSchema = z
  .string()
  .refine(isHttpOrigin, "an upstream is an HTTP origin such as http://127.0.0.1:8001 (no path, query or credentials)")
  .transform((value) => new URL(value).origin);

const colourSchema = z.string().min(1).max(64);

export const routeDefinitionSchema = z.strictObject({
  host: z
    .string()
    .regex(/^[a-z0-9]([a-z0-9.-]{0,251}[a-z0-9])?$/i, "a host name without port, such as app.example.com")
    .transform((host) => host.toLowerCase()),
  pathPrefix: z.string().startsWith("/", "a path prefix starts with '/'").max(1024).default("/"),
  upstream: upstreamSchema,
  colour: colourSchema.optional(),
});

export const switchBodySchema = z.strictObject({ upstream: upstreamSchema, colour: colourSchema.optional() });

export const drainBodySchema = z.strictObject({
  upstream: upstreamSchema,
  deadlineMs: z.number().int().min(0).max(3_600_000),
});

/** PUT /routes/:name/canary: a second upstream for `weight` per cent of the route's visitors (ADR 0049). */
export const canaryBodySchema = z.strictObject({
  upstream: upstreamSchema,
  colour: colourSchema.optional(),
  weight: z
    .number({ message: "weight is a whole number of per cent, 0 to 100" })
    .int("weight is a whole number of per cent, 0 to 100")
    .min(0, "weight is a whole number of per cent, 0 to 100")
    .max(100, "weight is a whole number of per cent, 0 to 100"),
});

/**
 * PUT /routes/:name/mode: a route in maintenance answers every request 503 with `page` (HTML)
 * or a problem; a paused route holds requests up to `timeoutSeconds`, then sends them on when
 * it is resumed (DELETE /routes/:name/mode), or answers 503 when the time is up.
 */
export const modeBodySchema = z.discriminatedUnion(
  "mode",
  [
    z.strictObject({
      mode: z.literal("maintenance"),
      page: z
        .string()
        .min(1)
        .max(32 * 1024, "a maintenance page is at most 32 KiB of HTML")
        .optional(),
    }),
    z.strictObject({
      mode: z.literal("paused"),
      timeoutSeconds: z
        .number({ message: "timeoutSeconds: how long a request may be held, 1 to 600 seconds" })
        .min(1, "timeoutSeconds: how long a request may be held, 1 to 600 seconds")
        .max(600, "timeoutSeconds: how long a request may be held, 1 to 600 seconds"),
    }),
  ],
  { message: "mode is maintenance (with an optional page) or paused (with timeoutSeconds)" },
);

export type RouteMode = z.infer<typeof modeBodySchema>;

export type RouteDefinition = z.input<typeof routeDefinitionSchema>;

const routeCanarySchema = z.strictObject({
  upstream: z.string(),
  colour: z.string().nullable(),
  weight: z.number(),
});

const routeSchema = z.strictObject({
  name: routeNameSchema,
  host: z.string(),
  pathPrefix: z.string(),
  upstream: z.string(),
  colour: z.string().nullable(),
  /** A canary beside the live upstream; absent (or null) when the route has none. */
  canary: routeCanarySchema.nullable().optional(),
  /** Maintenance or paused; absent when the route serves. */
  mode: modeBodySchema.nullable().optional(),
  updatedAt: z.string(),
});

export type Route = z.infer<typeof routeSchema>;

const stateFileSchema = z.strictObject({ version: z.literal(1), routes: z.array(routeSchema) });

function isHttpOrigin(value: string): boolean {
  if (!URL.canParse(value)) return false;
  const url = new URL(value);
  return (
    url.protocol === "http:" &&
    url.username === "" &&
    url.password === "" &&
    url.pathname === "/" &&
    url.search === "" &&
    url.hash === ""
  );
}

export async function ensureStateDir(stateDir: string): Promise<void> {
  await mkdir(stateDir, { recursive: true, mode: 0o700 });
}

/** The routes saved by the last change; none when the proxy never had any. A corrupt file is an error, not an empty table. */
export async function loadRoutes(stateDir: string): Promise<Route[]> {
  const path = join(stateDir, ROUTES_FILE);
  let text: string;
  try {
    text = await readFile(path, "utf8");
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code === "ENOENT") return [];
    throw error;
  }
  const parsed = stateFileSchema.safeParse(safeJsonParse(text));
  if (!parsed.success) {
    throw new Error(
      `${path} is not a valid Ferry proxy state file (${z.prettifyError(parsed.error)}); fix or remove it`,
    );
  }
  return parsed.data.routes;
}

export async function saveRoutes(stateDir: string, routes: readonly Route[]): Promise<void> {
  const state: z.infer<typeof stateFileSchema> = { version: 1, routes: [...routes] };
  await writeFileAtomic(join(stateDir, ROUTES_FILE), `${JSON.stringify(state, null, 2)}\n`);
}

/** The admin API's bearer token: generated into the state dir (mode 0600) on first start, reused afterwards. */
export async function readOrCreateAdminToken(stateDir: string): Promise<{ token: string; path: string }> {
  const path = join(stateDir, TOKEN_FILE);
  try {
    return { token: (await readFile(path, "utf8")).trim(), path };
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code !== "ENOENT") throw error;
  }
  const token = randomBytes(32).toString("base64url");
  await writeFileAtomic(path, `${token}\n`);
  return { token, path };
}

/** The admin token of a proxy that ran on this state dir; an error when there is none. */
export async function readAdminToken(stateDir: string): Promise<string> {
  return (await readFile(join(stateDir, TOKEN_FILE), "utf8")).trim();
}

function safeJsonParse(text: string): unknown {
  try {
    return JSON.parse(text);
  } catch {
    return undefined;
  }
}
