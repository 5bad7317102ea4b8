import { createWebhookSchema, updateWebhookSchema, webhookSchema } from "../domain/webhooks.js";
import type { StoreContext } from "../store/common.js";
import * as webhooks from "../store/webhooks.js";
import { collectionRoutes } from "./crud.js";
import type { RouteSpec } from "./route.js";

/** A project's outgoing deployment webhooks (docs/webhooks.md). The secret is write-only. */
export function webhookRoutes(context: StoreContext): RouteSpec[] {
  return collectionRoutes({
    tag: "Webhooks",
    noun: "project webhook",
    path: "/api/v1/projects/:project/webhooks",
    scope: ["project"],
    itemParam: "webhook",
    itemSchema: webhookSchema,
    createSchema: createWebhookSchema,
    updateSchema: updateWebhookSchema,
    list: ([project = ""], paging) => webhooks.listWebhooks(context, project, paging),
    create: ([project = ""], body) => webhooks.createWebhook(context, project, body),
    get: ([project = ""], id) => webhooks.getWebhook(context, project, id),
    update: ([project = ""], id, body) => webhooks.updateWebhook(context, project, id, body),
    remove: ([project = ""], id) => webhooks.deleteWebhook(context, project, id),
  });
}
