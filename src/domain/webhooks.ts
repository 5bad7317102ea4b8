import { z } from "zod";
import { atLeastOneField, timestampsShape } from "./common.js";
import { SECRET_SET, serviceUrlSchema } from "./feeds.js";

/** What a project's webhooks can be told. A deployment that is cancelled or interrupted counts as failed. */
export const deploymentEventNames = ["deployment.started", "deployment.succeeded", "deployment.failed"] as const;
export type DeploymentEventName = (typeof deploymentEventNames)[number];

export const webhookSchema = z.object({
  id: z.string(),
  project: z.string().describe("project slug"),
  url: z
    .string()
    .describe(
      "in full for the project's administrators; for other viewers only its origin, with '/…' when a path or query is hidden (a chat service's webhook path is its credential)",
    ),
  events: z.array(z.enum(deploymentEventNames)),
  /** Never the secret itself: always "set". */
  secret: z.literal(SECRET_SET),
  ...timestampsShape,
});
export type Webhook = z.infer<typeof webhookSchema>;

/**
 * A webhook URL as shown to someone who may not see it whole: its origin, then "/…" when a
 * path, query or fragment is left out. Chat and incident services put the credential in
 * the path (https://hooks.slack.com/services/T…/B…/secret), so the origin is all that
 * tells where deliveries go without letting the reader post there.
 */
export function webhookUrlOrigin(url: string): string {
  const parsed = new URL(url);
  const hidden = parsed.pathname !== "/" || parsed.search !== "" || parsed.hash !== "";
  return hidden ? `${parsed.origin}/…` : parsed.origin;
}

/**
 * http(s) only, without credentials (they would show in every answer: use the secret to
 * authenticate), nor spaces or line breaks. Which hosts may be called is the outbound guard's
 * business, checked by the API when a webhook is saved and at each delivery
 * (security/outboundGuard.ts).
 */
const webhookUrlSchema = serviceUrlSchema("use an http:// or https:// URL without credentials in it");

const webhookFields = {
  url: webhookUrlSchema,
  secret: z
    .string()
    .min(16, { message: "use at least 16 characters (e.g. openssl rand -hex 32)" })
    .max(4096)
    .describe("signs each delivery (X-Ferry-Signature); write-only"),
  events: z
    .array(z.enum(deploymentEventNames))
    .min(1)
    .transform((events) => [...new Set(events)]),
};

export const createWebhookSchema = z.strictObject({
  ...webhookFields,
  events: webhookFields.events.default([...deploymentEventNames]),
});
export type CreateWebhook = z.infer<typeof createWebhookSchema>;

export const updateWebhookSchema = atLeastOneField(webhookFields);
export type UpdateWebhook = z.infer<typeof updateWebhookSchema>;
