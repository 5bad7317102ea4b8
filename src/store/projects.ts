import { type Reach, reachedIds } from "../domain/access.js";
import type { Paging } from "../domain/common.js";
import type { FieldIssue } from "../domain/errors.js";
import type { CreateProject, Project, UpdateProject } from "../domain/projects.js";
import {
  assertNameAndSlugFree,
  countRows,
  type Executor,
  findNamed,
  newId,
  nowIso,
  resolveReference,
  type StoreContext,
  slugFor,
  throwIfIssues,
  toPage,
  translateUniqueViolation,
} from "./common.js";

function selectProjects(db: Executor) {
  return db
    .selectFrom("projects as p")
    .innerJoin("lifecycles as l", "l.id", "p.lifecycle_id")
    .select([
      "p.id",
      "p.slug",
      "p.name",
      "p.description",
      "l.slug as lifecycle",
      "p.version_pattern as versionPattern",
      "p.created_at as createdAt",
      "p.updated_at as updatedAt",
    ]);
}

async function loadProject(db: Executor, id: string): Promise<Project> {
  return selectProjects(db).where("p.id", "=", id).executeTakeFirstOrThrow();
}

export async function createProject(
  { db }: StoreContext,
  input: Omit<CreateProject, "versionPattern"> & { versionPattern?: string },
): Promise<Project> {
  const slug = slugFor(input);
  return db.transaction().execute(async (trx) => {
    await assertNameAndSlugFree(trx, "projects", { name: input.name, slug });
    const issues: FieldIssue[] = [];
    const lifecycleId = await resolveReference(trx, "lifecycles", input.lifecycle, "/lifecycle", issues);
    throwIfIssues(issues);
    const now = nowIso();
    const id = newId("prj");
    await translateUniqueViolation(`a project named '${input.name}' already exists`, () =>
      trx
        .insertInto("projects")
        .values({
          id,
          slug,
          name: input.name,
          description: input.description,
          lifecycle_id: lifecycleId,
          version_pattern: input.versionPattern ?? "0.0.#{n}",
          created_at: now,
          updated_at: now,
        })
        .execute(),
    );
    return loadProject(trx, id);
  });
}

export async function getProject({ db }: StoreContext, reference: string): Promise<Project> {
  const { id } = await findNamed(db, "projects", reference);
  return loadProject(db, id);
}

/** Projects by name; with `visible`, only those the caller may view in some environment. */
export async function listProjects({ db }: StoreContext, paging: Paging, visible: Reach = { boxes: null }) {
  const ids = reachedIds(visible, "projects");
  if (ids !== null && ids.size === 0) return toPage([], 0, paging);
  let query = selectProjects(db);
  if (ids !== null) query = query.where("p.id", "in", [...ids]);
  const items = await query.orderBy("p.name").limit(paging.limit).offset(paging.offset).execute();
  const total =
    ids === null
      ? await countRows(db, "projects")
      : Number(
          (
            await db
              .selectFrom("projects")
              .select((eb) => eb.fn.countAll<number | string>().as("count"))
              .where("id", "in", [...ids])
              .executeTakeFirstOrThrow()
          ).count,
        );
  return toPage(items, total, paging);
}

export async function updateProject({ db }: StoreContext, reference: string, input: UpdateProject): Promise<Project> {
  return db.transaction().execute(async (trx) => {
    const { id } = await findNamed(trx, "projects", reference);
    await assertNameAndSlugFree(trx, "projects", { name: input.name, slug: input.slug }, id);
    const issues: FieldIssue[] = [];
    const lifecycleId =
      input.lifecycle === undefined
        ? undefined
        : await resolveReference(trx, "lifecycles", input.lifecycle, "/lifecycle", issues);
    throwIfIssues(issues);
    await translateUniqueViolation("that name or slug is already used by another project", () =>
      trx
        .updateTable("projects")
        .set({
          ...(input.name !== undefined && { name: input.name }),
          ...(input.slug !== undefined && { slug: input.slug }),
          ...(input.description !== undefined && { description: input.description }),
          ...(lifecycleId !== undefined && { lifecycle_id: lifecycleId }),
          ...(input.versionPattern !== undefined && { version_pattern: input.versionPattern }),
          updated_at: nowIso(),
        })
        .where("id", "=", id)
        .execute(),
    );
    return loadProject(trx, id);
  });
}

/** Deleting a project deletes what it owns (its variables); nothing else refers to a project yet. */
export async function deleteProject({ db }: StoreContext, reference: string): Promise<void> {
  await db.transaction().execute(async (trx) => {
    const { id } = await findNamed(trx, "projects", reference);
    await trx.deleteFrom("projects").where("id", "=", id).execute();
  });
}
