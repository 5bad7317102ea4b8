/**
 * The files a step substitutes variables into (issue 16 part 4, ADR 0051): one shape every
 * step kind that deploys files carries in its envelope (`files:`), so the engine handles
 * them in one place. A file is either a template captured into the process (`content`: the
 * text of a file beside ferry.yml, read by `ferry apply`; a release snapshots the process,
 * so a later edit never changes an existing release) or a file inside the package the step
 * unpacks (`package`). Rendering turns text into text here; where it is written is the
 * engine's (steps/stepFiles.ts).
 */
import { z } from "zod";
import {
  FileSubstitutionError,
  renderTemplateFile,
  replaceJsonPaths,
  replaceYamlPaths,
  splitKeyPath,
} from "./fileSubstitution.js";
import { packageNameSchema } from "./packages.js";
import { renderTemplate, TemplateError, type VariableLookup } from "./templates.js";

/** The most text one template file holds: what a ferry.yml secret reference carries (64 KiB). */
export const MAX_STEP_FILE_BYTES = 64 * 1024;
/** The most files one step substitutes. */
const MAX_STEP_FILES = 20;

/** A relative path without `..`: beside ferry.yml, or inside a package. */
const relativePathSchema = z
  .string()
  .min(1)
  .max(500)
  .refine((path) => !path.startsWith("/") && !path.split("/").some((segment) => segment === ".." || segment === ""), {
    message: "write a relative path without '..' or empty segments (config/appsettings.json)",
  });

export const stepFileSchema = z
  .strictObject({
    /**
     * The file's path: relative to ferry.yml (its text is captured into `content` by `ferry
     * apply`), or inside the package with `package`. Named in errors and the log.
     */
    file: relativePathSchema.describe("The template file: relative to ferry.yml, or inside the package with `package`"),
    /** The template's text, as captured when the process was saved (never a rendered value). */
    content: z
      .string()
      .max(MAX_STEP_FILE_BYTES, { message: `a template file holds at most ${MAX_STEP_FILE_BYTES / 1024} KiB` })
      .optional()
      .describe("The template's text (ferry apply fills it from the file beside ferry.yml)"),
    /** The file is in this package (the one the `package` step unpacks), not beside ferry.yml. */
    package: packageNameSchema.optional().describe("The file is inside this package's unpacked directory"),
    /**
     * Where the rendered file is written on the target (a template): absolute, or relative to
     * the unpacked package's directory on a `package` step. Absent on a package's file: in place.
     */
    path: z.string().min(1).max(1000).optional().describe("Where the rendered file goes on the target (a template)"),
    /** Render `#{…}` in the whole text (default); false: only the key-path replacements. */
    substitute: z.boolean().default(true).describe("Render #{…} templates in the whole file"),
    /** Key path (Logging:Level, services.web.image) → value template, for JSON and YAML files. */
    replace: z
      .record(z.string().min(1).max(500), z.string().max(8192))
      .default({})
      .describe("Structured replacement: key path (Logging:Level or services.web.image) → value template")
      .superRefine((replace, context) => {
        for (const path of Object.keys(replace)) {
          try {
            splitKeyPath(path);
          } catch (error) {
            context.addIssue({ code: "custom", path: [path], message: (error as Error).message });
          }
        }
      }),
  })
  .superRefine((file, context) => {
    if (file.content !== undefined && file.package !== undefined) {
      context.addIssue({
        code: "custom",
        path: ["package"],
        message: "a file comes either from beside ferry.yml (content) or from a package: leave one out",
      });
    }
    if (Object.keys(file.replace).length > 0 && formatOf(file.file) === undefined) {
      context.addIssue({
        code: "custom",
        path: ["replace"],
        message: "key-path replacement works on .json, .yml and .yaml files; rename the file or use #{…} in it",
      });
    }
  });
export type StepFile = z.infer<typeof stepFileSchema>;

export const stepFilesSchema = z
  .array(stepFileSchema)
  .max(MAX_STEP_FILES, { message: `at most ${MAX_STEP_FILES} files per step` })
  .describe("Template files the step renders with the deployment's variables and writes to its target");

function formatOf(file: string): "json" | "yaml" | undefined {
  if (/\.json$/i.test(file)) return "json";
  if (/\.ya?ml$/i.test(file)) return "yaml";
  return undefined;
}

/**
 * The file rendered for one target: `#{…}` in the whole text (unless substitute is false),
 * then each key path replaced with its rendered value. Errors name the file, the line or
 * key path and the variable, never a value.
 */
export function substituteStepFile(file: StepFile, text: string, variables: VariableLookup): string {
  let result = file.substitute ? renderTemplateFile(file.file, text, variables) : text;
  const entries = Object.entries(file.replace);
  if (entries.length === 0) return result;
  const replacements = new Map<string, string>();
  for (const [path, template] of entries) {
    try {
      replacements.set(path, renderTemplate(template, variables));
    } catch (error) {
      if (!(error instanceof TemplateError)) throw error;
      const names = error.missing.map((name) => `'${name}'`).join(", ");
      throw new FileSubstitutionError(
        error.missing.length > 0
          ? `${file.file}: the replacement for '${path}' names ${names}, not defined for this deployment; define it for this scope`
          : `${file.file}: the replacement for '${path}': ${error.message}`,
        file.file,
        undefined,
        error.missing,
      );
    }
  }
  result =
    formatOf(file.file) === "json"
      ? replaceJsonPaths(file.file, result, replacements)
      : replaceYamlPaths(file.file, result, replacements);
  return result;
}

/** What `ferry plan` says about a step's files: names and destinations, never content. */
export function describeStepFile(file: StepFile, render: (template: string) => string): string {
  const from = file.package ? `package ${file.package}'s ${file.file}` : file.file;
  const replaced = Object.keys(file.replace);
  const how = [
    ...(file.substitute ? ["#{…} substituted"] : []),
    ...(replaced.length > 0 ? [`${replaced.join(", ")} replaced`] : []),
  ].join(", ");
  const where = file.path ? render(file.path) : file.package ? "in place" : "(no path)";
  return `write ${from} (${how || "as is"}) to ${where}`;
}
