import { type SqlBool, sql } from "kysely";
import { type Reach, reachedIds } from "../domain/access.js";
import type { Paging } from "../domain/common.js";
import type { FieldIssue } from "../domain/errors.js";
import { InputError, InUseError, NotFoundError } from "../domain/errors.js";
import { SECRET_SET } from "../domain/feeds.js";
import type { CreateTarget, SshSettings, Target, TargetRouter, UpdateTarget } from "../domain/targets.js";
import { targetRouterSchema, targetSchema } from "../domain/targets.js";
import { privateKeyProblem } from "../security/sshKeys.js";
import { agentStatuses } from "./agents.js";
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
import { deleteTargetHealth, targetHealthOf } from "./targetHealth.js";
import { setVariablesScopedTo } from "./variableSets.js";

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
  const health = await targetHealthOf(
    db,
    rows.map((row) => row.id),
  );
  const agents = await agentStatuses(
    db,
    rows.filter((row) => row.transport === "agent").map((row) => row.id),
  );
  return rows.map((row) =>
    targetSchema.parse({
      id: row.id,
      slug: row.slug,
      name: row.name,
      environments: memberships.filter((member) => member.target_id === row.id).map((member) => member.slug),
      roles: parseJsonList(row.roles),
      transport: row.transport,
      runtimes: parseJsonList(row.runtimes),
      ssh: sshSettingsOf(row),
      health: health.get(row.id),
      router: routerOf(row),
      agent: agents.get(row.id) ?? null,
      createdAt: row.created_at,
      updatedAt: row.updated_at,
    }),
  );
}

/** The router column, read back through its schema (defaults of fields added later apply). */
export function routerOf(row: { router: string | null }): TargetRouter | null {
  return row.router === null ? null : targetRouterSchema.parse(JSON.parse(row.router));
}

const privateKeyContext = (targetId: string) => `target:${targetId}:ssh-private-key`;
const passphraseContext = (targetId: string) => `target:${targetId}:ssh-passphrase`;

interface JumpHostColumn {
  host: string;
  port: number;
  user: string;
  hostKey: string | null;
}

function jumpHostOf(row: TargetRow): JumpHostColumn | null {
  return row.ssh_jump_host === null ? null : (JSON.parse(row.ssh_jump_host) as JumpHostColumn);
}

/** The SSH settings as the API shows them: the key and passphrase as "set", never themselves. */
function sshSettingsOf(row: TargetRow): SshSettings | null {
  if (row.transport !== "ssh" || row.ssh_host === null || row.ssh_user === null) return null;
  return {
    host: row.ssh_host,
    port: row.ssh_port ?? 22,
    user: row.ssh_user,
    jumpHost: jumpHostOf(row),
    privateKey: SECRET_SET,
    passphrase: row.ssh_passphrase_sealed === null ? null : SECRET_SET,
    hostKey: row.ssh_host_key,
  };
}

/** A key the server could not use later is refused when it is saved, naming the field. */
function assertUsableKey(key: string, passphrase: string | undefined, pointer: string): void {
  const problem = privateKeyProblem(key, passphrase);
  if (problem) throw new InputError(problem, [{ pointer, detail: problem }]);
}

/** The SSH columns of a target that is not reached over SSH. */
const NO_SSH = {
  ssh_host: null,
  ssh_port: null,
  ssh_user: null,
  ssh_host_key: null,
  ssh_jump_host: null,
  ssh_private_key_sealed: null,
  ssh_passphrase_sealed: null,
} as const;

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

export async function createTarget(
  { db, secrets }: StoreContext,
  input: CreateTarget,
  /**
   * An agent target (store/agents.ts enrolAgent): made with transport `agent` and its
   * credential row in the same transaction, so that it is never, even for a moment, a local
   * target whose steps would run on the server's own host.
   */
  agent?: { inside(trx: Executor, targetId: string): Promise<void> },
): Promise<Target> {
  const slug = slugFor(input);
  const { ssh } = input;
  if (ssh) assertUsableKey(ssh.privateKey, ssh.passphrase, ssh.passphrase ? "/ssh/passphrase" : "/ssh/privateKey");
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
          transport: agent ? "agent" : input.transport,
          roles: JSON.stringify(input.roles),
          runtimes: JSON.stringify(input.runtimes),
          ...(ssh
            ? {
                ssh_host: ssh.host,
                ssh_port: ssh.port,
                ssh_user: ssh.user,
                ssh_host_key: ssh.hostKey ?? null,
                ssh_jump_host: ssh.jumpHost
                  ? JSON.stringify({ ...ssh.jumpHost, hostKey: ssh.jumpHost.hostKey ?? null } satisfies JumpHostColumn)
                  : null,
                ssh_private_key_sealed: secrets.seal(ssh.privateKey, privateKeyContext(id)),
                ssh_passphrase_sealed: ssh.passphrase ? secrets.seal(ssh.passphrase, passphraseContext(id)) : null,
              }
            : NO_SSH),
          router: input.router ? JSON.stringify(input.router) : null,
          created_at: now,
          updated_at: now,
        })
        .execute(),
    );
    await writeEnvironments(trx, id, input.environments);
    await agent?.inside(trx, id);
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

export async function updateTarget(context: StoreContext, reference: string, input: UpdateTarget): Promise<Target> {
  return context.db.transaction().execute(async (trx) => {
    const { id } = await findNamed(trx, "targets", reference);
    await assertNameAndSlugFree(trx, "targets", { name: input.name, slug: input.slug }, id);
    const current = await trx.selectFrom("targets").selectAll().where("id", "=", id).executeTakeFirstOrThrow();
    if (
      input.transport !== undefined &&
      input.transport !== current.transport &&
      (input.transport === "agent" || current.transport === "agent")
    ) {
      throw new InputError("an agent target's transport cannot change, nor can another target become an agent one", [
        {
          pointer: "/transport",
          detail:
            "an agent target is made by enrolling (ferry agent-token create, then ferry agent on the host); delete it to reach the host another way",
        },
      ]);
    }
    const sshColumns = updatedSshColumns(context, current, input);
    const transport = input.transport ?? current.transport;
    if (transport === "local" && (input.router || (input.router === undefined && current.router !== null))) {
      throw new InputError("a local target uses the server's own router", [
        {
          pointer: "/router",
          detail:
            "a local target uses the server's own router (FERRY_ROUTER and its settings): set router to null, or keep the target on ssh",
        },
      ]);
    }
    const driver = input.router?.driver;
    if (transport === "agent" && driver !== undefined && driver !== "builtin") {
      // nginx and haproxy both run a program and a config the server names (ADR 0039, 0048).
      throw new InputError(`an agent's host cannot use ${driver} as its router`, [
        {
          pointer: "/router/driver",
          detail: `the agent runs only its own Ferry as a host service, never ${driver} with a config the server names (ADR 0039, 0048): use driver "builtin" on an agent target`,
        },
      ]);
    }
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
          ...sshColumns,
          ...(input.router !== undefined && { router: input.router === null ? null : JSON.stringify(input.router) }),
          updated_at: nowIso(),
        })
        .where("id", "=", id)
        .execute(),
    );
    return loadTarget(trx, id);
  });
}

/**
 * The SSH columns an update writes. A target that becomes local forgets its SSH settings
 * (its key among them); one that becomes ssh needs host, user and privateKey. A trusted host
 * key belongs to the host and port it was trusted for: moving the target forgets it unless
 * the update brings the new one.
 */
function updatedSshColumns(
  { secrets }: StoreContext,
  current: TargetRow,
  input: UpdateTarget,
): Partial<Omit<TargetRow, "id" | "created_at">> {
  const transport = input.transport ?? current.transport;
  if (transport !== "ssh") {
    if (input.ssh) {
      throw new InputError('the ssh settings need transport "ssh"', [
        { pointer: "/transport", detail: 'set transport to "ssh" to use the ssh settings, or leave ssh out' },
      ]);
    }
    return current.transport === "ssh" ? NO_SSH : {};
  }
  const ssh = input.ssh ?? {};
  const host = ssh.host ?? current.ssh_host;
  const user = ssh.user ?? current.ssh_user;
  const missing = [
    ...(host === null ? ["host"] : []),
    ...(user === null ? ["user"] : []),
    ...(ssh.privateKey === undefined && current.ssh_private_key_sealed === null ? ["privateKey"] : []),
  ];
  if (missing.length > 0) {
    throw new InputError(`an ssh target needs ${missing.join(", ")}`, [
      ...missing.map((field) => ({ pointer: `/ssh/${field}`, detail: `required for an ssh target: add ${field}` })),
    ]);
  }
  const columns: Partial<Omit<TargetRow, "id" | "created_at">> = {};
  if (ssh.host !== undefined) columns.ssh_host = ssh.host;
  if (ssh.user !== undefined) columns.ssh_user = ssh.user;
  if (ssh.port !== undefined || current.ssh_port === null) columns.ssh_port = ssh.port ?? current.ssh_port ?? 22;
  const moved =
    (ssh.host !== undefined && ssh.host !== current.ssh_host) ||
    (ssh.port !== undefined && ssh.port !== (current.ssh_port ?? 22));
  if (ssh.hostKey !== undefined) columns.ssh_host_key = ssh.hostKey;
  else if (moved) columns.ssh_host_key = null;
  if (ssh.jumpHost !== undefined) {
    const before = jumpHostOf(current);
    const jump = ssh.jumpHost;
    const sameHost = jump !== null && before !== null && jump.host === before.host && jump.port === before.port;
    columns.ssh_jump_host =
      jump === null
        ? null
        : JSON.stringify({
            host: jump.host,
            port: jump.port,
            user: jump.user,
            hostKey: jump.hostKey ?? (sameHost ? before.hostKey : null),
          } satisfies JumpHostColumn);
  }
  // The key and passphrase are checked together: a new key may need the stored passphrase, and a new passphrase the stored key.
  if (ssh.privateKey !== undefined || ssh.passphrase !== undefined) {
    const key = ssh.privateKey ?? secrets.open(current.ssh_private_key_sealed ?? "", privateKeyContext(current.id));
    const passphrase =
      ssh.passphrase === undefined
        ? current.ssh_passphrase_sealed === null
          ? undefined
          : secrets.open(current.ssh_passphrase_sealed, passphraseContext(current.id))
        : (ssh.passphrase ?? undefined);
    assertUsableKey(key, passphrase, ssh.privateKey !== undefined ? "/ssh/privateKey" : "/ssh/passphrase");
    if (ssh.privateKey !== undefined) columns.ssh_private_key_sealed = secrets.seal(key, privateKeyContext(current.id));
    if (ssh.passphrase !== undefined) {
      columns.ssh_passphrase_sealed =
        ssh.passphrase === null ? null : secrets.seal(ssh.passphrase, passphraseContext(current.id));
    }
  }
  return columns;
}

/** What the SSH transport needs to connect: the key and passphrase in clear. Never for the API. */
export interface SshConnectionSettings {
  targetId: string;
  targetName: string;
  host: string;
  port: number;
  user: string;
  jumpHost: JumpHostColumn | null;
  privateKey: string;
  passphrase: string | undefined;
  hostKey: string | null;
  /** Changes whenever the target does: a pooled connection made with older settings is replaced. */
  version: string;
}

/** The target's SSH settings with its secrets opened, by id; a NotFoundError when it is gone or not an ssh target. */
export async function sshConnectionSettings(context: StoreContext, targetId: string): Promise<SshConnectionSettings> {
  const row = await context.db.selectFrom("targets").selectAll().where("id", "=", targetId).executeTakeFirst();
  if (!row) throw new NotFoundError(`target ${targetId} no longer exists`);
  return connectionSettingsOf(context, row);
}

function connectionSettingsOf(context: StoreContext, row: TargetRow): SshConnectionSettings {
  if (
    row.transport !== "ssh" ||
    row.ssh_host === null ||
    row.ssh_user === null ||
    row.ssh_private_key_sealed === null
  ) {
    throw new NotFoundError(`target '${row.name}' is not reached over SSH (its transport is ${row.transport})`);
  }
  return {
    targetId: row.id,
    targetName: row.name,
    host: row.ssh_host,
    port: row.ssh_port ?? 22,
    user: row.ssh_user,
    jumpHost: jumpHostOf(row),
    privateKey: context.secrets.open(row.ssh_private_key_sealed, privateKeyContext(row.id)),
    passphrase:
      row.ssh_passphrase_sealed === null
        ? undefined
        : context.secrets.open(row.ssh_passphrase_sealed, passphraseContext(row.id)),
    hostKey: row.ssh_host_key,
    version: row.updated_at,
  };
}

/** The SSH settings of a target the caller named (id or slug), for `ferry target trust`. */
export async function sshConnectionSettingsOf(
  context: StoreContext,
  reference: string,
): Promise<SshConnectionSettings> {
  const { id } = await findNamed(context.db, "targets", reference);
  return sshConnectionSettings(context, id);
}

/**
 * Stores the host keys a person confirmed (`ferry target trust`). Each is stored only if the
 * target still points at the host it was read from (`expected`): a concurrent update that
 * moved the target makes this a no-op for that host rather than trusting the old key for it.
 */
export async function trustHostKeys(
  { db }: StoreContext,
  targetId: string,
  expected: { host: string; port: number; jumpHost: { host: string; port: number } | null },
  keys: { hostKey?: string | undefined; jumpHostKey?: string | undefined },
): Promise<Target> {
  return db.transaction().execute(async (trx) => {
    const row = await trx.selectFrom("targets").selectAll().where("id", "=", targetId).executeTakeFirst();
    if (!row) throw new NotFoundError(`target ${targetId} no longer exists`);
    const jump = jumpHostOf(row);
    const samePlace =
      row.ssh_host === expected.host &&
      (row.ssh_port ?? 22) === expected.port &&
      (jump === null) === (expected.jumpHost === null) &&
      (jump === null || (jump.host === expected.jumpHost?.host && jump.port === expected.jumpHost.port));
    if (!samePlace) throw new InputError("the target's SSH settings changed meanwhile: run ferry target trust again");
    await trx
      .updateTable("targets")
      .set({
        ...(keys.hostKey !== undefined && { ssh_host_key: keys.hostKey }),
        ...(keys.jumpHostKey !== undefined &&
          jump && { ssh_jump_host: JSON.stringify({ ...jump, hostKey: keys.jumpHostKey } satisfies JumpHostColumn) }),
        updated_at: nowIso(),
      })
      .where("id", "=", targetId)
      .execute();
    return loadTarget(trx, targetId);
  });
}

export async function deleteTarget({ db }: StoreContext, reference: string): Promise<void> {
  await db.transaction().execute(async (trx) => {
    const target = await findNamed(trx, "targets", reference);
    const usedBy = [
      ...(await variablesScopedTo(trx, "target", target.id)),
      ...(await setVariablesScopedTo(trx, "target", target.id)),
    ];
    if (usedBy.length > 0) {
      throw new InUseError(
        `target '${target.name}' is used by ${usedBy.join(", ")}; remove it from their scope first`,
        usedBy,
      );
    }
    await deleteTargetHealth(trx, target.id);
    await trx.deleteFrom("targets").where("id", "=", target.id).execute();
  });
}
