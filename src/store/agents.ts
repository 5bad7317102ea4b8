import { createHash, randomBytes } from "node:crypto";
import type { AgentStatus, CreateEnrolmentToken, Enrol, EnrolmentToken } from "../domain/agents.js";
import type { FieldIssue } from "../domain/errors.js";
import { InputError, NotFoundError, PreconditionError, UnauthenticatedError } from "../domain/errors.js";
import type { Target } from "../domain/targets.js";
import {
  type Executor,
  findNamed,
  newId,
  nowIso,
  resolveReferences,
  type StoreContext,
  throwIfIssues,
} from "./common.js";
import type { AgentEnrolmentTokenRow, AgentRow } from "./schema.js";
import { createTarget } from "./targets.js";

/** Enrolment tokens and agent credentials carry 256 random bits: a fast hash suffices, as for API keys. */
const hashSecret = (secret: string) => createHash("sha256").update(secret, "utf8").digest("hex");
const TOKEN_PREFIX = "ferry_enrol_";
const CREDENTIAL_PREFIX = "ferry_agent_";
const newSecret = (prefix: string) => prefix + randomBytes(32).toString("base64url");
const nextCredentialContext = (targetId: string) => `agent:${targetId}:next-credential`;

function tokenState(row: AgentEnrolmentTokenRow, now: string): EnrolmentToken["state"] {
  if (row.revoked_at !== null) return "revoked";
  if (row.used_at !== null) return "used";
  if (row.expires_at <= now) return "expired";
  return "usable";
}

async function tokenView(db: Executor, row: AgentEnrolmentTokenRow): Promise<EnrolmentToken> {
  const environmentIds = row.environment_ids === null ? null : (JSON.parse(row.environment_ids) as string[]);
  const environments =
    environmentIds === null || environmentIds.length === 0
      ? []
      : await db.selectFrom("environments").select(["id", "slug"]).where("id", "in", environmentIds).execute();
  const usedBy =
    row.used_by_target_id === null
      ? undefined
      : await db.selectFrom("targets").select("name").where("id", "=", row.used_by_target_id).executeTakeFirst();
  return {
    id: row.id,
    note: row.note,
    environments: environmentIds === null ? null : environments.map((environment) => environment.slug),
    roles: row.roles === null ? null : (JSON.parse(row.roles) as string[]),
    state: tokenState(row, nowIso()),
    createdAt: row.created_at,
    expiresAt: row.expires_at,
    usedAt: row.used_at,
    usedBy: usedBy?.name ?? null,
    revokedAt: row.revoked_at,
  };
}

/** A new one-time token; the token itself is in the answer only (the store keeps its hash). */
export async function createEnrolmentToken(
  { db }: StoreContext,
  input: CreateEnrolmentToken,
): Promise<EnrolmentToken & { token: string }> {
  const issues: FieldIssue[] = [];
  const environmentIds = input.environments
    ? await resolveReferences(db, "environments", input.environments, "/environments", issues)
    : null;
  throwIfIssues(issues);
  const token = newSecret(TOKEN_PREFIX);
  const now = new Date();
  const row: AgentEnrolmentTokenRow = {
    id: newId("enr"),
    token_hash: hashSecret(token),
    note: input.note ?? "",
    environment_ids: environmentIds === null ? null : JSON.stringify(environmentIds),
    roles: input.roles ? JSON.stringify(input.roles) : null,
    created_at: now.toISOString(),
    expires_at: new Date(now.getTime() + input.expiresInMinutes * 60_000).toISOString(),
    used_at: null,
    used_by_target_id: null,
    revoked_at: null,
  };
  await db.insertInto("agent_enrolment_tokens").values(row).execute();
  return { ...(await tokenView(db, row)), token };
}

export async function listEnrolmentTokens({ db }: StoreContext): Promise<EnrolmentToken[]> {
  const rows = await db.selectFrom("agent_enrolment_tokens").selectAll().orderBy("created_at", "desc").execute();
  return Promise.all(rows.map((row) => tokenView(db, row)));
}

/** Revokes a token that was not used yet; a used one has done its work (revoke the agent's credential instead). */
export async function revokeEnrolmentToken({ db }: StoreContext, id: string): Promise<EnrolmentToken> {
  const row = await db.selectFrom("agent_enrolment_tokens").selectAll().where("id", "=", id).executeTakeFirst();
  if (!row) throw new NotFoundError(`no enrolment token '${id}'; list them with 'ferry agent-token list'`);
  if (row.used_at !== null) {
    throw new PreconditionError(
      "this token was already used; to cut off the agent it enrolled, run: ferry target revoke-credential <target>",
    );
  }
  if (row.revoked_at === null) {
    await db.updateTable("agent_enrolment_tokens").set({ revoked_at: nowIso() }).where("id", "=", id).execute();
  }
  const updated = await db
    .selectFrom("agent_enrolment_tokens")
    .selectAll()
    .where("id", "=", id)
    .executeTakeFirstOrThrow();
  return tokenView(db, updated);
}

/**
 * Enrols an agent: spends the token (single use, checked by row count so two agents racing
 * with one token cannot both win), creates the target with transport `agent` and its
 * credential. A target that cannot be created (its name is taken) gives the token back, so
 * the agent can try again with another name.
 */
export async function enrolAgent(context: StoreContext, input: Enrol): Promise<{ target: Target; credential: string }> {
  const { db } = context;
  const refused = (why: string) =>
    new UnauthenticatedError(`${why}: ask a Ferry administrator for a new one (ferry agent-token create)`);
  const row = await db
    .selectFrom("agent_enrolment_tokens")
    .selectAll()
    .where("token_hash", "=", hashSecret(input.token))
    .executeTakeFirst();
  if (!row) throw refused("this enrolment token is not known");
  const now = nowIso();
  const state = tokenState(row, now);
  if (state !== "usable") throw refused(`this enrolment token was ${state === "used" ? "already used" : state}`);
  if (row.environment_ids !== null) {
    const allowed = new Set(JSON.parse(row.environment_ids) as string[]);
    const issues: FieldIssue[] = [];
    const wanted = await resolveReferences(db, "environments", input.environments, "/environments", issues);
    throwIfIssues(issues);
    const outside = input.environments.filter((_, index) => !allowed.has(wanted[index] ?? ""));
    if (outside.length > 0) {
      throw new InputError(`this enrolment token does not allow the environments ${outside.join(", ")}`, [
        {
          pointer: "/environments",
          detail: "name only environments the token was created for (ferry agent-token list)",
        },
      ]);
    }
  }
  // A token limited to roles: the agent takes only those, and all of them when it names none.
  let roles = input.roles;
  if (row.roles !== null) {
    const allowed = JSON.parse(row.roles) as string[];
    const outside = roles.filter((role) => !allowed.includes(role));
    if (outside.length > 0) {
      throw new InputError(`this enrolment token does not allow the roles ${outside.join(", ")}`, [
        {
          pointer: "/roles",
          detail: `name only roles the token was created for (${allowed.join(", ")}), or none to take them all`,
        },
      ]);
    }
    if (roles.length === 0) roles = allowed;
  }
  const spent = await db
    .updateTable("agent_enrolment_tokens")
    .set({ used_at: now })
    .where("id", "=", row.id)
    .where("used_at", "is", null)
    .where("revoked_at", "is", null)
    .where("expires_at", ">", now)
    .executeTakeFirst();
  if (Number(spent.numUpdatedRows) !== 1) throw refused("this enrolment token was already used");
  const credential = newSecret(CREDENTIAL_PREFIX);
  let target: Target;
  try {
    target = await createTarget(
      context,
      {
        name: input.name,
        ...(input.slug !== undefined && { slug: input.slug }),
        environments: input.environments,
        roles,
        transport: "local",
        runtimes: input.runtimes,
      },
      {
        // Made an agent target with its credential at once: never a local one, even briefly
        // (a deployment then would have run its steps on the server's own host).
        inside: async (trx, targetId) => {
          await trx
            .insertInto("agents")
            .values({
              target_id: targetId,
              credential_hash: hashSecret(credential),
              next_credential_hash: null,
              next_credential_sealed: null,
              revoked_at: null,
              state: "never",
              state_at: nowIso(),
              created_at: nowIso(),
            })
            .execute();
          await trx
            .updateTable("agent_enrolment_tokens")
            .set({ used_by_target_id: targetId })
            .where("id", "=", row.id)
            .execute();
        },
      },
    );
  } catch (error) {
    await db.updateTable("agent_enrolment_tokens").set({ used_at: null }).where("id", "=", row.id).execute();
    throw error;
  }
  return {
    target: { ...target, transport: "agent", agent: { state: "never", since: nowIso(), rotationPending: false } },
    credential,
  };
}

/** Who an agent is, from its credential, and a rotated credential it has yet to pick up. */
export interface AgentIdentity {
  targetId: string;
  targetName: string;
  /** The new credential, in clear, until the agent first uses it. */
  nextCredential: string | undefined;
}

/**
 * The agent a credential belongs to. A revoked one is refused saying so (the agent stops
 * rather than retrying); an unknown one with the words of any failed sign-in. The first
 * request with a rotated credential makes it the only one.
 */
export async function authenticateAgent(context: StoreContext, credential: string): Promise<AgentIdentity> {
  const { db } = context;
  if (!credential.startsWith(CREDENTIAL_PREFIX) || credential.length > 200) {
    throw new UnauthenticatedError("send the agent's credential as Authorization: Bearer ferry_agent_…");
  }
  const hash = hashSecret(credential);
  const row = await db
    .selectFrom("agents as a")
    .innerJoin("targets as t", "t.id", "a.target_id")
    .select([
      "a.target_id",
      "a.credential_hash",
      "a.next_credential_hash",
      "a.next_credential_sealed",
      "a.revoked_at",
      "t.name",
    ])
    .where((eb) => eb.or([eb("a.credential_hash", "=", hash), eb("a.next_credential_hash", "=", hash)]))
    .executeTakeFirst();
  if (!row)
    throw new UnauthenticatedError("this agent credential is not known: enrol the agent again with a new token");
  if (row.revoked_at !== null) {
    throw new UnauthenticatedError(
      `the credential of agent target '${row.name}' was revoked at ${row.revoked_at}: enrol the host again with a new token (ferry agent-token create)`,
    );
  }
  if (row.next_credential_hash === hash) {
    await db
      .updateTable("agents")
      .set({ credential_hash: hash, next_credential_hash: null, next_credential_sealed: null })
      .where("target_id", "=", row.target_id)
      .where("next_credential_hash", "=", hash)
      .execute();
    return { targetId: row.target_id, targetName: row.name, nextCredential: undefined };
  }
  return {
    targetId: row.target_id,
    targetName: row.name,
    nextCredential:
      row.next_credential_sealed === null
        ? undefined
        : context.secrets.open(row.next_credential_sealed, nextCredentialContext(row.target_id)),
  };
}

async function agentRowOf(db: Executor, reference: string): Promise<{ id: string; name: string; row: AgentRow }> {
  const target = await findNamed(db, "targets", reference);
  const row = await db.selectFrom("agents").selectAll().where("target_id", "=", target.id).executeTakeFirst();
  if (!row) throw new NotFoundError(`target '${target.name}' is not an agent target: it has no agent credential`);
  return { id: target.id, name: target.name, row };
}

/**
 * Rotates an agent's credential: the new one reaches the agent in its next poll answer and
 * replaces the old one when the agent first uses it. Nobody else ever sees it.
 */
export async function rotateAgentCredential(context: StoreContext, reference: string): Promise<{ target: string }> {
  const { id, name, row } = await agentRowOf(context.db, reference);
  if (row.revoked_at !== null)
    throw new PreconditionError(`the credential of '${name}' is revoked: enrol the host again`);
  // A second rotation before the agent used the first would lock it out: the first may be in
  // its hands already (a poll answered it), saved in place of the old one, and would then be
  // refused as unknown. Checked in the write, so two rotations at once cannot both pass.
  const pending = () =>
    new PreconditionError(
      `a rotated credential of '${name}' waits for its agent to use it (on its next poll): rotate again once 'ferry target show ${name}' no longer says so, or revoke the credential to cut the agent off now`,
    );
  if (row.next_credential_hash !== null) throw pending();
  const credential = newSecret(CREDENTIAL_PREFIX);
  const rotated = await context.db
    .updateTable("agents")
    .set({
      next_credential_hash: hashSecret(credential),
      next_credential_sealed: context.secrets.seal(credential, nextCredentialContext(id)),
    })
    .where("target_id", "=", id)
    .where("next_credential_hash", "is", null)
    .where("revoked_at", "is", null)
    .executeTakeFirst();
  if (Number(rotated.numUpdatedRows) !== 1) throw pending();
  return { target: name };
}

/** Revokes an agent's credential (and a pending rotated one): its next request is refused. */
export async function revokeAgentCredential(
  { db }: StoreContext,
  reference: string,
): Promise<{ target: string; targetId: string }> {
  const { id, name, row } = await agentRowOf(db, reference);
  if (row.revoked_at === null) {
    await db
      .updateTable("agents")
      .set({
        revoked_at: nowIso(),
        next_credential_hash: null,
        next_credential_sealed: null,
        state: "revoked",
        state_at: nowIso(),
      })
      .where("target_id", "=", id)
      .execute();
  }
  return { target: name, targetId: id };
}

/** Records a change of an agent's link (connected, lost): written on changes only. */
export async function setAgentState(
  { db }: StoreContext,
  targetId: string,
  state: "connected" | "lost",
): Promise<void> {
  await db
    .updateTable("agents")
    .set({ state, state_at: nowIso() })
    .where("target_id", "=", targetId)
    .where("revoked_at", "is", null)
    .execute();
}

/** The agents that were connected when the server last looked (for a restarted server's timers). */
export async function connectedAgents({ db }: StoreContext): Promise<{ targetId: string; name: string }[]> {
  const rows = await db
    .selectFrom("agents as a")
    .innerJoin("targets as t", "t.id", "a.target_id")
    .select(["a.target_id", "t.name"])
    .where("a.state", "=", "connected")
    .execute();
  return rows.map((row) => ({ targetId: row.target_id, name: row.name }));
}

/** The link status of agent targets, by target id, for the target list. */
export async function agentStatuses(db: Executor, targetIds: readonly string[]): Promise<Map<string, AgentStatus>> {
  if (targetIds.length === 0) return new Map();
  const rows = await db
    .selectFrom("agents")
    .selectAll()
    .where("target_id", "in", [...targetIds])
    .execute();
  return new Map(
    rows.map((row) => [
      row.target_id,
      {
        state: (row.revoked_at !== null ? "revoked" : row.state) as AgentStatus["state"],
        since: row.state_at,
        rotationPending: row.next_credential_hash !== null,
      },
    ]),
  );
}
