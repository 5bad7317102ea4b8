import { type Document, isMap, isScalar, isSeq, LineCounter, parseDocument } from "yaml";
import { z } from "zod";
import { artifactRetentionSchema } from "../domain/artifacts.js";
import { descriptionSchema, nameSchema, slugify, slugSchema } from "../domain/common.js";
import {
  createEnvironmentSchema,
  environmentSchema,
  type UnavailableTargetPolicy,
  ttlMinutesSchema as updateTtlSchema,
} from "../domain/environments.js";
import { type FieldIssue, InputError, toJsonPointer } from "../domain/errors.js";
import { createFeedSchema } from "../domain/feeds.js";
import { isRepositoryName, REPOSITORY_NAME_HINT } from "../domain/images.js";
import { checkPhases, createLifecycleSchema } from "../domain/lifecycles.js";
import { packageNameSchema } from "../domain/packages.js";
import { processSchema, type Step } from "../domain/process.js";
import { createScheduleSchema, retentionSchema } from "../domain/runbookSchedules.js";
import { runbookDefinitionSchema } from "../domain/runbooks.js";
import { createTargetSchema, targetRouterSchema, updateTargetSchema } from "../domain/targets.js";
import { createVariableSchema } from "../domain/variables.js";
import { versionRuleSchema } from "../domain/versionRules.js";
import { createWebhookSchema } from "../domain/webhooks.js";
import { stepKind, validateSteps } from "../steps/registry.js";

/**
 * `ferry.yml`: one project described as code (docs/ferry-yml.md is the user's guide).
 *
 * The schema reuses the API's field schemas (names, slugs, phases, steps, scopes), so a
 * file that parses here is accepted by the API. References between sections
 * (a phase's environments, an image's feed, a variable's scope) are slugs of things the
 * file declares, checked here so that a typo points at its line instead of failing
 * halfway through `ferry apply`.
 *
 * A field left out means "leave it as it is on the server" (descriptions, a target's roles,
 * a feed's username); a list that is present is the whole truth (phases, steps,
 * variables). Secrets are never in the file: only the name of the environment variable
 * `ferry apply` reads them from.
 */

type Path = readonly PropertyKey[];

/** Reports a problem at a path; `atKey` places it on the key (an unknown field) rather than the value. */
type Problem = (path: Path, message: string, atKey?: boolean) => void;

/** Lets a cross-field rule run even when other fields of the object failed (all problems at once). */
const evenWithOtherProblems = { when: () => true };

/** The name of an environment variable of the `ferry apply` process that holds a secret. */
const secretReferenceSchema = z
  .strictObject({
    env: z
      .string()
      .max(200)
      .regex(/^[A-Za-z_][A-Za-z0-9_]*$/, { message: "use an environment variable name: letters, digits and '_'" })
      .describe("Environment variable that `ferry apply` reads the secret from; the value never sits in the file"),
  })
  .describe("Where the secret comes from at apply time");

/** A sensitive variable's value: an environment variable, or a file (relative to the ferry.yml) such as a mounted secret. */
const variableSecretReferenceSchema = z
  .union([
    secretReferenceSchema,
    z.strictObject({
      file: z
        .string()
        .min(1, { message: "give the file's path, relative to the ferry.yml" })
        .max(4096)
        .describe(
          "File (relative to the ferry.yml) that `ferry apply` / `ferry run` reads the value from; a final newline is dropped",
        ),
    }),
  ])
  .describe("Where a sensitive variable's value comes from at apply time: { env: NAME } or { file: PATH }");

/** Adds the slug derived from the name when none is given; a name without letters or digits needs one. */
function withSlug<T extends { name: string; slug?: string | undefined }>(value: T, context: z.RefinementCtx) {
  const slug = value.slug ?? slugify(value.name);
  if (slug === "") {
    context.addIssue({
      code: "custom",
      path: ["name"],
      message: "the name has no letters or digits to derive a slug from; add a slug such as 'web-api'",
    });
  }
  return { ...value, slug };
}

const projectFileSchema = z
  .strictObject({
    name: nameSchema,
    slug: slugSchema.optional().describe("Derived from the name when left out"),
    description: descriptionSchema.optional(),
    variableSets: z
      .array(slugSchema)
      .max(50)
      .optional()
      .describe(
        "Slugs of the variable sets the project includes, first first (on a tie in scope, an earlier set beats a later one; the project's own values beat every set): when present, the whole list",
      ),
  })
  .transform(withSlug);

const environmentFileSchema = z
  .union([
    nameSchema.transform((name) => ({
      name,
      slug: undefined as string | undefined,
      description: undefined as string | undefined,
      unavailableTargets: undefined as UnavailableTargetPolicy | undefined,
      ephemeral: undefined as boolean | undefined,
      ttlMinutes: undefined as number | null | undefined,
    })),
    z.strictObject({
      name: nameSchema,
      slug: slugSchema.optional().describe("Derived from the name when left out"),
      description: descriptionSchema.optional(),
      unavailableTargets: createEnvironmentSchema.shape.unavailableTargets.unwrap().optional(),
      ephemeral: environmentSchema.shape.ephemeral.optional(),
      ttlMinutes: updateTtlSchema.optional(),
    }),
  ])
  .describe(
    "An environment's name (its slug is derived), or { name, slug, description, unavailableTargets, ephemeral, ttlMinutes }",
  )
  .transform(withSlug);

const lifecycleFileSchema = z
  .strictObject({
    name: nameSchema,
    slug: slugSchema.optional().describe("Derived from the name when left out"),
    description: descriptionSchema.optional(),
    phases: createLifecycleSchema.shape.phases.describe(
      "In order; each phase's environments are slugs of environments listed under `environments`",
    ),
  })
  .transform(withSlug);

const feedFileSchema = z
  .strictObject({
    name: nameSchema,
    slug: slugSchema.optional().describe("Derived from the name when left out"),
    url: createFeedSchema.shape.url,
    username: z.string().min(1).max(200).optional(),
    passwordFrom: secretReferenceSchema.optional(),
  })
  .refine((feed) => !feed.passwordFrom || feed.username !== undefined, {
    message: "a password needs a username; add username",
    path: ["username"],
  })
  .transform(withSlug);

/** A private key's source: a file (relative to the ferry.yml) or an environment variable of `ferry apply`. */
const keyReferenceSchema = z
  .union([
    z.strictObject({
      file: z
        .string()
        .min(1)
        .max(4096)
        .describe(
          "A file holding the private key, relative to this ferry.yml; read by `ferry apply`, never sent as a path",
        ),
    }),
    secretReferenceSchema,
  ])
  .describe(
    "Where `ferry apply` reads the private key from: { file: PATH } or { env: NAME }; the key never sits in the file",
  );

const sshShape = createTargetSchema.shape.ssh.unwrap().shape;

const sshFileSchema = z
  .strictObject({
    host: sshShape.host,
    port: sshShape.port.unwrap().optional().describe("SSH port, 22 when left out"),
    user: sshShape.user,
    jumpHost: sshShape.jumpHost,
    privateKeyFrom: keyReferenceSchema,
    passphraseFrom: secretReferenceSchema.optional().describe("Where `ferry apply` reads the key's passphrase from"),
    hostKey: sshShape.hostKey,
  })
  .describe("How an ssh target is reached (transport: ssh)");

const targetFileSchema = z
  .strictObject({
    name: nameSchema,
    slug: slugSchema.optional().describe("Derived from the name when left out"),
    environments: createTargetSchema.shape.environments.describe("Slugs of environments listed under `environments`"),
    roles: updateTargetSchema.shape.roles,
    transport: updateTargetSchema.shape.transport,
    runtimes: updateTargetSchema.shape.runtimes,
    ssh: sshFileSchema.optional(),
    router: targetRouterSchema
      .optional()
      .describe(
        "The host's traffic router for blue/green (ssh targets): { driver: builtin, listen, adminPort, … } or { driver: nginx, config, sitesDir, pidFile, … } or { driver: haproxy, stateDir, listen, … }",
      ),
  })
  .superRefine((target, context) => {
    if (target.router && target.transport !== "ssh") {
      context.addIssue({
        code: "custom",
        path: ["router"],
        message:
          "only a remote target (transport: ssh) has a router of its own; a local target uses the server's (FERRY_ROUTER)",
      });
    }
    if (target.transport === "ssh" && !target.ssh) {
      context.addIssue({
        code: "custom",
        path: ["ssh"],
        message: "an ssh target needs ssh: { host, user, privateKeyFrom }",
      });
    }
    if (target.ssh && target.transport !== "ssh") {
      context.addIssue({ code: "custom", path: ["transport"], message: "add transport: ssh to use the ssh settings" });
    }
  })
  .transform(withSlug);

/** `{ semver: "^1.2.0" }` or `{ regex: "^1\\.0\\.\\d+$" }`, read as the domain's version rule. */
const imageVersionSchema = z
  .strictObject({
    semver: z.string().optional().describe("An npm-style range: ^1.2.0, ~1.4, >=1.0.0 <2.0.0, 1.x || 2.x"),
    regex: z.string().optional().describe("A regular expression the whole tag must match"),
  })
  .describe("Which tags of the repository the project takes: exactly one of semver or regex")
  .transform((version, context) => {
    const given = (["semver", "regex"] as const).filter((key) => version[key] !== undefined);
    if (given.length !== 1) {
      context.addIssue({
        code: "custom",
        message: given.length === 0 ? "give semver or regex" : "give semver or regex, not both",
      });
      return z.NEVER;
    }
    const rule =
      version.semver !== undefined
        ? { kind: "semver" as const, range: version.semver }
        : { kind: "regex" as const, pattern: version.regex ?? "" };
    const result = versionRuleSchema.safeParse(rule);
    if (!result.success) {
      for (const issue of result.error.issues) {
        context.addIssue({ code: "custom", path: [rule.kind], message: issue.message });
      }
      return z.NEVER;
    }
    return result.data;
  });

const imageFileSchema = z.strictObject({
  name: slugSchema.describe("How the project refers to the image"),
  feed: slugSchema.describe("Slug of a feed listed under `feeds`"),
  repository: z
    .string()
    .refine(isRepositoryName, { message: REPOSITORY_NAME_HINT })
    .describe("Repository in the feed, e.g. team/web-api"),
  version: imageVersionSchema,
});

const variableFileSchema = z
  .strictObject({
    name: createVariableSchema.shape.name,
    value: createVariableSchema.shape.value.optional().describe("The value; only for variables that are not sensitive"),
    sensitive: z.boolean().default(false),
    valueFrom: variableSecretReferenceSchema
      .optional()
      .describe("Where a sensitive variable's value comes from at apply time (never written in the file)"),
    scope: createVariableSchema.shape.scope.describe(
      "Environments (slugs), target roles and targets (slugs) the value applies to; empty means everywhere",
    ),
  })
  .superRefine(
    (variable, context) => {
      // Runs even when other fields of the variable failed (`when` below): read the raw fields.
      const raw = variable as Record<string, unknown>;
      const sensitive = raw.sensitive === true;
      if (sensitive && raw.value !== undefined) {
        context.addIssue({
          code: "custom",
          path: ["value"],
          message:
            "a sensitive value must not be written in ferry.yml; remove it and use valueFrom: { env: NAME } " +
            "(or { file: PATH }), which `ferry apply` reads",
        });
      } else if (sensitive && raw.valueFrom === undefined) {
        context.addIssue({
          code: "custom",
          message: "required: a sensitive variable needs valueFrom: { env: NAME } or { file: PATH }",
        });
      } else if (!sensitive && raw.valueFrom !== undefined) {
        context.addIssue({
          code: "custom",
          path: ["valueFrom"],
          message: "valueFrom is for sensitive variables: add sensitive: true, or write the value inline with value",
        });
      } else if (!sensitive && raw.value === undefined) {
        context.addIssue({ code: "custom", path: ["value"], message: "required: add this field (string)" });
      }
    },
    { when: (payload) => isRecord(payload.value) },
  );

/**
 * A variable set the file declares (ADR 0047): created or updated on apply, its variables
 * made exactly the list given. Sets are shared: several files may declare one alike.
 */
const variableSetFileSchema = z
  .strictObject({
    name: nameSchema,
    slug: slugSchema.optional().describe("Derived from the name when left out"),
    description: descriptionSchema.optional(),
    variables: z
      .array(variableFileSchema)
      .max(2000)
      .describe("The set's variables, scoped like a project's: the whole list (others are deleted on apply)"),
  })
  .transform(withSlug);

/**
 * A webhook of the project (docs/webhooks.md), known by its URL: a URL the file no longer
 * lists is a webhook deleted, a new one created. Its signing secret is a reference, like
 * every secret of the file.
 */
const webhookFileSchema = z.strictObject({
  url: createWebhookSchema.shape.url.describe(
    "Where deployment events are POSTed; one webhook per URL (a chat service's path is its credential: keep the file private, or the webhook out of it)",
  ),
  events: createWebhookSchema.shape.events,
  secretFrom: secretReferenceSchema.describe(
    "Where `ferry apply` reads the secret that signs each delivery (at least 16 characters)",
  ),
});

/**
 * A grant of a role on this project to a team (ADR 0020, 0070): the file's `teams` are the
 * whole list of grants that name this project alone. A grant that spans other projects, or
 * every project, is an administrator's, made with `ferry team`, and apply leaves it alone.
 */
const teamGrantFileSchema = z.strictObject({
  team: slugSchema.describe("Slug of the team; created (without members) when missing"),
  role: slugSchema.describe("Slug of a role: viewer, deployer, release-manager, project-editor, … or one of your own"),
  environments: z
    .array(slugSchema)
    .min(1, { message: "name at least one environment, or leave the field out for every environment" })
    .max(50)
    .optional()
    .describe("Slugs of environments listed under `environments`; left out: every environment of the project"),
});

const versionPatternSchema = z
  .string()
  .max(100)
  .refine((pattern) => pattern.split("#{n}").length === 2, {
    message: "must contain #{n} exactly once, e.g. 1.0.#{n}",
  })
  .describe("How release versions are numbered: #{n} is one more than the highest so far");

/**
 * A runbook as ferry.yml declares it: its draft (steps instead of a process), created or
 * updated on apply; published only when `publish: true` and the draft differs.
 */
const runbookFileSchema = z
  .strictObject({
    name: nameSchema,
    slug: slugSchema.optional().describe("Derived from the name when left out"),
    description: descriptionSchema.default(""),
    environments: runbookDefinitionSchema.shape.environments,
    parameters: runbookDefinitionSchema.shape.parameters,
    overlapDeployments: runbookDefinitionSchema.shape.overlapDeployments,
    overlapItself: runbookDefinitionSchema.shape.overlapItself,
    steps: processSchema.shape.steps.default([]),
    images: z
      .array(imageFileSchema)
      .max(20)
      .optional()
      .describe(
        "The container images the runbook's steps use (#{Ferry.Image[name]}): each published version pins their tags by digest (ADR 0068)",
      ),
    packages: z
      .array(
        z.strictObject({ name: packageNameSchema.describe("A package of the built-in feed (`ferry package list`)") }),
      )
      .max(20)
      .optional()
      .describe(
        "The packages the runbook's package steps unpack: each published version pins their versions (ADR 0068)",
      ),
    publish: z
      .boolean()
      .default(false)
      .describe("Publish the draft on apply when it changed (runs use the published version)"),
    schedules: z
      .array(
        createScheduleSchema.extend({
          paused: z.boolean().optional().describe("Left out: a schedule paused or resumed with the CLI stays so"),
          parametersFrom: z
            .record(z.string().max(64), secretReferenceSchema)
            .optional()
            .describe(
              "The values of the runbook's sensitive parameters: where `ferry apply` reads each (the value never sits in the file)",
            ),
        }),
      )
      .max(50)
      .optional()
      .describe("When present, the runbook's whole list of schedules (others are removed on apply)"),
    retention: retentionSchema.shape.policies
      .optional()
      .describe("When present, the runbook's run retention per environment ('*': the others)"),
    artifactRetention: artifactRetentionSchema.shape.policies
      .optional()
      .describe("When present, how long the runbook's artifacts are kept per environment ('*': the others)"),
  })
  .superRefine((runbook, context) => {
    const sensitive = new Set(runbook.parameters.filter((p) => p.sensitive).map((p) => p.name));
    const names = new Set<string>();
    for (const [index, schedule] of (runbook.schedules ?? []).entries()) {
      if (names.has(schedule.name)) {
        context.addIssue({
          code: "custom",
          path: ["schedules", index, "name"],
          message: `schedule '${schedule.name}' is listed twice`,
        });
      }
      names.add(schedule.name);
      for (const name of Object.keys(schedule.parameters)) {
        if (!sensitive.has(name)) continue;
        context.addIssue({
          code: "custom",
          path: ["schedules", index, "parameters", name],
          message: `'${name}' is a sensitive parameter: its value is a secret and never goes in a file; move it to parametersFrom: { ${name}: { env: NAME } }, which \`ferry apply\` reads from its environment`,
        });
      }
      for (const name of Object.keys(schedule.parametersFrom ?? {})) {
        if (sensitive.has(name)) continue;
        context.addIssue({
          code: "custom",
          path: ["schedules", index, "parametersFrom", name],
          message: runbook.parameters.some((parameter) => parameter.name === name)
            ? `'${name}' is not a sensitive parameter: write its value under parameters instead`
            : `the runbook has no parameter '${name}'; remove it or add the parameter (sensitive: true)`,
        });
      }
    }
  })
  .transform((value) => ({ ...value, slug: value.slug ?? slugify(value.name) }));

/** A runbook as a file declares it (a ferry.yml `runbooks:` entry, or `ferry runbook create -f`). */
export type RunbookFile = z.output<typeof runbookFileSchema>;

const ferryFileObject = z.strictObject({
  project: projectFileSchema,
  environments: z
    .array(environmentFileSchema)
    .min(1, { message: "list at least one environment" })
    .max(50)
    .describe("Created when missing, in this order"),
  lifecycle: lifecycleFileSchema,
  feeds: z.array(feedFileSchema).max(50).default([]),
  targets: z.array(targetFileSchema).max(500).default([]),
  images: z
    .array(imageFileSchema)
    .max(20)
    .optional()
    .describe("The container images the project deploys: when present, they replace the process's images"),
  packages: z
    .array(
      z.strictObject({ name: packageNameSchema.describe("A package of the built-in feed (`ferry package list`)") }),
    )
    .max(20)
    .optional()
    .describe(
      "The packages of the built-in feed the project deploys (ADR 0044): when present, they replace the process's packages",
    ),
  variables: z
    .array(variableFileSchema)
    .max(2000)
    .optional()
    .describe("The project's variables: when present, the whole list (others are deleted on apply)"),
  variableSets: z
    .array(variableSetFileSchema)
    .max(50)
    .optional()
    .describe(
      "Variable sets to create or update (shared by several projects); a project includes them with project.variableSets",
    ),
  versionPattern: versionPatternSchema.optional(),
  runbooks: z
    .array(runbookFileSchema)
    .max(100)
    .optional()
    .describe("The project's runbooks: each is created, or its draft updated; others are left alone"),
  steps: processSchema.shape.steps
    .optional()
    .describe("The deployment process: when present, it replaces the project's process"),
  webhooks: z
    .array(webhookFileSchema)
    .max(50)
    .optional()
    .describe("The project's webhooks: when present, the whole list (others are deleted on apply)"),
  teams: z
    .array(teamGrantFileSchema)
    .max(200)
    .optional()
    .describe(
      "Roles granted to teams on this project: when present, the whole list of the grants that name this project alone (others are removed on apply)",
    ),
});

const ferryFileSchema = ferryFileObject.superRefine(checkReferences, evenWithOtherProblems);

/** A parsed `ferry.yml`: slugs derived, defaults applied, step configs parsed by their kinds. */
export type FerryFile = z.output<typeof ferryFileSchema>;

let jsonSchema: Readonly<Record<string, unknown>> | undefined;

/**
 * The JSON Schema of `ferry.yml` as written (what an editor validates and completes the file
 * with). Rules across fields, such as references between sections, are not in it.
 */
export function ferryFileJsonSchema(): Readonly<Record<string, unknown>> {
  jsonSchema ??= {
    ...(z.toJSONSchema(ferryFileObject, { io: "input", unrepresentable: "any" }) as Record<string, unknown>),
    title: "ferry.yml",
    description: "A Ferry project described as code; see docs/ferry-yml.md",
  };
  return jsonSchema;
}

interface Located extends FieldIssue {
  readonly line: number;
  readonly column: number;
  /** A YAML syntax problem: there is no field to point at. */
  readonly syntax?: true;
}

/**
 * Parses and validates the text of a `ferry.yml`. Every problem found (YAML syntax, shape,
 * references) is reported at once in an InputError: its issues carry the JSON pointer plus
 * line and column, and its message has one `file:line:column pointer: detail` line each.
 */
export function parseFerryFile(text: string, fileName: string): FerryFile {
  return parseYamlWith(
    text,
    fileName,
    ferryFileSchema,
    "the file is empty; it needs at least project, environments and lifecycle",
    // The kinds' schemas already passed in checkReferences; this applies their defaults, the
    // same way the API does before storing a process, so apply compares like with like.
    (data) => ({
      ...data,
      // A step's template files are read from beside the ferry.yml at apply (ADR 0051).
      ...(data.steps !== undefined && { steps: validateSteps(data.steps, "/steps", { filesBesideFerryYml: true }) }),
      ...(data.runbooks !== undefined && {
        runbooks: data.runbooks.map((runbook, index) => ({
          ...runbook,
          steps: validateSteps(runbook.steps, `/runbooks/${index}/steps`, { filesBesideFerryYml: true }),
        })),
      }),
    }),
  );
}

/**
 * A runbook file for `ferry runbook create|update -f` (YAML or JSON): one runbook as a
 * ferry.yml `runbooks:` entry writes it, every problem reported at its line.
 */
export function parseRunbookFile(text: string, fileName: string): RunbookFile {
  return parseYamlWith(
    text,
    fileName,
    runbookFileSchema,
    "the file is empty; it needs at least the runbook's name",
    (data) => ({ ...data, steps: validateSteps(data.steps, "/steps") }),
  );
}

/** The fields a runbook file gives, as written (an update sends only these). */
export function runbookFileFields(text: string): string[] {
  const data = parseDocument(text).toJS() as unknown;
  return data && typeof data === "object" && !Array.isArray(data) ? Object.keys(data) : [];
}

/**
 * Parses YAML (JSON is YAML) and validates it with `schema`, then `finish` (which may throw
 * an InputError with JSON pointers): every problem is reported at once, each at its line.
 */
function parseYamlWith<S extends z.ZodType, T>(
  text: string,
  fileName: string,
  schema: S,
  emptyDetail: string,
  finish: (data: z.output<S>) => T,
): T {
  const lineCounter = new LineCounter();
  const document = parseDocument(text, { lineCounter, prettyErrors: false, uniqueKeys: true });
  const position = (offset: number) => {
    const { line, col } = lineCounter.linePos(offset);
    return { line, column: col };
  };

  // Warnings too (an unknown !tag): a value YAML could not read as written must not be guessed at.
  const syntaxProblems = [...document.errors, ...document.warnings].map(
    (problem): Located => ({ pointer: "", detail: problem.message, syntax: true, ...position(problem.pos[0]) }),
  );
  if (syntaxProblems.length > 0) throw fileError(fileName, syntaxProblems);

  let data: unknown;
  try {
    data = document.toJS({ maxAliasCount: 100 });
  } catch (error) {
    throw fileError(fileName, [{ pointer: "", detail: (error as Error).message, syntax: true, ...position(0) }]);
  }
  if (data === null || data === undefined) {
    throw fileError(fileName, [{ pointer: "", detail: emptyDetail, ...position(0) }]);
  }

  const locate = (path: Path, atKey = false) => ({
    pointer: toJsonPointer(path),
    ...position(offsetOf(document, path, atKey)),
  });
  const result = schema.safeParse(data, { error: friendlyMessage });
  if (!result.success) {
    throw fileError(
      fileName,
      explainIssues(result.error.issues).map((issue) => ({ ...locate(issue.path, issue.atKey), detail: issue.detail })),
    );
  }
  try {
    return finish(result.data);
  } catch (error) {
    if (!(error instanceof InputError)) throw error;
    throw fileError(
      fileName,
      error.issues.map((issue) => ({ ...locate(fromJsonPointer(issue.pointer)), detail: issue.detail })),
    );
  }
}

function fileError(fileName: string, problems: Located[]): InputError {
  const sorted = [...problems].sort((a, b) => a.line - b.line || a.column - b.column);
  const lines = sorted.map(
    (problem) =>
      `${fileName}:${problem.line}:${problem.column} ${problem.syntax ? "(yaml)" : problem.pointer || "/"}: ${problem.detail}`,
  );
  const count = sorted.length === 1 ? "1 problem" : `${sorted.length} problems`;
  return new InputError(`${fileName} is not valid (${count}); fix and run again:\n${lines.join("\n")}`, sorted);
}

/**
 * Where the value at `path` starts in the text: the value's node, or its key's for an
 * unknown field (or an empty value), or the nearest enclosing node for a field that is missing.
 */
function offsetOf(document: Document, path: Path, atKey: boolean): number {
  let node: unknown = document.contents;
  let offset = rangeStart(node) ?? 0;
  for (const [index, segment] of path.entries()) {
    if (isMap(node)) {
      const pair = node.items.find((item) => isScalar(item.key) && String(item.key.value) === String(segment));
      if (!pair) break;
      const keyStart = rangeStart(pair.key) ?? offset;
      const value = pair.value;
      const emptyValue = value === null || (isScalar(value) && value.value === null && value.source === "");
      if ((atKey && index === path.length - 1) || emptyValue) return keyStart;
      node = value;
      offset = rangeStart(value) ?? keyStart;
    } else if (isSeq(node)) {
      const item = node.items[Number(segment)];
      if (item === undefined) break;
      node = item;
      offset = rangeStart(item) ?? offset;
    } else {
      break;
    }
  }
  return offset;
}

function rangeStart(node: unknown): number | undefined {
  const range = (node as { range?: [number, number, number] } | null)?.range;
  return range?.[0];
}

function fromJsonPointer(pointer: string): Path {
  return pointer
    .split("/")
    .slice(1)
    .map((segment) => segment.replaceAll("~1", "/").replaceAll("~0", "~"));
}

/** Zod's default texts, made to say what to do in a YAML file. */
function friendlyMessage(issue: z.core.$ZodRawIssue): string | undefined {
  if (issue.code !== "invalid_type") return undefined;
  if (issue.input === undefined) return `required: add this field (${issue.expected})`;
  if (issue.input === null) return `expected ${issue.expected}, found an empty value`;
  if (issue.expected === "string" && (typeof issue.input === "number" || typeof issue.input === "boolean")) {
    return `expected text, but YAML read the ${typeof issue.input} ${String(issue.input)}; put the value in quotes`;
  }
  return undefined;
}

interface Explained {
  path: Path;
  detail: string;
  /** Points at the key (an unknown field) rather than the value. */
  atKey: boolean;
}

/**
 * One problem per unknown key, and for a value that fits none of a union's forms, the
 * problems of the form it was evidently meant to be (an object for the object form).
 */
function explainIssues(issues: readonly z.core.$ZodIssue[], prefix: Path = []): Explained[] {
  return issues.flatMap((issue): Explained[] => {
    const path = [...prefix, ...issue.path];
    if (issue.code === "unrecognized_keys") {
      return issue.keys.map((key) => ({
        path: [...path, key],
        detail: "unknown field; remove it or fix its spelling (docs/ferry-yml.md lists the fields)",
        atKey: true,
      }));
    }
    if (issue.code === "invalid_union") {
      const branch = likeliestBranch(issue.errors);
      if (branch) return explainIssues(branch, path);
    }
    return [{ path, detail: issue.message, atKey: issue.code === "custom" && issue.params?.atKey === true }];
  });
}

function likeliestBranch(branches: readonly (readonly z.core.$ZodIssue[])[]): readonly z.core.$ZodIssue[] | undefined {
  const wrongType = (issue: z.core.$ZodIssue) => issue.path.length === 0 && issue.code === "invalid_type";
  const deep = branches.filter((branch) =>
    branch.every((issue) => issue.path.length > 0 || issue.code === "unrecognized_keys"),
  );
  return deep[0] ?? branches.find((branch) => !branch.some(wrongType));
}

function isRecord(value: unknown): value is Record<string, unknown> {
  return typeof value === "object" && value !== null && !Array.isArray(value);
}

function field(value: unknown, key: string): unknown {
  return isRecord(value) ? value[key] : undefined;
}

function listAt(value: unknown, key: string): unknown[] {
  const list = field(value, key);
  return Array.isArray(list) ? list : [];
}

/**
 * Rules across sections, run on the raw value even when parts of it are invalid so that one
 * run reports everything: references name declared things, nothing is declared twice, and
 * each step's config suits its kind. A section is used as a source of names only when it
 * parsed, so one bad entry does not make every reference to that section an error too.
 */
function checkReferences(value: unknown, context: z.RefinementCtx): void {
  const problem: Problem = (path, message, atKey = false) =>
    context.addIssue({ code: "custom", path: [...path], message, params: { atKey } });
  const file = isRecord(value) ? value : {};

  const environments = ferryFileObject.shape.environments.safeParse(file.environments);
  const environmentNames = new Map<string, string>();
  if (environments.success) {
    environments.data.forEach((environment, index) => {
      if (environmentNames.has(environment.slug)) {
        problem(["environments", index], `environment '${environment.slug}' is listed twice`);
      }
      environmentNames.set(environment.slug, environment.name);
    });
  }
  const checkEnvironment = (path: Path, reference: unknown) => {
    if (!environments.success || typeof reference !== "string" || environmentNames.has(reference)) return;
    problem(
      path,
      `no environment '${reference}' under environments; refer to one by its slug: ${[...environmentNames.keys()].join(", ")}`,
    );
  };

  checkLifecycle(file.lifecycle, environments.success ? environmentNames : undefined, checkEnvironment, problem);

  const feeds = ferryFileObject.shape.feeds.safeParse(file.feeds);
  const feedSlugs = new Set<string>();
  if (feeds.success) {
    feeds.data.forEach((feed, index) => {
      if (feedSlugs.has(feed.slug)) problem(["feeds", index, "name"], `feed '${feed.slug}' is listed twice`);
      feedSlugs.add(feed.slug);
    });
  }

  const targetSlugs = new Set<string>();
  listAt(file, "targets").forEach((target, index) => {
    listAt(target, "environments").forEach((reference, position) => {
      checkEnvironment(["targets", index, "environments", position], reference);
    });
    const parsed = targetFileSchema.safeParse(target);
    if (!parsed.success) return;
    if (targetSlugs.has(parsed.data.slug))
      problem(["targets", index, "name"], `target '${parsed.data.slug}' is listed twice`);
    targetSlugs.add(parsed.data.slug);
  });

  const imageNames = new Set<string>();
  listAt(file, "images").forEach((image, index) => {
    const feed = field(image, "feed");
    if (feeds.success && typeof feed === "string" && !feedSlugs.has(feed)) {
      const known = [...feedSlugs].join(", ") || "(none: add the feed under feeds)";
      problem(["images", index, "feed"], `no feed '${feed}' under feeds; refer to one by its slug: ${known}`);
    }
    const name = field(image, "name");
    if (typeof name !== "string") return;
    if (imageNames.has(name)) problem(["images", index, "name"], `image '${name}' is listed twice`);
    imageNames.add(name);
  });

  const checkVariables = (variables: unknown[], path: Path) => {
    const variableKeys = new Set<string>();
    variables.forEach((variable, index) => {
      listAt(field(variable, "scope"), "environments").forEach((reference, position) => {
        checkEnvironment([...path, index, "scope", "environments", position], reference);
      });
      const parsed = variableFileSchema.safeParse(variable);
      if (!parsed.success) return;
      const key = variableKey(parsed.data.name, parsed.data.scope);
      if (variableKeys.has(key)) {
        problem([...path, index], `variable '${parsed.data.name}' is listed twice with the same scope`);
      }
      variableKeys.add(key);
    });
  };
  checkVariables(listAt(file, "variables"), ["variables"]);
  const setSlugs = new Set<string>();
  listAt(file, "variableSets").forEach((set, index) => {
    checkVariables(listAt(set, "variables"), ["variableSets", index, "variables"]);
    const parsed = variableSetFileSchema.safeParse(set);
    if (!parsed.success) return;
    if (setSlugs.has(parsed.data.slug)) {
      problem(["variableSets", index, "name"], `variable set '${parsed.data.slug}' is listed twice`);
    }
    setSlugs.add(parsed.data.slug);
  });
  const included = new Set<unknown>();
  listAt(field(file, "project"), "variableSets").forEach((reference, index) => {
    if (included.has(reference)) {
      problem(["project", "variableSets", index], `variable set '${String(reference)}' is included twice`);
    }
    included.add(reference);
  });

  listAt(file, "steps").forEach((step, index) => {
    for (const list of ["environments", "excludeEnvironments"]) {
      listAt(step, list).forEach((reference, position) => {
        checkEnvironment(["steps", index, list, position], reference);
      });
    }
    checkStepConfig(step, ["steps", index], problem);
  });

  const webhookUrls = new Set<unknown>();
  listAt(file, "webhooks").forEach((webhook, index) => {
    const url = field(webhook, "url");
    if (webhookUrls.has(url)) problem(["webhooks", index, "url"], "this URL is listed twice; list each webhook once");
    webhookUrls.add(url);
  });
  const grants = new Set<string>();
  listAt(file, "teams").forEach((grant, index) => {
    listAt(grant, "environments").forEach((reference, position) => {
      checkEnvironment(["teams", index, "environments", position], reference);
    });
    const parsed = teamGrantFileSchema.safeParse(grant);
    if (!parsed.success) return;
    const key = JSON.stringify([parsed.data.team, parsed.data.role, [...(parsed.data.environments ?? [])].sort()]);
    if (grants.has(key)) {
      problem(["teams", index], `role '${parsed.data.role}' is granted to team '${parsed.data.team}' twice alike`);
    }
    grants.add(key);
  });

  const runbookSlugs = new Set<string>();
  listAt(file, "runbooks").forEach((runbook, index) => {
    const parsed = runbookFileSchema.safeParse(runbook);
    if (parsed.success) {
      if (runbookSlugs.has(parsed.data.slug))
        problem(["runbooks", index], `runbook '${parsed.data.slug}' is listed twice`);
      runbookSlugs.add(parsed.data.slug);
    }
    listAt(runbook, "environments").forEach((reference, position) => {
      checkEnvironment(["runbooks", index, "environments", position], reference);
    });
    listAt(runbook, "steps").forEach((step, stepIndex) => {
      checkStepConfig(step, ["runbooks", index, "steps", stepIndex], problem);
    });
    listAt(runbook, "schedules").forEach((schedule, position) => {
      const environment = (schedule as { environment?: unknown } | null)?.environment;
      if (environment !== undefined)
        checkEnvironment(["runbooks", index, "schedules", position, "environment"], environment);
    });
    for (const list of ["retention", "artifactRetention"]) {
      listAt(runbook, list).forEach((policy, position) => {
        const environment = (policy as { environment?: unknown } | null)?.environment;
        if (environment !== undefined && environment !== "*") {
          checkEnvironment(["runbooks", index, list, position, "environment"], environment);
        }
      });
    }
  });
}

function checkLifecycle(
  lifecycle: unknown,
  environmentNames: ReadonlyMap<string, string> | undefined,
  checkEnvironment: (path: Path, reference: unknown) => void,
  problem: Problem,
): void {
  const phases = listAt(lifecycle, "phases");
  phases.forEach((phase, index) => {
    listAt(phase, "environments").forEach((reference, position) => {
      checkEnvironment(["lifecycle", "phases", index, "environments", position], reference);
    });
  });
  const parsed = lifecycleFileSchema.safeParse(lifecycle);
  if (!parsed.success || !environmentNames) return;
  if (parsed.data.phases.some((phase) => phase.environments.some((slug) => !environmentNames.has(slug)))) return;
  // The API's own rules (an environment in one phase only, phase names unique), checked here
  // so the problem points at a line of the file.
  const resolved = parsed.data.phases.map((phase) => ({
    name: phase.name ?? environmentNames.get(phase.environments[0] ?? "") ?? "",
    environmentIds: phase.environments,
    autoDeploy: phase.autoDeploy,
    optional: phase.optional,
  }));
  for (const issue of checkPhases(resolved)) problem(["lifecycle", ...fromJsonPointer(issue.pointer)], issue.detail);
}

const emptyStep: Step = {
  name: "step",
  kind: "",
  roles: [],
  environments: [],
  excludeEnvironments: [],
  condition: "success",
  required: true,
  config: {},
};

/** A step's config, checked by its kind's schema (the one the API uses), with paths into the file. */
function checkStepConfig(step: unknown, path: Path, problem: Problem): void {
  const kindName = field(step, "kind");
  if (typeof kindName !== "string" || kindName === "") return;
  const kind = stepKind(kindName);
  if (!kind) {
    // validateSteps words this one (it lists the kinds there are).
    try {
      validateSteps([{ ...emptyStep, kind: kindName }]);
    } catch (error) {
      if (!(error instanceof InputError)) throw error;
      for (const issue of error.issues) problem([...path, ...fromJsonPointer(issue.pointer).slice(2)], issue.detail);
    }
    return;
  }
  const config = field(step, "config") ?? {};
  if (!isRecord(config)) return; // the envelope's schema reports that config is not an object
  const result = kind.config.safeParse(config, { error: friendlyMessage });
  if (result.success) return;
  for (const issue of explainIssues(result.error.issues)) {
    problem([...path, "config", ...issue.path], issue.detail, issue.atKey);
  }
}

/** Two variables may share a name only with different scopes (the API's rule). */
export function variableKey(
  name: string,
  scope: { environments: string[]; roles: string[]; targets: string[] },
): string {
  const part = (values: readonly string[]) => [...new Set(values)].sort().join(",");
  return `${name}|e=${part(scope.environments)}|r=${part(scope.roles)}|t=${part(scope.targets)}`;
}
