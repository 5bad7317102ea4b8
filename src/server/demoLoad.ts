import http from "node:http";
import { setTimeout as sleep } from "node:timers/promises";

/*
 * The demo's load generator: while the demo's second release is promoted dev → test → prod,
 * a few kept-alive connections per environment ask the demo app for its page through the
 * router, and count what did not come back as 200. Kept-alive connections are the hard case
 * of a switch (a proxy that reloads drops idle ones: DESIGN.md), so that is what it sends on.
 * It paces itself (a short pause after each answer) to leave the host's cores to the
 * deployments it watches; it shows, it does not measure throughput (bench/ does).
 */

/** What one environment's clients saw. */
interface DemoLoadFigures {
  host: string;
  requests: number;
  failed: number;
  /** The first few failures, as "HTTP 502: …" or the error's message. */
  failures: string[];
  /** The releases that answered, in the order they first answered ("1.0.0", "1.1.0"). */
  releases: string[];
}

export interface RunningDemoLoad {
  stop(): Promise<DemoLoadFigures[]>;
}

/** Failures kept per environment to show; the count covers all of them. */
const FAILURES_KEPT = 5;
/** The pause after each answer: about a hundred requests a second per connection. */
const PAUSE_MS = 10;
/** Longer than any drain of the demo's: a request still unanswered then is a failure. */
const REQUEST_TIMEOUT_MS = 30_000;

/**
 * Starts `connectionsPerHost` closed-loop clients per host (the route's host name) against
 * the router at `origin` (http://HOST:PORT), each on one kept-alive connection.
 */
export function startDemoLoad(origin: string, hosts: readonly string[], connectionsPerHost: number): RunningDemoLoad {
  const { hostname, port } = new URL(origin);
  let running = true;
  const figures = hosts.map(
    (host) => ({ host, requests: 0, failed: 0, failures: [], releases: [] }) as DemoLoadFigures,
  );
  const agents = hosts.map(() => new http.Agent({ keepAlive: true, maxSockets: connectionsPerHost }));
  const clients = figures.flatMap((each, index) =>
    Array.from({ length: connectionsPerHost }, async () => {
      const agent = agents[index] as http.Agent;
      while (running) {
        const outcome = await ask(agent, hostname.replace(/^\[|\]$/g, ""), Number(port), each.host);
        each.requests += 1;
        if ("error" in outcome) {
          each.failed += 1;
          if (each.failures.length < FAILURES_KEPT) each.failures.push(outcome.error);
        } else {
          // "Hello from Ferry: demo app release 1.1.0 in Test (pid 123)"
          const release = /release (\S+) in /.exec(outcome.body)?.[1] ?? "?";
          if (!each.releases.includes(release)) each.releases.push(release);
        }
        await sleep(PAUSE_MS);
      }
    }),
  );
  return {
    async stop() {
      running = false;
      await Promise.all(clients);
      for (const agent of agents) agent.destroy();
      return figures;
    },
  };
}

function ask(
  agent: http.Agent,
  address: string,
  port: number,
  host: string,
): Promise<{ body: string } | { error: string }> {
  return new Promise((resolve) => {
    const request = http.request({ host: address, port, path: "/", agent, headers: { host } }, (response) => {
      const chunks: Buffer[] = [];
      response.on("data", (chunk: Buffer) => chunks.push(chunk));
      response.on("end", () => {
        const body = Buffer.concat(chunks).toString("utf8").trim();
        resolve(
          response.statusCode === 200 ? { body } : { error: `HTTP ${response.statusCode}: ${body.slice(0, 120)}` },
        );
      });
      response.on("error", (error) => resolve({ error: error.message }));
    });
    request.on("error", (error) => resolve({ error: error.message }));
    request.setTimeout(REQUEST_TIMEOUT_MS, () =>
      request.destroy(new Error(`no answer within ${REQUEST_TIMEOUT_MS} ms`)),
    );
    request.end();
  });
}
