import { Access, reachesSome } from "../domain/access.js";
import { InputError } from "../domain/errors.js";
import { diffReleases, type ReleaseDiff, type ReleaseSide } from "../domain/releaseDiff.js";
import { findNamed, type StoreContext } from "../store/common.js";
import { getReleaseRow, openSnapshot, previousReleaseRow } from "../store/releases.js";
import type { ReleaseRow } from "../store/schema.js";

/**
 * `ferry release diff`: two releases of a project compared (src/domain/releaseDiff.ts).
 * Sensitive values are opened here only to tell whether they changed; the answer never
 * holds one. Variables the caller may not see (as in the variables list, ADR 0020) are
 * left out of both sides.
 */
export async function diffProjectReleases(
  context: StoreContext,
  /** Without `from`: the release made just before `to`. */
  request: { project: string; from?: string | undefined; to: string },
  access: Access = Access.everything(),
): Promise<ReleaseDiff & { project: string }> {
  const { db } = context;
  const project = await findNamed(db, "projects", request.project);
  const rowOf = async (reference: string, pointer: string) => {
    const row = await getReleaseRow(db, project.id, reference);
    if (!row) {
      throw new InputError(`project '${project.slug}' has no release '${reference}'`, [
        { pointer, detail: "list releases with 'ferry release list --project …'", in: "query" },
      ]);
    }
    return row;
  };
  const previousOf = async (row: ReleaseRow) => {
    const previous = await previousReleaseRow(db, row);
    if (!previous) {
      throw new InputError(`release ${row.version} is the first of project '${project.slug}': nothing came before it`, [
        { pointer: "/from", detail: "give the release to compare it with", in: "query" },
      ]);
    }
    return previous;
  };
  const toRow = await rowOf(request.to, "/to");
  const fromRow = request.from === undefined ? await previousOf(toRow) : await rowOf(request.from, "/from");
  const environments = await db.selectFrom("environments").select(["id", "slug"]).execute();
  const targets = await db.selectFrom("targets").select(["id", "slug"]).execute();
  const slugs = new Map([...environments, ...targets].map((row) => [row.id, row.slug]));
  const views = access.reach("view");
  const sensitiveNames = access.reach("viewSensitiveNames");

  const side = (row: ReleaseRow): ReleaseSide => {
    const snapshot = openSnapshot(context, row);
    return {
      version: row.version,
      notes: row.notes,
      images: snapshot.images,
      steps: snapshot.process.steps,
      variables: snapshot.variables
        .filter(
          (variable) =>
            reachesSome(views, project.id, variable.scope.environments) &&
            (!variable.sensitive || reachesSome(sensitiveNames, project.id, variable.scope.environments)),
        )
        .map((variable) => ({
          name: variable.name,
          sensitive: variable.sensitive,
          value: variable.value ?? "",
          scope: {
            environments: variable.scope.environments.map((id) => slugs.get(id) ?? id),
            roles: variable.scope.roles,
            targets: variable.scope.targets.map((id) => slugs.get(id) ?? id),
          },
          ...(variable.set !== undefined && { set: variable.set.slug }),
        })),
    };
  };
  return { project: project.slug, ...diffReleases(side(fromRow), side(toRow)) };
}
