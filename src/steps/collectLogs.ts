import { createHash } from "node:crypto";
import { createReadStream, createWriteStream } from "node:fs";
import { mkdtemp, rm, stat } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { Readable, type Writable } from "node:stream";
import { finished, pipeline } from "node:stream/promises";
import { createGzip } from "node:zlib";
import { z } from "zod";
import { TaskFailure } from "../engine/types.js";
import type { StepKind, StepRunContext } from "./types.js";

/**
 * `collect-logs` (issue 14 part 6; ADR 0037): the logs of every container and supervised
 * process of the project in the run's environment on the step's target — every colour a
 * blue/green deployment retains included, running or stopped — as one .tar.gz artifact of the
 * task. On a step with roles it runs on each target (one archive each, named after the
 * target); without roles, on the server's own host.
 *
 * Each instance's log is spooled to a file of the server first (a tar entry states its size
 * before its bytes), then the archive is streamed from those files through gzip into the
 * task's artifacts: nothing is held whole in memory, whatever the logs weigh.
 */

const SINCE = /^(?:(\d{1,6})([smhd])|(\d{4}-\d\d-\d\dT\d\d:\d\d(?::\d\d(?:\.\d{1,9})?)?(?:Z|[+-]\d\d:\d\d)))$/;

const collectLogsConfigSchema = z.strictObject({
  /** Only lines written since: a duration back from now ("30m", "12h", "7d") or an ISO 8601 instant. */
  since: z
    .string()
    .regex(SINCE, {
      message:
        "give a duration back from now such as 30m, 12h or 7d, or an ISO 8601 instant such as 2026-12-03T08:00:00Z",
    })
    .optional(),
  /** At most this many of the newest lines of each instance. */
  tail: z.number().int().min(1).max(1_000_000).default(10_000),
  /** Prefix each container line with the time the engine recorded (RFC 3339). */
  timestamps: z.boolean().default(true),
  /** The archive's artifact name (a template); default logs-<project>-<environment>-<target>-<time>.tar.gz. */
  name: z.string().min(1).max(200).optional(),
});
type CollectLogsConfig = z.infer<typeof collectLogsConfigSchema>;

/** Lines a supervised process's log gives at most (the process runtime's own bound). */
const PROCESS_TAIL_MAX = 10_000;

/** The instant `since` names, in Unix seconds. */
function sinceSeconds(since: string, now: Date): number {
  const match = SINCE.exec(since);
  if (match?.[1] !== undefined && match[2] !== undefined) {
    const unit = { s: 1, m: 60, h: 3600, d: 86_400 }[match[2] as "s" | "m" | "h" | "d"];
    return Math.floor(now.getTime() / 1000) - Number(match[1]) * unit;
  }
  const instant = Date.parse(since);
  if (Number.isNaN(instant)) throw new TaskFailure(`since: '${since}' is not a time: ${SINCE_HINT}`);
  return Math.floor(instant / 1000);
}
const SINCE_HINT = "give a duration such as 30m, 12h or 7d, or an ISO 8601 instant";

/** One file of the archive. */
interface Entry {
  path: string;
  file: string;
  size: number;
}

/** What the manifest says of one instance. */
interface Collected {
  runtime: "container" | "process";
  name: string;
  state: string;
  labels: Record<string, string>;
  note: string;
}

export const collectLogsStep: StepKind<CollectLogsConfig> = {
  kind: "collect-logs",
  config: collectLogsConfigSchema,

  plan(config) {
    return [
      {
        description: `collect the logs of the project's containers and processes in this environment (the last ${config.tail} lines of each${
          config.since ? `, since ${config.since}` : ""
        }) into one .tar.gz artifact`,
      },
    ];
  },

  async run(context: StepRunContext, config: CollectLogsConfig) {
    const { scope, target, signal } = context;
    const now = new Date();
    const since = config.since === undefined ? undefined : sinceSeconds(config.since, now);
    const where = target.id === null ? "this server's host" : `target '${target.name}'`;
    const spool = await mkdtemp(join(tmpdir(), "ferry-collect-logs-"));
    try {
      const entries: Entry[] = [];
      const collected: Collected[] = [];
      const ofProject = (labels: Record<string, string>) => labels["ferry.env"] === scope.environment.slug;

      // Containers: each one's log streamed by the engine into a spool file.
      try {
        const docker = target.runtime("docker");
        const containers = (await docker.listByLabel("ferry.project", scope.project.slug, { signal })).filter(
          (container) => ofProject(container.labels),
        );
        for (const container of containers) {
          const file = join(spool, `c-${entries.length}.log`);
          const note = await spoolTo(file, async (output) => {
            await docker.copyLogs(
              container.name,
              { since, tail: config.tail, timestamps: config.timestamps, signal },
              output,
            );
          });
          collected.push({ runtime: "container", ...pick(container), note });
          entries.push({ path: `containers/${entryName(container.name)}.log`, file, size: (await stat(file)).size });
        }
      } catch (error) {
        if (signal.aborted) throw error;
        context.log.warn(`containers skipped on ${where}: ${(error as Error).message}`);
      }

      // Supervised processes: their log has no times, so `since` cannot apply; the newest lines are taken.
      try {
        const processes = target.runtime("process");
        const instances = (await processes.listByLabel("ferry.project", scope.project.slug, { signal })).filter(
          (instance) => ofProject(instance.labels),
        );
        for (const instance of instances) {
          const file = join(spool, `p-${entries.length}.log`);
          const lines = Math.min(config.tail, PROCESS_TAIL_MAX);
          const note = await spoolTo(file, async (output) => {
            const text = await processes.logTail(instance.name, lines, { signal });
            output.write(text.length > 0 ? `${text.join("\n")}\n` : "");
          });
          collected.push({
            runtime: "process",
            ...pick(instance),
            note: `${note}${since !== undefined ? " (a process's log has no times: its newest lines, not only those since)" : ""}`,
          });
          entries.push({ path: `processes/${entryName(instance.name)}.log`, file, size: (await stat(file)).size });
        }
      } catch (error) {
        if (signal.aborted) throw error;
        context.log.warn(`processes skipped on ${where}: ${(error as Error).message}`);
      }

      const manifestFile = join(spool, "MANIFEST.txt");
      await spoolTo(manifestFile, async (output) => {
        output.write(manifest(context, config, now, where, collected));
      });
      entries.unshift({ path: "MANIFEST.txt", file: manifestFile, size: (await stat(manifestFile)).size });

      const stamp = now
        .toISOString()
        .replace(/[-:]/g, "")
        .replace(/\.\d+Z$/, "Z");
      const name = config.name
        ? context.render(config.name)
        : `logs-${scope.project.slug}-${scope.environment.slug}-${target.slug ?? "server"}-${stamp}.tar.gz`;
      const gzip = createGzip();
      pipeline(Readable.from(tarEntries(entries, now), { objectMode: false }), gzip).catch((error: Error) =>
        gzip.destroy(error),
      );
      const artifact = await context.artifacts.attach({ name, stream: gzip });
      context.log.info(
        `collected the logs of ${collected.length} instance(s) on ${where} into ${artifact.name} (${artifact.size} bytes, sha256 ${artifact.sha256})`,
      );
      return { outputs: { artifact: artifact.id, sha256: artifact.sha256, instances: String(collected.length) } };
    } finally {
      await rm(spool, { recursive: true, force: true });
    }
  },
};

/** Writes a spool file with `write`; a failure is written into the file's place as a note, not thrown (one missing log does not lose the rest). */
async function spoolTo(file: string, write: (output: Writable) => Promise<void>): Promise<string> {
  const output = createWriteStream(file, { mode: 0o600 });
  let note = "collected";
  try {
    await write(output);
  } catch (error) {
    note = `not collected: ${(error as Error).message.slice(0, 300)}`;
  }
  output.end();
  await finished(output);
  return note;
}

function pick(instance: { name: string; state: string; labels: Record<string, string> }) {
  return { name: instance.name, state: instance.state, labels: instance.labels };
}

/** A name that fits a tar header's 100 bytes with its directory and suffix (long ones shortened, kept apart by a hash). */
function entryName(name: string): string {
  const safe = name.replace(/[^A-Za-z0-9_.-]/g, "_");
  if (safe.length <= 80) return safe;
  return `${safe.slice(0, 67)}-${createHash("sha256").update(name).digest("hex").slice(0, 12)}`;
}

function manifest(
  context: StepRunContext,
  config: CollectLogsConfig,
  now: Date,
  where: string,
  collected: readonly Collected[],
): string {
  const { scope } = context;
  const lines = [
    `Logs of ${scope.project.name} in ${scope.environment.name} on ${where}, collected ${now.toISOString()} by task ${context.taskId}.`,
    `The last ${config.tail} lines of each instance${config.since ? `, since ${config.since}` : ""}.`,
    "",
  ];
  if (collected.length === 0) lines.push("No container or process of the project runs or is kept here.");
  for (const instance of collected) {
    const release = instance.labels["ferry.release"] ?? instance.labels["ferry.runbook"] ?? "-";
    lines.push(
      `${instance.runtime} ${instance.name}: ${instance.state}, release ${release}, step ${instance.labels["ferry.step"] ?? "-"}; ${instance.note}`,
    );
  }
  return `${lines.join("\n")}\n`;
}

const BLOCK = 512;

/** A tar archive (ustar) of the entries, read from their files as the archive is read. */
async function* tarEntries(entries: readonly Entry[], now: Date): AsyncGenerator<Buffer> {
  const mtime = Math.floor(now.getTime() / 1000);
  for (const entry of entries) {
    yield tarHeader(entry.path, entry.size, mtime);
    let written = 0;
    // Exactly the size the header states: a file that grew meanwhile is cut there.
    for await (const chunk of createReadStream(entry.file, {
      end: Math.max(0, entry.size - 1),
      highWaterMark: 256 * 1024,
    })) {
      if (entry.size === 0) break;
      written += (chunk as Buffer).length;
      yield chunk as Buffer;
    }
    if (written !== entry.size) throw new Error(`the spooled log ${entry.path} changed while it was archived`);
    const padding = (BLOCK - (entry.size % BLOCK)) % BLOCK;
    if (padding > 0) yield Buffer.alloc(padding);
  }
  // The end of an archive: two empty blocks.
  yield Buffer.alloc(BLOCK * 2);
}

/** A ustar header for a regular file: path (at most 100 bytes here), 0644, owner root. */
function tarHeader(path: string, size: number, mtime: number): Buffer {
  const header = Buffer.alloc(BLOCK);
  const field = (offset: number, length: number, value: string) => header.write(value, offset, length, "utf8");
  const octal = (value: number, length: number) => `${value.toString(8).padStart(length - 1, "0")}\0`;
  field(0, 100, path);
  field(100, 8, "0000644\0");
  field(108, 8, octal(0, 8));
  field(116, 8, octal(0, 8));
  field(124, 12, octal(size, 12));
  field(136, 12, octal(mtime, 12));
  field(148, 8, "        ");
  field(156, 1, "0");
  field(257, 6, "ustar\0");
  field(263, 2, "00");
  field(265, 32, "root");
  field(297, 32, "root");
  let sum = 0;
  for (const byte of header) sum += byte;
  field(148, 8, `${sum.toString(8).padStart(6, "0")}\0 `);
  return header;
}
