import http from "node:http";

/** What a closed-loop load saw, from the clients' side: every non-2xx and every error is a failure. */
export interface LoadResult {
  requests: number;
  failures: string[];
  /** Response bodies (trimmed, first 40 chars) and how often each came back. */
  bodies: Map<string, number>;
  /** Requests that took over 1 s, from sending to the end of the answer. */
  over1s: number;
  /** The slowest request's time in milliseconds. */
  slowestMs: number;
}

export interface RunningLoad {
  /** Requests completed so far. */
  readonly completed: () => number;
  stop(): Promise<LoadResult>;
}

/**
 * Closed-loop keep-alive load like wrk's: `connections` clients each send the next request
 * as soon as the previous one answered, on kept-alive connections, until stopped.
 */
export function startLoad(options: {
  port: number;
  /** Where the proxy listens: this machine's loopback unless a namespace host's address is given. */
  address?: string;
  host?: string;
  path?: string;
  connections?: number;
}): RunningLoad {
  const connections = options.connections ?? 16;
  const agent = new http.Agent({ keepAlive: true, maxSockets: connections });
  let running = true;
  let requests = 0;
  const failures: string[] = [];
  const bodies = new Map<string, number>();
  let over1s = 0;
  let slowestMs = 0;
  const timed = async () => {
    const started = performance.now();
    try {
      return await get(agent, options);
    } finally {
      const ms = performance.now() - started;
      slowestMs = Math.max(slowestMs, ms);
      if (ms > 1000) over1s += 1;
    }
  };
  const client = async () => {
    while (running) {
      try {
        const reply = await timed();
        requests += 1;
        if (reply.status < 200 || reply.status > 299)
          failures.push(`HTTP ${reply.status}: ${reply.body.slice(0, 200)}`);
        const key = reply.body.trim().slice(0, 40);
        bodies.set(key, (bodies.get(key) ?? 0) + 1);
      } catch (error) {
        requests += 1;
        failures.push((error as Error).message);
      }
    }
  };
  const clients = Array.from({ length: connections }, client);
  return {
    completed: () => requests,
    async stop() {
      running = false;
      await Promise.all(clients);
      agent.destroy();
      return { requests, failures, bodies, over1s, slowestMs };
    },
  };
}

function get(
  agent: http.Agent,
  options: { port: number; address?: string; host?: string; path?: string },
): Promise<{ status: number; body: string }> {
  return new Promise((resolve, reject) => {
    const request = http.request(
      {
        host: options.address ?? "127.0.0.1",
        port: options.port,
        path: options.path ?? "/",
        agent,
        headers: options.host ? { host: options.host } : {},
      },
      (response) => {
        const chunks: Buffer[] = [];
        response.on("data", (chunk: Buffer) => chunks.push(chunk));
        response.on("end", () => resolve({ status: response.statusCode ?? 0, body: Buffer.concat(chunks).toString() }));
        response.on("error", reject);
      },
    );
    request.on("error", reject);
    request.setTimeout(30_000, () => request.destroy(new Error("no answer within 30 s")));
    request.end();
  });
}
