import { createHmac } from "node:crypto";

/**
 * The X-Ferry-Signature of one webhook delivery: "sha256=" and the hex HMAC-SHA256, under
 * the webhook's secret, of the X-Ferry-Timestamp value, a ".", and the raw body. Signing
 * the timestamp with the body lets a receiver refuse replays: a captured delivery cannot
 * be sent again later with a fresh timestamp (docs/webhooks.md shows the check).
 */
export function webhookSignature(secret: string, timestamp: number, body: string): string {
  return `sha256=${createHmac("sha256", secret).update(`${timestamp}.${body}`).digest("hex")}`;
}
