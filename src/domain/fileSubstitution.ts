/**
 * File substitution (issue 16 part 4), the part without I/O: a template file rendered with
 * `#{…}` (the engine's own templates), and structured replacement in JSON and YAML files
 * by key path. Where the files come from (beside ferry.yml, a step's working files, a
 * package) and how they reach a target is the caller's; this only turns text into text.
 *
 * Errors name the file and the line (or key path) and never a variable's value: a
 * sensitive value substituted into a file must not reach a log through a message.
 */
import { isMap, isScalar, isSeq, parseDocument } from "yaml";
import { InputError } from "./errors.js";
import { renderTemplate, TemplateError, type VariableLookup } from "./templates.js";

/** A file that could not be rendered or replaced in; says which file, where, and what to do. */
export class FileSubstitutionError extends InputError {
  constructor(
    message: string,
    readonly file: string,
    /** 1-based line of the problem in the file, when it has one. */
    readonly line?: number,
    /** Variables the file names that are not defined (in order of first use). */
    readonly missing: readonly string[] = [],
  ) {
    super(message);
  }
}

/** Renders a template file; an unknown variable fails naming the file, its line and the variable. */
export function renderTemplateFile(file: string, text: string, variables: VariableLookup): string {
  try {
    return renderTemplate(text, variables);
  } catch (error) {
    if (!(error instanceof TemplateError)) throw error;
    const where = error.line === undefined ? file : `${file}:${error.line}`;
    const message =
      error.missing.length > 0
        ? `${where}: ${error.missing.length === 1 ? "variable" : "variables"} ${error.missing.map((name) => `'${name}'`).join(", ")} ${error.missing.length === 1 ? "is" : "are"} not defined for this deployment; define ${error.missing.length === 1 ? "it" : "them"} for this scope, or give a fallback with #{Name | Default "…"}`
        : `${where}: ${error.message}`;
    throw new FileSubstitutionError(message, file, error.line, error.missing);
  }
}

/**
 * A key path: `Logging:Level` (the .NET configuration form) or `services.web.image`. A path
 * with a ':' is split on ':' only, so keys that hold dots (`traefik.http.routers`) can be
 * named; otherwise on '.'. A segment of digits indexes a list.
 */
export function splitKeyPath(path: string): string[] {
  const segments = path.includes(":") ? path.split(":") : path.split(".");
  if (path === "" || segments.some((segment) => segment === "")) {
    throw new InputError(`key path '${path}' has an empty segment; write it as Logging:Level or services.web.image`);
  }
  return segments;
}

/**
 * The value to write where `current` is: a number or boolean stays one when the new text
 * reads as one (a port stays a number), anything else is written as text.
 */
function typed(current: unknown, value: string): unknown {
  if (typeof current === "number" && value.trim() !== "" && Number.isFinite(Number(value))) return Number(value);
  if (typeof current === "boolean" && (value === "true" || value === "false")) return value === "true";
  return value;
}

/**
 * Replaces values in a JSON file by key path; each path must lead to a value that exists
 * (a typo must not silently add a key nobody reads). The file keeps two-space indentation.
 */
export function replaceJsonPaths(file: string, text: string, replacements: ReadonlyMap<string, string>): string {
  let document: unknown;
  try {
    document = JSON.parse(text);
  } catch (error) {
    // V8's message quotes the text around the problem, which may be a substituted secret:
    // only its kind of problem and where it is are kept.
    const message = error instanceof Error ? error.message : String(error);
    const position = /at position (\d+)/.exec(message)?.[1];
    const line = position === undefined ? undefined : text.slice(0, Number(position)).split("\n").length;
    let problem = message.replace(/\s*(?:in JSON )?at position \d+.*$/s, "").replace(/token '.*?'/s, "token");
    const quote = problem.indexOf('"');
    if (quote >= 0) problem = problem.slice(0, quote).replace(/[,.\s]+$/, "");
    throw new FileSubstitutionError(
      `${file} is not valid JSON${line === undefined ? "" : ` at line ${line}`}${problem === "" ? "" : ` (${problem})`}; fix the file or render it as a template instead`,
      file,
      line,
    );
  }
  for (const [path, value] of replacements) {
    const segments = splitKeyPath(path);
    let parent: unknown = document;
    for (const [index, segment] of segments.entries()) {
      const container = parent as Record<string, unknown> | unknown[];
      const key = Array.isArray(container) ? Number(segment) : segment;
      const exists =
        container !== null &&
        typeof container === "object" &&
        (Array.isArray(container)
          ? /^\d+$/.test(segment) && Number(segment) < container.length
          : Object.hasOwn(container, segment));
      if (!exists) throw missingPath(file, path, segments.slice(0, index + 1));
      if (index === segments.length - 1) {
        (container as Record<string | number, unknown>)[key] = typed(
          (container as Record<string | number, unknown>)[key],
          value,
        );
      } else {
        parent = (container as Record<string | number, unknown>)[key];
      }
    }
  }
  return `${JSON.stringify(document, null, 2)}\n`;
}

/** Replaces values in a YAML file by key path, keeping its comments and layout elsewhere. */
export function replaceYamlPaths(file: string, text: string, replacements: ReadonlyMap<string, string>): string {
  const document = parseDocument(text);
  if (document.errors.length > 0) {
    const [first] = document.errors;
    throw new FileSubstitutionError(
      `${file}${first?.linePos ? `:${first.linePos[0].line}` : ""} is not valid YAML (${first?.message.split("\n")[0] ?? "unreadable"}); fix the file or render it as a template instead`,
      file,
      first?.linePos?.[0].line,
    );
  }
  for (const [path, value] of replacements) {
    const segments = splitKeyPath(path);
    let node: unknown = document.contents;
    for (const [index, segment] of segments.entries()) {
      let next: unknown;
      if (isMap(node)) next = node.has(segment) ? node.get(segment, true) : undefined;
      else if (isSeq(node) && /^\d+$/.test(segment)) next = node.get(Number(segment), true);
      if (next === undefined) throw missingPath(file, path, segments.slice(0, index + 1));
      node = next;
    }
    const keys = segments.map((segment, index) => {
      // A list's index is a number for the yaml library.
      const parent = index === 0 ? document.contents : document.getIn(segments.slice(0, index), true);
      return isSeq(parent) ? Number(segment) : segment;
    });
    const current = isScalar(node) ? node.value : undefined;
    if (!isScalar(node)) {
      throw new FileSubstitutionError(
        `${file}: '${path}' holds a list or mapping, not a value; name one of its values (${path}${path.includes(":") ? ":" : "."}…)`,
        file,
      );
    }
    document.setIn(keys, typed(current, value));
  }
  return document.toString();
}

function missingPath(file: string, path: string, found: readonly string[]): FileSubstitutionError {
  const missing = found.join(path.includes(":") ? ":" : ".");
  return new FileSubstitutionError(
    `${file} has no '${missing}' (from key path '${path}'); name a key the file has — replacement never adds one`,
    file,
  );
}
