import { createHash, randomUUID } from "node:crypto";
import { createReadStream } from "node:fs";
import { appendFile, mkdir, readdir, readFile, rename, rm, stat, writeFile } from "node:fs/promises";
import { createServer, type IncomingMessage, type Server, type ServerResponse } from "node:http";
import type { AddressInfo } from "node:net";
import { join } from "node:path";

/*
 * The demo's own image registry: the smallest part of the Docker registry HTTP API v2 that
 * the Docker engine needs to push an image and pull it, and that Ferry's feeds need to list
 * tags and pin a digest (src/feeds/registry.ts). No auth, on 127.0.0.1 only, files in the
 * demo's data directory. It exists so that `npm run demo` on a machine with Docker but no
 * registry (and no internet) can deploy containers the way a real install does: from a
 * feed, pinned by digest. It is not a registry to run anything else with.
 */

export interface DemoRegistry {
  /** "127.0.0.1:PORT": the host part of image references. */
  host: string;
  url: string;
  close(): Promise<void>;
}

const DIGEST = /^sha256:[a-f0-9]{64}$/;
const NAME = /^[a-z0-9]+(?:[._-][a-z0-9]+)*(?:\/[a-z0-9]+(?:[._-][a-z0-9]+)*)*$/;
const TAG = /^[A-Za-z0-9_][A-Za-z0-9._-]{0,127}$/;
/** Largest manifest accepted (they are a few KB). */
const MAX_MANIFEST_BYTES = 4 * 1024 * 1024;

export async function startDemoRegistry(directory: string): Promise<DemoRegistry> {
  const blobs = join(directory, "blobs");
  const uploads = join(directory, "uploads");
  const tags = join(directory, "tags");
  await Promise.all([blobs, uploads, tags].map((path) => mkdir(path, { recursive: true })));
  const blobPath = (digest: string) => join(blobs, digest.slice("sha256:".length));
  const tagPath = (name: string, tag: string) => join(tags, encodeURIComponent(name), tag);

  const server: Server = createServer((request, response) => {
    handle(request, response).catch((error: unknown) => {
      if (!response.headersSent) answer(response, 500, { errors: [{ code: "UNKNOWN", message: String(error) }] });
      else response.destroy();
    });
  });

  async function handle(request: IncomingMessage, response: ServerResponse): Promise<void> {
    const url = new URL(request.url ?? "/", "http://registry");
    response.setHeader("docker-distribution-api-version", "registry/2.0");
    if (url.pathname === "/v2/" || url.pathname === "/v2") return answer(response, 200, {});
    const match = /^\/v2\/(.+)\/(blobs\/uploads|blobs|manifests|tags)\/(.*)$/.exec(url.pathname);
    const [, name = "", kind = "", rest = ""] = match ?? [];
    if (!match || !NAME.test(name)) return answer(response, 404, error("NAME_UNKNOWN", "no such repository"));
    const method = request.method ?? "GET";

    if (kind === "tags" && rest === "list" && method === "GET") {
      const list = await readdir(join(tags, encodeURIComponent(name))).catch(() => [] as string[]);
      return answer(response, 200, { name, tags: list.sort() });
    }

    if (kind === "blobs" && (method === "GET" || method === "HEAD")) {
      if (!DIGEST.test(rest)) return answer(response, 400, error("DIGEST_INVALID", "not a sha256 digest"));
      const size = (await stat(blobPath(rest)).catch(() => undefined))?.size;
      if (size === undefined) return answer(response, 404, error("BLOB_UNKNOWN", "no such blob"));
      response.writeHead(200, {
        "content-type": "application/octet-stream",
        "content-length": size,
        "docker-content-digest": rest,
      });
      if (method === "HEAD") return void response.end();
      createReadStream(blobPath(rest)).pipe(response);
      return;
    }

    if (kind === "blobs/uploads") {
      const location = (id: string) => `/v2/${name}/blobs/uploads/${id}`;
      if (method === "POST" && rest === "") {
        const mounted = url.searchParams.get("mount");
        if (mounted && DIGEST.test(mounted) && (await exists(blobPath(mounted)))) {
          return created(response, `/v2/${name}/blobs/${mounted}`, mounted);
        }
        const id = randomUUID();
        await writeFile(join(uploads, id), await body(request));
        const digest = url.searchParams.get("digest");
        if (digest) return finishUpload(response, name, id, digest);
        response.writeHead(202, {
          location: location(id),
          "docker-upload-uuid": id,
          range: "0-0",
          "content-length": 0,
        });
        return void response.end();
      }
      if (!/^[0-9a-f-]{36}$/.test(rest) || !(await exists(join(uploads, rest)))) {
        return answer(response, 404, error("BLOB_UPLOAD_UNKNOWN", "no such upload"));
      }
      if (method === "PATCH" || method === "PUT") {
        const chunk = await body(request);
        if (chunk.length > 0) await appendFile(join(uploads, rest), chunk);
        if (method === "PUT") return finishUpload(response, name, rest, url.searchParams.get("digest") ?? "");
        const size = (await stat(join(uploads, rest))).size;
        response.writeHead(202, {
          location: location(rest),
          "docker-upload-uuid": rest,
          range: `0-${Math.max(0, size - 1)}`,
          "content-length": 0,
        });
        return void response.end();
      }
      if (method === "DELETE") {
        await rm(join(uploads, rest), { force: true });
        response.writeHead(204);
        return void response.end();
      }
    }

    if (kind === "manifests") {
      const reference = rest;
      if (method === "PUT") {
        if (!TAG.test(reference) && !DIGEST.test(reference)) {
          return answer(response, 400, error("TAG_INVALID", "not a tag or digest"));
        }
        const manifest = await body(request, MAX_MANIFEST_BYTES);
        const digest = `sha256:${createHash("sha256").update(manifest).digest("hex")}`;
        if (DIGEST.test(reference) && reference !== digest) {
          return answer(response, 400, error("DIGEST_INVALID", "the manifest does not have this digest"));
        }
        await writeFile(blobPath(digest), manifest);
        await writeFile(`${blobPath(digest)}.type`, String(request.headers["content-type"] ?? ""));
        if (!DIGEST.test(reference)) {
          await mkdir(join(tags, encodeURIComponent(name)), { recursive: true });
          await writeFile(tagPath(name, reference), digest);
        }
        return created(response, `/v2/${name}/manifests/${digest}`, digest);
      }
      if (method === "GET" || method === "HEAD") {
        const digest = DIGEST.test(reference)
          ? reference
          : TAG.test(reference)
            ? await readFile(tagPath(name, reference), "utf8").catch(() => undefined)
            : undefined;
        const manifest = digest && (await readFile(blobPath(digest)).catch(() => undefined));
        if (!digest || !manifest) return answer(response, 404, error("MANIFEST_UNKNOWN", "no such manifest"));
        const type = await readFile(`${blobPath(digest)}.type`, "utf8").catch(() => "");
        response.writeHead(200, {
          "content-type": type || "application/vnd.docker.distribution.manifest.v2+json",
          "content-length": manifest.length,
          "docker-content-digest": digest,
        });
        return void response.end(method === "HEAD" ? undefined : manifest);
      }
    }
    return answer(response, 405, error("UNSUPPORTED", `${method} is not supported here`));
  }

  async function finishUpload(response: ServerResponse, name: string, id: string, digest: string): Promise<void> {
    if (!DIGEST.test(digest)) return answer(response, 400, error("DIGEST_INVALID", "give ?digest=sha256:…"));
    const file = join(uploads, id);
    const actual = `sha256:${createHash("sha256")
      .update(await readFile(file))
      .digest("hex")}`;
    if (actual !== digest) {
      await rm(file, { force: true });
      return answer(response, 400, error("DIGEST_INVALID", `the upload's digest is ${actual}`));
    }
    await rename(file, blobPath(digest));
    return created(response, `/v2/${name}/blobs/${digest}`, digest);
  }

  await new Promise<void>((resolve, reject) => {
    server.once("error", reject);
    server.listen(0, "127.0.0.1", () => resolve());
  });
  const { port } = server.address() as AddressInfo;
  const host = `127.0.0.1:${port}`;
  return {
    host,
    url: `http://${host}`,
    close: () =>
      new Promise((resolve) => {
        server.close(() => resolve());
        server.closeAllConnections();
      }),
  };
}

function error(code: string, message: string) {
  return { errors: [{ code, message }] };
}

function answer(response: ServerResponse, status: number, value: unknown): void {
  const text = JSON.stringify(value);
  response.writeHead(status, { "content-type": "application/json", "content-length": Buffer.byteLength(text) });
  response.end(text);
}

function created(response: ServerResponse, location: string, digest: string): void {
  response.writeHead(201, { location, "docker-content-digest": digest, "content-length": 0 });
  response.end();
}

async function exists(path: string): Promise<boolean> {
  return (await stat(path).catch(() => undefined)) !== undefined;
}

async function body(request: IncomingMessage, limit = Number.POSITIVE_INFINITY): Promise<Buffer> {
  const chunks: Buffer[] = [];
  let size = 0;
  for await (const chunk of request) {
    size += (chunk as Buffer).length;
    if (size > limit) throw new Error(`a body over ${limit} bytes`);
    chunks.push(chunk as Buffer);
  }
  return Buffer.concat(chunks);
}
