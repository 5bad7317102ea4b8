import type { Paging } from "../domain/common.js";
import { InputError, InUseError } from "../domain/errors.js";
import { type CreateFeed, type Feed, feedSchema, SECRET_SET, type UpdateFeed } from "../domain/feeds.js";
import {
  assertNameAndSlugFree,
  countRows,
  findNamed,
  newId,
  nowIso,
  type StoreContext,
  slugFor,
  toPage,
  translateUniqueViolation,
} from "./common.js";
import type { FeedRow } from "./schema.js";

const passwordContext = (feedId: string) => `feed:${feedId}:password`;

function toFeed(row: FeedRow): Feed {
  return feedSchema.parse({
    id: row.id,
    slug: row.slug,
    name: row.name,
    type: row.type,
    url: row.url,
    username: row.username,
    password: row.password_sealed === null ? null : SECRET_SET,
    createdAt: row.created_at,
    updatedAt: row.updated_at,
  });
}

export async function createFeed({ db, secrets }: StoreContext, input: CreateFeed): Promise<Feed> {
  const slug = slugFor(input);
  return db.transaction().execute(async (trx) => {
    await assertNameAndSlugFree(trx, "feeds", { name: input.name, slug });
    const now = nowIso();
    const id = newId("feed");
    const row: FeedRow = {
      id,
      slug,
      name: input.name,
      type: input.type,
      url: input.url,
      username: input.username ?? null,
      password_sealed: input.password ? secrets.seal(input.password, passwordContext(id)) : null,
      created_at: now,
      updated_at: now,
    };
    await translateUniqueViolation(`a feed named '${input.name}' already exists`, () =>
      trx.insertInto("feeds").values(row).execute(),
    );
    return toFeed(row);
  });
}

async function loadFeedRow({ db }: StoreContext, reference: string): Promise<FeedRow> {
  const { id } = await findNamed(db, "feeds", reference);
  return db.selectFrom("feeds").selectAll().where("id", "=", id).executeTakeFirstOrThrow();
}

export async function getFeed(context: StoreContext, reference: string): Promise<Feed> {
  return toFeed(await loadFeedRow(context, reference));
}

/** The feed's credentials in clear, for the code that talks to the registry. Never for the API. */
export async function getFeedCredentials(
  context: StoreContext,
  reference: string,
): Promise<{ username: string; password: string } | undefined> {
  const row = await loadFeedRow(context, reference);
  if (row.username === null || row.password_sealed === null) return undefined;
  return { username: row.username, password: context.secrets.open(row.password_sealed, passwordContext(row.id)) };
}

/** Credentials of the feed whose URL points at this registry host ("registry:5000"), for pulling from it. */
/** The feed whose URL is on that registry host ("registry.example.com:5000"), if any. */
export async function feedForHost({ db }: StoreContext, registryHost: string) {
  const feeds = await db.selectFrom("feeds").select(["id", "url"]).execute();
  return feeds.find((candidate) => new URL(candidate.url).host === registryHost);
}

export async function feedCredentialsForHost(context: StoreContext, registryHost: string) {
  const feed = await feedForHost(context, registryHost);
  return feed ? getFeedCredentials(context, feed.id) : undefined;
}

export async function listFeeds({ db }: StoreContext, paging: Paging) {
  const rows = await db
    .selectFrom("feeds")
    .selectAll()
    .orderBy("name")
    .limit(paging.limit)
    .offset(paging.offset)
    .execute();
  return toPage(rows.map(toFeed), await countRows(db, "feeds"), paging);
}

export async function updateFeed({ db, secrets }: StoreContext, reference: string, input: UpdateFeed): Promise<Feed> {
  return db.transaction().execute(async (trx) => {
    const { id } = await findNamed(trx, "feeds", reference);
    await assertNameAndSlugFree(trx, "feeds", { name: input.name, slug: input.slug }, id);
    const current = await trx.selectFrom("feeds").selectAll().where("id", "=", id).executeTakeFirstOrThrow();
    // The stored password belongs to the registry it was given for: pointing the feed at
    // another origin without giving the password again (or clearing it) would send it there.
    if (
      input.url !== undefined &&
      current.password_sealed !== null &&
      input.password === undefined &&
      new URL(input.url).origin !== new URL(current.url).origin
    ) {
      throw new InputError("the feed's URL moves to another registry but its stored password would go with it", [
        { pointer: "/password", detail: 'give the password for the new URL, or clear it with "password": null' },
      ]);
    }
    const username = input.username === undefined ? current.username : input.username;
    const passwordSet = input.password === undefined ? current.password_sealed !== null : input.password !== null;
    if (passwordSet && username === null) {
      throw new InputError("a password needs a username", [
        { pointer: "/username", detail: 'set a username, or clear the password with "password": null' },
      ]);
    }
    await translateUniqueViolation("that name or slug is already used by another feed", () =>
      trx
        .updateTable("feeds")
        .set({
          ...(input.name !== undefined && { name: input.name }),
          ...(input.slug !== undefined && { slug: input.slug }),
          ...(input.type !== undefined && { type: input.type }),
          ...(input.url !== undefined && { url: input.url }),
          ...(input.username !== undefined && { username: input.username }),
          ...(input.password !== undefined && {
            password_sealed: input.password === null ? null : secrets.seal(input.password, passwordContext(id)),
          }),
          updated_at: nowIso(),
        })
        .where("id", "=", id)
        .execute(),
    );
    return toFeed(await trx.selectFrom("feeds").selectAll().where("id", "=", id).executeTakeFirstOrThrow());
  });
}

/** Refused while a project's process takes images from the feed (releases keep their pinned digests). */
export async function deleteFeed({ db }: StoreContext, reference: string): Promise<void> {
  const feed = await findNamed(db, "feeds", reference);
  const projects = await db.selectFrom("projects").select(["name", "process"]).execute();
  const usedBy = projects
    .filter((project) => {
      const images = (JSON.parse(project.process) as { images?: { feed: string }[] }).images ?? [];
      return images.some((image) => image.feed === feed.id || image.feed === feed.slug);
    })
    .map((project) => `project '${project.name}'`);
  if (usedBy.length > 0) {
    throw new InUseError(
      `feed '${feed.name}' is used by the images of ${usedBy.join(", ")}; change their images first`,
      usedBy,
    );
  }
  await db.deleteFrom("feeds").where("id", "=", feed.id).execute();
}
