import { type SqlBool, sql } from "kysely";
import { type Reach, reachedIds } from "../domain/access.js";
import type { Paging } from "../domain/common.js";
import type { FieldIssue } from "../domain/errors.js";
import { InUseError, NotFoundError } from "../domain/errors.js";
import type { CreateTarget, Target, UpdateTarget } from "../domain/targets.js";
import { targetSchema } from "../domain/targets.js";
import {
  assertNameAndSlugFree,
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
import { variablesScopedTo } from "./environments.js";
import type { TargetRow } from "./schema.js";

async function loadTargets(db: Executor, rows: TargetRow[]): Promise<Target[]> {
  if (rows.length === 0) return [];
  const memberships = await db
    .selectFrom("target_environments as te")
    .innerJoin("environments as e", "e.id", "te.environment_id")
    .select(["te.target_id", "e.slug"])
    .where(
      "te.target_id",
      "in",
      rows.map((row) => row.id),
    )
    .orderBy("e.position")
    .execute();
  return rows.map((row) =>
    targetSchema.parse({
      id: row.id,
      slug: row.slug,
      name: row.name,
      environments: memberships.filter((member) => member.target_id === row.id).map((member) => member.slug),
      roles: parseJsonList(row.roles),
      transport: row.transport,
      runtimes: parseJsonList(row.runtimes),
      createdAt: row.created_at,
      updatedAt: row.updated_at,
    }),
  );
}

async function loadTarget(db: Executor, id: string): Promise<Target> {
  const row = await db.selectFrom("targets").selectAll().where("id", "=", id).executeTakeFirstOrThrow();
  const [target] = await loadTargets(db, [row]);
  if (!target) throw new Error(`target ${id} vanished while loading`);
  return target;
}

async function writeEnvironments(trx: Executor, targetId: string, references: readonly string[]): Promise<void> {
  const issues: FieldIssue[] = [];
  const environmentIds = await resolveReferences(trx, "environments", references, "/environments", issues);
  throwIfIssues(issues);
  await trx.deleteFrom("target_environments").where("target_id", "=", targetId).execute();
  for (const environmentId of new Set(environmentIds)) {
    await trx
      .insertInto("target_environments")
      .values({ target_id: targetId, environment_id: environmentId })
      .execute();
  }
}

export async function createTarget({ db }: StoreContext, input: CreateTarget): Promise<Target> {
  const slug = slugFor(input);
  return db.transaction().execute(async (trx) => {
    await assertNameAndSlugFree(trx, "targets", { name: input.name, slug });
    const now = nowIso();
    const id = newId("tgt");
    await translateUniqueViolation(`a target named '${input.name}' already exists`, () =>
      trx
        .insertInto("targets")
        .values({
          id,
          slug,
          name: input.name,
          transport: input.transport,
          roles: JSON.stringify(input.roles),
          runtimes: JSON.stringify(input.runtimes),
          created_at: now,
          updated_at: now,
        })
        .execute(),
    );
    await writeEnvironments(trx, id, input.environments);
    return loadTarget(trx, id);
  });
}

/** A target the caller may not view (one of its environments is hidden from them) is "not found". */
export async function getTarget(
  { db }: StoreContext,
  reference: string,
  visible: Reach = { boxes: null },
): Promise<Target> {
  const { id } = await findNamed(db, "targets", reference);
  const shown = await visibleTargets(db, visible).where("id", "=", id).select("id").executeTakeFirst();
  if (!shown) throw new NotFoundError(`no target '${reference}'; list them with 'ferry target list'`);
  return loadTarget(db, id);
}

/** Targets by name; with `visible`, only those whose every environment the caller may view. */
export async function listTargets({ db }: StoreContext, paging: Paging, visible: Reach = { boxes: null }) {
  const query = visibleTargets(db, visible);
  const rows = await query.selectAll().orderBy("name").limit(paging.limit).offset(paging.offset).execute();
  const { count } = await query.select((eb) => eb.fn.countAll<number | string>().as("count")).executeTakeFirstOrThrow();
  return toPage(await loadTargets(db, rows), Number(count), paging);
}

function visibleTargets(db: Executor, visible: Reach) {
  const ids = reachedIds(visible, "environments");
  const query = db.selectFrom("targets");
  if (ids === null) return query;
  return query.where(({ not, exists, selectFrom }) =>
    not(
      exists(
        selectFrom("target_environments as te")
          .select("te.target_id")
          .whereRef("te.target_id", "=", "targets.id")
          .where((eb) => (ids.size === 0 ? sql<SqlBool>`1 = 1` : eb("te.environment_id", "not in", [...ids]))),
      ),
    ),
  );
}

export async function updateTarget({ db }: StoreContext, reference: string, input: UpdateTarget): Promise<Target> {
  return db.transaction().execute(async (trx) => {
    const { id } = await findNamed(trx, "targets", reference);
    await assertNameAndSlugFree(trx, "targets", { name: input.name, slug: input.slug }, id);
    if (input.environments) await writeEnvironments(trx, id, input.environments);
    await translateUniqueViolation("that name or slug is already used by another target", () =>
      trx
        .updateTable("targets")
        .set({
          ...(input.name !== undefined && { name: input.name }),
          ...(input.slug !== undefined && { slug: input.slug }),
          ...(input.transport !== undefined && { transport: input.transport }),
          ...(input.roles !== undefined && { roles: JSON.stringify(input.roles) }),
          ...(input.runtimes !== undefined && { runtimes: JSON.stringify(input.runtimes) }),
          updated_at: nowIso(),
        })
        .where("id", "=", id)
        .execute(),
    );
    return loadTarget(trx, id);
  });
}

export async function deleteTarget({ db }: StoreContext, reference: string): Promise<void> {
  await db.transaction().execute(async (trx) => {
    const target = await findNamed(trx, "targets", reference);
    const usedBy = await variablesScopedTo(trx, "target", target.id);
    if (usedBy.length > 0) {
      throw new InUseError(
        `target '${target.name}' is used by ${usedBy.join(", ")}; remove it from their scope first`,
        usedBy,
      );
    }
    await trx.deleteFrom("targets").where("id", "=", target.id).execute();
  });
}
