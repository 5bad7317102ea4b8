import { z } from "zod";
import { type Artifact, type ArtifactRetention, artifactRetentionSchema, artifactSchema } from "../domain/artifacts.js";
import { NotFoundError } from "../domain/errors.js";
import type { ArtifactRetention as Retention } from "../engine/artifactRetention.js";
import type { ArtifactService } from "../engine/artifacts.js";
import { getArtifactRetention, setArtifactRetention } from "../store/artifactRetention.js";
import { getArtifactRow, listTaskArtifacts, toArtifact } from "../store/artifacts.js";
import type { StoreContext } from "../store/common.js";
import { getRunbook } from "../store/runbooks.js";
import { getTaskRow } from "../store/tasks.js";
import { checkRunbookScope } from "./editScope.js";
import { defineRoute, pathParams, type RouteSpec } from "./route.js";

/**
 * Artifacts (ADR 0037): listed by task, shown and downloaded by id. Each needs `view` on
 * the task's project and environment; an artifact the caller may not view answers 404 with
 * the words of a missing one, so ids cannot be probed.
 */
export function artifactRoutes(
  context: StoreContext,
  artifacts: ArtifactService,
  retention: Retention | undefined,
): RouteSpec[] {
  const { db } = context;
  /** The artifact, if the caller may view it; otherwise the same 404 as for none. */
  const visibleArtifact = async (reference: string, allows: (artifact: Artifact) => boolean) => {
    const row = await getArtifactRow(db, reference);
    const artifact = toArtifact(row);
    if (!allows(artifact))
      throw new NotFoundError(`no artifact '${reference}'; list a task's with 'ferry artifact list --task <task>'`);
    return { row, artifact };
  };
  return [
    defineRoute({
      method: "GET",
      path: "/api/v1/tasks/:task/artifacts",
      tag: "Artifacts",
      summary: "The files a task's steps attached, in the order they were attached",
      access: { kind: "task", permission: "view", task: (params) => params.task },
      params: pathParams("task"),
      response: z.array(artifactSchema),
      handler: async ({ params }) => {
        const task = await getTaskRow(db, params.task);
        return (await listTaskArtifacts(db, task.id)).map(toArtifact);
      },
    }),
    defineRoute({
      method: "GET",
      path: "/api/v1/artifacts/:artifact",
      tag: "Artifacts",
      summary: "Show an artifact: its name, size, SHA-256, task, step and target",
      access: { kind: "filtered" },
      params: pathParams("artifact"),
      response: artifactSchema,
      handler: async ({ params, access }) =>
        (
          await visibleArtifact(params.artifact, (artifact) =>
            access.allows({ permission: "view", project: artifact.projectId, environment: artifact.environmentId }),
          )
        ).artifact,
    }),
    defineRoute({
      method: "GET",
      path: "/api/v1/artifacts/:artifact/content",
      tag: "Artifacts",
      summary:
        "Download an artifact's bytes (application/octet-stream, streamed; Content-Length, ETag and Repr-Digest carry its size and SHA-256)",
      access: { kind: "filtered" },
      params: pathParams("artifact"),
      // A download may take long: like an event stream, it does not hold one of its client's turns.
      unqueued: true,
      handler: async ({ params, access, reply }) => {
        const { row, artifact } = await visibleArtifact(params.artifact, (candidate) =>
          access.allows({ permission: "view", project: candidate.projectId, environment: candidate.environmentId }),
        );
        const stream = artifacts.content.read(row.location);
        reply
          .header("content-type", "application/octet-stream")
          .header("content-length", String(artifact.size))
          // The name is validated (ADR 0037): a plain file name, safe inside quotes.
          .header("content-disposition", `attachment; filename="${artifact.name}"`)
          .header("etag", `"${artifact.sha256}"`)
          .header("repr-digest", `sha-256=:${Buffer.from(artifact.sha256, "hex").toString("base64")}:`)
          .header("cache-control", "private, no-store");
        return stream;
      },
    }),
    defineRoute({
      method: "GET",
      path: "/api/v1/projects/:project/runbooks/:runbook/artifact-retention",
      tag: "Artifacts",
      summary: "How long a runbook's artifacts are kept, per environment",
      access: { kind: "project", permission: "view", project: (params) => params.project },
      params: pathParams("project", "runbook"),
      response: artifactRetentionSchema,
      handler: ({ params }) => getArtifactRetention(context, params.project, params.runbook),
    }),
    defineRoute({
      method: "PUT",
      path: "/api/v1/projects/:project/runbooks/:runbook/artifact-retention",
      tag: "Artifacts",
      summary:
        "Replace how long a runbook's artifacts are kept: per environment (or *), the newest keepRuns runs' and none older than keepDays, never the newest successful run's",
      access: { kind: "project", permission: "editRunbooks", project: (params) => params.project },
      params: pathParams("project", "runbook"),
      body: artifactRetentionSchema,
      response: artifactRetentionSchema,
      audit: {
        action: "runbook.artifactRetention",
        change: ({ params, result }) => ({
          resource: { type: "runbook", id: `${params.project}/${params.runbook}`, name: params.runbook },
          after: result as ArtifactRetention,
        }),
      },
      handler: async ({ params, body, access }) => {
        // Retention deletes a runbook's artifacts: editRunbooks wherever the runbook runs (ADR 0064).
        await checkRunbookScope(
          context,
          access,
          params.project,
          await getRunbook(context, params.project, params.runbook),
        );
        const saved = await setArtifactRetention(context, params.project, params.runbook, body);
        // Applied now, not at the next sweep: someone who lowers a limit expects the space back.
        await retention?.sweep();
        return saved;
      },
    }),
  ];
}
