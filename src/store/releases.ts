import type { Paging } from "../domain/common.js";
import { ConflictError, type FieldIssue, InputError, NotFoundError } from "../domain/errors.js";
import type { Process } from "../domain/process.js";
import { storedProcessSchema } from "../domain/process.js";
import {
  type CreateRelease,
  type PinnedImage,
  type Release,
  type ReleaseSnapshot,
  releaseSnapshotSchema,
  type SnapshotVariable,
  sealedVariableContext,
} from "../domain/releases.js";
import { nextVersion } from "../domain/versionRules.js";
import {
  type Executor,
  findNamed,
  newId,
  nowIso,
  type StoreContext,
  toPage,
  translateUniqueViolation,
} from "./common.js";
import { insertReleasePackages, pinPackages } from "./packages.js";
import type { ReleaseRow } from "./schema.js";
import { projectOwner, variablesWithScopes } from "./scopedVariables.js";
import { snapshotSetVariables } from "./variableSets.js";

export async function getProcess(context: StoreContext, projectReference: string): Promise<Process> {
  return (await getProcessVersion(context, projectReference)).process;
}

/** The process with the text it is stored as: setProcess's `expected`, so a change decided on it is not made on another. */
export async function getProcessVersion(
  { db }: StoreContext,
  projectReference: string,
): Promise<{ process: Process; stored: string }> {
  const project = await findNamed(db, "projects", projectReference);
  const row = await db.selectFrom("projects").select("process").where("id", "=", project.id).executeTakeFirstOrThrow();
  return { process: storedProcessSchema.parse(JSON.parse(row.process)), stored: row.process };
}

/**
 * Replaces the project's process. Step configs must already be validated by their kinds.
 * With `expected` (getProcessVersion's `stored`), only if nobody changed it since: a check
 * made on what it was (who may change which environment's steps) holds for what is replaced.
 */
export async function setProcess(
  { db }: StoreContext,
  projectReference: string,
  given: Omit<Process, "packages"> & Partial<Pick<Process, "packages">>,
  options: { expected?: string } = {},
): Promise<Process> {
  const process: Process = { ...given, packages: given.packages ?? [] };
  const project = await findNamed(db, "projects", projectReference);
  let update = db
    .updateTable("projects")
    .set({ process: JSON.stringify(process), updated_at: nowIso() })
    .where("id", "=", project.id);
  if (options.expected !== undefined) update = update.where("process", "=", options.expected);
  const result = await update.executeTakeFirst();
  if (Number(result.numUpdatedRows) === 0) {
    throw new ConflictError(
      `the process of project '${project.slug}' was changed by someone else while this change was checked; fetch it again and repeat your change`,
    );
  }
  return process;
}

function toRelease(row: ReleaseRow, projectSlug: string): Release {
  const snapshot = releaseSnapshotSchema.parse(JSON.parse(row.snapshot));
  return {
    id: row.id,
    project: projectSlug,
    version: row.version,
    notes: row.notes,
    steps: snapshot.process.steps.map((step) => ({ name: step.name, kind: step.kind })),
    images: snapshot.images.map(({ name, tag, digest, reference }) => ({ name, tag, digest, reference })),
    packages: snapshot.packages.map(({ name, version, sha256, size }) => ({ name, version, sha256, size })),
    createdBy: row.created_by,
    createdAt: row.created_at,
    variablesUpdatedAt: row.variables_updated_at,
    variablesUpdatedBy: row.variables_updated_by,
  };
}

/**
 * Freezes the project's process and variables into a new release. Sensitive values are
 * re-sealed bound to the release, so later edits of the project's variables never reach
 * an existing release (only a deliberate re-snapshot would).
 */
export async function createRelease(
  { db, secrets }: StoreContext,
  projectReference: string,
  input: Omit<CreateRelease, "packages" | "images"> & Partial<Pick<CreateRelease, "packages" | "images">>,
  createdBy: string,
  /** The process the images were resolved against, and the images pinned for it. */
  resolved?: { process: Process; images: PinnedImage[] },
): Promise<Release> {
  return db.transaction().execute(async (trx) => {
    const project = await findNamed(trx, "projects", projectReference);
    const { process, version_pattern: pattern } = await trx
      .selectFrom("projects")
      .select(["process", "version_pattern"])
      .where("id", "=", project.id)
      .executeTakeFirstOrThrow();
    const existing = (
      await trx.selectFrom("releases").select("version").where("project_id", "=", project.id).execute()
    ).map((row) => row.version);
    const version = input.version ?? nextVersion(pattern, existing);
    if (existing.includes(version)) {
      const issues: FieldIssue[] = [{ pointer: "/version", detail: "choose a version this project has not used" }];
      throw new InputError(
        `release ${version} of project '${project.name}' already exists; releases never change`,
        issues,
      );
    }
    const id = newId("rel");
    const releaseProcess = resolved?.process ?? storedProcessSchema.parse(JSON.parse(process));
    const snapshot: ReleaseSnapshot = {
      process: releaseProcess,
      images: resolved?.images ?? [],
      // Pinned inside the release's transaction: a version deleted meanwhile is not pinned.
      packages: await pinPackages(trx, releaseProcess.packages, input.packages ?? {}),
      variables: await snapshotVariables(trx, project.id, (valueContext, sealed, index) =>
        secrets.seal(secrets.open(sealed, valueContext), sealedVariableContext(id, index)),
      ),
    };
    const row: ReleaseRow = {
      id,
      project_id: project.id,
      version,
      notes: input.notes,
      snapshot: JSON.stringify(snapshot),
      created_by: createdBy,
      created_at: nowIso(),
      variables_updated_at: null,
      variables_updated_by: null,
    };
    await translateUniqueViolation(`release ${version} of project '${project.name}' already exists`, () =>
      trx.insertInto("releases").values(row).execute(),
    );
    await insertReleasePackages(
      trx,
      id,
      snapshot.packages.map((pinned) => pinned.id),
    );
    return toRelease(row, project.slug);
  });
}

/**
 * The project's own values, then those of the variable sets it includes (in its order of
 * sets, each marked with its set): what a release or runbook snapshot holds and what
 * `ferry vars show` resolves (ADR 0047).
 */
export async function snapshotVariables(
  trx: Executor,
  projectId: string,
  /**
   * Opens a sealed value (sealed with `valueContext`) and seals it again for the snapshot,
   * at `index` in the list returned.
   */
  reseal: (valueContext: string, sealed: string, index: number) => string,
): Promise<SnapshotVariable[]> {
  const variables = await variablesWithScopes(trx, projectOwner, [projectId]);
  const own = variables.map(
    ({ row, scope }, index): SnapshotVariable => ({
      name: row.name,
      sensitive: row.sensitive === 1,
      value: row.sensitive === 1 ? null : row.value,
      sealed: row.sensitive === 1 ? reseal(projectOwner.valueContext(row.id), row.value_sealed ?? "", index) : null,
      scope,
    }),
  );
  // Placed after the project's own: the index is the value's place in the whole list.
  const fromSets = await snapshotSetVariables(trx, projectId, (valueContext, sealed, index) =>
    reseal(valueContext, sealed, own.length + index),
  );
  return [...own, ...fromSets];
}

/**
 * The one deliberate change to a release: take the project's variables again (for a
 * rotated password, say). Process and images stay as they were; who did it and when is
 * recorded on the release.
 */
export async function resnapshotVariables(
  { db, secrets }: StoreContext,
  projectReference: string,
  reference: string,
  updatedBy: string,
): Promise<Release> {
  return db.transaction().execute(async (trx) => {
    const project = await findNamed(trx, "projects", projectReference);
    const row = await getReleaseRow(trx, project.id, reference);
    if (!row) throw new NotFoundError(`project '${project.name}' has no release '${reference}'`);
    const snapshot = releaseSnapshotSchema.parse(JSON.parse(row.snapshot));
    const variables = await snapshotVariables(trx, project.id, (valueContext, sealed, index) =>
      secrets.seal(secrets.open(sealed, valueContext), sealedVariableContext(row.id, index)),
    );
    const updatedAt = nowIso();
    await trx
      .updateTable("releases")
      .set({
        snapshot: JSON.stringify({ ...snapshot, variables }),
        variables_updated_at: updatedAt,
        variables_updated_by: updatedBy,
      })
      .where("id", "=", row.id)
      .execute();
    return toRelease(
      {
        ...row,
        snapshot: JSON.stringify({ ...snapshot, variables }),
        variables_updated_at: updatedAt,
        variables_updated_by: updatedBy,
      },
      project.slug,
    );
  });
}

export async function getReleaseRow(
  db: Executor,
  projectId: string,
  reference: string,
): Promise<ReleaseRow | undefined> {
  return db
    .selectFrom("releases")
    .selectAll()
    .where("project_id", "=", projectId)
    .where((eb) => eb.or([eb("id", "=", reference), eb("version", "=", reference)]))
    .executeTakeFirst();
}

/** The release of the project made just before `row` (newest first, as the list orders them), if any. */
export async function previousReleaseRow(db: Executor, row: ReleaseRow): Promise<ReleaseRow | undefined> {
  return db
    .selectFrom("releases")
    .selectAll()
    .where("project_id", "=", row.project_id)
    .where((eb) =>
      eb.or([
        eb("created_at", "<", row.created_at),
        eb.and([eb("created_at", "=", row.created_at), eb("id", "<", row.id)]),
      ]),
    )
    .orderBy("created_at", "desc")
    .orderBy("id", "desc")
    .limit(1)
    .executeTakeFirst();
}

export async function getRelease({ db }: StoreContext, projectReference: string, reference: string): Promise<Release> {
  const project = await findNamed(db, "projects", projectReference);
  const row = await getReleaseRow(db, project.id, reference);
  if (!row) {
    throw new InputError(`project '${project.name}' has no release '${reference}'`, [
      { pointer: "/release", detail: "list releases with 'ferry release list --project …'" },
    ]);
  }
  return toRelease(row, project.slug);
}

export async function listReleases({ db }: StoreContext, projectReference: string, paging: Paging) {
  const project = await findNamed(db, "projects", projectReference);
  const rows = await db
    .selectFrom("releases")
    .selectAll()
    .where("project_id", "=", project.id)
    .orderBy("created_at", "desc")
    .limit(paging.limit)
    .offset(paging.offset)
    .execute();
  const { count } = await db
    .selectFrom("releases")
    .select((eb) => eb.fn.countAll<number | string>().as("count"))
    .where("project_id", "=", project.id)
    .executeTakeFirstOrThrow();
  return toPage(
    rows.map((row) => toRelease(row, project.slug)),
    Number(count),
    paging,
  );
}

/** The release's snapshot with sensitive values opened, for the deployment that runs it. */
export function openSnapshot(context: StoreContext, row: ReleaseRow): ReleaseSnapshot & { secrets: string[] } {
  const snapshot = releaseSnapshotSchema.parse(JSON.parse(row.snapshot));
  const secrets: string[] = [];
  const variables = snapshot.variables.map((variable, index) => {
    if (!variable.sensitive || variable.sealed === null) return variable;
    const value = context.secrets.open(variable.sealed, sealedVariableContext(row.id, index));
    secrets.push(value);
    return { ...variable, value };
  });
  return { ...snapshot, variables, secrets };
}
