import { z } from "zod";
import type { Reach } from "../domain/access.js";
import { slugify } from "../domain/common.js";
import { ConflictError, type FieldIssue, InputError, NotFoundError } from "../domain/errors.js";
import { type PinnedImage, type PinnedPackage, releaseSnapshotSchema } from "../domain/releases.js";
import {
  type CreateRunbook,
  MASKED,
  type Runbook,
  type RunbookDefinition,
  type RunbookRunSummary,
  storedRunbookDefinitionSchema,
  type TaskRunbookRun,
  type UpdateRunbook,
} from "../domain/runbooks.js";
import {
  type Executor,
  findNamed,
  newId,
  nowIso,
  reachCondition,
  type StoreContext,
  translateUniqueViolation,
} from "./common.js";
import { pinPackages } from "./packages.js";
import { snapshotVariables } from "./releases.js";
import type { RunbookRow, RunbookSnapshotRow } from "./schema.js";

/*
 * Runbooks: the draft editors change, the snapshots runs execute (published versions and
 * the one-off snapshots of draft runs), and the runs themselves.
 */

/**
 * What a run executes: the definition, the project's variables (sensitive ones sealed) and
 * the image and package versions pinned when the snapshot was taken (ADR 0068; snapshots
 * taken before pinning have none).
 */
const runbookSnapshotSchema = z.object({
  definition: storedRunbookDefinitionSchema,
  variables: releaseSnapshotSchema.shape.variables,
  images: releaseSnapshotSchema.shape.images,
  packages: releaseSnapshotSchema.shape.packages,
});
type RunbookSnapshot = z.infer<typeof runbookSnapshotSchema>;

const sealedSnapshotVariable = (snapshotId: string, index: number) =>
  `runbook-snapshot:${snapshotId}:variable:${index}`;
/** A sensitive parameter value is bound to its run and name: it cannot be moved to another. */
export const sealedParameterContext = (runId: string, name: string) => `runbook-run:${runId}:parameter:${name}`;

function definitionOf(row: RunbookRow): RunbookDefinition {
  return storedRunbookDefinitionSchema.parse(JSON.parse(row.draft));
}

/** The versions a snapshot pins, as answers show them (no feed ids, no package ids). */
function shownVersions(snapshot: { images: readonly PinnedImage[]; packages: readonly PinnedPackage[] }) {
  return {
    images: snapshot.images.map(({ name, tag, digest, reference }) => ({ name, tag, digest, reference })),
    packages: snapshot.packages.map(({ name, version, sha256, size }) => ({ name, version, sha256, size })),
  };
}

/**
 * What a snapshot pins besides the definition: the images pinned by digest before the
 * transaction (registry calls never happen inside one), and the package versions asked for
 * (the newest when not named), pinned inside it.
 */
export interface SnapshotPins {
  images: PinnedImage[];
  packages: Readonly<Record<string, string>>;
}

async function toRunbook(db: Executor, row: RunbookRow, projectSlug: string): Promise<Runbook> {
  const definition = definitionOf(row);
  const published = row.published_snapshot_id
    ? await db
        .selectFrom("runbook_snapshots")
        .select(["version", "snapshot", "created_by", "created_at"])
        .where("id", "=", row.published_snapshot_id)
        .executeTakeFirst()
    : undefined;
  const publishedSnapshot = published ? runbookSnapshotSchema.parse(JSON.parse(published.snapshot)) : undefined;
  return {
    id: row.id,
    project: projectSlug,
    slug: row.slug,
    name: row.name,
    ...definition,
    published:
      published && publishedSnapshot
        ? {
            version: Number(published.version),
            publishedBy: published.created_by,
            publishedAt: published.created_at,
            // What runs execute; the snapshot's variables (sealed) stay out of answers.
            ...publishedSnapshot.definition,
            ...shownVersions(publishedSnapshot),
          }
        : null,
    draftChanged: row.draft_changed === 1,
    updatedBy: row.updated_by,
    createdAt: row.created_at,
    updatedAt: row.updated_at,
  };
}

/** A project's runbook by id or slug, or NotFoundError saying how to list them. */
export async function getRunbookRow(db: Executor, projectId: string, reference: string): Promise<RunbookRow> {
  const row = await db
    .selectFrom("runbooks")
    .selectAll()
    .where("project_id", "=", projectId)
    .where((eb) => eb.or([eb("id", "=", reference), eb("slug", "=", reference)]))
    .executeTakeFirst();
  if (!row) throw new NotFoundError(`no runbook '${reference}' in this project; list them with 'ferry runbook list'`);
  return row;
}

export async function listRunbooks({ db }: StoreContext, projectReference: string): Promise<Runbook[]> {
  const project = await findNamed(db, "projects", projectReference);
  const rows = await db
    .selectFrom("runbooks")
    .selectAll()
    .where("project_id", "=", project.id)
    .orderBy("name")
    .execute();
  return Promise.all(rows.map((row) => toRunbook(db, row, project.slug)));
}

export async function getRunbook({ db }: StoreContext, projectReference: string, reference: string): Promise<Runbook> {
  const project = await findNamed(db, "projects", projectReference);
  return toRunbook(db, await getRunbookRow(db, project.id, reference), project.slug);
}

/** Refuses environment slugs that do not exist, each at its index. */
async function checkEnvironments(db: Executor, slugs: readonly string[]): Promise<void> {
  if (slugs.length === 0) return;
  const known = new Set(
    (
      await db
        .selectFrom("environments")
        .select("slug")
        .where("slug", "in", [...slugs])
        .execute()
    ).map((row) => row.slug),
  );
  const issues: FieldIssue[] = slugs.flatMap((slug, index) =>
    known.has(slug)
      ? []
      : [{ pointer: `/environments/${index}`, detail: `no environment '${slug}' ('ferry env list')` }],
  );
  if (issues.length > 0) throw new InputError("the runbook names environments that do not exist", issues);
}

export async function createRunbook(
  { db }: StoreContext,
  projectReference: string,
  input: CreateRunbook,
  createdBy: string,
): Promise<Runbook> {
  const project = await findNamed(db, "projects", projectReference);
  await checkEnvironments(db, input.environments);
  const { name, slug, ...definition } = input;
  const now = nowIso();
  const row: RunbookRow = {
    id: newId("rb"),
    project_id: project.id,
    slug: slug ?? slugify(name),
    name,
    draft: JSON.stringify(definition),
    draft_changed: 1,
    published_snapshot_id: null,
    updated_by: createdBy,
    created_at: now,
    updated_at: now,
  };
  await translateUniqueViolation(
    `project '${project.slug}' already has a runbook named '${name}' or with slug '${row.slug}'; choose another name`,
    () => db.insertInto("runbooks").values(row).execute(),
  );
  return toRunbook(db, row, project.slug);
}

/** Changes the draft: what runs execute stays the published snapshot until the next publish. */
export async function updateRunbook(
  { db }: StoreContext,
  projectReference: string,
  reference: string,
  patch: UpdateRunbook,
  updatedBy: string,
  options: { expectedUpdatedAt?: string } = {},
): Promise<Runbook> {
  const project = await findNamed(db, "projects", projectReference);
  const row = await getRunbookRow(db, project.id, reference);
  const expectedUpdatedAt = options.expectedUpdatedAt ?? row.updated_at;
  if (row.updated_at !== expectedUpdatedAt) throw changedMeanwhile(row.slug);
  const { name, ...changes } = patch;
  if (changes.environments) await checkEnvironments(db, changes.environments);
  const definition: RunbookDefinition = { ...definitionOf(row), ...changes };
  const updated: RunbookRow = {
    ...row,
    name: name ?? row.name,
    draft: JSON.stringify(definition),
    // A name is not part of what runs: renaming alone leaves the draft as published.
    draft_changed: Object.keys(changes).length > 0 ? 1 : row.draft_changed,
    updated_by: updatedBy,
    updated_at: nowIso(),
  };
  const result = await translateUniqueViolation(
    `project '${project.slug}' already has a runbook named '${updated.name}'`,
    () =>
      db
        .updateTable("runbooks")
        .set({
          name: updated.name,
          draft: updated.draft,
          draft_changed: updated.draft_changed,
          updated_by: updatedBy,
          updated_at: updated.updated_at,
        })
        .where("id", "=", row.id)
        // Only the runbook the caller's permission check read (ADR 0064): a change in between,
        // say one that widened it to prod, must not be overwritten by a dev-only editor.
        .where("updated_at", "=", expectedUpdatedAt)
        .executeTakeFirst(),
  );
  if (Number(result.numUpdatedRows) === 0) throw changedMeanwhile(row.slug);
  return toRunbook(db, updated, project.slug);
}

function changedMeanwhile(slug: string): ConflictError {
  return new ConflictError(
    `runbook '${slug}' was changed by someone else meanwhile; look at it again and repeat your change if still needed`,
  );
}

export async function deleteRunbook(
  { db }: StoreContext,
  projectReference: string,
  reference: string,
  options: { expectedUpdatedAt?: string } = {},
): Promise<void> {
  const project = await findNamed(db, "projects", projectReference);
  const row = await getRunbookRow(db, project.id, reference);
  const expectedUpdatedAt = options.expectedUpdatedAt ?? row.updated_at;
  const deleted = await db
    .deleteFrom("runbooks")
    .where("id", "=", row.id)
    .where("updated_at", "=", expectedUpdatedAt)
    .executeTakeFirst();
  if (Number(deleted.numDeletedRows) === 0) throw changedMeanwhile(row.slug);
}

/**
 * Freezes the draft, the project's variables and the image and package versions as they are
 * into a snapshot: a published version (version given) or the snapshot of one draft run
 * (version null).
 */
async function insertSnapshot(
  trx: Executor,
  { secrets }: StoreContext,
  row: RunbookRow,
  version: number | null,
  createdBy: string,
  pins: SnapshotPins,
): Promise<{ row: RunbookSnapshotRow; snapshot: RunbookSnapshot }> {
  const id = newId("rbs");
  const definition = definitionOf(row);
  const snapshot: RunbookSnapshot = {
    definition,
    variables: await snapshotVariables(trx, row.project_id, (valueContext, sealed, index) =>
      secrets.seal(secrets.open(sealed, valueContext), sealedSnapshotVariable(id, index)),
    ),
    images: pins.images,
    // Pinned inside the snapshot's transaction: a version deleted meanwhile is not pinned.
    packages: await pinPackages(trx, definition.process.packages, pins.packages),
  };
  const snapshotRow: RunbookSnapshotRow = {
    id,
    runbook_id: row.id,
    version,
    snapshot: JSON.stringify(snapshot),
    created_by: createdBy,
    created_at: nowIso(),
  };
  await trx.insertInto("runbook_snapshots").values(snapshotRow).execute();
  return { row: snapshotRow, snapshot };
}

/**
 * Publishes the draft: the next version, which every run uses from now on. `pins.images`
 * were pinned against `pinnedDraft` (the draft's JSON then): a draft changed since is a
 * conflict, not a version whose images belong to another process.
 */
export async function publishRunbook(
  context: StoreContext,
  projectReference: string,
  reference: string,
  publishedBy: string,
  pins: SnapshotPins & { pinnedDraft: string },
  options: { expectedUpdatedAt?: string } = {},
): Promise<Runbook> {
  return context.db.transaction().execute(async (trx) => {
    const project = await findNamed(trx, "projects", projectReference);
    const row = await getRunbookRow(trx, project.id, reference);
    if (options.expectedUpdatedAt !== undefined && row.updated_at !== options.expectedUpdatedAt) {
      throw changedMeanwhile(row.slug);
    }
    if (row.draft !== pins.pinnedDraft) {
      throw new ConflictError(
        `the draft of runbook '${row.slug}' was changed while its images were being pinned; look at it again and publish again`,
      );
    }
    const { latest } = await trx
      .selectFrom("runbook_snapshots")
      .select((eb) => eb.fn.max("version").as("latest"))
      .where("runbook_id", "=", row.id)
      .executeTakeFirstOrThrow();
    const snapshot = await translateUniqueViolation(
      `runbook '${row.slug}' was published by someone else at the same moment; look at it again and publish if still needed`,
      async () => (await insertSnapshot(trx, context, row, Number(latest ?? 0) + 1, publishedBy, pins)).row,
    );
    const updatedAt = nowIso();
    const updated = await trx
      .updateTable("runbooks")
      .set({ published_snapshot_id: snapshot.id, draft_changed: 0, updated_at: updatedAt })
      .where("id", "=", row.id)
      // Only the draft that was snapshotted: an edit in between would be published unseen.
      .where("draft", "=", row.draft)
      .executeTakeFirst();
    if (Number(updated.numUpdatedRows) === 0) {
      throw new ConflictError(
        `the draft of runbook '${row.slug}' was changed while it was being published; look at it again and publish again`,
      );
    }
    return toRunbook(
      trx,
      { ...row, published_snapshot_id: snapshot.id, draft_changed: 0, updated_at: updatedAt },
      project.slug,
    );
  });
}

/**
 * What a run executes: a snapshot's id (empty before a draft run's is taken), version,
 * definition and pinned versions (as answers show them; none before a draft run's is taken).
 */
export interface RunbookDefinitionSource {
  id: string;
  version: number | null;
  definition: RunbookDefinition;
  pinned: ReturnType<typeof shownVersions>;
}

/**
 * The snapshot a run will execute: the published one, or a new one of the draft, pinning
 * `pins` (a draft run's versions are resolved when it is requested). With dryRun, a draft's
 * definition without writing its snapshot (to check a request first).
 */
export async function snapshotForRun(
  trx: Executor,
  context: StoreContext,
  row: RunbookRow,
  draft: boolean,
  requestedBy: string,
  options: { dryRun?: boolean; pins?: SnapshotPins } = {},
): Promise<RunbookDefinitionSource> {
  const none = { images: [], packages: [] };
  if (draft && options.dryRun) return { id: "", version: null, definition: definitionOf(row), pinned: none };
  if (draft) {
    const taken = await insertSnapshot(
      trx,
      context,
      row,
      null,
      requestedBy,
      options.pins ?? { images: [], packages: {} },
    );
    return {
      id: taken.row.id,
      version: null,
      definition: taken.snapshot.definition,
      pinned: shownVersions(taken.snapshot),
    };
  }
  const published = row.published_snapshot_id
    ? await trx
        .selectFrom("runbook_snapshots")
        .selectAll()
        .where("id", "=", row.published_snapshot_id)
        .executeTakeFirst()
    : undefined;
  if (!published) {
    throw new InputError(`runbook '${row.slug}' has never been published, so there is nothing to run`, [
      {
        pointer: "/draft",
        detail: "publish it ('ferry runbook publish'), or run the draft with --draft (needs editRunbooks)",
      },
    ]);
  }
  const snapshot = runbookSnapshotSchema.parse(JSON.parse(published.snapshot));
  return {
    id: published.id,
    version: Number(published.version),
    definition: snapshot.definition,
    pinned: shownVersions(snapshot),
  };
}

export async function insertRunbookRun(
  trx: Executor,
  run: {
    id: string;
    runbookId: string;
    snapshotId: string;
    projectId: string;
    environmentId: string;
    taskId: string;
    parameters: Record<string, string>;
    sensitive: readonly string[];
    targetIds: readonly string[] | null;
    freezeOverride: string | null;
    /** A schedule's firing that queued the run (ADR 0036). */
    schedule?: { id: string; cause: string; scheduledFor: Date } | undefined;
  },
): Promise<void> {
  await trx
    .insertInto("runbook_runs")
    .values({
      id: run.id,
      runbook_id: run.runbookId,
      snapshot_id: run.snapshotId,
      project_id: run.projectId,
      environment_id: run.environmentId,
      task_id: run.taskId,
      parameters: JSON.stringify(run.parameters),
      sensitive: JSON.stringify(run.sensitive),
      target_ids: run.targetIds ? JSON.stringify(run.targetIds) : null,
      freeze_override: run.freezeOverride,
      cause: run.schedule?.cause ?? null,
      schedule_id: run.schedule?.id ?? null,
      scheduled_for: run.schedule?.scheduledFor.toISOString() ?? null,
      created_at: nowIso(),
    })
    .execute();
}

/** What a runbook task works on: its run, snapshot (opened) and parameters (opened), project and environment. */
export async function loadRunbookRun(context: StoreContext, runId: string) {
  const { db, secrets } = context;
  const run = await db.selectFrom("runbook_runs").selectAll().where("id", "=", runId).executeTakeFirstOrThrow();
  const [runbook, snapshotRow, project, environment] = await Promise.all([
    db.selectFrom("runbooks").selectAll().where("id", "=", run.runbook_id).executeTakeFirstOrThrow(),
    db.selectFrom("runbook_snapshots").selectAll().where("id", "=", run.snapshot_id).executeTakeFirstOrThrow(),
    db.selectFrom("projects").selectAll().where("id", "=", run.project_id).executeTakeFirstOrThrow(),
    db.selectFrom("environments").selectAll().where("id", "=", run.environment_id).executeTakeFirstOrThrow(),
  ]);
  const snapshot = runbookSnapshotSchema.parse(JSON.parse(snapshotRow.snapshot));
  const secretValues: string[] = [];
  const variables = snapshot.variables.map((variable, index) => {
    if (!variable.sensitive || variable.sealed === null) return variable;
    const value = secrets.open(variable.sealed, sealedSnapshotVariable(snapshotRow.id, index));
    secretValues.push(value);
    return { ...variable, value };
  });
  const sensitive = new Set(JSON.parse(run.sensitive) as string[]);
  const parameters = new Map<string, string>();
  for (const [name, stored] of Object.entries(JSON.parse(run.parameters) as Record<string, string>)) {
    const value = sensitive.has(name) ? secrets.open(stored, sealedParameterContext(run.id, name)) : stored;
    if (sensitive.has(name)) secretValues.push(value);
    parameters.set(name, value);
  }
  return {
    run,
    runbook,
    version: snapshotRow.version === null ? null : Number(snapshotRow.version),
    definition: snapshot.definition,
    images: snapshot.images,
    packages: snapshot.packages,
    variables,
    parameters,
    secrets: secretValues,
    project,
    environment,
    targetIds: run.target_ids ? (JSON.parse(run.target_ids) as string[]) : null,
  };
}

/** The columns a run summary is made of (runs joined with their task, snapshot and environment). */
function runSummaries(db: Executor) {
  return db
    .selectFrom("runbook_runs as r")
    .innerJoin("tasks as t", "t.id", "r.task_id")
    .innerJoin("runbook_snapshots as s", "s.id", "r.snapshot_id")
    .innerJoin("environments as e", "e.id", "r.environment_id")
    .select([
      "r.id",
      "r.runbook_id",
      "r.task_id",
      "r.parameters",
      "r.sensitive",
      "r.freeze_override",
      "r.cause",
      "r.scheduled_for",
      "r.created_at",
      "s.version",
      "t.state",
      "t.created_by",
      "t.finished_at",
      "e.slug",
    ]);
}

type RunSummaryRow = Awaited<ReturnType<ReturnType<typeof runSummaries>["execute"]>>[number];

function toRunSummary(run: RunSummaryRow): RunbookRunSummary {
  return {
    runId: run.id,
    taskId: run.task_id,
    environment: run.slug,
    version: run.version === null ? null : Number(run.version),
    state: run.state,
    createdBy: run.created_by,
    createdAt: run.created_at,
    finishedAt: run.finished_at,
    parameters: maskedParameters(run),
    freezeOverride: run.freeze_override,
    cause: run.cause,
    scheduledFor: run.scheduled_for,
  };
}

/** A run's stored parameters as answers show them: sensitive ones (sealed) as ********. */
function maskedParameters(run: { parameters: string; sensitive: string }): Record<string, string> {
  const sensitive = new Set(JSON.parse(run.sensitive) as string[]);
  const stored = JSON.parse(run.parameters) as Record<string, string>;
  return Object.fromEntries(
    Object.entries(stored).map(([name, value]) => [name, sensitive.has(name) ? MASKED : value]),
  );
}

/**
 * A runbook's runs, newest first, in the environments the caller may view (`reach`),
 * a page at a time: the reach is a condition of the query, so each page is full.
 */
export async function listRunbookRuns(
  { db }: StoreContext,
  projectReference: string,
  reference: string,
  reach: Reach,
  page: { limit: number; offset: number },
): Promise<RunbookRunSummary[]> {
  const project = await findNamed(db, "projects", projectReference);
  const row = await getRunbookRow(db, project.id, reference);
  const rows = await runSummaries(db)
    .where("r.runbook_id", "=", row.id)
    .$if(reach.boxes !== null, (query) =>
      query.where((eb) => reachCondition(eb, reach.boxes ?? [], "r.project_id", "r.environment_id")),
    )
    .orderBy("r.created_at", "desc")
    .orderBy("r.id", "desc")
    .limit(page.limit)
    .offset(page.offset)
    .execute();
  return rows.map(toRunSummary);
}

/**
 * The newest run of each of a project's runbooks in each environment the caller may view,
 * by runbook id (what the dashboard's runbook list shows as "last run").
 */
export async function latestRunbookRuns(
  { db }: StoreContext,
  projectReference: string,
  reach: Reach,
): Promise<Map<string, RunbookRunSummary[]>> {
  const project = await findNamed(db, "projects", projectReference);
  const newest = db
    .selectFrom("runbook_runs as n")
    .select((eb) => [
      "n.id",
      eb.fn
        .agg<number>("row_number")
        .over((over) =>
          over
            .partitionBy(["n.runbook_id", "n.environment_id"])
            .orderBy("n.created_at", "desc")
            .orderBy("n.id", "desc"),
        )
        .as("position"),
    ])
    .where("n.project_id", "=", project.id)
    .$if(reach.boxes !== null, (query) =>
      query.where((eb) => reachCondition(eb, reach.boxes ?? [], "n.project_id", "n.environment_id")),
    )
    .as("newest");
  const rows = await runSummaries(db)
    .innerJoin(newest, "newest.id", "r.id")
    .where("newest.position", "=", 1)
    .orderBy("e.slug")
    .execute();
  const byRunbook = new Map<string, RunbookRunSummary[]>();
  for (const row of rows) {
    byRunbook.set(row.runbook_id, [...(byRunbook.get(row.runbook_id) ?? []), toRunSummary(row)]);
  }
  return byRunbook;
}

/** What a runbook run's task ran, or undefined when the task is not a runbook run. */
export async function runbookRunOfTask({ db }: StoreContext, taskId: string): Promise<TaskRunbookRun | undefined> {
  const run = await runSummaries(db)
    .innerJoin("runbooks as b", "b.id", "r.runbook_id")
    .select(["b.slug as runbook_slug", "b.name as runbook_name", "r.target_ids"])
    .where("r.task_id", "=", taskId)
    .executeTakeFirst();
  if (!run) return undefined;
  const targetIds = run.target_ids ? (JSON.parse(run.target_ids) as string[]) : null;
  const names =
    targetIds && targetIds.length > 0
      ? await db.selectFrom("targets").select(["id", "name"]).where("id", "in", targetIds).execute()
      : [];
  return {
    runId: run.id,
    taskId: run.task_id,
    runbook: run.runbook_slug,
    runbookName: run.runbook_name,
    environment: run.slug,
    version: run.version === null ? null : Number(run.version),
    parameters: maskedParameters(run),
    freezeOverride: run.freeze_override,
    cause: run.cause,
    scheduledFor: run.scheduled_for,
    targets: targetIds?.map((id) => names.find((target) => target.id === id)?.name ?? id) ?? null,
  };
}
