import { setTimeout as sleep } from "node:timers/promises";
import { webhookSignature } from "../security/webhookSignature.js";
import { sendRequest } from "../steps/http.js";

export interface WebhookDeliveryOptions {
  /** Deadline of one attempt (ms). */
  timeoutMs: number;
  /** Pauses before the second, third… attempt (ms): one more attempt than there are pauses. */
  retryDelaysMs: readonly number[];
}

/** Four attempts over about half a minute, each given 5 s. */
export const defaultWebhookDelivery: WebhookDeliveryOptions = { timeoutMs: 5000, retryDelaysMs: [1000, 5000, 25_000] };

type DeliveryResult =
  | { delivered: true; attempts: number; status: number }
  | {
      delivered: false;
      attempts: number;
      /** "HTTP 500", "no answer within 5 s"…: never anything of the response body. */
      problem: string;
    };

/**
 * POSTs one signed event to a webhook, retrying timeouts, connection errors, 408, 429 and
 * 5xx answers after the configured pauses. A 2xx answer delivers; any other answer
 * (redirects are not followed) ends the attempts. The response body is never read.
 */
export async function deliverWebhook(
  target: { url: string; secret: string },
  delivery: { id: string; event: string; body: string; userAgent: string },
  options: WebhookDeliveryOptions,
  signal: AbortSignal,
): Promise<DeliveryResult> {
  const url = new URL(target.url);
  let problem = "not attempted";
  const attempts = options.retryDelaysMs.length + 1;
  for (let attempt = 1; attempt <= attempts; attempt++) {
    if (attempt > 1) await sleep(options.retryDelaysMs[attempt - 2] ?? 0, undefined, { signal });
    // Signed at each attempt: the timestamp says when this attempt was sent.
    const timestamp = Math.floor(Date.now() / 1000);
    const outcome = await sendRequest(url, {
      method: "POST",
      headers: {
        "content-type": "application/json",
        "user-agent": delivery.userAgent,
        "x-ferry-event": delivery.event,
        "x-ferry-delivery": delivery.id,
        "x-ferry-timestamp": String(timestamp),
        "x-ferry-signature": webhookSignature(target.secret, timestamp, delivery.body),
      },
      body: delivery.body,
      timeoutMs: options.timeoutMs,
      signal,
      followRedirects: false,
    });
    if (outcome.ok) {
      const status = outcome.response.status;
      await outcome.response.body?.cancel().catch(() => {});
      if (status >= 200 && status < 300) return { delivered: true, attempts: attempt, status };
      problem = status >= 300 && status < 400 ? `HTTP ${status} (redirects are not followed)` : `HTTP ${status}`;
      if (!(status === 408 || status === 429 || status >= 500)) return { delivered: false, attempts: attempt, problem };
    } else {
      problem = outcome.problem;
    }
  }
  return { delivered: false, attempts, problem };
}
