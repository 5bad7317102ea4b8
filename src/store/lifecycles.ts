import type { Paging } from "../domain/common.js";
import type { FieldIssue } from "../domain/errors.js";
import { InUseError } from "../domain/errors.js";
import {
  type CreateLifecycle,
  checkPhases,
  type Lifecycle,
  type PhaseInput,
  type ResolvedPhase,
  type UpdateLifecycle,
} from "../domain/lifecycles.js";
import {
  assertNameAndSlugFree,
  countRows,
  type Executor,
  findNamed,
  newId,
  nowIso,
  resolveReferences,
  type StoreContext,
  slugFor,
  throwIfIssues,
  toPage,
  translateUniqueViolation,
} from "./common.js";
import type { LifecycleRow } from "./schema.js";

async function loadLifecycles(db: Executor, rows: LifecycleRow[]): Promise<Lifecycle[]> {
  if (rows.length === 0) return [];
  const ids = rows.map((row) => row.id);
  const phases = await db
    .selectFrom("lifecycle_phases")
    .selectAll()
    .where("lifecycle_id", "in", ids)
    .orderBy("lifecycle_id")
    .orderBy("position")
    .execute();
  const members = await db
    .selectFrom("lifecycle_phase_environments as lpe")
    .innerJoin("environments as e", "e.id", "lpe.environment_id")
    .select(["lpe.lifecycle_id", "lpe.phase_position", "e.slug"])
    .where("lpe.lifecycle_id", "in", ids)
    .orderBy("lpe.position")
    .execute();
  return rows.map((row) => ({
    id: row.id,
    slug: row.slug,
    name: row.name,
    description: row.description,
    phases: phases
      .filter((phase) => phase.lifecycle_id === row.id)
      .map((phase) => ({
        name: phase.name,
        environments: members
          .filter((member) => member.lifecycle_id === row.id && member.phase_position === phase.position)
          .map((member) => member.slug),
        autoDeploy: phase.auto_deploy === 1,
        optional: phase.optional === 1,
        acceptSkippedSteps: phase.accept_skipped_steps === 1,
        separateApprover: phase.separate_approver === 1,
      })),
    createdAt: row.created_at,
    updatedAt: row.updated_at,
  }));
}

async function loadLifecycle(db: Executor, id: string): Promise<Lifecycle> {
  const row = await db.selectFrom("lifecycles").selectAll().where("id", "=", id).executeTakeFirstOrThrow();
  const [lifecycle] = await loadLifecycles(db, [row]);
  if (!lifecycle) throw new Error(`lifecycle ${id} vanished while loading`);
  return lifecycle;
}

async function resolvePhases(trx: Executor, phases: readonly PhaseInput[]): Promise<ResolvedPhase[]> {
  const issues: FieldIssue[] = [];
  const resolved: ResolvedPhase[] = [];
  for (const [index, phase] of phases.entries()) {
    const environmentIds = await resolveReferences(
      trx,
      "environments",
      phase.environments,
      `/phases/${index}/environments`,
      issues,
    );
    const firstId = environmentIds[0];
    const firstName = firstId
      ? (await trx.selectFrom("environments").select("name").where("id", "=", firstId).executeTakeFirstOrThrow()).name
      : `Phase ${index + 1}`;
    resolved.push({
      name: phase.name ?? firstName,
      environmentIds,
      autoDeploy: phase.autoDeploy,
      optional: phase.optional,
      acceptSkippedSteps: phase.acceptSkippedSteps,
      separateApprover: phase.separateApprover,
    });
  }
  issues.push(...(issues.length === 0 ? checkPhases(resolved) : []));
  throwIfIssues(issues);
  return resolved;
}

async function writePhases(trx: Executor, lifecycleId: string, phases: readonly ResolvedPhase[]): Promise<void> {
  await trx.deleteFrom("lifecycle_phase_environments").where("lifecycle_id", "=", lifecycleId).execute();
  await trx.deleteFrom("lifecycle_phases").where("lifecycle_id", "=", lifecycleId).execute();
  for (const [position, phase] of phases.entries()) {
    await trx
      .insertInto("lifecycle_phases")
      .values({
        lifecycle_id: lifecycleId,
        position,
        name: phase.name,
        auto_deploy: phase.autoDeploy ? 1 : 0,
        optional: phase.optional ? 1 : 0,
        accept_skipped_steps: phase.acceptSkippedSteps ? 1 : 0,
        separate_approver: phase.separateApprover ? 1 : 0,
      })
      .execute();
    for (const [environmentPosition, environmentId] of phase.environmentIds.entries()) {
      await trx
        .insertInto("lifecycle_phase_environments")
        .values({
          lifecycle_id: lifecycleId,
          phase_position: position,
          environment_id: environmentId,
          position: environmentPosition,
        })
        .execute();
    }
  }
}

export async function createLifecycle({ db }: StoreContext, input: CreateLifecycle): Promise<Lifecycle> {
  const slug = slugFor(input);
  return db.transaction().execute(async (trx) => {
    await assertNameAndSlugFree(trx, "lifecycles", { name: input.name, slug });
    const phases = await resolvePhases(trx, input.phases);
    const now = nowIso();
    const id = newId("lc");
    await translateUniqueViolation(`a lifecycle named '${input.name}' already exists`, () =>
      trx
        .insertInto("lifecycles")
        .values({ id, slug, name: input.name, description: input.description, created_at: now, updated_at: now })
        .execute(),
    );
    await writePhases(trx, id, phases);
    return loadLifecycle(trx, id);
  });
}

export async function getLifecycle({ db }: StoreContext, reference: string): Promise<Lifecycle> {
  const { id } = await findNamed(db, "lifecycles", reference);
  return loadLifecycle(db, id);
}

export async function listLifecycles({ db }: StoreContext, paging: Paging) {
  const rows = await db
    .selectFrom("lifecycles")
    .selectAll()
    .orderBy("name")
    .limit(paging.limit)
    .offset(paging.offset)
    .execute();
  return toPage(await loadLifecycles(db, rows), await countRows(db, "lifecycles"), paging);
}

export async function updateLifecycle(
  { db }: StoreContext,
  reference: string,
  input: UpdateLifecycle,
): Promise<Lifecycle> {
  return db.transaction().execute(async (trx) => {
    const { id } = await findNamed(trx, "lifecycles", reference);
    await assertNameAndSlugFree(trx, "lifecycles", { name: input.name, slug: input.slug }, id);
    if (input.phases) await writePhases(trx, id, await resolvePhases(trx, input.phases));
    await translateUniqueViolation("that name or slug is already used by another lifecycle", () =>
      trx
        .updateTable("lifecycles")
        .set({
          ...(input.name !== undefined && { name: input.name }),
          ...(input.slug !== undefined && { slug: input.slug }),
          ...(input.description !== undefined && { description: input.description }),
          updated_at: nowIso(),
        })
        .where("id", "=", id)
        .execute(),
    );
    return loadLifecycle(trx, id);
  });
}

export async function deleteLifecycle({ db }: StoreContext, reference: string): Promise<void> {
  await db.transaction().execute(async (trx) => {
    const lifecycle = await findNamed(trx, "lifecycles", reference);
    const projects = await trx.selectFrom("projects").select("name").where("lifecycle_id", "=", lifecycle.id).execute();
    const usedBy = projects.map((project) => `project '${project.name}'`);
    if (usedBy.length > 0) {
      throw new InUseError(
        `lifecycle '${lifecycle.name}' is used by ${usedBy.join(", ")}; give those projects another lifecycle first`,
        usedBy,
      );
    }
    await trx.deleteFrom("lifecycles").where("id", "=", lifecycle.id).execute();
  });
}
