import { createReadStream } from "node:fs";
import { open } from "node:fs/promises";
import { createGunzip, inflateRawSync } from "node:zlib";
import { archiveEntryProblem, type PackageFormat } from "../domain/packages.js";

/**
 * Reads a pushed archive once, before it is stored (ADR 0044): it must be a real tar.gz or
 * zip, every entry of which stays inside the directory it is unpacked into. The readers are
 * small (tar headers, zip's central directory) so that no dependency is added and nothing is
 * extracted on the server: only the entries' names, types and link targets are looked at.
 */

/** An archive that is not a package: the message says what is wrong and what to push instead. */
export class ArchiveProblem extends Error {}

export interface ArchiveSummary {
  format: PackageFormat;
  /** Entries (files, directories, links). */
  entries: number;
}

/** Most entries one package may have: a bound on the work of reading it. */
const MAX_ENTRIES = 200_000;

/** The archive's format and entries, or an ArchiveProblem saying why it cannot be a package. */
export async function inspectArchive(file: string): Promise<ArchiveSummary> {
  const handle = await open(file, "r");
  let head: Buffer;
  let size: number;
  try {
    head = Buffer.alloc(4);
    await handle.read(head, 0, 4, 0);
    size = (await handle.stat()).size;
  } finally {
    await handle.close();
  }
  if (size === 0) throw new ArchiveProblem("the file is empty; push a .tar.gz or .zip archive");
  if (head[0] === 0x1f && head[1] === 0x8b) return { format: "tar.gz", entries: await inspectTarGz(file) };
  if (head.readUInt32LE(0) === 0x04034b50 || head.readUInt32LE(0) === 0x06054b50) {
    return { format: "zip", entries: await inspectZip(file, size) };
  }
  throw new ArchiveProblem(
    "the file is neither a gzip-compressed tar (.tar.gz) nor a zip archive; build one with 'tar -czf app.tar.gz -C dir .' or 'zip -r app.zip .'",
  );
}

function check(entry: Parameters<typeof archiveEntryProblem>[0]): void {
  const problem = archiveEntryProblem(entry);
  if (problem) throw new ArchiveProblem(`the archive cannot be a package: ${problem}`);
}

// ─── tar.gz ─────────────────────────────────────────────────────────────────────────────

/**
 * Streams the file through gunzip and walks the tar headers (ustar, GNU long names, pax
 * path / linkpath): each header's checksum is verified, each entry checked, file data
 * skipped. Ends at the two zero blocks; a stream that ends before them is a cut-off archive.
 */
async function inspectTarGz(file: string): Promise<number> {
  const gunzip = createGunzip();
  const source = createReadStream(file);
  source.on("error", (error) => gunzip.destroy(error));
  source.pipe(gunzip);
  let pending: Buffer = Buffer.alloc(0);
  let skip = 0;
  let entries = 0;
  let ended = false;
  let zeroBlocks = 0;
  /** A GNU 'L'/'K' or pax 'x' header's data, collected, and what it says about the next entry. */
  let collecting: { kind: "L" | "K" | "x"; remaining: number; padded: number; parts: Buffer[] } | undefined;
  let next: { path?: string; linkTarget?: string } = {};
  try {
    for await (const chunk of gunzip as AsyncIterable<Buffer>) {
      pending = pending.length === 0 ? chunk : Buffer.concat([pending, chunk]);
      for (;;) {
        if (ended) break;
        if (skip > 0) {
          const skipped = Math.min(skip, pending.length);
          skip -= skipped;
          pending = pending.subarray(skipped);
          if (skip > 0) break;
        }
        if (collecting) {
          if (pending.length < collecting.padded) break;
          const data = pending.subarray(0, collecting.remaining).toString("utf8");
          pending = pending.subarray(collecting.padded);
          if (collecting.kind === "L") next.path = data.replace(/\0.*$/s, "");
          else if (collecting.kind === "K") next.linkTarget = data.replace(/\0.*$/s, "");
          else Object.assign(next, paxValues(data));
          collecting = undefined;
          continue;
        }
        if (pending.length < 512) break;
        const header = pending.subarray(0, 512);
        pending = pending.subarray(512);
        if (header.every((byte) => byte === 0)) {
          zeroBlocks++;
          if (zeroBlocks === 2) ended = true;
          continue;
        }
        zeroBlocks = 0;
        verifyTarChecksum(header);
        const size = tarNumber(header.subarray(124, 136));
        const padded = Math.ceil(size / 512) * 512;
        const type = String.fromCharCode(header[156] ?? 0);
        if (type === "L" || type === "K" || type === "x") {
          if (size > 1024 * 1024)
            throw new ArchiveProblem("the archive has an extended header over 1 MiB; it is not a package tar");
          collecting = { kind: type, remaining: size, padded, parts: [] };
          continue;
        }
        if (type === "g") {
          skip = padded;
          continue;
        }
        const name = tarString(header.subarray(0, 100));
        const prefix =
          header.subarray(257, 262).toString("latin1") === "ustar" ? tarString(header.subarray(345, 500)) : "";
        const path = next.path ?? (prefix ? `${prefix}/${name}` : name);
        const linkTarget = next.linkTarget ?? tarString(header.subarray(157, 257));
        next = {};
        const kind =
          type === "0" || type === "\0" || type === "7"
            ? "file"
            : type === "5"
              ? "directory"
              : type === "2"
                ? "symlink"
                : type === "1"
                  ? "hardlink"
                  : "other";
        check({ path, type: kind, linkTarget });
        entries++;
        if (entries > MAX_ENTRIES) throw new ArchiveProblem(`the archive has more than ${MAX_ENTRIES} entries`);
        // Links and directories carry no data; a hard link's size field is ignored too.
        skip = kind === "file" ? padded : 0;
      }
      if (ended) break;
    }
  } catch (error) {
    if (error instanceof ArchiveProblem) throw error;
    throw new ArchiveProblem(
      `the file starts like gzip but cannot be read as a .tar.gz (${(error as Error).message}); push a complete archive`,
    );
  } finally {
    gunzip.destroy();
    source.destroy();
  }
  if (!ended && entries === 0 && skip === 0 && !collecting) {
    throw new ArchiveProblem(
      "the gzip data is not a tar archive (too short for a tar header); push a .tar.gz made by tar, not a gzip of a single file",
    );
  }
  if (!ended && (skip > 0 || collecting || pending.length > 0)) {
    throw new ArchiveProblem(
      "the .tar.gz ends in the middle of an entry (a cut-off upload?); push the complete archive",
    );
  }
  if (entries === 0) throw new ArchiveProblem("the archive has no entries; a package holds at least one file");
  return entries;
}

function tarString(field: Buffer): string {
  const end = field.indexOf(0);
  return field.subarray(0, end === -1 ? field.length : end).toString("utf8");
}

/** An octal number field, or GNU's base-256 (high bit set) for sizes past 8 GiB. */
function tarNumber(field: Buffer): number {
  if (((field[0] ?? 0) & 0x80) !== 0) {
    let value = 0;
    for (let index = 1; index < field.length; index++) value = value * 256 + (field[index] ?? 0);
    return value;
  }
  const text = field.toString("latin1").replace(/\0.*$/s, "").trim();
  if (text === "") return 0;
  if (!/^[0-7]+$/.test(text)) throw new ArchiveProblem("a tar header has a malformed number; it is not a tar archive");
  return Number.parseInt(text, 8);
}

function verifyTarChecksum(header: Buffer): void {
  const stored = tarNumber(header.subarray(148, 156));
  let sum = 0;
  for (let index = 0; index < 512; index++) sum += index >= 148 && index < 156 ? 32 : (header[index] ?? 0);
  if (sum !== stored) {
    throw new ArchiveProblem(
      "the gzip data is not a tar archive (a header's checksum is wrong); push a .tar.gz made by tar, not a gzip of a single file",
    );
  }
}

/** The path and linkpath of a pax extended header ("<length> key=value\n" records). */
function paxValues(data: string): { path?: string; linkTarget?: string } {
  const values: { path?: string; linkTarget?: string } = {};
  let offset = 0;
  while (offset < data.length) {
    const space = data.indexOf(" ", offset);
    if (space === -1) break;
    const length = Number.parseInt(data.slice(offset, space), 10);
    if (!Number.isFinite(length) || length <= 0) break;
    const record = data.slice(space + 1, offset + length - 1);
    const equals = record.indexOf("=");
    const key = record.slice(0, equals);
    const value = record.slice(equals + 1);
    if (key === "path") values.path = value;
    if (key === "linkpath") values.linkTarget = value;
    offset += length;
  }
  return values;
}

// ─── zip ────────────────────────────────────────────────────────────────────────────────

/**
 * Reads zip's end-of-central-directory record and every central directory entry: names,
 * and (from the Unix mode in the external attributes) which entries are symbolic links,
 * whose targets are their data (read from the local header, inflated when deflated).
 */
async function inspectZip(file: string, size: number): Promise<number> {
  const handle = await open(file, "r");
  try {
    const tailLength = Math.min(size, 65_557);
    const tail = Buffer.alloc(tailLength);
    await handle.read(tail, 0, tailLength, size - tailLength);
    let end = -1;
    for (let index = tailLength - 22; index >= 0; index--) {
      if (tail.readUInt32LE(index) === 0x06054b50) {
        end = index;
        break;
      }
    }
    if (end === -1) {
      throw new ArchiveProblem(
        "the zip archive has no central directory (a cut-off upload?); push the complete archive",
      );
    }
    const count = tail.readUInt16LE(end + 10);
    const directorySize = tail.readUInt32LE(end + 12);
    const directoryOffset = tail.readUInt32LE(end + 16);
    if (count === 0xffff || directoryOffset === 0xffffffff) {
      throw new ArchiveProblem(
        "zip64 archives (over 4 GiB or 65,535 entries) are not supported; push a .tar.gz instead",
      );
    }
    if (count === 0) throw new ArchiveProblem("the archive has no entries; a package holds at least one file");
    if (directoryOffset + directorySize > size) {
      throw new ArchiveProblem("the zip archive's central directory lies past its end (a cut-off upload?)");
    }
    const directory = Buffer.alloc(directorySize);
    await handle.read(directory, 0, directorySize, directoryOffset);
    let offset = 0;
    for (let entry = 0; entry < count; entry++) {
      if (offset + 46 > directory.length || directory.readUInt32LE(offset) !== 0x02014b50) {
        throw new ArchiveProblem("the zip archive's central directory is damaged");
      }
      const madeBy = directory.readUInt16LE(offset + 4) >> 8;
      const method = directory.readUInt16LE(offset + 10);
      const compressedSize = directory.readUInt32LE(offset + 20);
      const nameLength = directory.readUInt16LE(offset + 28);
      const extraLength = directory.readUInt16LE(offset + 30);
      const commentLength = directory.readUInt16LE(offset + 32);
      const external = directory.readUInt32LE(offset + 38);
      const localOffset = directory.readUInt32LE(offset + 42);
      const path = directory.subarray(offset + 46, offset + 46 + nameLength).toString("utf8");
      offset += 46 + nameLength + extraLength + commentLength;
      // Unix file type bits in the high half of the external attributes (made by Unix, 3).
      const mode = madeBy === 3 ? external >>> 16 : 0;
      const fileType = mode & 0o170000;
      const type =
        fileType === 0o120000
          ? "symlink"
          : path.endsWith("/") || fileType === 0o040000
            ? "directory"
            : fileType === 0 || fileType === 0o100000
              ? "file"
              : "other";
      let linkTarget: string | undefined;
      if (type === "symlink") {
        if (compressedSize > 4096)
          throw new ArchiveProblem(`link ${JSON.stringify(path.slice(0, 200))} has a target over 4 KiB`);
        const local = Buffer.alloc(30);
        await handle.read(local, 0, 30, localOffset);
        if (local.readUInt32LE(0) !== 0x04034b50) throw new ArchiveProblem("the zip archive's entries are damaged");
        const dataOffset = localOffset + 30 + local.readUInt16LE(26) + local.readUInt16LE(28);
        const data = Buffer.alloc(compressedSize);
        await handle.read(data, 0, compressedSize, dataOffset);
        linkTarget = (method === 8 ? inflateRawSync(data) : data).toString("utf8");
      }
      check({ path, type, linkTarget });
    }
    return count;
  } finally {
    await handle.close();
  }
}
