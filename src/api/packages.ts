import { Readable } from "node:stream";
import { z } from "zod";
import { InputError } from "../domain/errors.js";
import { packageNameSchema, packageVersionInfoSchema, packageVersionSchema } from "../domain/packages.js";
import type { PackageFeed } from "../feeds/packages.js";
import { toPackageVersion } from "../store/packages.js";
import { defineRoute, type RouteSpec } from "./route.js";

const nameParams = z.strictObject({ package: packageNameSchema });
const versionParams = z.strictObject({ package: packageNameSchema, version: packageVersionSchema });

/**
 * The built-in package feed (ADR 0044). Packages are shared by every project, like feeds:
 * any signed-in caller lists and downloads them; pushing and deleting need the pushPackages
 * permission on every project and environment (a version pushed becomes every project's
 * "latest" at its next release).
 */
export function packageRoutes(feed: PackageFeed): RouteSpec[] {
  return [
    defineRoute({
      method: "PUT",
      path: "/api/v1/packages/:package/versions/:version",
      tag: "Packages",
      summary:
        "Push a package version: the body is the .tar.gz or .zip archive (application/octet-stream, streamed); the server computes its sha256 and checks every entry stays inside the package",
      access: { kind: "everywhere", permission: "pushPackages" },
      params: versionParams,
      response: packageVersionInfoSchema,
      status: 201,
      // An upload may take long: like a download, it does not hold one of its client's turns.
      unqueued: true,
      audit: {
        action: "package.push",
        change: ({ params, result }) => ({
          resource: { type: "package", id: `${params.package}@${params.version}`, name: params.package },
          after: result as Record<string, unknown>,
        }),
      },
      handler: async ({ params, request }) => {
        const body: unknown = request.body;
        if (!(body instanceof Readable)) {
          throw new InputError("send the archive's bytes as the body, with Content-Type: application/octet-stream", [
            { pointer: "/body", detail: "Content-Type must be application/octet-stream" },
          ]);
        }
        const declared = Number(request.headers["content-length"]);
        return feed.push(
          params.package,
          params.version,
          body,
          request.identity?.name ?? "unknown",
          Number.isSafeInteger(declared) ? declared : undefined,
        );
      },
    }),
    defineRoute({
      method: "GET",
      path: "/api/v1/packages",
      tag: "Packages",
      summary: "List every package version of the feed, newest first (by push)",
      access: { kind: "signedIn" },
      response: z.array(packageVersionInfoSchema),
      handler: () => feed.list(),
    }),
    defineRoute({
      method: "GET",
      path: "/api/v1/packages/:package/versions",
      tag: "Packages",
      summary: "List a package's versions, newest first (by push)",
      access: { kind: "signedIn" },
      params: nameParams,
      response: z.array(packageVersionInfoSchema),
      handler: ({ params }) => feed.list(params.package),
    }),
    defineRoute({
      method: "GET",
      path: "/api/v1/packages/:package/versions/:version",
      tag: "Packages",
      summary: "Show a package version: format, size, sha256, entries, who pushed it",
      access: { kind: "signedIn" },
      params: versionParams,
      response: packageVersionInfoSchema,
      handler: async ({ params }) => toPackageVersion(await feed.get(params.package, params.version)),
    }),
    defineRoute({
      method: "GET",
      path: "/api/v1/packages/:package/versions/:version/content",
      tag: "Packages",
      summary:
        "Download a package version's archive (application/octet-stream, streamed; Content-Length, ETag and Repr-Digest carry its size and sha256)",
      access: { kind: "signedIn" },
      params: versionParams,
      unqueued: true,
      handler: async ({ params, reply }) => {
        const row = await feed.get(params.package, params.version);
        const info = toPackageVersion(row);
        const stream = feed.read(row);
        reply
          .header("content-type", "application/octet-stream")
          .header("content-length", String(info.size))
          // Name and version are validated: letters, digits and '.+_-' only, safe inside quotes.
          .header("content-disposition", `attachment; filename="${info.name}-${info.version}.${info.format}"`)
          .header("etag", `"${info.sha256}"`)
          .header("repr-digest", `sha-256=:${Buffer.from(info.sha256, "hex").toString("base64")}:`)
          .header("cache-control", "private, no-store");
        return stream;
      },
    }),
    defineRoute({
      method: "DELETE",
      path: "/api/v1/packages/:package/versions/:version",
      tag: "Packages",
      summary: "Delete a package version (refused while a deployed release pins it)",
      access: { kind: "everywhere", permission: "pushPackages" },
      params: versionParams,
      status: 204,
      audit: {
        action: "package.delete",
        change: ({ params }) => ({
          resource: { type: "package", id: `${params.package}@${params.version}`, name: params.package },
        }),
      },
      handler: async ({ params }) => {
        await feed.delete(params.package, params.version);
      },
    }),
  ];
}
