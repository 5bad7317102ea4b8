import type { FastifyRequest } from "fastify";
import { Access, ALL, type Permission } from "../domain/access.js";
import { ForbiddenError, NotFoundError } from "../domain/errors.js";
import type { Identity } from "../store/apiKeys.js";
import { type Executor, findNamed } from "../store/common.js";
import { getTaskRow } from "../store/tasks.js";
import { grantsOfUser } from "../store/teams.js";

/**
 * Who may call a route: every route declares one of these, and `authorize` below is the
 * one place that decides (docs/decisions/0020-teams-and-roles.md).
 *
 * - `public`: health, readiness and sign-in; no credentials.
 * - `signedIn`: any caller; the route is about the caller (their session, keys, password)
 *   or shows shared configuration that names no project (feeds, lifecycles, the schema).
 * - `administer`: the administer permission on every project and environment.
 * - `everywhere`: a permission on every project and environment (metrics, which name them all).
 * - `filtered`: any caller; the handler passes `access` to the store, which returns only
 *   what the caller may view (lists, and resources whose visibility depends on their content).
 * - `project` / `environment` / `task`: a permission on the resource the request names.
 *   What the caller may not even view answers 404 with the words of a missing resource,
 *   so ids and names cannot be probed; what they may view but not change answers 403.
 */
export type RouteAccess<P = unknown, Q = unknown, B = unknown> =
  | { kind: "public" }
  | { kind: "signedIn" }
  | { kind: "administer" }
  | { kind: "everywhere"; permission: Permission }
  | { kind: "filtered" }
  | {
      kind: "project";
      permission: Permission;
      /** From the path: checked before the query and body are even read. */
      project: (params: P) => string;
      /** The environment the request acts on; left out: the permission on any environment of the project will do. */
      environment?: (input: AccessInput<P, Q, B>) => string | typeof ALL | undefined;
    }
  | { kind: "environment"; permission: Permission; environment: (params: P) => string }
  | {
      kind: "task";
      /** A function is given the task's kind too: a runbook run's task is stopped with runRunbooks. */
      permission: Permission | ((input: AccessInput<P, Q, B> & { task: { kind: string } }) => Permission);
      task: (params: P) => string;
    };

interface AccessInput<P, Q, B> {
  params: P;
  query: Q;
  body: B;
}

/** The caller's grants: everything for administrators, their teams' roles for other users, nothing for other keys. */
export async function accessOf(db: Executor, identity: Identity): Promise<Access> {
  if (identity.isAdmin) return Access.everything();
  if (identity.userId === null) return Access.of([]);
  return Access.of(await grantsOfUser(db, identity.userId));
}

/**
 * The first half, from the path alone, before the query and body are validated: a caller
 * who may not view the project, environment or task named in the path learns nothing
 * more about it, not even which fields its routes take.
 */
export async function authorizePath(
  db: Executor,
  rule: RouteAccess,
  access: Access,
  params: unknown,
): Promise<PathResource> {
  if (rule.kind === "project") return { project: await visibleProject(db, access, rule.project(params)) };
  if (rule.kind === "environment") {
    return { environment: await visibleEnvironment(db, access, rule.environment(params)) };
  }
  if (rule.kind === "task") return { task: await visibleTask(db, access, rule.task(params)) };
  return {};
}

/** What `authorizePath` found, so that `authorize` does not look it up again. */
export interface PathResource {
  project?: Awaited<ReturnType<typeof visibleProject>>;
  environment?: Awaited<ReturnType<typeof visibleEnvironment>>;
  task?: Awaited<ReturnType<typeof visibleTask>>;
}

/** Throws NotFoundError (cannot view) or ForbiddenError (can view, not act) unless the route's access allows the request. */
export async function authorize(
  db: Executor,
  rule: RouteAccess,
  access: Access,
  input: AccessInput<unknown, unknown, unknown>,
  found: PathResource = {},
): Promise<void> {
  switch (rule.kind) {
    case "public":
    case "signedIn":
    case "filtered":
      return;
    case "administer":
      if (!access.isAdministrator) {
        throw new ForbiddenError("only an administrator (administer on every project and environment) may do this");
      }
      return;
    case "everywhere":
      if (!access.allows({ permission: rule.permission, project: ALL, environment: ALL })) {
        throw forbidden(rule.permission, "every project and environment");
      }
      return;
    case "project": {
      const project = found.project ?? (await visibleProject(db, access, rule.project(input.params)));
      const wanted = rule.environment?.(input);
      let environment: string | typeof ALL | undefined = wanted;
      if (typeof wanted === "string") {
        // The environment the request acts on must be visible within the project, too.
        environment = (await findNamed(db, "environments", wanted)).id;
        if (!access.allows({ permission: "view", project: project.id, environment })) {
          throw notFound("environment", wanted);
        }
      }
      if (!access.allows({ permission: rule.permission, project: project.id, environment })) {
        throw forbidden(rule.permission, `project '${project.slug}'`);
      }
      return;
    }
    case "environment": {
      const environment = found.environment ?? (await visibleEnvironment(db, access, rule.environment(input.params)));
      if (!access.allows({ permission: rule.permission, environment: environment.id })) {
        throw forbidden(rule.permission, `environment '${environment.slug}'`);
      }
      return;
    }
    case "task": {
      const task = found.task ?? (await visibleTask(db, access, rule.task(input.params)));
      const permission = typeof rule.permission === "function" ? rule.permission({ ...input, task }) : rule.permission;
      if (!access.allows({ permission, project: task.project_id, environment: task.environment_id })) {
        throw forbidden(permission, `task '${task.id}'`);
      }
      return;
    }
  }
}

async function visibleProject(db: Executor, access: Access, reference: string) {
  const project = await findNamed(db, "projects", reference);
  if (!access.allows({ permission: "view", project: project.id })) throw notFound("project", reference);
  return project;
}

async function visibleEnvironment(db: Executor, access: Access, reference: string) {
  const environment = await findNamed(db, "environments", reference);
  if (!access.allows({ permission: "view", environment: environment.id })) throw notFound("environment", reference);
  return environment;
}

async function visibleTask(db: Executor, access: Access, reference: string) {
  const task = await getTaskRow(db, reference);
  if (!access.allows({ permission: "view", project: task.project_id, environment: task.environment_id })) {
    throw notFound("task", reference);
  }
  return task;
}

/** The same words as for a resource that does not exist (src/store/common.ts findNamed). */
function notFound(noun: "project" | "environment" | "task", reference: string): NotFoundError {
  const group = noun === "environment" ? "env" : noun;
  return new NotFoundError(`no ${noun} '${reference}'; list them with 'ferry ${group} list'`);
}

function forbidden(permission: Permission, where: string): ForbiddenError {
  return new ForbiddenError(
    `you may not do this: it needs the '${permission}' permission on ${where}; ask an administrator to grant it to one of your teams`,
  );
}

/** The Access the auth hook attached; routes without an identity (public ones) get none. */
export function accessOfRequest(request: FastifyRequest): Access {
  return request.access ?? Access.of([]);
}
