import { type Access, ALL } from "../domain/access.js";
import { ForbiddenError } from "../domain/errors.js";
import type { Runbook } from "../domain/runbooks.js";
import { findNamed, type StoreContext } from "../store/common.js";

/*
 * Environment-scoped edit permissions (issue 11, finding 2; ADR 0064). `editProcess` and
 * `editRunbooks` may be granted on some environments only. The route's own check asks only
 * that the caller holds the permission somewhere in the project; what a change may touch is
 * decided here, once for both: a change needs the permission on every environment where it
 * alters what runs, and a change that reaches environments no list names (a step or a
 * runbook without environments) needs it on every environment, including ones created later.
 */

export type ScopedEditPermission = "editProcess" | "editRunbooks";

/** Where a change alters what runs: named environments, or every one. */
export interface ChangedEnvironments {
  slugs: readonly string[];
  everyEnvironment: boolean;
}

/** The project and every environment a change is checked against. */
export interface EditScope {
  project: { id: string; slug: string };
  environments: readonly { id: string; slug: string }[];
}

export async function editScopeOf(context: StoreContext, projectReference: string): Promise<EditScope> {
  const project = await findNamed(context.db, "projects", projectReference);
  const environments = await context.db.selectFrom("environments").select(["id", "slug"]).execute();
  return { project, environments };
}

/**
 * Where a runbook can run, from every version of it that a change touches (its draft before
 * and after, its published version): the union of their environment lists, and every
 * environment when one of them has none (a runbook without environments runs in all).
 */
function runbookEnvironments(
  ...versions: readonly ({ environments: readonly string[] } | null | undefined)[]
): ChangedEnvironments {
  const present = versions.filter((version) => version !== null && version !== undefined);
  return {
    slugs: [...new Set(present.flatMap((version) => version.environments))],
    everyEnvironment: present.some((version) => version.environments.length === 0),
  };
}

/**
 * editRunbooks for a change of a runbook (null: one being created): the caller needs it on
 * every environment the runbook can run in, by its draft before and after the change
 * (`after`) and by its published version, since a runbook without environments runs in all.
 */
export async function checkRunbookScope(
  context: StoreContext,
  access: Access,
  projectReference: string,
  runbook: Runbook | null,
  after?: { environments: readonly string[] },
): Promise<void> {
  if (access.reach("editRunbooks").boxes === null) return;
  const scope = await editScopeOf(context, projectReference);
  const what = runbook
    ? `runbook '${runbook.slug}' of project '${scope.project.slug}'`
    : `a runbook of project '${scope.project.slug}'`;
  checkEditScope(access, "editRunbooks", scope, runbookEnvironments(runbook, runbook?.published, after), what);
}

/**
 * Throws ForbiddenError unless the caller holds `permission` on the project in every
 * environment the change alters. `what` names the thing changed, for the message
 * ("the process of project 'shop'", "runbook 'backup' of project 'shop'").
 */
export function checkEditScope(
  access: Access,
  permission: ScopedEditPermission,
  { project, environments }: EditScope,
  changed: ChangedEnvironments,
  what: string,
): void {
  if (access.reach(permission).boxes === null) return;
  if (changed.everyEnvironment && !access.allows({ permission, project: project.id, environment: ALL })) {
    throw new ForbiddenError(
      `this change alters what runs in every environment (${everyEnvironmentReason(permission)}), so changing ${what} needs the '${permission}' permission on project '${project.slug}' in every environment; ${narrowingHint(permission)}, or ask an administrator`,
    );
  }
  // A slug no environment has (yet) is one someone may create later, with any grants: only a
  // grant on every environment covers it.
  const known = new Set(environments.map((environment) => environment.slug));
  const future = changed.slugs.filter((slug) => !known.has(slug));
  if (future.length > 0 && !access.allows({ permission, project: project.id, environment: ALL })) {
    throw new ForbiddenError(
      `this change alters what would run in ${future.map((slug) => `'${slug}'`).join(", ")}, an environment that does not exist yet, so changing ${what} needs the '${permission}' permission on project '${project.slug}' in every environment; ask an administrator`,
    );
  }
  const refused = environments.filter(
    (environment) =>
      changed.slugs.includes(environment.slug) &&
      !access.allows({ permission, project: project.id, environment: environment.id }),
  );
  if (refused.length > 0) {
    throw new ForbiddenError(
      `this change alters what runs in ${refused.map((environment) => `'${environment.slug}'`).join(", ")}, where you may not change ${what} (it needs the '${permission}' permission there); ask an administrator`,
    );
  }
}

function everyEnvironmentReason(permission: ScopedEditPermission): string {
  switch (permission) {
    case "editProcess":
      return "a step without 'environments', or the images";
    case "editRunbooks":
      return "a runbook without 'environments' runs in all of them";
    default: {
      const unknown: never = permission;
      throw new Error(`unknown permission ${String(unknown)}`);
    }
  }
}

function narrowingHint(permission: ScopedEditPermission): string {
  switch (permission) {
    case "editProcess":
      return "limit the step to the environments you may edit with its 'environments' field";
    case "editRunbooks":
      return "limit the runbook to the environments you may edit with its 'environments' field";
    default: {
      const unknown: never = permission;
      throw new Error(`unknown permission ${String(unknown)}`);
    }
  }
}
