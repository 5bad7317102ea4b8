import { createReadStream } from "node:fs";
import { stat } from "node:fs/promises";
import { Readable } from "node:stream";
import type { Command } from "commander";
import { type PackageVersionInfo, packageNameSchema, packageVersionSchema } from "../domain/packages.js";
import { segment } from "./client.js";
import { OperationError, UsageError } from "./errors.js";
import { type Column, printFields, printJson, printTable, writeOutput } from "./output.js";
import type { CliContext } from "./resourceGroup.js";

const columns: Column<PackageVersionInfo>[] = [
  ["name", (item) => item.name],
  ["version", (item) => item.version],
  ["format", (item) => item.format],
  ["size", (item) => String(item.size)],
  ["sha256", (item) => item.sha256],
  ["pushed", (item) => item.createdAt],
];

function checkName(name: string): void {
  const parsed = packageNameSchema.safeParse(name);
  if (!parsed.success) throw new UsageError(`NAME: ${parsed.error.issues[0]?.message ?? "not a package name"}`);
}

function checkVersion(version: string): void {
  const parsed = packageVersionSchema.safeParse(version);
  if (!parsed.success) throw new UsageError(`VERSION: ${parsed.error.issues[0]?.message ?? "not a version"}`);
}

const versionPath = (name: string, version: string) => `/api/v1/packages/${segment(name)}/versions/${segment(version)}`;

/** `ferry package push|list|show|delete`: the built-in package feed (ADR 0044). */
export function addPackageCommands(program: Command, context: CliContext): void {
  const group = program
    .command("package")
    .description("the built-in package feed: tar.gz / zip archives that releases pin by sha256 (ADR 0044)");

  group
    .command("push")
    .description("push FILE (.tar.gz or .zip) as version VERSION of package NAME; the server computes its sha256")
    .argument("<name>", "package name: lowercase letters, digits and dashes")
    .argument("<version>", "version: letters, digits, '.', '+', '_' and '-' (e.g. 1.4.2)")
    .argument("<file>", "the archive")
    .option("--json", "print JSON")
    .action(async (name: string, version: string, file: string, options: { json?: boolean }) => {
      checkName(name);
      checkVersion(version);
      const status = await stat(file).catch(() => undefined);
      if (!status?.isFile()) throw new UsageError(`FILE: there is no regular file ${file}; give the archive's path`);
      const client = await context.client();
      let response: Response;
      try {
        // Streamed: the archive is never read whole into memory.
        response = await fetch(new URL(versionPath(name, version), client.baseUrl), {
          method: "PUT",
          headers: {
            ...client.authorization(),
            "content-type": "application/octet-stream",
            "content-length": String(status.size),
          },
          body: Readable.toWeb(createReadStream(file)) as ReadableStream<Uint8Array>,
          duplex: "half",
        } as RequestInit);
      } catch {
        throw new OperationError(`could not connect to the Ferry server at ${client.baseUrl}; is it running?`);
      }
      const text = await response.text();
      if (!response.ok) {
        let detail = `HTTP ${response.status}`;
        try {
          const problem = JSON.parse(text) as { detail?: string; errors?: { detail?: string }[] };
          detail = String(problem.detail ?? detail);
        } catch {
          // Not a problem document.
        }
        throw new OperationError(`could not push ${name} ${version}: ${detail}`);
      }
      const pushed = JSON.parse(text) as PackageVersionInfo;
      if (options.json) printJson(pushed);
      else
        writeOutput(
          `pushed ${pushed.name} ${pushed.version} (${pushed.format}, ${pushed.size} bytes, ${pushed.files} entries, sha256 ${pushed.sha256})\n`,
        );
    });

  group
    .command("list")
    .description("list package versions, newest first; with NAME, that package's")
    .argument("[name]", "package name")
    .option("--json", "print JSON (an array)")
    .action(async (name: string | undefined, options: { json?: boolean }) => {
      if (name !== undefined) checkName(name);
      const client = await context.client();
      const versions = await client.get<PackageVersionInfo[]>(
        name === undefined ? "/api/v1/packages" : `/api/v1/packages/${segment(name)}/versions`,
      );
      if (options.json) printJson(versions);
      else printTable(versions, columns);
    });

  group
    .command("show")
    .description("show one package version")
    .argument("<name>", "package name")
    .argument("<version>", "version")
    .option("--json", "print JSON")
    .action(async (name: string, version: string, options: { json?: boolean }) => {
      checkName(name);
      checkVersion(version);
      const client = await context.client();
      const item = await client.get<PackageVersionInfo>(versionPath(name, version));
      if (options.json) printJson(item);
      else
        printFields([
          ["name", item.name],
          ["version", item.version],
          ["format", item.format],
          ["size", `${item.size} bytes`],
          ["sha256", item.sha256],
          ["entries", String(item.files)],
          ["pushed by", item.pushedBy],
          ["pushed at", item.createdAt],
        ]);
    });

  group
    .command("delete")
    .description("delete a package version (refused while a deployed release pins it)")
    .argument("<name>", "package name")
    .argument("<version>", "version")
    .action(async (name: string, version: string) => {
      checkName(name);
      checkVersion(version);
      const client = await context.client();
      await client.request("DELETE", versionPath(name, version));
      writeOutput(`deleted ${name} ${version}\n`);
    });
}
