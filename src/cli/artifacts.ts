import { createHash } from "node:crypto";
import { open, rename, rm, stat } from "node:fs/promises";
import { resolve } from "node:path";
import { Readable, Transform } from "node:stream";
import type { ReadableStream as WebReadableStream } from "node:stream/web";
import type { Command } from "commander";
import { type Artifact, artifactNameProblem, baseName, formatArtifactMessage } from "../domain/artifacts.js";
import { segment } from "./client.js";
import { OperationError, UsageError } from "./errors.js";
import { type Column, printFields, printJson, printTable, writeBytes, writeError, writeOutput } from "./output.js";
import type { CliContext } from "./resourceGroup.js";
import { addRetentionCommands } from "./retention.js";

const columns: Column<Artifact>[] = [
  ["id", (artifact) => artifact.id],
  ["name", (artifact) => artifact.name],
  ["size", (artifact) => String(artifact.size)],
  ["step", (artifact) => artifact.step],
  ["target", (artifact) => artifact.target ?? "-"],
  ["sha256", (artifact) => artifact.sha256],
];

function artifactFields(artifact: Artifact): [string, string][] {
  return [
    ["id", artifact.id],
    ["name", artifact.name],
    ["size", `${artifact.size} bytes`],
    ["sha256", artifact.sha256],
    ["task", artifact.taskId],
    ["step", artifact.step],
    ["target", artifact.target ?? "this server's host"],
    ["created at", artifact.createdAt],
  ];
}

export function addArtifactCommands(program: Command, context: CliContext): void {
  const group = program.command("artifact").description("artifacts: files a task's steps attached (ADR 0037)");

  group
    .command("add")
    .description(
      "inside a script step, on any target: attach a file to the task (prints the ##ferry[artifact …] line the step reads)",
    )
    .argument("<path>", "the file; a relative path is relative to the current directory")
    .option("--name <name>", "the artifact's name (default: the file's own name)")
    .action(async (path: string, options: { name?: string }) => {
      const absolute = resolve(path);
      const name = options.name ?? baseName(absolute);
      const problem = artifactNameProblem(name);
      if (problem) throw new UsageError(`--name: ${problem}`);
      const status = await stat(absolute).catch(() => undefined);
      if (!status?.isFile())
        throw new UsageError(`there is no regular file ${path}: give the path of the file to attach`);
      writeOutput(`${formatArtifactMessage(absolute, options.name)}\n`);
    });

  group
    .command("list")
    .description("list the artifacts of a task, in the order they were attached")
    .requiredOption("--task <task>", "task id")
    .option("--json", "print JSON (an array)")
    .action(async (options: { task: string; json?: boolean }) => {
      const client = await context.client();
      const artifacts = await client.get<Artifact[]>(`/api/v1/tasks/${segment(options.task)}/artifacts`);
      if (options.json) printJson(artifacts);
      else printTable(artifacts, columns);
    });

  group
    .command("show")
    .description("show one artifact: name, size, SHA-256, task, step and target")
    .argument("<id>", "artifact id")
    .option("--json", "print JSON")
    .action(async (id: string, options: { json?: boolean }) => {
      const client = await context.client();
      const artifact = await client.get<Artifact>(`/api/v1/artifacts/${segment(id)}`);
      if (options.json) printJson(artifact);
      else printFields(artifactFields(artifact));
    });

  group
    .command("get")
    .description("download an artifact, checking its SHA-256 (-o - writes it to standard output)")
    .argument("<id>", "artifact id")
    .requiredOption("-o, --output <file>", "where to write it; '-' for standard output")
    .option("--force", "replace the file if it exists")
    .action(async (id: string, options: { output: string; force?: boolean }) => {
      const client = await context.client();
      const artifact = await client.get<Artifact>(`/api/v1/artifacts/${segment(id)}`);
      const toStdout = options.output === "-";
      const destination = resolve(options.output);
      if (!toStdout && !options.force && (await stat(destination).catch(() => undefined))) {
        throw new UsageError(`${options.output} exists: choose another file, or add --force to replace it`);
      }
      let response: Response;
      try {
        response = await fetch(new URL(`/api/v1/artifacts/${segment(id)}/content`, client.baseUrl), {
          headers: client.authorization(),
        });
      } catch {
        throw new OperationError(`could not connect to the Ferry server at ${client.baseUrl}; is it running?`);
      }
      if (!response.ok || !response.body) {
        const text = await response.text().catch(() => "");
        let detail = `HTTP ${response.status}`;
        try {
          detail = String((JSON.parse(text) as { detail?: string }).detail ?? detail);
        } catch {
          // Not a problem document.
        }
        throw new OperationError(`could not download artifact ${id}: ${detail}`);
      }
      const hash = createHash("sha256");
      let size = 0;
      const measured = new Transform({
        transform(chunk: Buffer, _encoding, callback) {
          size += chunk.length;
          hash.update(chunk);
          callback(null, chunk);
        },
      });
      const body = Readable.fromWeb(response.body as WebReadableStream<Uint8Array>).pipe(measured);
      const check = () => {
        const sum = hash.digest("hex");
        if (size !== artifact.size || sum !== artifact.sha256) {
          return `the download of ${artifact.name} does not match the artifact (got ${size} bytes, sha256 ${sum}; expected ${artifact.size} bytes, sha256 ${artifact.sha256})`;
        }
        return undefined;
      };
      if (toStdout) {
        await writeBytes(body);
        const mismatch = check();
        if (mismatch) throw new OperationError(mismatch);
        return;
      }
      // Written beside the destination, then renamed: a failed or corrupt download never
      // leaves a file that looks complete.
      const temporary = `${destination}.ferry-download-${process.pid}`;
      const handle = await open(temporary, "w", 0o600);
      try {
        for await (const chunk of body as AsyncIterable<Buffer>) {
          let written = 0;
          while (written < chunk.length) written += (await handle.write(chunk, written)).bytesWritten;
        }
        await handle.close();
      } catch (error) {
        await handle.close().catch(() => undefined);
        await rm(temporary, { force: true });
        throw new OperationError(`the download of ${artifact.name} failed: ${(error as Error).message}`);
      }
      const mismatch = check();
      if (mismatch) {
        await rm(temporary, { force: true });
        throw new OperationError(mismatch);
      }
      await rename(temporary, destination);
      writeError(`wrote ${artifact.name} (${artifact.size} bytes, sha256 ${artifact.sha256}) to ${options.output}\n`);
    });

  addRetentionCommands(group, context, "artifacts");
}
