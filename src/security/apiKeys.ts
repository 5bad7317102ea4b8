import { createHash, randomBytes } from "node:crypto";

const API_KEY_PREFIX = "ferry_";

/** A new random key: "ferry_" + 32 random bytes (base64url). Shown once, stored hashed. */
export function generateApiKey(): string {
  return API_KEY_PREFIX + randomBytes(32).toString("base64url");
}

export function isWellFormedApiKey(key: string): boolean {
  return key.startsWith(API_KEY_PREFIX) && /^[A-Za-z0-9_-]{16,200}$/.test(key.slice(API_KEY_PREFIX.length));
}

/**
 * Keys carry 256 bits of randomness, so a fast hash suffices (no password stretching):
 * guessing is infeasible either way, and lookups stay O(1) per request.
 */
export function hashApiKey(key: string): string {
  return createHash("sha256").update(key, "utf8").digest("hex");
}

/** The part of a key that may be shown again ("ferry_AbC1…") to tell keys apart. */
export function apiKeyDisplayPrefix(key: string): string {
  return key.slice(0, API_KEY_PREFIX.length + 6);
}

/** A session cookie's value: 32 random bytes (base64url). Stored as its SHA-256 only, like API keys. */
export function generateSessionToken(): string {
  return randomBytes(32).toString("base64url");
}

/** A session's CSRF token, sent back by the browser in X-CSRF-Token on every state-changing request. */
export function generateCsrfToken(): string {
  return randomBytes(24).toString("base64url");
}

/** SHA-256 (hex) of a session token, the form in which the database holds it. */
export function hashSessionToken(token: string): string {
  return createHash("sha256").update(token, "utf8").digest("hex");
}
