import type { Kysely } from "kysely";
import type { Paging } from "../domain/common.js";
import { InputError, NotFoundError } from "../domain/errors.js";
import { SECRET_SET } from "../domain/feeds.js";
import {
  type CreateFeedTrigger,
  describeFeedFiring,
  type FeedTrigger,
  feedTriggerSchema,
  type UpdateFeedTrigger,
} from "../domain/feedTriggers.js";
import {
  type Executor,
  findNamed,
  newId,
  nowIso,
  type StoreContext,
  toPage,
  translateUniqueViolation,
} from "./common.js";
import { getProcess } from "./releases.js";
import type { Database, FeedTriggerRow } from "./schema.js";

const secretContext = (triggerId: string) => `feed-trigger:${triggerId}:secret`;

/** Where the registry posts its notifications for a trigger. */
const hookPathOf = (triggerId: string) => `/api/v1/hooks/registry/${triggerId}`;

function toFeedTrigger(
  row: FeedTriggerRow,
  projectSlug: string,
  lastFiring: FeedTrigger["lastFiring"] = null,
): FeedTrigger {
  return feedTriggerSchema.parse({
    id: row.id,
    project: projectSlug,
    name: row.name,
    image: row.image,
    versionFromTag: row.version_from_tag,
    pollSeconds: row.poll_seconds,
    paused: row.paused === 1,
    secret: SECRET_SET,
    hookPath: hookPathOf(row.id),
    lastPolledAt: row.last_polled_at,
    lastError: row.last_error,
    lastFiring,
    createdAt: row.created_at,
    updatedAt: row.updated_at,
  });
}

/**
 * The newest recorded firing of each trigger (one query for a page of them): the firing rows
 * whose time is their trigger's latest. Two firings of one trigger in the same millisecond
 * are both the latest: either one is shown.
 */
async function lastFiringsOf(db: Executor, triggerIds: readonly string[]) {
  const found = new Map<string, NonNullable<FeedTrigger["lastFiring"]>>();
  if (triggerIds.length === 0) return found;
  const rows = await db
    .selectFrom("feed_trigger_firings as f")
    .innerJoin(
      db
        .selectFrom("feed_trigger_firings")
        .select(["trigger_id", (eb) => eb.fn.max("at").as("last_at")])
        .where("trigger_id", "in", triggerIds)
        .groupBy("trigger_id")
        .as("latest"),
      (join) => join.onRef("latest.trigger_id", "=", "f.trigger_id").onRef("latest.last_at", "=", "f.at"),
    )
    .select(["f.trigger_id", "f.at", "f.cause", "f.tag", "f.release_version"])
    .execute();
  for (const row of rows) {
    found.set(
      row.trigger_id,
      describeFeedFiring({ at: row.at, cause: row.cause, tag: row.tag, release: row.release_version }),
    );
  }
  return found;
}

async function loadRow(db: Executor, projectId: string, reference: string): Promise<FeedTriggerRow> {
  const row = await db
    .selectFrom("feed_triggers")
    .selectAll()
    .where("project_id", "=", projectId)
    .where((eb) => eb.or([eb("id", "=", reference), eb("name", "=", reference)]))
    .executeTakeFirst();
  if (!row)
    throw new NotFoundError(`the project has no feed trigger '${reference}'; list them with ferry trigger list`);
  return row;
}

/** A trigger watches one of the project's images: refused, naming them, when the process has no such image. */
async function checkImage(context: StoreContext, project: string, image: string): Promise<void> {
  const { images } = await getProcess(context, project);
  if (images.some((candidate) => candidate.name === image)) return;
  throw new InputError("the trigger watches an image the project does not have", [
    {
      pointer: "/image",
      detail: `no image '${image}' in the project's process; its images are: ${images.map((candidate) => candidate.name).join(", ") || "none (add one to the process first)"}`,
    },
  ]);
}

function firstPoll(pollSeconds: number | null, paused: boolean): string | null {
  return pollSeconds === null || paused ? null : nowIso();
}

export async function createFeedTrigger(
  context: StoreContext,
  project: string,
  input: CreateFeedTrigger,
): Promise<FeedTrigger> {
  const { db, secrets } = context;
  const { id: projectId, slug } = await findNamed(db, "projects", project);
  await checkImage(context, project, input.image);
  const now = nowIso();
  const id = newId("trg");
  const row: FeedTriggerRow = {
    id,
    project_id: projectId,
    name: input.name,
    image: input.image,
    version_from_tag: input.versionFromTag,
    secret_sealed: secrets.seal(input.secret, secretContext(id)),
    poll_seconds: input.pollSeconds,
    paused: input.paused ? 1 : 0,
    // The first poll only notes what is there already (a baseline): polling starts at once.
    next_poll_at: firstPoll(input.pollSeconds, input.paused),
    last_polled_at: null,
    last_error: null,
    created_at: now,
    updated_at: now,
  };
  await translateUniqueViolation(`the project already has a feed trigger named '${input.name}'`, () =>
    db.insertInto("feed_triggers").values(row).execute(),
  );
  return toFeedTrigger(row, slug);
}

export async function listFeedTriggers({ db }: StoreContext, project: string, paging: Paging) {
  const { id: projectId, slug } = await findNamed(db, "projects", project);
  const query = db.selectFrom("feed_triggers").where("project_id", "=", projectId);
  const rows = await query.selectAll().orderBy("name").limit(paging.limit).offset(paging.offset).execute();
  const { count } = await query.select((eb) => eb.fn.countAll<number | string>().as("count")).executeTakeFirstOrThrow();
  const firings = await lastFiringsOf(
    db,
    rows.map((row) => row.id),
  );
  return toPage(
    rows.map((row) => toFeedTrigger(row, slug, firings.get(row.id) ?? null)),
    Number(count),
    paging,
  );
}

export async function getFeedTrigger({ db }: StoreContext, project: string, reference: string) {
  const { id: projectId, slug } = await findNamed(db, "projects", project);
  const row = await loadRow(db, projectId, reference);
  return toFeedTrigger(row, slug, (await lastFiringsOf(db, [row.id])).get(row.id) ?? null);
}

export async function updateFeedTrigger(
  context: StoreContext,
  project: string,
  reference: string,
  input: UpdateFeedTrigger,
): Promise<FeedTrigger> {
  const { db, secrets } = context;
  const { id: projectId, slug } = await findNamed(db, "projects", project);
  const current = await loadRow(db, projectId, reference);
  if (input.image !== undefined) await checkImage(context, project, input.image);
  const pollSeconds = input.pollSeconds === undefined ? current.poll_seconds : input.pollSeconds;
  const paused = input.paused === undefined ? current.paused === 1 : input.paused;
  const polling = pollSeconds !== null && !paused;
  await translateUniqueViolation(`the project already has a feed trigger named '${input.name}'`, () =>
    db
      .updateTable("feed_triggers")
      .set({
        ...(input.name !== undefined && { name: input.name }),
        ...(input.image !== undefined && { image: input.image }),
        ...(input.versionFromTag !== undefined && { version_from_tag: input.versionFromTag }),
        ...(input.secret !== undefined && { secret_sealed: secrets.seal(input.secret, secretContext(current.id)) }),
        poll_seconds: pollSeconds,
        paused: paused ? 1 : 0,
        // Resumed (or polling switched on): poll soon; paused: leave the schedule.
        next_poll_at: polling ? (current.next_poll_at ?? nowIso()) : null,
        updated_at: nowIso(),
      })
      .where("id", "=", current.id)
      .execute(),
  );
  return toFeedTrigger(
    await loadRow(db, projectId, current.id),
    slug,
    (await lastFiringsOf(db, [current.id])).get(current.id) ?? null,
  );
}

export async function deleteFeedTrigger({ db }: StoreContext, project: string, reference: string): Promise<void> {
  const { id: projectId } = await findNamed(db, "projects", project);
  const row = await loadRow(db, projectId, reference);
  await db.deleteFrom("feed_triggers").where("id", "=", row.id).execute();
}

/** What the trigger engine needs of one trigger: its settings, its project and its secret in clear (never for the API). */
export interface TriggerForFiring {
  id: string;
  name: string;
  projectId: string;
  project: string;
  image: string;
  versionFromTag: string | null;
  pollSeconds: number | null;
  paused: boolean;
  /** What the last poll reported (an error, or a tag it ignored), null when it went well. */
  lastError: string | null;
  secret: string;
}

export async function triggerForFiring({ db, secrets }: StoreContext, triggerId: string) {
  const row = await db
    .selectFrom("feed_triggers as t")
    .innerJoin("projects as p", "p.id", "t.project_id")
    .selectAll("t")
    .select("p.slug as project_slug")
    .where("t.id", "=", triggerId)
    .executeTakeFirst();
  if (!row) return undefined;
  const trigger: TriggerForFiring = {
    id: row.id,
    name: row.name,
    projectId: row.project_id,
    project: row.project_slug,
    image: row.image,
    versionFromTag: row.version_from_tag,
    pollSeconds: row.poll_seconds,
    paused: row.paused === 1,
    lastError: row.last_error,
    secret: secrets.open(row.secret_sealed, secretContext(row.id)),
  };
  return trigger;
}

/**
 * Claims the triggers whose poll is due, for `claimMs` (one poll of a trigger at a time,
 * across server nodes: a conditional UPDATE moves its schedule forward).
 */
export async function claimDueTriggers(
  db: Kysely<Database>,
  now: Date,
  claimMs: number,
  limit: number,
): Promise<string[]> {
  const nowText = now.toISOString();
  const due = await db
    .selectFrom("feed_triggers")
    .select(["id", "next_poll_at"])
    .where("paused", "=", 0)
    .where("next_poll_at", "is not", null)
    .where("next_poll_at", "<=", nowText)
    .orderBy("next_poll_at")
    .limit(limit)
    .execute();
  const claimedUntil = new Date(now.getTime() + claimMs).toISOString();
  const claimed: string[] = [];
  for (const row of due) {
    const result = await db
      .updateTable("feed_triggers")
      .set({ next_poll_at: claimedUntil })
      .where("id", "=", row.id)
      .where("next_poll_at", "=", row.next_poll_at)
      .executeTakeFirst();
    if (Number(result.numUpdatedRows) === 1) claimed.push(row.id);
  }
  return claimed;
}

/** When the earliest poll of a trigger that polls is due (the poller sleeps until then); undefined: none polls. */
export async function nextPollAt(db: Kysely<Database>): Promise<Date | undefined> {
  const row = await db
    .selectFrom("feed_triggers")
    .select((eb) => eb.fn.min("next_poll_at").as("next"))
    .where("paused", "=", 0)
    .where("next_poll_at", "is not", null)
    .executeTakeFirst();
  return row?.next ? new Date(row.next) : undefined;
}

/** Writes how a poll went and when the next is due (unless the trigger was paused meanwhile). */
export async function recordPoll(
  db: Kysely<Database>,
  triggerId: string,
  nextPollAt: Date,
  error: string | null,
): Promise<void> {
  await db
    .updateTable("feed_triggers")
    .set({ last_polled_at: nowIso(), last_error: error, next_poll_at: nextPollAt.toISOString() })
    .where("id", "=", triggerId)
    .where("next_poll_at", "is not", null)
    .execute();
}

/** Whether the trigger has acted on anything yet (its first poll only records a baseline). */
export async function hasFirings(db: Kysely<Database>, triggerId: string): Promise<boolean> {
  const row = await db
    .selectFrom("feed_trigger_firings")
    .select("digest")
    .where("trigger_id", "=", triggerId)
    .limit(1)
    .executeTakeFirst();
  return row !== undefined;
}

/** Gives a claimed digest back, when acting on it failed for a reason that may pass (the next notification or poll tries again). */
export async function releaseFiring(db: Kysely<Database>, triggerId: string, digest: string): Promise<void> {
  await db
    .deleteFrom("feed_trigger_firings")
    .where("trigger_id", "=", triggerId)
    .where("digest", "=", digest)
    .where("release_version", "is", null)
    .execute();
}

/**
 * Claims an image digest for the trigger: true the first time (the caller acts on it), false
 * when any notification, poll or baseline of this trigger already claimed it.
 */
export async function claimFiring(
  db: Kysely<Database>,
  firing: { triggerId: string; digest: string; tag: string; cause: string },
): Promise<boolean> {
  const result = await db
    .insertInto("feed_trigger_firings")
    .values({ trigger_id: firing.triggerId, digest: firing.digest, tag: firing.tag, cause: firing.cause, at: nowIso() })
    .onConflict((conflict) => conflict.columns(["trigger_id", "digest"]).doNothing())
    .executeTakeFirst();
  return Number(result.numInsertedOrUpdatedRows ?? 0) === 1;
}

export async function setFiringRelease(
  db: Kysely<Database>,
  triggerId: string,
  digest: string,
  version: string,
): Promise<void> {
  await db
    .updateTable("feed_trigger_firings")
    .set({ release_version: version })
    .where("trigger_id", "=", triggerId)
    .where("digest", "=", digest)
    .execute();
}
