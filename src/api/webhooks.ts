import { createWebhookSchema, updateWebhookSchema, webhookSchema } from "../domain/webhooks.js";
import { checkOutboundUrl, defaultOutboundPolicy, type OutboundPolicy } from "../security/outboundGuard.js";
import type { StoreContext } from "../store/common.js";
import * as webhooks from "../store/webhooks.js";
import { collectionRoutes } from "./crud.js";
import type { RouteSpec } from "./route.js";

/** A project's outgoing deployment webhooks (docs/webhooks.md). The secret is write-only. */
export function webhookRoutes(context: StoreContext, outbound: OutboundPolicy = defaultOutboundPolicy): RouteSpec[] {
  // Checked when saved and again at each delivery; messages show the origin only (a path may be a credential).
  const checkUrl = (url: string) =>
    checkOutboundUrl(url, outbound, { what: "webhook URL", pointer: "/url", originOnly: true });
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
    create: async ([project = ""], body) => {
      await checkUrl(body.url);
      return webhooks.createWebhook(context, project, body);
    },
    get: ([project = ""], id) => webhooks.getWebhook(context, project, id),
    update: async ([project = ""], id, body) => {
      if (body.url !== undefined) await checkUrl(body.url);
      return webhooks.updateWebhook(context, project, id, body);
    },
    remove: ([project = ""], id) => webhooks.deleteWebhook(context, project, id),
    secretFields: () => ["secret"],
    // A project's outgoing calls: its administrators change them (they may carry data anywhere).
    access: {
      list: { kind: "project", permission: "view", project: (params) => params.project ?? "" },
      read: { kind: "project", permission: "view", project: (params) => params.project ?? "" },
      create: { kind: "project", permission: "administer", project: (params) => params.project ?? "" },
      change: { kind: "project", permission: "administer", project: (params) => params.project ?? "" },
    },
  });
}
