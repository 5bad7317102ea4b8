import type { FastifyInstance, FastifyRequest } from "fastify";
import { z } from "zod";
import { ApiClient } from "../cli/client.js";
import { OperationError } from "../cli/errors.js";
import { keyFileSecret } from "../config/secretNames.js";
import {
  ConflictError,
  type FerryError,
  ForbiddenError,
  InputError,
  NotFoundError,
  UnauthenticatedError,
} from "../domain/errors.js";
import { inOneTransaction } from "../store/ambientTransaction.js";
import type { StoreContext } from "../store/common.js";
import { defineRoute, type RouteSpec } from "./route.js";

/**
 * `ferry plan -f` and `ferry apply -f` on the server (ADR 0040): the files' changes are made
 * by the same code as before (src/config/apply.ts, through the API's own routes, so every
 * permission, validation and audit entry is the one a person's request would get), but all
 * of them inside one database transaction: a refusal anywhere undoes everything before it,
 * and a plan is an apply that is always rolled back — what it reports is exactly what
 * apply would do.
 *
 * Secrets travel in the body (as `ferry apply` sent them before, one request each), named by
 * the environment variable or file the ferry.yml refers to; they are neither logged nor
 * audited (the route's audit entry has no body) nor answered.
 */

const MAX_FILES = 50;

const fileSchema = z.strictObject({
  name: z.string().min(1).max(4096).describe("The file's name, used in error messages (file:line:column)"),
  text: z
    .string()
    .max(1024 * 1024)
    .describe("The ferry.yml's text"),
});

const configRequestSchema = z.strictObject({
  files: z
    .array(fileSchema)
    .min(1, { message: "send at least one ferry.yml" })
    .max(MAX_FILES, { message: `at most ${MAX_FILES} files at once; apply the rest separately` }),
  secrets: z
    .record(
      z.string().min(1).max(4096),
      z
        .string()
        .min(1)
        .max(64 * 1024),
    )
    .default({})
    .describe(
      "Values of the secrets the files refer to: 'NAME' for valueFrom/passwordFrom/passphraseFrom { env: NAME }, 'file:<file name>:PATH' for privateKeyFrom { file: PATH }",
    ),
  updateSecrets: z.boolean().default(false).describe("Write stored secrets again from `secrets` (rotation)"),
  prune: z.boolean().default(false).describe("Also delete the runbooks of each project its file does not list"),
});
export type ConfigRequest = z.input<typeof configRequestSchema>;

const fieldChangeSchema = z.object({
  field: z.string(),
  from: z.unknown().optional(),
  to: z.unknown().optional(),
  sensitive: z.literal(true).optional(),
});

const changeSchema = z.object({
  file: z.string(),
  action: z.enum(["created", "updated", "deleted", "unchanged", "skipped"]),
  resource: z.string(),
  name: z.string(),
  detail: z.string().optional(),
  warning: z.string().optional(),
  fields: z.array(fieldChangeSchema).optional(),
});

const configResultSchema = z.object({
  applied: z.boolean().describe("False for a plan: nothing was changed"),
  changes: z.array(changeSchema),
});
export type ConfigResult = z.infer<typeof configResultSchema>;

/** Plan and apply of ferry.yml files; `app` answers the requests apply replays. */
export function configRoutes(context: StoreContext, app: () => FastifyInstance): RouteSpec[] {
  const run =
    (commit: boolean) => async (input: { body: z.output<typeof configRequestSchema>; request: FastifyRequest }) =>
      applyFiles(context, app(), input.request, input.body, commit);
  return [
    defineRoute({
      method: "POST",
      path: "/api/v1/config/plan",
      tag: "Config",
      summary: "What applying these ferry.yml files would change (field by field; secrets only as 'changed')",
      // Each change it tries is authorised as the caller's own request would be.
      access: { kind: "signedIn" },
      body: configRequestSchema,
      response: configResultSchema,
      audit: { action: "config.plan", change: ({ body }) => ({ resource: filesResource(body) }) },
      handler: run(false),
    }),
    defineRoute({
      method: "POST",
      path: "/api/v1/config/apply",
      tag: "Config",
      summary: "Apply ferry.yml files: all of them or nothing, in one transaction",
      access: { kind: "signedIn" },
      body: configRequestSchema,
      response: configResultSchema,
      audit: { action: "config.apply", change: ({ body }) => ({ resource: filesResource(body) }) },
      handler: run(true),
    }),
  ];
}

function filesResource(body: unknown) {
  const files = (body as { files?: { name: string }[] } | undefined)?.files ?? [];
  return { type: "config", name: files.map((file) => file.name).join(", ") };
}

async function applyFiles(
  context: StoreContext,
  app: FastifyInstance,
  request: FastifyRequest,
  body: z.output<typeof configRequestSchema>,
  commit: boolean,
): Promise<ConfigResult> {
  // Loaded on first use: only plan and apply need the YAML parser.
  const { parseFerryFile } = await import("../config/ferryFile.js");
  const { applyFerryFile } = await import("../config/apply.js");
  const problems: string[] = [];
  const parsed = body.files.flatMap((file) => {
    try {
      return [{ name: file.name, config: parseFerryFile(file.text, file.name) }];
    } catch (error) {
      if (!(error instanceof InputError)) throw error;
      problems.push(error.message);
      return [];
    }
  });
  if (problems.length > 0) throw new InputError(problems.join("\n"));
  const client = new InjectClient(app, request);
  const secrets = body.secrets;
  const changes: ConfigResult["changes"] = [];
  try {
    await inOneTransaction(
      context.db,
      async () => {
        for (const { name, config } of parsed) {
          const fileChanges = await applyFerryFile(client, config, secrets, {
            updateSecrets: body.updateSecrets,
            prune: body.prune,
            atomic: true,
            readFile: async (path) => secrets[keyFileSecret(name, path)],
          });
          changes.push(...fileChanges.map((change) => ({ file: name, ...change })));
        }
        // Files that describe a shared thing (an environment, a lifecycle…) differently would
        // leave it as the last one says, and the next apply of the other would change it back.
        // Each file applied again over the result must change nothing.
        if (parsed.length > 1) {
          for (const { name, config } of parsed) {
            const again = await applyFerryFile(client, config, secrets, {
              atomic: true,
              readFile: async (path) => secrets[keyFileSecret(name, path)],
            });
            const undone = again.filter((change) => change.action !== "unchanged" && change.action !== "skipped");
            if (undone.length > 0) {
              throw new ConflictError(
                `the files contradict each other: applied after the others, ${name} would change ${undone.map((change) => `${change.resource} ${change.name}${change.fields?.length ? ` (${change.fields.map((field) => field.field).join(", ")})` : ""}`).join("; ")} back; nothing was changed: make the files agree, or describe each shared thing in one file only`,
              );
            }
          }
        }
      },
      { commit },
    );
  } catch (error) {
    if (error instanceof OperationError) throw refusal(error);
    throw error;
  }
  return { applied: commit, changes };
}

/** The refusal of a replayed request, as the domain error of the same kind (and status). */
function refusal(error: OperationError): FerryError | Error {
  const message = [error.message, ...error.details].join("\n");
  switch (error.status) {
    case 400:
      return new InputError(message);
    case 401:
      return new UnauthenticatedError(message);
    case 403:
      return new ForbiddenError(message);
    case 404:
      return new NotFoundError(message);
    case 409:
      return new ConflictError(message);
    default:
      // Not a refusal of the change itself (the server failed): answered as the server error it is.
      return new ApplyFailedError(message);
  }
}

/** A replayed request failed for a reason other than a refusal; the rolled-back apply answers 500. */
class ApplyFailedError extends Error {}

/**
 * An API client whose requests are answered in this process by the server's own routes,
 * with the caller's credentials, inside the caller's async context (and so inside its
 * transaction).
 */
class InjectClient extends ApiClient {
  private readonly credentials: Record<string, string>;

  constructor(
    private readonly app: FastifyInstance,
    private readonly caller: FastifyRequest,
  ) {
    super("http://ferry.invalid", undefined);
    const credentials: Record<string, string> = {};
    for (const header of ["authorization", "cookie", "x-csrf-token", "origin", "host"]) {
      const value = caller.headers[header];
      if (typeof value === "string") credentials[header] = value;
    }
    this.credentials = credentials;
  }

  protected override async send(method: string, path: string, body: unknown, _timeoutMs: number) {
    const response = await this.app.inject({
      method: method as "GET",
      url: path,
      remoteAddress: this.caller.ip,
      headers: {
        accept: "application/json, application/problem+json",
        ...this.credentials,
        ...(body !== undefined && { "content-type": "application/json" }),
      },
      ...(body !== undefined && { payload: JSON.stringify(body) }),
    });
    return { status: response.statusCode, text: response.body };
  }
}
