import { z } from "zod";
import { descriptionSchema, nameSchema, referenceSchema, slugSchema, timestampsShape } from "./common.js";

/**
 * What a role may do. Each is granted on a scope of projects × environments
 * (docs/decisions/0020-teams-and-roles.md says which routes need which).
 */
export const permissions = [
  "view",
  "deploy",
  "approve",
  /** Answer a failed step with retry or skip (guided failure); abort needs only deploy. */
  "resolveFailures",
  "editProcess",
  "editVariables",
  /**
   * Change variable sets, which reach every project that includes them (ADR 0047): only a
   * grant on every project and environment carries it to the set routes.
   */
  "editVariableSets",
  "viewSensitiveNames",
  "runRunbooks",
  /** Change a project's runbooks, publish them and run their drafts (docs/decisions/0034-runbooks.md). */
  "editRunbooks",
  /** Deploy or run a runbook although a deployment freeze covers the environment (with a reason). */
  "overrideFreezes",
  /**
   * Push and delete versions of the built-in package feed (ADR 0044). Packages are shared by
   * every project, so it counts only when granted on every project and environment.
   */
  "pushPackages",
  "administer",
] as const;
export type Permission = (typeof permissions)[number];

/**
 * One role granted on a scope: `projects` / `environments` are ids, or null for all of
 * them (today's and any created later).
 */
export interface Grant {
  readonly permissions: ReadonlySet<Permission>;
  readonly projects: readonly string[] | null;
  readonly environments: readonly string[] | null;
}

/** Every project (or environment): the grant must not be limited in that dimension. */
export const ALL = Symbol("all");

/**
 * What a request needs: a permission on a project and an environment. A dimension left
 * out does not matter (any grant's scope will do); ALL needs a grant not limited in it.
 */
export interface Need {
  permission: Permission;
  project?: string | typeof ALL | null | undefined;
  environment?: string | typeof ALL | null | undefined;
}

/**
 * The set of (project, environment) pairs one permission reaches: a union of boxes, one per
 * grant. Lists filter with it (`src/store` turns it into SQL), single resources ask `covers`.
 */
export interface Reach {
  /** Null when the permission reaches everything; otherwise each box (null = unlimited). */
  readonly boxes: ReadonlyArray<{ projects: readonly string[] | null; environments: readonly string[] | null }> | null;
}

/** The caller's grants, decided once per request and asked by every route (src/api/access.ts). */
export class Access {
  private constructor(private readonly grants: readonly Grant[]) {}

  /** The bootstrap admin key and administrators: every permission everywhere. */
  static everything(): Access {
    return new Access([{ permissions: new Set(permissions), projects: null, environments: null }]);
  }

  static of(grants: readonly Grant[]): Access {
    return new Access(grants);
  }

  /** True when some grant has the permission on a scope that covers the project and environment. */
  allows(need: Need): boolean {
    return this.grants.some(
      (grant) =>
        grant.permissions.has(need.permission) &&
        within(grant.projects, need.project) &&
        within(grant.environments, need.environment),
    );
  }

  /** The administer permission on everything: users, teams, roles, global configuration. */
  get isAdministrator(): boolean {
    return this.allows({ permission: "administer", project: ALL, environment: ALL });
  }

  reach(permission: Permission): Reach {
    const boxes = this.grants
      .filter((grant) => grant.permissions.has(permission))
      .map((grant) => ({ projects: grant.projects, environments: grant.environments }));
    return { boxes: boxes.some((box) => box.projects === null && box.environments === null) ? null : boxes };
  }
}

function within(scope: readonly string[] | null, wanted: Need["project"]): boolean {
  if (scope === null || wanted === undefined) return true;
  // A task without an environment (or project) is visible only to unlimited grants.
  if (wanted === ALL || wanted === null) return false;
  return scope.includes(wanted);
}

/** True when the pair lies in one of the reach's boxes. */
export function reaches(reach: Reach, project: string | null, environment: string | null): boolean {
  if (reach.boxes === null) return true;
  return reach.boxes.some(
    (box) =>
      (box.projects === null || (project !== null && box.projects.includes(project))) &&
      (box.environments === null || (environment !== null && box.environments.includes(environment))),
  );
}

/**
 * For something scoped to a list of environments (empty: every environment), such as a
 * variable: true when the reach meets the project on one of them (any, for an empty list).
 */
export function reachesSome(reach: Reach, project: string, environments: readonly string[]): boolean {
  if (reach.boxes === null) return true;
  if (environments.length === 0) {
    return reach.boxes.some((box) => box.projects === null || box.projects.includes(project));
  }
  return environments.some((environment) => reaches(reach, project, environment));
}

/** True when the reach covers the project on each of the environments (on every one, for an empty list). */
export function reachesEvery(reach: Reach, project: string, environments: readonly string[]): boolean {
  if (reach.boxes === null) return true;
  if (environments.length === 0) {
    return reach.boxes.some(
      (box) => (box.projects === null || box.projects.includes(project)) && box.environments === null,
    );
  }
  return environments.every((environment) => reaches(reach, project, environment));
}

/** Projects (or environments) of which at least one pair is reached; null = all. */
export function reachedIds(reach: Reach, dimension: "projects" | "environments"): ReadonlySet<string> | null {
  if (reach.boxes === null || reach.boxes.some((box) => box[dimension] === null)) return null;
  return new Set(reach.boxes.flatMap((box) => box[dimension] ?? []));
}

// ─── Roles and teams as the API shows and takes them ────────────────────────────────────

const permissionSchema = z.enum(permissions);

export const accessRoleSchema = z.object({
  id: z.string(),
  slug: z.string(),
  name: z.string(),
  description: z.string(),
  permissions: z.array(permissionSchema),
  builtIn: z.boolean().describe("shipped with Ferry; cannot be changed or deleted"),
  ...timestampsShape,
});
export type AccessRole = z.infer<typeof accessRoleSchema>;

const permissionListSchema = z
  .array(permissionSchema)
  .min(1, { message: "grant at least one permission" })
  .max(permissions.length)
  .refine((list) => new Set(list).size === list.length, { message: "name each permission once" });

export const createAccessRoleSchema = z.strictObject({
  name: nameSchema,
  slug: slugSchema.optional(),
  description: descriptionSchema.default(""),
  permissions: permissionListSchema,
});
export type CreateAccessRole = z.infer<typeof createAccessRoleSchema>;

export const updateAccessRoleSchema = createAccessRoleSchema
  .partial()
  .refine((body) => Object.keys(body).length > 0, { message: "send at least one field to change" });
export type UpdateAccessRole = z.infer<typeof updateAccessRoleSchema>;

/** A role granted to a team on some projects and environments (left out: all of them). */
const assignmentSchema = z.object({
  role: z.string().describe("role slug"),
  projects: z.array(z.string()).nullable().describe("project slugs; null = every project"),
  environments: z.array(z.string()).nullable().describe("environment slugs; null = every environment"),
});

const assignmentInputSchema = z.strictObject({
  role: referenceSchema.describe("role slug or id"),
  projects: z
    .array(referenceSchema)
    .min(1, { message: "name at least one project, or leave the field out for every project" })
    .max(1000)
    .optional(),
  environments: z
    .array(referenceSchema)
    .min(1, { message: "name at least one environment, or leave the field out for every environment" })
    .max(1000)
    .optional(),
});
export type AssignmentInput = z.infer<typeof assignmentInputSchema>;

export const teamSchema = z.object({
  id: z.string(),
  slug: z.string(),
  name: z.string(),
  description: z.string(),
  members: z.array(z.string()).describe("usernames"),
  roles: z.array(assignmentSchema),
  ...timestampsShape,
});
export type Team = z.infer<typeof teamSchema>;

export const createTeamSchema = z.strictObject({
  name: nameSchema,
  slug: slugSchema.optional(),
  description: descriptionSchema.default(""),
  members: z.array(referenceSchema.describe("username or user id")).max(10_000).default([]),
  roles: z.array(assignmentInputSchema).max(100).default([]),
});
export type CreateTeam = z.infer<typeof createTeamSchema>;

export const updateTeamSchema = z
  .strictObject({
    name: nameSchema,
    slug: slugSchema,
    description: descriptionSchema,
    members: z.array(referenceSchema).max(10_000).describe("replaces the members"),
    roles: z.array(assignmentInputSchema).max(100).describe("replaces the role assignments"),
  })
  .partial()
  .refine((body) => Object.keys(body).length > 0, { message: "send at least one field to change" });
export type UpdateTeam = z.infer<typeof updateTeamSchema>;

/** Roles every install has (created by the migration); administrators add their own. */
export const builtInRoles: ReadonlyArray<{
  slug: string;
  name: string;
  description: string;
  permissions: Permission[];
}> = [
  { slug: "viewer", name: "Viewer", description: "Sees projects, releases, tasks and logs", permissions: ["view"] },
  {
    slug: "deployer",
    name: "Deployer",
    description: "Developers: deploys and runs runbooks where granted",
    permissions: ["view", "deploy", "runRunbooks", "viewSensitiveNames"],
  },
  {
    slug: "release-manager",
    name: "Release manager",
    description: "Approves, deploys and resolves failed steps where granted",
    permissions: ["view", "deploy", "approve", "resolveFailures", "runRunbooks", "viewSensitiveNames"],
  },
  {
    slug: "project-editor",
    name: "Project editor",
    description: "Changes the deployment process, the runbooks and the variables",
    permissions: ["view", "editProcess", "editRunbooks", "editVariables", "viewSensitiveNames"],
  },
  {
    slug: "runbook-consumer",
    name: "Runbook consumer",
    description: "Runs published runbooks where granted; deploys and edits nothing",
    permissions: ["view", "runRunbooks"],
  },
  {
    slug: "administrator",
    name: "Administrator",
    description: "Every permission; on every project and environment it also manages users, teams and settings",
    permissions: [...permissions],
  },
];
