import type { Paging } from "../domain/common.js";
import { NotFoundError } from "../domain/errors.js";
import { SECRET_SET } from "../domain/feeds.js";
import {
  type CreateWebhook,
  type DeploymentEventName,
  deploymentEventNames,
  type UpdateWebhook,
  type Webhook,
  webhookSchema,
} from "../domain/webhooks.js";
import { type Executor, findNamed, newId, nowIso, parseJsonList, type StoreContext, toPage } from "./common.js";
import type { WebhookRow } from "./schema.js";

const secretContext = (webhookId: string) => `webhook:${webhookId}:secret`;

function toWebhook(row: WebhookRow, projectSlug: string): Webhook {
  return webhookSchema.parse({
    id: row.id,
    project: projectSlug,
    url: row.url,
    events: parseJsonList(row.events).filter((event) => (deploymentEventNames as readonly string[]).includes(event)),
    secret: SECRET_SET,
    createdAt: row.created_at,
    updatedAt: row.updated_at,
  });
}

async function loadWebhookRow(db: Executor, projectId: string, webhookId: string): Promise<WebhookRow> {
  const row = await db
    .selectFrom("webhooks")
    .selectAll()
    .where("id", "=", webhookId)
    .where("project_id", "=", projectId)
    .executeTakeFirst();
  if (!row) throw new NotFoundError(`the project has no webhook '${webhookId}'; list them with GET …/webhooks`);
  return row;
}

export async function createWebhook({ db, secrets }: StoreContext, project: string, input: CreateWebhook) {
  const { id: projectId, slug } = await findNamed(db, "projects", project);
  const now = nowIso();
  const id = newId("wh");
  const row: WebhookRow = {
    id,
    project_id: projectId,
    url: input.url,
    events: JSON.stringify(input.events),
    secret_sealed: secrets.seal(input.secret, secretContext(id)),
    created_at: now,
    updated_at: now,
  };
  await db.insertInto("webhooks").values(row).execute();
  return toWebhook(row, slug);
}

export async function listWebhooks({ db }: StoreContext, project: string, paging: Paging) {
  const { id: projectId, slug } = await findNamed(db, "projects", project);
  const query = db.selectFrom("webhooks").where("project_id", "=", projectId);
  const rows = await query
    .selectAll()
    .orderBy("created_at")
    .orderBy("id")
    .limit(paging.limit)
    .offset(paging.offset)
    .execute();
  const { count } = await query.select((eb) => eb.fn.countAll<number | string>().as("count")).executeTakeFirstOrThrow();
  return toPage(
    rows.map((row) => toWebhook(row, slug)),
    Number(count),
    paging,
  );
}

export async function getWebhook({ db }: StoreContext, project: string, webhookId: string) {
  const { id: projectId, slug } = await findNamed(db, "projects", project);
  return toWebhook(await loadWebhookRow(db, projectId, webhookId), slug);
}

export async function updateWebhook(
  { db, secrets }: StoreContext,
  project: string,
  webhookId: string,
  input: UpdateWebhook,
) {
  const { id: projectId, slug } = await findNamed(db, "projects", project);
  await loadWebhookRow(db, projectId, webhookId);
  await db
    .updateTable("webhooks")
    .set({
      ...(input.url !== undefined && { url: input.url }),
      ...(input.events !== undefined && { events: JSON.stringify(input.events) }),
      ...(input.secret !== undefined && { secret_sealed: secrets.seal(input.secret, secretContext(webhookId)) }),
      updated_at: nowIso(),
    })
    .where("id", "=", webhookId)
    .execute();
  return toWebhook(await loadWebhookRow(db, projectId, webhookId), slug);
}

export async function deleteWebhook({ db }: StoreContext, project: string, webhookId: string): Promise<void> {
  const { id: projectId } = await findNamed(db, "projects", project);
  await loadWebhookRow(db, projectId, webhookId);
  await db.deleteFrom("webhooks").where("id", "=", webhookId).execute();
}

/** The project's webhooks that want this event, with their secrets in clear: for delivering only, never for the API. */
export async function webhooksForEvent(
  { db, secrets }: StoreContext,
  projectId: string,
  event: DeploymentEventName,
): Promise<{ id: string; url: string; secret: string }[]> {
  const rows = await db.selectFrom("webhooks").selectAll().where("project_id", "=", projectId).orderBy("id").execute();
  return rows
    .filter((row) => parseJsonList(row.events).includes(event))
    .map((row) => ({ id: row.id, url: row.url, secret: secrets.open(row.secret_sealed, secretContext(row.id)) }));
}

/** The deployment a task runs, as deployment events describe it; undefined when it is not (yet) recorded. */
export async function deploymentOfTask({ db }: StoreContext, taskId: string) {
  return db
    .selectFrom("deployments as d")
    .innerJoin("tasks as t", "t.id", "d.task_id")
    .innerJoin("projects as p", "p.id", "d.project_id")
    .innerJoin("environments as e", "e.id", "d.environment_id")
    .innerJoin("releases as r", "r.id", "d.release_id")
    .select([
      "d.id as deploymentId",
      "d.kind as kind",
      "t.id as taskId",
      "t.created_by as createdBy",
      "p.id as projectId",
      "p.slug as project",
      "p.name as projectName",
      "e.slug as environment",
      "e.name as environmentName",
      "r.version as release",
    ])
    .where("d.task_id", "=", taskId)
    .executeTakeFirst();
}
