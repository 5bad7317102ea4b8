import { z } from "zod";
import { ComposeFileError, loadComposeApplication, parseComposeText } from "./composeFile.js";

/*
 * The compose and compose-down steps' configuration. The Compose file is inline: YAML text
 * (`compose: |`) or the same as a mapping. It is checked when the process is saved (the
 * specification's schema, then the keys Ferry supports), and again once rendered.
 */

/** A Compose project name: what Ferry prefixes the application's networks, volumes and containers with. */
const projectNameSchema = z
  .string()
  .min(1)
  .max(100)
  .describe("template; rendered it must be lowercase letters, digits, '_' and '-', starting with a letter or digit");

const composeDocumentSchema = z.union([
  z
    .string()
    .min(1)
    .max(1024 * 1024),
  z.record(z.string(), z.unknown()),
]);

export const composeConfigSchema = z
  .strictObject({
    /**
     * The Compose file: YAML text or a mapping. `#{…}` templates are rendered in its string
     * values (after the YAML is read, so a value can never add keys); quote them in YAML text.
     */
    compose: composeDocumentSchema.optional(),
    /**
     * Instead of `compose`: the step's template file (one of its `files:`, captured from
     * beside ferry.yml, ADR 0051) that is the Compose file. Its text is read like `compose`.
     */
    composeFile: z
      .string()
      .min(1)
      .max(500)
      .optional()
      .describe("The Compose file is this one of the step's files: (e.g. docker-compose.yml beside ferry.yml)"),
    /** Template of the Compose project name; default "<project>-<environment>". */
    projectName: projectNameSchema.optional(),
    /** A new container must still be running this long after it started, or the step fails with its log. */
    settleSeconds: z.number().min(0).max(300).default(1),
    /** How long a service waited for (`condition: service_healthy`) has to become healthy. */
    healthyWithinSeconds: z.number().min(1).max(3600).default(120),
    /** How long a replaced container gets to stop after SIGTERM before it is killed. */
    stopTimeoutSeconds: z.number().int().min(0).max(600).default(10),
    pullTimeoutSeconds: z.number().int().min(1).max(3600).default(600),
  })
  .superRefine((config, context) => {
    if ((config.compose === undefined) === (config.composeFile === undefined)) {
      context.addIssue({
        code: "custom",
        path: ["compose"],
        message: "give the Compose file inline (compose) or name one of the step's files (composeFile), not both",
      });
      return;
    }
    if (config.compose === undefined) return;
    try {
      loadComposeApplication(composeDocument(config.compose));
    } catch (error) {
      if (!(error instanceof ComposeFileError)) throw error;
      for (const issue of error.issues) {
        context.addIssue({
          code: "custom",
          path: ["compose", ...issue.pointer.split("/").filter((part) => part !== "")],
          message: issue.detail,
        });
      }
    }
  });
export type ComposeConfig = z.infer<typeof composeConfigSchema>;

export const composeDownConfigSchema = z.strictObject({
  /** Template of the Compose project name the compose step used; default "<project>-<environment>". */
  projectName: projectNameSchema.optional(),
  /** Also delete the application's named volumes and their data (kept by default). */
  removeVolumes: z.boolean().default(false),
  stopTimeoutSeconds: z.number().int().min(0).max(600).default(10),
});
export type ComposeDownConfig = z.infer<typeof composeDownConfigSchema>;

/** The Compose file as a plain document (YAML text read; a mapping as it is). */
export function composeDocument(compose: NonNullable<ComposeConfig["compose"]>): unknown {
  return typeof compose === "string" ? parseComposeText(compose) : compose;
}

/** The problems of a Compose file's text (a step's `composeFile`), as pointers into it. */
export function composeFileIssues(text: string): { pointer: string; detail: string }[] {
  try {
    loadComposeApplication(composeDocument(text));
    return [];
  } catch (error) {
    if (!(error instanceof ComposeFileError)) throw error;
    return error.issues.map((issue) => ({ pointer: issue.pointer, detail: issue.detail }));
  }
}
