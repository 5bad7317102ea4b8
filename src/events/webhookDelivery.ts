import { setTimeout as sleep } from "node:timers/promises";
import {
  describeNetworkError,
  guardedFetch,
  type OutboundPolicy,
  OutboundRefusedError,
} from "../security/outboundGuard.js";
import { webhookSignature } from "../security/webhookSignature.js";

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

type AttemptOutcome = { status: number } | { problem: string; retry: boolean };

/**
 * POSTs one signed event to a webhook, retrying timeouts, connection errors, 408, 429 and
 * 5xx answers after the configured pauses. A 2xx answer delivers; any other answer
 * (redirects are not followed) ends the attempts. The response body is never read. The
 * outbound guard checks the URL at each attempt: a refused address ends the attempts.
 */
export async function deliverWebhook(
  target: { url: string; secret: string },
  delivery: { id: string; event: string; body: string; userAgent: string },
  options: WebhookDeliveryOptions,
  outbound: OutboundPolicy,
  signal: AbortSignal,
): Promise<DeliveryResult> {
  const url = new URL(target.url);
  let problem = "not attempted";
  const attempts = options.retryDelaysMs.length + 1;
  for (let attempt = 1; attempt <= attempts; attempt++) {
    if (attempt > 1) await sleep(options.retryDelaysMs[attempt - 2] ?? 0, undefined, { signal });
    const outcome = await attemptDelivery(url, target.secret, delivery, options.timeoutMs, outbound, signal);
    if ("status" in outcome) {
      const { status } = outcome;
      if (status >= 200 && status < 300) return { delivered: true, attempts: attempt, status };
      problem = status >= 300 && status < 400 ? `HTTP ${status} (redirects are not followed)` : `HTTP ${status}`;
      if (!(status === 408 || status === 429 || status >= 500)) return { delivered: false, attempts: attempt, problem };
    } else {
      problem = outcome.problem;
      if (!outcome.retry) return { delivered: false, attempts: attempt, problem };
    }
  }
  return { delivered: false, attempts, problem };
}

async function attemptDelivery(
  url: URL,
  secret: string,
  delivery: { id: string; event: string; body: string; userAgent: string },
  timeoutMs: number,
  outbound: OutboundPolicy,
  signal: AbortSignal,
): Promise<AttemptOutcome> {
  signal.throwIfAborted();
  const timeout = AbortSignal.timeout(timeoutMs);
  // Signed at each attempt: the timestamp says when this attempt was sent.
  const timestamp = Math.floor(Date.now() / 1000);
  try {
    const response = await guardedFetch(
      url,
      {
        method: "POST",
        headers: {
          "content-type": "application/json",
          "user-agent": delivery.userAgent,
          "x-ferry-event": delivery.event,
          "x-ferry-delivery": delivery.id,
          "x-ferry-timestamp": String(timestamp),
          "x-ferry-signature": webhookSignature(secret, timestamp, delivery.body),
        },
        body: delivery.body,
        signal: AbortSignal.any([signal, timeout]),
        redirect: "manual",
        // The origin only: a webhook URL's path or query may itself be a credential.
        name: `webhook URL ${url.origin}`,
      },
      outbound,
    );
    await response.body?.cancel().catch(() => {});
    return { status: response.status };
  } catch (error) {
    if (signal.aborted) throw signal.reason;
    if (error instanceof OutboundRefusedError) return { problem: error.message, retry: false };
    if (timeout.aborted) return { problem: `no answer within ${timeoutMs / 1000} s`, retry: true };
    return { problem: describeNetworkError(error), retry: true };
  }
}
