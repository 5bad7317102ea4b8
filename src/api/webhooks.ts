import type { Access } from "../domain/access.js";
import { type AuditChange, CHANGED } from "../domain/audit.js";
import type { Page } from "../domain/common.js";
import {
  createWebhookSchema,
  updateWebhookSchema,
  type Webhook,
  webhookSchema,
  webhookUrlOrigin,
} from "../domain/webhooks.js";
import { checkOutboundUrl, defaultOutboundPolicy, type OutboundPolicy } from "../security/outboundGuard.js";
import { findNamed, type StoreContext } from "../store/common.js";
import * as webhooks from "../store/webhooks.js";
import { collectionRoutes } from "./crud.js";
import type { RouteSpec } from "./route.js";

/**
 * A project's outgoing deployment webhooks (docs/webhooks.md). The secret is write-only.
 * The URL is shown in full only to the project's administrators (who may change it):
 * other viewers, and the audit log, see its origin, because a chat service's webhook path
 * is itself the credential that lets anyone post to the channel.
 */
export function webhookRoutes(context: StoreContext, outbound: OutboundPolicy = defaultOutboundPolicy): RouteSpec[] {
  // Checked when saved and again at each delivery; messages show the origin only (a path may be a credential).
  const checkUrl = (url: string) =>
    checkOutboundUrl(url, outbound, { what: "webhook URL", pointer: "/url", originOnly: true });
  /** The webhook as this caller may see it: the whole URL with administer on the project, else its origin. */
  const shownTo = async (access: Access, project: string) => {
    if (access.isAdministrator) return (webhook: Webhook) => webhook;
    const { id } = await findNamed(context.db, "projects", project);
    if (access.allows({ permission: "administer", project: id })) return (webhook: Webhook) => webhook;
    return (webhook: Webhook): Webhook => ({ ...webhook, url: webhookUrlOrigin(webhook.url) });
  };
  const routes = collectionRoutes({
    tag: "Webhooks",
    noun: "project webhook",
    path: "/api/v1/projects/:project/webhooks",
    scope: ["project"],
    itemParam: "webhook",
    itemSchema: webhookSchema,
    createSchema: createWebhookSchema,
    updateSchema: updateWebhookSchema,
    list: async ([project = ""], paging, access): Promise<Page<Webhook>> => {
      const show = await shownTo(access, project);
      const page = await webhooks.listWebhooks(context, project, paging);
      return { ...page, items: page.items.map(show) };
    },
    create: async ([project = ""], body) => {
      await checkUrl(body.url);
      return webhooks.createWebhook(context, project, body);
    },
    get: async ([project = ""], id, access) =>
      (await shownTo(access, project))(await webhooks.getWebhook(context, project, id)),
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
  // The audit log keeps entries for good and is exported to other systems: it records where
  // a webhook points (its origin), and that the URL changed, never the path that may be a credential.
  return routes.map((route) => {
    const audit = route.audit;
    if (audit === undefined) return route;
    return { ...route, audit: { ...audit, change: (input) => withUrlOrigins(audit.change(input)) } };
  });
}

/** The change with each side's URL cut to its origin; a URL changed within one origin is recorded as changed. */
function withUrlOrigins(change: AuditChange): AuditChange {
  const before = change.before ?? null;
  const after = change.after ?? null;
  const origin = (side: Record<string, unknown> | null) =>
    side !== null && typeof side.url === "string" ? webhookUrlOrigin(side.url) : undefined;
  const from = origin(before);
  let to = origin(after);
  if (to !== undefined && to === from && before?.url !== after?.url) to = `${to} ${CHANGED}`;
  return {
    ...change,
    ...(before !== null && { before: { ...before, ...(from !== undefined && { url: from }) } }),
    ...(after !== null && { after: { ...after, ...(to !== undefined && { url: to }) } }),
  };
}
