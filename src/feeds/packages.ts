import { createHash } from "node:crypto";
import { createReadStream } from "node:fs";
import { mkdir, open, rm } from "node:fs/promises";
import { join } from "node:path";
import type { Readable } from "node:stream";
import { InputError } from "../domain/errors.js";
import { DEFAULT_KEEP_VERSIONS, type PackageVersionInfo, versionsPastRetention } from "../domain/packages.js";
import type { ArtifactContent } from "../store/artifactContent.js";
import { newId, nowIso, type StoreContext } from "../store/common.js";
import {
  deletePackageVersions,
  getPackageVersionRow,
  insertPackageVersion,
  listPackageVersions,
  type PackageVersionRow,
  packageVersionExists,
  toPackageVersion,
  versionsPinnedByDeployedReleases,
  versionsPinnedByRunbooks,
} from "../store/packages.js";
import { ArchiveProblem, inspectArchive } from "./packageArchive.js";

/** Archives bigger than this are refused unless FERRY_PACKAGE_MAX_BYTES says otherwise. */
const DEFAULT_PACKAGE_MAX_BYTES = 2 * 1024 ** 3;

export interface PackageFeedOptions {
  context: StoreContext;
  /** Where the archives' bytes are kept: the artifacts' storage kind (ADR 0037), in a place of its own. */
  content: ArtifactContent;
  /** A directory of the server's where an upload is spooled while it is checked (the data directory's). */
  spoolDirectory: string;
  /** FERRY_PACKAGE_MAX_BYTES. */
  maxBytes?: number;
  /** FERRY_PACKAGE_KEEP_VERSIONS: versions kept per package (never one a deployed release pins). */
  keepVersions?: number;
}

/**
 * The built-in package feed (ADR 0044). A push streams the archive to a spool file of the
 * server while hashing and counting it (past the size limit it stops at once), reads the
 * spooled archive's entries (a real tar.gz or zip, nothing escaping), then stores it like
 * an artifact — a file of the data directory, or a PostgreSQL large object written in one
 * transaction with its row — and applies the package's retention.
 */
export class PackageFeed {
  readonly maxBytes: number;
  readonly keepVersions: number;

  constructor(private readonly options: PackageFeedOptions) {
    this.maxBytes = options.maxBytes ?? DEFAULT_PACKAGE_MAX_BYTES;
    this.keepVersions = options.keepVersions ?? DEFAULT_KEEP_VERSIONS;
  }

  get content(): ArtifactContent {
    return this.options.content;
  }

  async push(
    name: string,
    version: string,
    source: Readable,
    pushedBy: string,
    declaredBytes?: number,
  ): Promise<PackageVersionInfo> {
    const { db } = this.options.context;
    // A declared length over the limit is refused before a byte is read.
    if (declaredBytes !== undefined && declaredBytes > this.maxBytes) throw this.#tooLarge();
    // Refused before a byte is read: a version never changes.
    const exists = await db
      .selectFrom("package_versions")
      .select("id")
      .where("name", "=", name)
      .where("version", "=", version)
      .executeTakeFirst();
    if (exists) throw packageVersionExists(name, version);
    await mkdir(this.options.spoolDirectory, { recursive: true, mode: 0o700 });
    const id = newId("pkg");
    const spool = join(this.options.spoolDirectory, id);
    try {
      const { size, sha256 } = await this.#spool(source, spool);
      let summary: Awaited<ReturnType<typeof inspectArchive>>;
      try {
        summary = await inspectArchive(spool);
      } catch (error) {
        if (error instanceof ArchiveProblem) {
          throw new InputError(error.message, [{ pointer: "/body", detail: error.message }]);
        }
        throw error;
      }
      const row = await this.options.content.write(id, createReadStream(spool), async (location, executor) => {
        const inserted = {
          id,
          name,
          version,
          format: summary.format,
          size,
          sha256,
          entries: summary.entries,
          storage: this.options.content.storage,
          location,
          pushed_by: pushedBy,
          created_at: nowIso(),
        };
        await insertPackageVersion(executor, inserted);
        return inserted;
      });
      await this.applyRetention(name);
      return toPackageVersion(row);
    } finally {
      await rm(spool, { force: true });
    }
  }

  /** Streams the upload to `file` through the hash and the size limit; a cut-off or oversized upload keeps nothing. */
  async #spool(source: Readable, file: string): Promise<{ size: number; sha256: string }> {
    const hash = createHash("sha256");
    let size = 0;
    const handle = await open(file, "wx", 0o600);
    try {
      for await (const chunk of source as AsyncIterable<Buffer>) {
        size += chunk.length;
        // The rest of the body is left unread (the connection closes after the answer), so
        // the client hears why instead of a reset.
        if (size > this.maxBytes) {
          throw this.#tooLarge();
        }
        hash.update(chunk);
        let written = 0;
        while (written < chunk.length) written += (await handle.write(chunk, written)).bytesWritten;
      }
    } finally {
      await handle.close();
    }
    if (size === 0) {
      throw new InputError("the request has no archive; send the .tar.gz or .zip as the body", [
        { pointer: "/body", detail: "send the archive's bytes (application/octet-stream)" },
      ]);
    }
    return { size, sha256: hash.digest("hex") };
  }

  #tooLarge(): InputError {
    return new InputError(
      `the archive is larger than the server's limit of ${this.maxBytes} bytes (FERRY_PACKAGE_MAX_BYTES); nothing was kept`,
      [{ pointer: "/body", detail: "push a smaller archive, or raise FERRY_PACKAGE_MAX_BYTES on the server" }],
    );
  }

  async list(name?: string): Promise<PackageVersionInfo[]> {
    return (await listPackageVersions(this.options.context.db, name)).map(toPackageVersion);
  }

  async get(name: string, version: string | undefined): Promise<PackageVersionRow> {
    return getPackageVersionRow(this.options.context.db, name, version);
  }

  /** The archive's bytes, streamed (paced by the reader). */
  read(row: Pick<PackageVersionRow, "location">): Readable {
    return this.options.content.read(row.location);
  }

  /** Deletes one version; refused while a deployed release or a runbook pins it. */
  async delete(name: string, version: string): Promise<PackageVersionInfo> {
    const row = await this.get(name, version);
    await deletePackageVersions(this.options.context.db, this.options.content, [row]);
    return toPackageVersion(row);
  }

  /** Removes a package's versions past the newest `keepVersions`, never one a deployed release or a runbook pins. Returns what went. */
  async applyRetention(name: string): Promise<PackageVersionInfo[]> {
    const { db } = this.options.context;
    const versions = await listPackageVersions(db, name);
    if (versions.length <= this.keepVersions) return [];
    const kept = new Set([
      ...(await versionsPinnedByDeployedReleases(db)),
      ...(await versionsPinnedByRunbooks(db)).keys(),
    ]);
    const past = versionsPastRetention(versions, this.keepVersions, kept);
    const removed: PackageVersionRow[] = [];
    for (const row of past) {
      // One that a deployment started to need since is refused by the store: it is kept, not an error.
      try {
        removed.push(...(await deletePackageVersions(db, this.options.content, [row])));
      } catch {}
    }
    return removed.map(toPackageVersion);
  }
}
