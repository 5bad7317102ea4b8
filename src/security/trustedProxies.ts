import { isIP } from "node:net";
import { InputError } from "../domain/errors.js";

/**
 * Parses FERRY_TRUSTED_PROXIES: comma-separated addresses (127.0.0.1, ::1) and ranges
 * (10.0.0.0/8, fd00::/8) of the reverse proxies in front of the server. Only a request whose
 * peer is one of them has its X-Forwarded-For, -Proto and -Host believed. Empty: none is.
 * Throws an InputError naming every entry it cannot read, so a typo stops the start instead
 * of silently trusting nobody (or, worse, somebody else).
 */
export function parseTrustedProxies(text: string | undefined): string[] {
  const proxies: string[] = [];
  const problems: string[] = [];
  for (const entry of (text ?? "").split(",").map((part) => part.trim())) {
    if (entry === "") continue;
    if (isAddressOrRange(entry)) proxies.push(entry);
    else problems.push(`'${entry.slice(0, 100)}'`);
  }
  if (problems.length > 0) {
    throw new InputError(
      `${problems.join(", ")} ${problems.length === 1 ? "is not an address or range" : "are not addresses or ranges"} (write e.g. 127.0.0.1,10.0.0.0/8,fd00::/8)`,
    );
  }
  return proxies;
}

function isAddressOrRange(entry: string): boolean {
  const [address = "", prefix, ...rest] = entry.split("/");
  const family = isIP(address);
  if (family === 0 || rest.length > 0) return false;
  if (prefix === undefined) return true;
  return /^\d{1,3}$/.test(prefix) && Number(prefix) <= (family === 4 ? 32 : 128);
}
