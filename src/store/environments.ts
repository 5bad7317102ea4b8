import { type Reach, reachedIds } from "../domain/access.js";
import type { Paging } from "../domain/common.js";
import {
  type CreateEnvironment,
  type Environment,
  type UnavailableTargetPolicy,
  type UpdateEnvironment,
  unavailableTargetPolicies,
} from "../domain/environments.js";
import { InUseError } from "../domain/errors.js";
import {
  assertNameAndSlugFree,
  countRows,
  type Executor,
  findNamed,
  newId,
  nowIso,
  type StoreContext,
  slugFor,
  toPage,
  translateUniqueViolation,
} from "./common.js";
import type { EnvironmentRow } from "./schema.js";
import { setVariablesScopedTo } from "./variableSets.js";

function toEnvironment(row: EnvironmentRow): Environment {
  return {
    id: row.id,
    slug: row.slug,
    name: row.name,
    description: row.description,
    position: row.position,
    unavailableTargets: unavailableTargetPolicyOf(row.unavailable_targets),
    createdAt: row.created_at,
    updatedAt: row.updated_at,
  };
}

/** A value written by a later Ferry reads as the default rather than breaking the list. */
export function unavailableTargetPolicyOf(value: string): UnavailableTargetPolicy {
  return (unavailableTargetPolicies as readonly string[]).includes(value) ? (value as UnavailableTargetPolicy) : "fail";
}

export async function createEnvironment({ db }: StoreContext, input: CreateEnvironment): Promise<Environment> {
  const slug = slugFor(input);
  return db.transaction().execute(async (trx) => {
    await lockEnvironmentOrder(trx);
    await assertNameAndSlugFree(trx, "environments", { name: input.name, slug: slug });
    const count = await countRows(trx, "environments");
    const position = Math.min(input.position ?? count, count);
    await trx
      .updateTable("environments")
      .set((eb) => ({ position: eb("position", "+", 1) }))
      .where("position", ">=", position)
      .execute();
    const now = nowIso();
    const row: EnvironmentRow = {
      id: newId("env"),
      slug: slug,
      name: input.name,
      description: input.description,
      position,
      unavailable_targets: input.unavailableTargets ?? "fail",
      created_at: now,
      updated_at: now,
    };
    await translateUniqueViolation(`an environment named '${input.name}' already exists`, () =>
      trx.insertInto("environments").values(row).execute(),
    );
    return toEnvironment(row);
  });
}

export async function getEnvironment({ db }: StoreContext, reference: string): Promise<Environment> {
  const { id } = await findNamed(db, "environments", reference);
  return toEnvironment(await db.selectFrom("environments").selectAll().where("id", "=", id).executeTakeFirstOrThrow());
}

/** Environments in order; with `visible`, only those the caller may view in some project. */
export async function listEnvironments({ db }: StoreContext, paging: Paging, visible: Reach = { boxes: null }) {
  const ids = reachedIds(visible, "environments");
  if (ids !== null && ids.size === 0) return toPage([], 0, paging);
  let query = db.selectFrom("environments");
  if (ids !== null) query = query.where("id", "in", [...ids]);
  const rows = await query.selectAll().orderBy("position").limit(paging.limit).offset(paging.offset).execute();
  const total =
    ids === null
      ? await countRows(db, "environments")
      : Number(
          (await query.select((eb) => eb.fn.countAll<number | string>().as("count")).executeTakeFirstOrThrow()).count,
        );
  return toPage(rows.map(toEnvironment), total, paging);
}

export async function updateEnvironment(
  { db }: StoreContext,
  reference: string,
  input: UpdateEnvironment,
): Promise<Environment> {
  return db.transaction().execute(async (trx) => {
    await lockEnvironmentOrder(trx);
    const { id } = await findNamed(trx, "environments", reference);
    await assertNameAndSlugFree(trx, "environments", { name: input.name, slug: input.slug }, id);
    const current = await trx.selectFrom("environments").selectAll().where("id", "=", id).executeTakeFirstOrThrow();
    if (input.position !== undefined && input.position !== current.position) {
      await moveEnvironment(trx, current.position, input.position);
    }
    const count = await countRows(trx, "environments");
    await translateUniqueViolation(`that name or slug is already used by another environment`, () =>
      trx
        .updateTable("environments")
        .set({
          ...(input.name !== undefined && { name: input.name }),
          ...(input.slug !== undefined && { slug: input.slug }),
          ...(input.description !== undefined && { description: input.description }),
          ...(input.position !== undefined && { position: Math.min(input.position, count - 1) }),
          ...(input.unavailableTargets !== undefined && { unavailable_targets: input.unavailableTargets }),
          updated_at: nowIso(),
        })
        .where("id", "=", id)
        .execute(),
    );
    return toEnvironment(
      await trx.selectFrom("environments").selectAll().where("id", "=", id).executeTakeFirstOrThrow(),
    );
  });
}

/**
 * Positions are compacted 0..n-1 by shifting rows, which races under READ COMMITTED: two
 * creates could count the same n. Writing the order's counter row first makes every
 * order change wait for the previous one on PostgreSQL (SQLite has one writer anyway).
 */
async function lockEnvironmentOrder(trx: Executor): Promise<void> {
  await trx
    .updateTable("counters")
    .set((eb) => ({ value: eb("value", "+", 1) }))
    .where("name", "=", "environment-order")
    .execute();
}

/** Shifts the environments between `from` and `to` by one to make room at `to`. */
async function moveEnvironment(trx: Executor, from: number, to: number): Promise<void> {
  if (to > from) {
    await trx
      .updateTable("environments")
      .set((eb) => ({ position: eb("position", "-", 1) }))
      .where("position", ">", from)
      .where("position", "<=", to)
      .execute();
  } else {
    await trx
      .updateTable("environments")
      .set((eb) => ({ position: eb("position", "+", 1) }))
      .where("position", ">=", to)
      .where("position", "<", from)
      .execute();
  }
}

export async function deleteEnvironment({ db }: StoreContext, reference: string): Promise<void> {
  await db.transaction().execute(async (trx) => {
    await lockEnvironmentOrder(trx);
    const environment = await findNamed(trx, "environments", reference);
    const usedBy = await usagesOfEnvironment(trx, environment.id);
    if (usedBy.length > 0) {
      throw new InUseError(
        `environment '${environment.name}' is used by ${usedBy.join(", ")}; remove it from those first`,
        usedBy,
      );
    }
    const { position } = await trx
      .selectFrom("environments")
      .select("position")
      .where("id", "=", environment.id)
      .executeTakeFirstOrThrow();
    await trx.deleteFrom("environments").where("id", "=", environment.id).execute();
    await trx
      .updateTable("environments")
      .set((eb) => ({ position: eb("position", "-", 1) }))
      .where("position", ">", position)
      .execute();
  });
}

async function usagesOfEnvironment(trx: Executor, environmentId: string): Promise<string[]> {
  const lifecycles = await trx
    .selectFrom("lifecycle_phase_environments as lpe")
    .innerJoin("lifecycles as l", "l.id", "lpe.lifecycle_id")
    .select("l.name")
    .where("lpe.environment_id", "=", environmentId)
    .execute();
  const targets = await trx
    .selectFrom("target_environments as te")
    .innerJoin("targets as t", "t.id", "te.target_id")
    .select("t.name")
    .where("te.environment_id", "=", environmentId)
    .execute();
  const variables = [
    ...(await variablesScopedTo(trx, "environment", environmentId)),
    ...(await setVariablesScopedTo(trx, "environment", environmentId)),
  ];
  return [
    ...lifecycles.map((row) => `lifecycle '${row.name}'`),
    ...targets.map((row) => `target '${row.name}'`),
    ...variables,
  ];
}

/** Variables whose scope names the environment or target, as "variable 'X' of project 'Y'". */
export async function variablesScopedTo(trx: Executor, kind: "environment" | "target", id: string): Promise<string[]> {
  const rows = await trx
    .selectFrom("variable_scopes as s")
    .innerJoin("variables as v", "v.id", "s.variable_id")
    .innerJoin("projects as p", "p.id", "v.project_id")
    .select(["v.name as variable", "p.name as project"])
    .where("s.kind", "=", kind)
    .where("s.value", "=", id)
    .execute();
  return rows.map((row) => `variable '${row.variable}' of project '${row.project}'`);
}
