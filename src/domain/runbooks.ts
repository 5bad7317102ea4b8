import type { RE2JS } from "re2js";
import { z } from "zod";
import { descriptionSchema, nameSchema, referenceSchema, slugSchema } from "./common.js";
import { type FieldIssue, InputError } from "./errors.js";
import { compileLinearPattern, linearPatternProblem } from "./linearPattern.js";
import { packageVersionSchema } from "./packages.js";
import { processSchema, storedProcessSchema } from "./process.js";

/*
 * Runbooks (issue 14): an operations process of a project, run against an environment with
 * prompted parameters. What a run executes is a snapshot taken when the runbook is
 * published (or, for an explicit draft run, when the run is requested).
 */

/** A parameter's name is also the name of the variable a step reads it from (#{name}). */
const parameterNameSchema = z.string().regex(/^[A-Za-z_][A-Za-z0-9_.]{0,63}$/, {
  message: "use letters, digits, '_' and '.', starting with a letter or '_' (at most 64)",
});

const parameterTypes = ["string", "number", "boolean", "choice"] as const;
type ParameterType = (typeof parameterTypes)[number];

/**
 * A prompted parameter: typed, with a default or required, and validated before a run is
 * queued. A sensitive one is masked in the log and sealed at rest, and has no default (a
 * default would be a secret kept in the clear in the runbook's definition).
 */
const parameterFieldsSchema = z.strictObject({
  name: parameterNameSchema,
  label: z.string().max(200).default(""),
  description: descriptionSchema.default(""),
  type: z.enum(parameterTypes).default("string"),
  /** Required: a run must give it (or the default is used). */
  required: z.boolean().default(true),
  default: z.union([z.string().max(8192), z.number(), z.boolean()]).optional(),
  /** The allowed values of a choice. */
  choices: z.array(z.string().min(1).max(200)).max(100).optional(),
  /** For strings: a regular expression the whole value must match. */
  pattern: z.string().min(1).max(500).optional(),
  /** For numbers: bounds, inclusive. */
  min: z.number().optional(),
  max: z.number().optional(),
  sensitive: z.boolean().default(false),
});

/**
 * The checks of a parameter beyond its fields. `stored`: a definition read back from the
 * database, saved perhaps before patterns ran on RE2 (ADR 0064): its pattern is not checked
 * again, so the runbook still loads, and a run refuses its values naming what RE2 does not
 * support.
 */
function checkParameter(stored: boolean) {
  return (parameter: z.infer<typeof parameterFieldsSchema>, context: z.RefinementCtx) => {
    const issue = (path: string, message: string) => context.addIssue({ code: "custom", path: [path], message });
    if (parameter.type === "choice" && (parameter.choices?.length ?? 0) === 0) {
      issue("choices", "a choice parameter needs 'choices': the values a run may pick");
    }
    if (parameter.type !== "choice" && parameter.choices !== undefined) {
      issue("choices", `only a choice parameter has 'choices'; set type: choice or remove them`);
    }
    if (parameter.pattern !== undefined) {
      if (parameter.type !== "string") issue("pattern", "only a string parameter has a 'pattern'");
      else if (!stored) {
        // RE2, never a backtracking RegExp (issue 11, finding 5; ADR 0064). Checked alone too,
        // so that a pattern cannot close the group it is wrapped in ("a)|(b").
        const problem = linearPatternProblem(parameter.pattern) ?? wholeValueProblem(parameter.pattern);
        if (problem) issue("pattern", problem);
      }
    }
    if ((parameter.min !== undefined || parameter.max !== undefined) && parameter.type !== "number") {
      issue("min", "only a number parameter has 'min' and 'max'");
    }
    if (parameter.sensitive && parameter.default !== undefined) {
      issue("default", "a sensitive parameter has no default (it would be kept in the clear); remove it");
    }
    if (parameter.sensitive && parameter.type !== "string") {
      issue("sensitive", "only a string parameter can be sensitive");
    }
    const unsupported = stored && parameter.pattern !== undefined && wholeValueProblem(parameter.pattern) !== undefined;
    if (parameter.default !== undefined && !parameter.sensitive && !unsupported) {
      // A default whose pattern check is costly is checked off the event loop by each run that uses it.
      const problem = parameterValueProblem(parameter, String(parameter.default), "defer-costly");
      if (problem) issue("default", `the default ${problem}`);
    }
  };
}

export const runbookParameterSchema = parameterFieldsSchema.superRefine(checkParameter(false));
export type RunbookParameter = z.infer<typeof runbookParameterSchema>;

/** What an editor writes: the draft of a runbook. */
export const runbookDefinitionSchema = definitionSchemaOf(runbookParameterSchema, processSchema);
export type RunbookDefinition = z.infer<typeof runbookDefinitionSchema>;

/** A draft or snapshot as the store reads it back (see checkParameter; its process: storedProcessSchema, ADR 0073). */
export const storedRunbookDefinitionSchema = definitionSchemaOf(
  parameterFieldsSchema.superRefine(checkParameter(true)),
  storedProcessSchema,
);

function definitionSchemaOf(parameterSchema: typeof runbookParameterSchema, process: typeof processSchema) {
  return z.strictObject({
    description: descriptionSchema.default(""),
    /** The steps, of any step kind (each step's config is validated by its kind). */
    process: process.default({ images: [], packages: [], steps: [] }),
    /** Environment slugs the runbook may run in; empty: every environment of the project's lifecycle. */
    environments: z.array(slugSchema).max(50).default([]),
    parameters: z
      .array(parameterSchema)
      .max(50)
      .default([])
      .refine((parameters) => new Set(parameters.map((parameter) => parameter.name)).size === parameters.length, {
        message: "give each parameter its own name",
      }),
    /** May a run start while a deployment to the same environment runs (and the reverse)? */
    overlapDeployments: z.boolean().default(false),
    /** May two runs of this runbook run at once in one environment? */
    overlapItself: z.boolean().default(false),
  });
}

export const createRunbookSchema = runbookDefinitionSchema.extend({
  name: nameSchema,
  slug: slugSchema.optional(),
});
export type CreateRunbook = z.infer<typeof createRunbookSchema>;

/** PATCH of the draft: the fields given replace the draft's. */
export const updateRunbookSchema = z
  .strictObject({
    name: nameSchema,
    description: descriptionSchema,
    process: processSchema,
    environments: z.array(slugSchema).max(50),
    parameters: runbookDefinitionSchema.shape.parameters.unwrap(),
    overlapDeployments: z.boolean(),
    overlapItself: z.boolean(),
  })
  .partial()
  .refine((body) => Object.keys(body).length > 0, { message: "send at least one field to change" });
export type UpdateRunbook = z.infer<typeof updateRunbookSchema>;

/**
 * What a publish may choose (ADR 0068): a tag per image name and a version per package name
 * of the draft's process; the others take the latest matching tag and the newest version,
 * exactly as a release's do. An empty body chooses nothing.
 */
export const publishRunbookSchema = z
  .strictObject({
    images: z.record(z.string(), z.string().min(1).max(128)).default({}),
    packages: z.record(z.string(), packageVersionSchema).default({}),
  })
  .prefault({});
export type PublishRunbook = z.infer<typeof publishRunbookSchema>;

/** The image and package versions a snapshot pins, as answers show them. */
const pinnedVersionsShape = {
  images: z.array(z.object({ name: z.string(), tag: z.string(), digest: z.string(), reference: z.string() })),
  packages: z.array(z.object({ name: z.string(), version: z.string(), sha256: z.string(), size: z.number().int() })),
};

/** The published version: who published it when, and what runs execute (the draft's fields, as published). */
const publishedSchema = z.object({
  version: z.number().int(),
  publishedBy: z.string(),
  publishedAt: z.string(),
  description: z.string(),
  process: processSchema,
  environments: z.array(z.string()),
  parameters: z.array(runbookParameterSchema),
  overlapDeployments: z.boolean(),
  overlapItself: z.boolean(),
  /** The image versions pinned by digest at publish time: every run of this version uses these. */
  images: pinnedVersionsShape.images,
  /** The package versions pinned (by sha256) at publish time. */
  packages: pinnedVersionsShape.packages,
});

export const runbookSchema = z.object({
  id: z.string(),
  project: z.string().describe("project slug"),
  slug: z.string(),
  name: z.string(),
  description: z.string(),
  process: processSchema,
  environments: z.array(z.string()),
  parameters: z.array(runbookParameterSchema),
  overlapDeployments: z.boolean(),
  overlapItself: z.boolean(),
  /** The snapshot runs use; null until first published. */
  published: publishedSchema.nullable(),
  /** True when the draft differs from the published snapshot (or nothing is published). */
  draftChanged: z.boolean(),
  updatedBy: z.string(),
  createdAt: z.string(),
  updatedAt: z.string(),
});
export type Runbook = z.infer<typeof runbookSchema>;

/** A parameter value as a request gives it: text from the CLI, or JSON's own types. */
const parameterValueSchema = z.union([z.string().max(8192), z.number(), z.boolean()]);

export const createRunbookRunSchema = z.strictObject({
  environment: referenceSchema.describe("environment slug or id"),
  parameters: z.record(z.string().max(64), parameterValueSchema).default({}),
  /** Run the draft instead of the published snapshot (needs the permission to edit runbooks). */
  draft: z.boolean().default(false),
  /** Only on these targets (names or ids) of the environment; left out: every target with a step's role. */
  targets: z.array(referenceSchema).max(100).optional(),
  /** A failing required step waits for retry / skip / abort. */
  guidedFailure: z.boolean().default(false),
  /** Run although a freeze covers the environment: the reason (needs overrideFreezes). */
  freezeOverride: z.string().trim().min(1).max(1000).optional(),
});
export type CreateRunbookRun = z.infer<typeof createRunbookRunSchema>;

export const runbookRunSchema = z.object({
  runId: z.string(),
  taskId: z.string(),
  project: z.string(),
  runbook: z.string(),
  environment: z.string(),
  /** The published version run, or null for a draft run. */
  version: z.number().int().nullable(),
  /** The values used; a sensitive one shows as "********". */
  parameters: z.record(z.string(), z.union([z.string(), z.number(), z.boolean()])),
  /** The image versions the run uses: the published version's, or for a draft run those resolved when it was requested. */
  images: pinnedVersionsShape.images,
  /** The package versions the run unpacks, likewise. */
  packages: pinnedVersionsShape.packages,
});
export type RunbookRunCreated = z.infer<typeof runbookRunSchema>;

/** A run as lists show it (sensitive parameter values masked). */
export const runbookRunSummarySchema = z.object({
  runId: z.string(),
  taskId: z.string(),
  environment: z.string(),
  /** The published version run, or null for a draft run. */
  version: z.number().int().nullable(),
  state: z.string(),
  createdBy: z.string(),
  createdAt: z.string(),
  /** When its task ended; null while it is queued or running. */
  finishedAt: z.string().nullable(),
  parameters: z.record(z.string(), z.string()),
  /** "<freeze>: <reason>" when the run went through a freeze. */
  freezeOverride: z.string().nullable(),
  /** Why a schedule queued it ("schedule nightly", "missed firings of schedule nightly"); null: a person did. */
  cause: z.string().nullable(),
  /** The schedule's firing it is for (ISO 8601); null when a person queued it. */
  scheduledFor: z.string().nullable(),
});
export type RunbookRunSummary = z.infer<typeof runbookRunSummarySchema>;

/** What a runbook run's task ran (GET /tasks/:task answers it as `runbookRun`). */
export const taskRunbookRunSchema = runbookRunSummarySchema
  .omit({ state: true, createdBy: true, createdAt: true, finishedAt: true })
  .extend({
    runbook: z.string().describe("runbook slug"),
    runbookName: z.string(),
    /** The target names the run was limited to; null: every target with a step's role. */
    targets: z.array(z.string()).nullable(),
  });
export type TaskRunbookRun = z.infer<typeof taskRunbookRunSchema>;

/** What a sensitive value shows as in answers and audit entries. */
export const MASKED = "********";

/** A parameter's pattern as it is matched: against the whole value. */
function wholeValue(pattern: string): string {
  return `^(?:${pattern})$`;
}

/**
 * How much matching a pattern check may do on the event loop: RE2's cost grows with the
 * compiled pattern's size times the value's length (its simulation steps every live thread
 * per character), and this many steps take about a millisecond. A value of 8,192 characters
 * against a pattern of 1,800 instructions is ~15 million: some 80 ms here, 4 s for 50
 * parameters in one request. Checks above it run off the event loop (parameterPatternChecks).
 */
export const INLINE_PATTERN_STEPS = 200_000;

/** The outcome of a pattern check run elsewhere (a worker thread with a time limit). */
export type PatternVerdict = "matched" | "not-matched" | "timed-out";

/**
 * What pattern checks over the budget get: their verdicts by parameter name, run elsewhere,
 * or "defer-costly" (accepted for now: used where a later check is certain, a default at
 * save or a schedule's values, both checked again by each run they queue).
 */
export type CostlyPatternVerdicts = ReadonlyMap<string, PatternVerdict> | "defer-costly";

/** A pattern check too costly for the event loop: `pattern` matches the whole value. */
export interface PatternCheck {
  name: string;
  pattern: string;
  text: string;
}

/** How long, at most, the costly checks of one request take together off the event loop. */
export const PATTERN_CHECK_TIMEOUT_MS = 2_000;

/**
 * Compiled whole-value patterns, most recently used last. Compiling a pattern near the size
 * cap takes RE2 5–100 ms (more than matching most values), and a run checks each pattern
 * twice (listing the costly checks, then resolving): each is compiled once per process.
 */
const compiledPatterns = new Map<string, RE2JS>();
const COMPILED_PATTERNS_KEPT = 200;

function compiledWholeValue(pattern: string): RE2JS {
  const source = wholeValue(pattern);
  let compiled = compiledPatterns.get(source);
  if (compiled) compiledPatterns.delete(source);
  else compiled = compileLinearPattern(source);
  compiledPatterns.set(source, compiled);
  if (compiledPatterns.size > COMPILED_PATTERNS_KEPT) {
    const oldest = compiledPatterns.keys().next().value;
    if (oldest !== undefined) compiledPatterns.delete(oldest);
  }
  return compiled;
}

/** What RE2 finds wrong with the whole-value pattern (undefined: nothing), compiled once. */
function wholeValueProblem(pattern: string): string | undefined {
  try {
    compiledWholeValue(pattern);
    return undefined;
  } catch (error) {
    if (error instanceof InputError) return error.message;
    throw error;
  }
}

function isCostly(compiled: RE2JS, text: string): boolean {
  return compiled.programSize() * (text.length + 1) > INLINE_PATTERN_STEPS;
}

/** The pattern checks of a run's values (defaults filled in) that must run off the event loop. */
export function parameterPatternChecks(
  parameters: readonly RunbookParameter[],
  given: Readonly<Record<string, string | number | boolean>>,
): PatternCheck[] {
  return parameters.flatMap((parameter) => {
    const value = given[parameter.name] ?? parameter.default;
    if (parameter.type !== "string" || parameter.pattern === undefined || value === undefined) return [];
    if (wholeValueProblem(parameter.pattern) !== undefined) return [];
    const text = String(value);
    return isCostly(compiledWholeValue(parameter.pattern), text)
      ? [{ name: parameter.name, pattern: wholeValue(parameter.pattern), text }]
      : [];
  });
}

/** Why a text is not a valid value of the parameter (undefined: it is). Never quotes the value. */
function parameterValueProblem(
  parameter: RunbookParameter,
  text: string,
  costly: CostlyPatternVerdicts,
): string | undefined {
  switch (parameter.type) {
    case "string": {
      if (parameter.pattern === undefined) return undefined;
      // A definition stored before patterns ran on RE2 may hold one RE2 cannot run.
      const unsupported = wholeValueProblem(parameter.pattern);
      if (unsupported)
        return `cannot be checked: the runbook's pattern is not supported (${unsupported}); edit the runbook`;
      const mismatch = `does not match the pattern ${parameter.pattern}`;
      const compiled = compiledWholeValue(parameter.pattern);
      if (!isCostly(compiled, text)) return compiled.test(text) ? undefined : mismatch;
      if (costly === "defer-costly") return undefined;
      const verdict = costly.get(parameter.name) ?? "timed-out";
      switch (verdict) {
        case "matched":
          return undefined;
        case "not-matched":
          return mismatch;
        case "timed-out":
          return `could not be checked against the pattern ${parameter.pattern} within ${PATTERN_CHECK_TIMEOUT_MS / 1000} s: simplify the pattern (smaller counts in {n,m}) or give a shorter value`;
        default: {
          const unknown: never = verdict;
          throw new Error(`unknown pattern verdict ${String(unknown)}`);
        }
      }
    }
    case "number": {
      const value = Number(text);
      if (text.trim() === "" || !Number.isFinite(value)) return "is not a number";
      if (parameter.min !== undefined && value < parameter.min) return `is below the minimum ${parameter.min}`;
      if (parameter.max !== undefined && value > parameter.max) return `is above the maximum ${parameter.max}`;
      return undefined;
    }
    case "boolean":
      return text === "true" || text === "false" ? undefined : "is not true or false";
    case "choice":
      return parameter.choices?.includes(text) ? undefined : `is not one of ${(parameter.choices ?? []).join(", ")}`;
    default: {
      const unknown: never = parameter.type;
      throw new Error(`unknown parameter type ${String(unknown satisfies ParameterType)}`);
    }
  }
}

export interface ResolvedParameters {
  /** Every parameter's value as text (what steps read as #{name}). */
  values: Map<string, string>;
  /** The names of the sensitive ones. */
  sensitive: Set<string>;
}

/**
 * Checks a run's parameter values against the runbook's parameters, filling in defaults:
 * every problem is reported at once, each naming its parameter, and a sensitive value is
 * never quoted. Throws InputError; nothing is queued before this passes. Pattern checks over
 * INLINE_PATTERN_STEPS take their outcome from `costly` (parameterPatternChecks lists them):
 * one without a verdict there counts as not checked in time.
 */
export function resolveParameters(
  parameters: readonly RunbookParameter[],
  given: Readonly<Record<string, string | number | boolean>>,
  costly: CostlyPatternVerdicts = new Map(),
): ResolvedParameters {
  const issues: FieldIssue[] = [];
  const known = new Set(parameters.map((parameter) => parameter.name));
  for (const name of Object.keys(given)) {
    if (!known.has(name)) {
      issues.push({
        pointer: `/parameters/${name}`,
        detail: `this runbook has no parameter '${name}'${known.size > 0 ? ` (it has ${[...known].join(", ")})` : ""}`,
      });
    }
  }
  const values = new Map<string, string>();
  const sensitive = new Set<string>();
  for (const parameter of parameters) {
    const pointer = `/parameters/${parameter.name}`;
    const value = given[parameter.name] ?? parameter.default;
    if (value === undefined) {
      if (parameter.required) {
        issues.push({
          pointer,
          detail: `parameter '${parameter.name}' is required; give it with --param ${parameter.name}=…`,
        });
      } else {
        values.set(parameter.name, "");
      }
      continue;
    }
    const text = String(value);
    const problem = parameterValueProblem(parameter, text, costly);
    if (problem) {
      issues.push({
        pointer,
        detail: `parameter '${parameter.name}' ${parameter.sensitive ? "(sensitive, not shown) " : `'${text.slice(0, 100)}' `}${problem}`,
      });
      continue;
    }
    values.set(parameter.name, text);
    if (parameter.sensitive && text !== "") sensitive.add(parameter.name);
  }
  if (issues.length > 0) {
    throw new InputError(
      `the runbook's parameters are not valid (${issues.map((issue) => issue.pointer.slice("/parameters/".length)).join(", ")}); nothing was queued`,
      issues,
    );
  }
  return { values, sensitive };
}

/** The values as an answer or audit entry shows them: sensitive ones masked. */
export function shownParameters(resolved: ResolvedParameters): Record<string, string> {
  return Object.fromEntries(
    [...resolved.values].map(([name, value]) => [name, resolved.sensitive.has(name) ? MASKED : value]),
  );
}
