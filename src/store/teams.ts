import {
  type AccessRole,
  type AssignmentInput,
  type CreateAccessRole,
  type CreateTeam,
  type Grant,
  permissions as knownPermissions,
  type Permission,
  type Team,
  type UpdateAccessRole,
  type UpdateTeam,
} from "../domain/access.js";
import type { Paging } from "../domain/common.js";
import { type FieldIssue, InUseError, PreconditionError } from "../domain/errors.js";
import {
  assertNameAndSlugFree,
  countRows,
  type Executor,
  findNamed,
  newId,
  nowIso,
  parseJsonList,
  resolveReferences,
  type StoreContext,
  slugFor,
  throwIfIssues,
  toPage,
  translateUniqueViolation,
} from "./common.js";
import type { Database } from "./schema.js";

// ─── Grants: what a user may do ─────────────────────────────────────────────────────────

/** Every role the user's teams grant, with its scope: one query per request. */
export async function grantsOfUser(db: Executor, userId: string): Promise<Grant[]> {
  const rows = await db
    .selectFrom("team_members as m")
    .innerJoin("team_roles as tr", "tr.team_id", "m.team_id")
    .innerJoin("roles as r", "r.id", "tr.role_id")
    .select(["r.permissions", "tr.projects", "tr.environments"])
    .where("m.user_id", "=", userId)
    .execute();
  return rows.map((row) => ({
    permissions: new Set(parsePermissions(row.permissions)),
    projects: row.projects === null ? null : parseJsonList(row.projects),
    environments: row.environments === null ? null : parseJsonList(row.environments),
  }));
}

function parsePermissions(text: string): Permission[] {
  // A permission a later version dropped is ignored rather than failing every request.
  return parseJsonList(text).filter((name): name is Permission =>
    (knownPermissions as readonly string[]).includes(name),
  );
}

// ─── Roles ──────────────────────────────────────────────────────────────────────────────

type RoleRow = Database["roles"];

function toRole(row: RoleRow): AccessRole {
  return {
    id: row.id,
    slug: row.slug,
    name: row.name,
    description: row.description,
    permissions: parsePermissions(row.permissions),
    builtIn: Number(row.built_in) === 1,
    createdAt: row.created_at,
    updatedAt: row.updated_at,
  };
}

export async function listRoles({ db }: StoreContext, paging: Paging) {
  const rows = await db
    .selectFrom("roles")
    .selectAll()
    .orderBy("built_in", "desc")
    .orderBy("name")
    .limit(paging.limit)
    .offset(paging.offset)
    .execute();
  return toPage(rows.map(toRole), await countRows(db, "roles"), paging);
}

export async function getRole({ db }: StoreContext, reference: string): Promise<AccessRole> {
  const { id } = await findNamed(db, "roles", reference);
  return toRole(await db.selectFrom("roles").selectAll().where("id", "=", id).executeTakeFirstOrThrow());
}

export async function createRole(context: StoreContext, input: CreateAccessRole): Promise<AccessRole> {
  const slug = slugFor(input);
  const id = newId("role");
  await context.db.transaction().execute(async (trx) => {
    await assertNameAndSlugFree(trx, "roles", { name: input.name, slug });
    const now = nowIso();
    await translateUniqueViolation(`a role named '${input.name}' already exists`, () =>
      trx
        .insertInto("roles")
        .values({
          id,
          slug,
          name: input.name,
          description: input.description,
          permissions: JSON.stringify(input.permissions),
          built_in: 0,
          created_at: now,
          updated_at: now,
        })
        .execute(),
    );
  });
  return getRole(context, id);
}

async function changeableRole(db: Executor, reference: string) {
  const { id } = await findNamed(db, "roles", reference);
  const row = await db.selectFrom("roles").selectAll().where("id", "=", id).executeTakeFirstOrThrow();
  if (Number(row.built_in) === 1) {
    throw new PreconditionError(`'${row.slug}' is a built-in role and cannot be changed; create a role of your own`);
  }
  return row;
}

export async function updateRole(
  context: StoreContext,
  reference: string,
  input: UpdateAccessRole,
): Promise<AccessRole> {
  const id = await context.db.transaction().execute(async (trx) => {
    const row = await changeableRole(trx, reference);
    await assertNameAndSlugFree(trx, "roles", { name: input.name, slug: input.slug }, row.id);
    await translateUniqueViolation("that name or slug is already used by another role", () =>
      trx
        .updateTable("roles")
        .set({
          ...(input.name !== undefined && { name: input.name }),
          ...(input.slug !== undefined && { slug: input.slug }),
          ...(input.description !== undefined && { description: input.description }),
          ...(input.permissions !== undefined && { permissions: JSON.stringify(input.permissions) }),
          updated_at: nowIso(),
        })
        .where("id", "=", row.id)
        .execute(),
    );
    return row.id;
  });
  return getRole(context, id);
}

export async function deleteRole({ db }: StoreContext, reference: string): Promise<void> {
  await db.transaction().execute(async (trx) => {
    const row = await changeableRole(trx, reference);
    const users = await trx
      .selectFrom("team_roles as tr")
      .innerJoin("teams as t", "t.id", "tr.team_id")
      .select("t.slug")
      .where("tr.role_id", "=", row.id)
      .execute();
    if (users.length > 0) {
      throw new InUseError(`role '${row.slug}' is granted to teams; take it away from them first`, [
        ...new Set(users.map((team) => `team ${team.slug}`)),
      ]);
    }
    await trx.deleteFrom("roles").where("id", "=", row.id).execute();
  });
}

// ─── Teams ──────────────────────────────────────────────────────────────────────────────

async function loadTeams(db: Executor, rows: Database["teams"][]): Promise<Team[]> {
  if (rows.length === 0) return [];
  const ids = rows.map((row) => row.id);
  const members = await db
    .selectFrom("team_members as m")
    .innerJoin("users as u", "u.id", "m.user_id")
    .select(["m.team_id", "u.username"])
    .where("m.team_id", "in", ids)
    .orderBy("u.username")
    .execute();
  const assignments = await db
    .selectFrom("team_roles as tr")
    .innerJoin("roles as r", "r.id", "tr.role_id")
    .select(["tr.team_id", "r.slug", "tr.projects", "tr.environments"])
    .where("tr.team_id", "in", ids)
    .orderBy("tr.position")
    .execute();
  // Scopes hold ids; the API shows slugs. An id of a deleted project matches nothing and is not shown.
  const scopeIds = assignments.flatMap((row) => [
    ...(row.projects ? parseJsonList(row.projects) : []),
    ...(row.environments ? parseJsonList(row.environments) : []),
  ]);
  const slugs = new Map<string, string>();
  if (scopeIds.length > 0) {
    for (const table of ["projects", "environments"] as const) {
      const found = await db.selectFrom(table).select(["id", "slug"]).where("id", "in", scopeIds).execute();
      for (const row of found) slugs.set(row.id, row.slug);
    }
  }
  const toSlugs = (text: string | null) =>
    text === null ? null : parseJsonList(text).flatMap((id) => (slugs.has(id) ? [slugs.get(id) as string] : []));
  return rows.map((row) => ({
    id: row.id,
    slug: row.slug,
    name: row.name,
    description: row.description,
    members: members.filter((member) => member.team_id === row.id).map((member) => member.username),
    roles: assignments
      .filter((assignment) => assignment.team_id === row.id)
      .map((assignment) => ({
        role: assignment.slug,
        projects: toSlugs(assignment.projects),
        environments: toSlugs(assignment.environments),
      })),
    createdAt: row.created_at,
    updatedAt: row.updated_at,
  }));
}

export async function listTeams({ db }: StoreContext, paging: Paging) {
  const rows = await db
    .selectFrom("teams")
    .selectAll()
    .orderBy("name")
    .limit(paging.limit)
    .offset(paging.offset)
    .execute();
  return toPage(await loadTeams(db, rows), await countRows(db, "teams"), paging);
}

export async function getTeam({ db }: StoreContext, reference: string): Promise<Team> {
  const { id } = await findNamed(db, "teams", reference);
  const row = await db.selectFrom("teams").selectAll().where("id", "=", id).executeTakeFirstOrThrow();
  const [team] = await loadTeams(db, [row]);
  return team as Team;
}

export async function createTeam(context: StoreContext, input: CreateTeam): Promise<Team> {
  const slug = slugFor(input);
  const id = newId("team");
  await context.db.transaction().execute(async (trx) => {
    await assertNameAndSlugFree(trx, "teams", { name: input.name, slug });
    const issues: FieldIssue[] = [];
    const members = await resolveUsers(trx, input.members, issues);
    const assignments = await resolveAssignments(trx, input.roles, issues);
    throwIfIssues(issues);
    const now = nowIso();
    await translateUniqueViolation(`a team named '${input.name}' already exists`, () =>
      trx
        .insertInto("teams")
        .values({ id, slug, name: input.name, description: input.description, created_at: now, updated_at: now })
        .execute(),
    );
    await writeMembers(trx, id, members);
    await writeAssignments(trx, id, assignments);
  });
  return getTeam(context, id);
}

export async function updateTeam(context: StoreContext, reference: string, input: UpdateTeam): Promise<Team> {
  const id = await context.db.transaction().execute(async (trx) => {
    const { id } = await findNamed(trx, "teams", reference);
    await assertNameAndSlugFree(trx, "teams", { name: input.name, slug: input.slug }, id);
    const issues: FieldIssue[] = [];
    const members = input.members === undefined ? undefined : await resolveUsers(trx, input.members, issues);
    const assignments = input.roles === undefined ? undefined : await resolveAssignments(trx, input.roles, issues);
    throwIfIssues(issues);
    await translateUniqueViolation("that name or slug is already used by another team", () =>
      trx
        .updateTable("teams")
        .set({
          ...(input.name !== undefined && { name: input.name }),
          ...(input.slug !== undefined && { slug: input.slug }),
          ...(input.description !== undefined && { description: input.description }),
          updated_at: nowIso(),
        })
        .where("id", "=", id)
        .execute(),
    );
    if (members) await writeMembers(trx, id, members);
    if (assignments) await writeAssignments(trx, id, assignments);
    return id;
  });
  return getTeam(context, id);
}

export async function deleteTeam({ db }: StoreContext, reference: string): Promise<void> {
  const { id } = await findNamed(db, "teams", reference);
  await db.deleteFrom("teams").where("id", "=", id).execute();
}

async function resolveUsers(db: Executor, references: readonly string[], issues: FieldIssue[]): Promise<string[]> {
  const ids: string[] = [];
  for (const [index, reference] of references.entries()) {
    const row = await db
      .selectFrom("users")
      .select("id")
      .where((eb) => eb.or([eb("id", "=", reference), eb("username", "=", reference)]))
      .executeTakeFirst();
    if (row) ids.push(row.id);
    else issues.push({ pointer: `/members/${index}`, detail: `no user '${reference}'` });
  }
  return [...new Set(ids)];
}

interface ResolvedAssignment {
  roleId: string;
  projects: string[] | null;
  environments: string[] | null;
}

async function resolveAssignments(
  db: Executor,
  inputs: readonly AssignmentInput[],
  issues: FieldIssue[],
): Promise<ResolvedAssignment[]> {
  const resolved: ResolvedAssignment[] = [];
  for (const [index, input] of inputs.entries()) {
    const role = await db
      .selectFrom("roles")
      .select("id")
      .where((eb) => eb.or([eb("id", "=", input.role), eb("slug", "=", input.role)]))
      .executeTakeFirst();
    if (!role) issues.push({ pointer: `/roles/${index}/role`, detail: `no role '${input.role}'` });
    const projects = input.projects
      ? await resolveReferences(db, "projects", input.projects, `/roles/${index}/projects`, issues)
      : null;
    const environments = input.environments
      ? await resolveReferences(db, "environments", input.environments, `/roles/${index}/environments`, issues)
      : null;
    if (role) resolved.push({ roleId: role.id, projects, environments });
  }
  return resolved;
}

async function writeMembers(trx: Executor, teamId: string, userIds: readonly string[]): Promise<void> {
  await trx.deleteFrom("team_members").where("team_id", "=", teamId).execute();
  if (userIds.length === 0) return;
  await trx
    .insertInto("team_members")
    .values(userIds.map((userId) => ({ team_id: teamId, user_id: userId })))
    .execute();
}

async function writeAssignments(trx: Executor, teamId: string, assignments: readonly ResolvedAssignment[]) {
  await trx.deleteFrom("team_roles").where("team_id", "=", teamId).execute();
  if (assignments.length === 0) return;
  await trx
    .insertInto("team_roles")
    .values(
      assignments.map((assignment, position) => ({
        id: newId("grant"),
        team_id: teamId,
        role_id: assignment.roleId,
        position,
        projects: assignment.projects === null ? null : JSON.stringify([...new Set(assignment.projects)]),
        environments: assignment.environments === null ? null : JSON.stringify([...new Set(assignment.environments)]),
      })),
    )
    .execute();
}
