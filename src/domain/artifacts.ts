import { z } from "zod";
import { type Retention, retentionSchemaOf } from "./retention.js";

/**
 * Artifacts: files a step attached to its task (docs/decisions/0037-artifacts.md). Pure rules
 * here: what a name may be, what the API shows, and the service message a script prints to
 * attach a file from any target.
 */

/** Letters, digits, '.', '_', '-' and '+'; not starting with '.' or '-'; at most 200 characters. */
const ARTIFACT_NAME = /^[A-Za-z0-9_+][A-Za-z0-9._+-]{0,199}$/;

/** Why a name cannot be an artifact's, saying what to do, or undefined. Never quotes the name (it may hold a secret). */
export function artifactNameProblem(name: string): string | undefined {
  if (name.length === 0) return "an artifact needs a name";
  if (name.length > 200) return "an artifact name has at most 200 characters";
  if (!ARTIFACT_NAME.test(name)) {
    return "an artifact name is one file name: letters, digits, '.', '_', '+' and '-', not starting with '.' or '-' (no '/', spaces or '..')";
  }
  return undefined;
}

export const artifactSchema = z.object({
  id: z.string(),
  taskId: z.string(),
  name: z.string(),
  size: z.number().int().describe("bytes"),
  sha256: z.string().describe("hex SHA-256 of the content"),
  step: z.string().describe("the step that attached it"),
  target: z.string().nullable().describe("the target it was read from; null for the server's own host"),
  projectId: z.string(),
  environmentId: z.string(),
  runbookId: z.string().nullable(),
  createdAt: z.string(),
});
export type Artifact = z.infer<typeof artifactSchema>;

/**
 * A line a script prints to attach a file of its host to the task, whatever the target:
 *
 *     ##ferry[artifact path='/var/backups/orders.sql.gz' name='orders.sql.gz']
 *
 * `name` is optional (the file's own name by default). Values are in single quotes, in which
 * `|'` stands for a quote and `||` for a bar (TeamCity's and Octopus's escaping), so any
 * path can be written. A relative path is relative to the step's working directory.
 */
export interface ArtifactMessage {
  path: string;
  name: string | undefined;
}

const MESSAGE = /^##ferry\[artifact((?:\s+[a-z]+='(?:[^|']|\|.)*')*)\s*\]\s*$/;
const ATTRIBUTE = /([a-z]+)='((?:[^|']|\|.)*)'/g;

/**
 * The artifact message of a line of output, a problem with one (a line that starts like one
 * but is malformed: the author should hear why nothing was attached), or undefined for any
 * other line.
 */
export function parseArtifactMessage(line: string): ArtifactMessage | { problem: string } | undefined {
  if (!line.startsWith("##ferry[")) return undefined;
  if (!line.startsWith("##ferry[artifact"))
    return { problem: "unknown service message: Ferry knows ##ferry[artifact …]" };
  const match = MESSAGE.exec(line);
  if (!match) {
    return {
      problem:
        "malformed artifact message: write ##ferry[artifact path='…' name='…'], with |' for a quote and || for a bar inside a value",
    };
  }
  const values = new Map<string, string>();
  for (const attribute of (match[1] ?? "").matchAll(ATTRIBUTE)) {
    const [, key = "", raw = ""] = attribute;
    if (values.has(key)) return { problem: `the artifact message gives '${key}' twice` };
    const value = unescapeValue(raw);
    if (value === undefined)
      return { problem: "the artifact message has an unknown escape: use |' for a quote and || for a bar" };
    values.set(key, value);
  }
  for (const key of values.keys()) {
    if (key !== "path" && key !== "name")
      return { problem: `the artifact message has no attribute '${key}': use path and name` };
  }
  const path = values.get("path");
  if (path === undefined || path === "") return { problem: "the artifact message needs path='…'" };
  if (path.includes("\0")) return { problem: "the artifact path holds a NUL character" };
  return { path, name: values.get("name") };
}

function unescapeValue(raw: string): string | undefined {
  let out = "";
  for (let index = 0; index < raw.length; index++) {
    const character = raw[index];
    if (character !== "|") {
      out += character;
      continue;
    }
    const next = raw[++index];
    if (next === "'") out += "'";
    else if (next === "|") out += "|";
    else return undefined;
  }
  return out;
}

/** The message for a path and name, escaped: what `ferry artifact add` prints. */
export function formatArtifactMessage(path: string, name?: string): string {
  const escaped = (value: string) => value.replaceAll("|", "||").replaceAll("'", "|'");
  return `##ferry[artifact path='${escaped(path)}'${name === undefined ? "" : ` name='${escaped(name)}'`}]`;
}

/** The last segment of a path: an attached file's default name. */
export function baseName(path: string): string {
  const trimmed = path.replace(/\/+$/, "");
  return trimmed.slice(trimmed.lastIndexOf("/") + 1);
}

/**
 * How long a runbook's artifacts are kept, per environment (src/domain/retention.ts: the
 * policy and rule run retention uses too): those of the newest `keepRuns` finished runs,
 * and none older than `keepDays` — except the newest run that succeeded, whose artifacts
 * (the last good backup) are never removed. Runs themselves are kept by run retention;
 * this frees the bytes sooner.
 */
export const artifactRetentionSchema = retentionSchemaOf("artifacts");
export type ArtifactRetention = Retention;
