import { readdirSync, readFileSync } from "node:fs";
import http from "node:http";

/** The port the remote hosts' `ferry proxy` listens on in the data-plane tests. */
export const PROXY_PORT = 8000;

/** What the proxy at `address` answers for the route's host name (the body, trimmed). */
export function served(address: string, routeHost: string): Promise<string> {
  return new Promise<string>((resolve, reject) => {
    const request = http.get(
      { host: address, port: PROXY_PORT, path: "/", headers: { host: routeHost }, agent: false },
      (response) => {
        let body = "";
        response.setEncoding("utf8");
        response.on("data", (chunk: string) => {
          body += chunk;
        });
        response.on("end", () => resolve(body.trim()));
      },
    );
    request.setTimeout(10_000, () => request.destroy(new Error("no answer within 10 s")));
    request.on("error", reject);
  });
}

/** Processes (the namespaces share this machine's process table) whose command line holds `text`. */
export function commandLinesContaining(text: string): string[] {
  const found: string[] = [];
  for (const entry of readdirSync("/proc")) {
    if (!/^\d+$/.test(entry)) continue;
    try {
      const commandLine = readFileSync(`/proc/${entry}/cmdline`, "latin1");
      if (commandLine.includes(text)) found.push(commandLine.replaceAll("\0", " "));
    } catch {
      // Exited meanwhile.
    }
  }
  return found;
}
