import type { Insertable, Kysely, Selectable } from "kysely";
import { ConflictError, type FieldIssue, InputError, NotFoundError } from "../domain/errors.js";
import type { PackageFormat, PackageVersionInfo } from "../domain/packages.js";
import type { ProcessPackage } from "../domain/process.js";
import type { PinnedPackage } from "../domain/releases.js";
import type { ArtifactContent } from "./artifactContent.js";
import type { Executor } from "./common.js";
import type { Database, PackageVersionRow as PackageVersionTable } from "./schema.js";

/** A package version's row as read (its size a string on PostgreSQL, whose bigint pg returns as text). */
export type PackageVersionRow = Selectable<PackageVersionTable>;

export function toPackageVersion(row: PackageVersionRow): PackageVersionInfo {
  return {
    id: row.id,
    name: row.name,
    version: row.version,
    format: row.format as PackageFormat,
    size: Number(row.size),
    sha256: row.sha256,
    files: row.entries,
    pushedBy: row.pushed_by,
    createdAt: row.created_at,
  };
}

/** Records a pushed version; a name and version pushed before is a ConflictError (versions never change). */
export async function insertPackageVersion(db: Executor, row: Insertable<PackageVersionTable>): Promise<void> {
  const existing = await db
    .selectFrom("package_versions")
    .select("id")
    .where("name", "=", row.name)
    .where("version", "=", row.version)
    .executeTakeFirst();
  if (existing) throw packageVersionExists(row.name, row.version);
  try {
    await db.insertInto("package_versions").values(row).execute();
  } catch (error) {
    // Two pushes of the same version at once: the unique constraint decides, the loser hears why.
    if (/unique|duplicate/i.test((error as Error).message)) throw packageVersionExists(row.name, row.version);
    throw error;
  }
}

export function packageVersionExists(name: string, version: string): ConflictError {
  return new ConflictError(
    `package ${name} ${version} exists already; versions never change, so push it as a new version (or delete this one first with 'ferry package delete ${name} ${version}')`,
  );
}

/** Versions newest first (by push), of one package or of all. */
export async function listPackageVersions(db: Executor, name?: string): Promise<PackageVersionRow[]> {
  let query = db.selectFrom("package_versions").selectAll();
  if (name !== undefined) query = query.where("name", "=", name);
  return query.orderBy("created_at", "desc").orderBy("id", "desc").execute();
}

/** One version, or the newest pushed when `version` is undefined. */
export async function getPackageVersionRow(
  db: Executor,
  name: string,
  version: string | undefined,
): Promise<PackageVersionRow> {
  let query = db.selectFrom("package_versions").selectAll().where("name", "=", name);
  if (version !== undefined) query = query.where("version", "=", version);
  const row = await query.orderBy("created_at", "desc").orderBy("id", "desc").limit(1).executeTakeFirst();
  if (!row) {
    throw new NotFoundError(
      version === undefined
        ? `package ${name} has no versions; push one with 'ferry package push ${name} VERSION FILE'`
        : `package ${name} has no version ${version}; list its versions with 'ferry package list ${name}'`,
    );
  }
  return row;
}

/**
 * Ids of the package versions that a deployed release pins: the release of the latest
 * successful deployment of each project in each environment, and of every deployment not
 * finished yet (queued or running: about to need the bytes). Retention and delete keep these.
 */
export async function versionsPinnedByDeployedReleases(db: Executor): Promise<Set<string>> {
  const deployments = await db
    .selectFrom("deployments as d")
    .innerJoin("tasks as t", "t.id", "d.task_id")
    .select(["d.project_id", "d.environment_id", "d.release_id", "t.state", "t.finished_at"])
    .where((eb) => eb.or([eb("t.state", "=", "succeeded"), eb("t.finished_at", "is", null)]))
    .where(
      "d.project_id",
      "in",
      db
        .selectFrom("release_packages as rp")
        .innerJoin("releases as r", "r.id", "rp.release_id")
        .select("r.project_id"),
    )
    .orderBy("t.finished_at", "desc")
    .execute();
  const deployed = new Set<string>();
  const seen = new Set<string>();
  for (const deployment of deployments) {
    if (deployment.finished_at === null) {
      deployed.add(deployment.release_id);
      continue;
    }
    const key = `${deployment.project_id} ${deployment.environment_id}`;
    if (seen.has(key)) continue;
    seen.add(key);
    deployed.add(deployment.release_id);
  }
  if (deployed.size === 0) return new Set();
  const pinned = await db
    .selectFrom("release_packages")
    .select("package_version_id")
    .where("release_id", "in", [...deployed])
    .execute();
  return new Set(pinned.map((row) => row.package_version_id));
}

/**
 * Ids of the package versions runbooks pin (ADR 0068), each with what pins it: the
 * published version of every runbook (schedules and runs use it) and the snapshot of every
 * runbook run not finished yet. Retention and delete keep these too.
 */
export async function versionsPinnedByRunbooks(db: Executor): Promise<Map<string, string>> {
  const published = await db
    .selectFrom("runbooks as b")
    .innerJoin("runbook_snapshots as s", "s.id", "b.published_snapshot_id")
    .innerJoin("projects as p", "p.id", "b.project_id")
    .select(["s.snapshot", "s.version", "b.slug", "p.slug as project"])
    .execute();
  const running = await db
    .selectFrom("runbook_runs as r")
    .innerJoin("tasks as t", "t.id", "r.task_id")
    .innerJoin("runbook_snapshots as s", "s.id", "r.snapshot_id")
    .innerJoin("runbooks as b", "b.id", "r.runbook_id")
    .innerJoin("projects as p", "p.id", "b.project_id")
    .select(["s.snapshot", "s.version", "b.slug", "p.slug as project"])
    .where("t.finished_at", "is", null)
    .execute();
  const pinned = new Map<string, string>();
  for (const [rows, what] of [
    [published, "the published version"],
    [running, "a run not finished yet"],
  ] as const) {
    for (const row of rows) {
      // Only the packages field is read: snapshots older than pinning have none.
      const packages = (JSON.parse(row.snapshot) as { packages?: { id: string }[] }).packages ?? [];
      for (const item of packages) {
        if (!pinned.has(item.id)) pinned.set(item.id, `${what} of runbook ${row.project}/${row.slug}`);
      }
    }
  }
  return pinned;
}

/**
 * Removes versions, row and bytes, unless a deployed release or a runbook pins one (checked in the same
 * transaction as the removal, so a deployment that starts meanwhile is not left without
 * its bytes on PostgreSQL; on SQLite the one writer serialises them). Returns the removed.
 */
export async function deletePackageVersions(
  db: Kysely<Database>,
  content: ArtifactContent,
  rows: readonly PackageVersionRow[],
): Promise<PackageVersionRow[]> {
  const removed: PackageVersionRow[] = [];
  for (const row of rows) {
    const deleted = await db.transaction().execute(async (transaction) => {
      if ((await versionsPinnedByDeployedReleases(transaction)).has(row.id)) {
        throw new ConflictError(
          `package ${row.name} ${row.version} is pinned by a release that is deployed (or being deployed); deploy a release without it everywhere first`,
        );
      }
      const byRunbook = (await versionsPinnedByRunbooks(transaction)).get(row.id);
      if (byRunbook) {
        throw new ConflictError(
          `package ${row.name} ${row.version} is pinned by ${byRunbook}; publish the runbook again with another version (or wait for the run) first`,
        );
      }
      const result = await transaction.deleteFrom("package_versions").where("id", "=", row.id).executeTakeFirst();
      if (Number(result.numDeletedRows) === 0) return false;
      if (row.storage === "largeObject") await content.remove(row.location, transaction);
      return true;
    });
    if (!deleted) continue;
    if (row.storage === "directory") await content.remove(row.location, db);
    removed.push(row);
  }
  return removed;
}

/** Records which versions a release pins (in the release's own transaction). */
export async function insertReleasePackages(db: Executor, releaseId: string, versionIds: readonly string[]) {
  if (versionIds.length === 0) return;
  await db
    .insertInto("release_packages")
    .values(versionIds.map((id) => ({ release_id: releaseId, package_version_id: id })))
    .execute();
}

/**
 * Resolves each package of a process to a version: the one `requested` names, or the newest
 * pushed. A requested name the process does not have, a version that does not exist, or a
 * package with no versions at all is an InputError naming the field.
 */
export async function pinPackages(
  db: Executor,
  packages: readonly ProcessPackage[],
  requested: Readonly<Record<string, string>>,
): Promise<PinnedPackage[]> {
  const issues: FieldIssue[] = [];
  for (const name of Object.keys(requested)) {
    if (!packages.some((item) => item.name === name)) {
      issues.push({
        pointer: `/packages/${name}`,
        detail: `the project's process has no package '${name}'; it has: ${packages.map((item) => item.name).join(", ") || "(none)"}`,
      });
    }
  }
  const pinned: PinnedPackage[] = [];
  for (const item of packages) {
    const version = requested[item.name];
    try {
      const row = await getPackageVersionRow(db, item.name, version);
      pinned.push({
        id: row.id,
        name: row.name,
        version: row.version,
        sha256: row.sha256,
        size: Number(row.size),
        format: row.format as PackageFormat,
      });
    } catch (error) {
      if (!(error instanceof NotFoundError)) throw error;
      issues.push({ pointer: `/packages/${item.name}`, detail: error.message });
    }
  }
  if (issues.length > 0) {
    throw new InputError("the release's packages cannot be pinned; fix the fields listed in 'errors'", issues);
  }
  return pinned;
}
