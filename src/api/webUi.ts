import { readdir, readFile } from "node:fs/promises";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { gzipSync } from "node:zlib";
import type { FastifyInstance, FastifyReply, FastifyRequest } from "fastify";

/**
 * The web dashboard (web/, built by `npm run build:web` into dist/web): index.html for the
 * dashboard's own paths, and its hashed assets. It is the API's client like the CLI: every
 * page reads and writes through /api/v1 on this same origin, with the session cookie and its
 * CSRF token (docs/decisions/0021-web-ui.md).
 */

/** Where `npm run build:web` writes: dist/web of the package, from src/api or dist/api alike. */
const defaultWebRoot = fileURLToPath(new URL("../../dist/web/", import.meta.url));

/**
 * The dashboard's pages (web/src/routes.tsx): a deep link to any of them loads index.html,
 * which then shows the page. Anything else that matches no route stays a 404 problem, so
 * an unknown or mis-cased path (/METRICS, /Api/…) is not answered with a page.
 */
const PAGE_PATH = /^\/(?:|sign-in|targets|audit|insights|(?:projects|tasks|admin)(?:\/[^/]+)*)\/?$/;

/**
 * Everything the page loads comes from this origin; nothing inline, nothing from elsewhere.
 * React sets style properties through the CSSOM, which style-src does not govern.
 */
const CONTENT_SECURITY_POLICY = [
  "default-src 'none'",
  "script-src 'self'",
  "style-src 'self'",
  "img-src 'self' data:",
  "font-src 'self'",
  "connect-src 'self'",
  "manifest-src 'self'",
  "base-uri 'none'",
  "form-action 'self'",
  "frame-ancestors 'none'",
].join("; ");

const SECURITY_HEADERS = {
  "content-security-policy": CONTENT_SECURITY_POLICY,
  "x-content-type-options": "nosniff",
  "referrer-policy": "same-origin",
  "x-frame-options": "DENY",
  "cross-origin-opener-policy": "same-origin",
  "cross-origin-resource-policy": "same-origin",
};

const CONTENT_TYPES: Record<string, string> = {
  ".js": "text/javascript; charset=utf-8",
  ".css": "text/css; charset=utf-8",
  ".svg": "image/svg+xml",
  ".png": "image/png",
  ".woff2": "font/woff2",
  ".json": "application/json",
  ".map": "application/json",
};

/** Compressing is worth it for text; images and fonts are compressed already. */
const COMPRESSIBLE = new Set([".js", ".css", ".svg", ".json", ".map"]);

interface Asset {
  body: Buffer;
  gzipped: Buffer | undefined;
  contentType: string;
}

interface Built {
  index: Buffer;
  indexGzipped: Buffer;
  assets: Map<string, Asset>;
}

const NOT_BUILT = `<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>Ferry</title></head>
<body><h1>Ferry's web dashboard is not built</h1>
<p>This installation has no built dashboard (dist/web/index.html is missing). Build it with
<code>npm run build</code> (or only the dashboard: <code>npm run build:web</code>) and restart
<code>ferry server</code>. The API answers at <a href="/api/v1/openapi.json">/api/v1</a> meanwhile.</p>
</body></html>
`;

export class WebUi {
  /** Read once, on the first request: a dashboard built after the server started is found. */
  #built: Promise<Built | undefined> | undefined;

  constructor(private readonly root: string = defaultWebRoot) {}

  /** Routes for the assets (public: they hold no data, like a CDN's files). */
  register(app: FastifyInstance): void {
    app.route({
      method: "GET",
      url: "/assets/:file",
      config: { public: true },
      handler: async (request, reply) => {
        const built = await this.#load();
        const { file } = request.params as { file: string };
        const asset = built?.assets.get(file);
        if (asset === undefined) return reply.callNotFound();
        return send(request, reply, asset.body, asset.gzipped, {
          "content-type": asset.contentType,
          // The name holds a hash of the content: a changed file is a new name.
          "cache-control": "public, max-age=31536000, immutable",
          "x-content-type-options": "nosniff",
        });
      },
    });
  }

  /** True for a GET or HEAD of one of the dashboard's pages (the not-found handler then serves index.html). */
  isPage(request: FastifyRequest): boolean {
    if (request.method !== "GET" && request.method !== "HEAD") return false;
    return PAGE_PATH.test(request.url.split("?")[0] ?? "");
  }

  async sendPage(request: FastifyRequest, reply: FastifyReply): Promise<FastifyReply> {
    const built = await this.#load();
    const headers = {
      ...SECURITY_HEADERS,
      "content-type": "text/html; charset=utf-8",
      // The page names the current assets: always ask whether it changed.
      "cache-control": "no-cache",
    };
    if (built === undefined) {
      reply.code(503);
      return send(request, reply, Buffer.from(NOT_BUILT), undefined, { ...headers, "cache-control": "no-store" });
    }
    return send(request, reply, built.index, built.indexGzipped, headers);
  }

  #load(): Promise<Built | undefined> {
    this.#built ??= readBuilt(this.root).then((built) => {
      // Not built yet: look again at the next request instead of remembering the absence.
      if (built === undefined) this.#built = undefined;
      return built;
    });
    return this.#built;
  }
}

async function readBuilt(root: string): Promise<Built | undefined> {
  const index = await readFile(join(root, "index.html")).catch(() => undefined);
  if (index === undefined) return undefined;
  const assets = new Map<string, Asset>();
  const names = await readdir(join(root, "assets")).catch(() => [] as string[]);
  for (const name of names) {
    const extension = name.slice(name.lastIndexOf("."));
    const contentType = CONTENT_TYPES[extension];
    if (contentType === undefined) continue;
    const body = await readFile(join(root, "assets", name));
    assets.set(name, {
      body,
      gzipped: COMPRESSIBLE.has(extension) && body.length > 1024 ? gzipSync(body, { level: 9 }) : undefined,
      contentType,
    });
  }
  return { index, indexGzipped: gzipSync(index, { level: 9 }), assets };
}

function send(
  request: FastifyRequest,
  reply: FastifyReply,
  body: Buffer,
  gzipped: Buffer | undefined,
  headers: Record<string, string>,
): FastifyReply {
  reply.headers(headers);
  reply.header("vary", "accept-encoding");
  const accepted = String(request.headers["accept-encoding"] ?? "");
  if (gzipped !== undefined && /\bgzip\b/.test(accepted)) {
    reply.header("content-encoding", "gzip");
    return reply.send(gzipped);
  }
  return reply.send(body);
}
