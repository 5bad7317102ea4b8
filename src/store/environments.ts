import { type Reach, reachedIds } from "../domain/access.js";
import type { Paging } from "../domain/common.js";
import {
  type CreateEnvironment,
  type Environment,
  type UnavailableTargetPolicy,
  type UpdateEnvironment,
  unavailableTargetPolicies,
} from "../domain/environments.js";
import { InputError, InUseError } from "../domain/errors.js";
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
    ephemeral: row.ephemeral === 1,
    ttlMinutes: row.ephemeral === 1 ? row.ttl_minutes : null,
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
      ephemeral: input.ephemeral ? 1 : 0,
      ttl_minutes: input.ephemeral ? (input.ttlMinutes ?? null) : null,
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
    const ephemeral = input.ephemeral ?? current.ephemeral === 1;
    if (!ephemeral && input.ttlMinutes !== undefined && input.ttlMinutes !== null) {
      throw new InputError("only an ephemeral environment has a ttlMinutes", [
        { pointer: "/ttlMinutes", detail: "set ephemeral: true as well, or leave ttlMinutes out" },
      ]);
    }
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
          ...(input.ephemeral !== undefined && { ephemeral: input.ephemeral ? 1 : 0 }),
          // No longer ephemeral: no TTL either.
          ...(input.ttlMinutes !== undefined && { ttl_minutes: input.ttlMinutes }),
          ...(input.ephemeral === false && { ttl_minutes: null }),
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
    const row = await trx
      .selectFrom("environments")
      .select("ephemeral")
      .where("id", "=", environment.id)
      .executeTakeFirstOrThrow();
    if (row.ephemeral === 1) await detachEphemeralEnvironment(trx, environment.id, environment.name);
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

/**
 * An ephemeral environment belongs to its lifecycle phases and targets only while it lives
 * (ADR 0045): its memberships and deployment rows go with it. A phase it is the only environment of would be
 * left empty, and a variable scoped to it would apply everywhere once its scope is gone:
 * both refuse, saying what to change.
 */
async function detachEphemeralEnvironment(trx: Executor, environmentId: string, name: string): Promise<void> {
  const phases = await trx
    .selectFrom("lifecycle_phase_environments as lpe")
    .innerJoin("lifecycles as l", "l.id", "lpe.lifecycle_id")
    .select(["l.name", "lpe.lifecycle_id", "lpe.phase_position"])
    .where("lpe.environment_id", "=", environmentId)
    .execute();
  for (const phase of phases) {
    const others = await trx
      .selectFrom("lifecycle_phase_environments")
      .select("environment_id")
      .where("lifecycle_id", "=", phase.lifecycle_id)
      .where("phase_position", "=", phase.phase_position)
      .where("environment_id", "!=", environmentId)
      .execute();
    if (others.length === 0) {
      throw new InUseError(
        `ephemeral environment '${name}' is the only environment of phase ${phase.phase_position + 1} of lifecycle '${phase.name}'; add another environment to that phase or remove the phase first`,
        [`lifecycle '${phase.name}'`],
      );
    }
  }
  await trx.deleteFrom("lifecycle_phase_environments").where("environment_id", "=", environmentId).execute();
  await trx.deleteFrom("target_environments").where("environment_id", "=", environmentId).execute();
  // Its deployment rows go too (they name the environment); their tasks and logs stay, and
  // the audit log keeps who deployed what there.
  await trx.deleteFrom("deployments").where("environment_id", "=", environmentId).execute();
}

/**
 * Ephemeral environments whose TTL has run out at `now`: ttl_minutes after their last
 * deployment was created, or after their creation when nothing was deployed there.
 */
export async function expiredEphemeralEnvironments({ db }: StoreContext, now: Date): Promise<Environment[]> {
  const rows = await db
    .selectFrom("environments as e")
    .leftJoin("deployments as d", "d.environment_id", "e.id")
    .selectAll("e")
    .select((eb) => eb.fn.max("d.created_at").as("last_deployed_at"))
    .where("e.ephemeral", "=", 1)
    .where("e.ttl_minutes", "is not", null)
    .groupBy([
      "e.id",
      "e.slug",
      "e.name",
      "e.description",
      "e.position",
      "e.unavailable_targets",
      "e.ephemeral",
      "e.ttl_minutes",
      "e.created_at",
      "e.updated_at",
    ])
    .execute();
  return rows
    .filter((row) => {
      const since = Date.parse(row.last_deployed_at ?? row.created_at);
      return since + (row.ttl_minutes ?? 0) * 60_000 <= now.getTime();
    })
    .map(toEnvironment);
}

/** Deployments to the environment that are queued or running (a tear-down waits for them). */
export async function activeDeploymentsIn(
  { db }: StoreContext,
  environmentId: string,
  projectId?: string,
): Promise<number> {
  let query = db
    .selectFrom("deployments as d")
    .innerJoin("tasks as t", "t.id", "d.task_id")
    .select((eb) => eb.fn.countAll<number>().as("count"))
    .where("d.environment_id", "=", environmentId)
    .where("t.state", "in", ["queued", "running", "waiting"]);
  if (projectId !== undefined) query = query.where("d.project_id", "=", projectId);
  const row = await query.executeTakeFirstOrThrow();
  return Number(row.count);
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
