import cluster, { type Worker } from "node:cluster";
import { fileURLToPath } from "node:url";
import {
  type CanaryResult,
  type DrainResult,
  FerryProxy,
  type ProxyControl,
  type PutRouteResult,
  type RouteStats,
  type SwitchResult,
  type WorkerCounts,
} from "./proxy.js";
import type { Route, RouteDefinition, RouteMode } from "./proxyState.js";
import type { RequestDurations } from "./router.js";

/**
 * `ferry proxy --workers N` (ADR 0055): a primary process owns the admin API, the routes file
 * and every switch; N workers (node:cluster, sharing one listening socket whose accepts the
 * kernel spreads) serve traffic, each with a copy of the route table the primary pushes over
 * IPC. A change resolves only when every live worker has acknowledged the new table; drain,
 * stats and in-flight counts are gathered from every worker and summed. A worker that dies
 * is replaced at once with the current table; the primary's death ends the workers (node's
 * cluster exits a worker whose IPC channel closes unexpectedly).
 *
 * The single-process path (`FerryProxy`, workers = 1) does not go through this module.
 */

/** What the primary sends a worker. */
type ToWorker =
  | { type: "start"; version: number; routes: Route[]; host: string; port: number }
  | { type: "routes"; version: number; routes: Route[] }
  | { type: "stats"; id: number }
  | { type: "drain"; id: number; upstream: string; deadlineMs: number }
  | { type: "close"; id: number; graceMs: number };

/** What a worker answers. */
type FromWorker =
  | { type: "ready" }
  | { type: "listening"; host: string; port: number }
  | { type: "listen-failed"; message: string; code?: string | undefined }
  | { type: "ack"; version: number }
  | { type: "stats"; id: number; routes: RouteStats[] }
  | { type: "drained"; id: number; result: DrainResult }
  | { type: "closed"; id: number; cutOff: number };

/** A worker that has not applied a table after this long is hung: it is killed (and replaced) rather than let serve the old one. */
const ACK_TIMEOUT_MS = 10_000;
/** How long a stats or drain question waits for a worker beyond its own deadline. */
const ANSWER_SLACK_MS = 2_000;
/** How often the primary refreshes its copy of every worker's counters, so a worker that dies loses at most this much of them. */
const STATS_REFRESH_MS = 1_000;
/** A worker that dies sooner than this after its start is replaced after this long, not at once (no fork loop on a broken setup). */
const RESTART_BACKOFF_MS = 1_000;

interface LiveWorker {
  worker: Worker;
  pid: number;
  startedAt: number;
  /** Whether it has said it hears messages (it is sent its table then, the newest one). */
  ready: boolean;
  /** The newest table version it acknowledged. */
  acked: number;
  ackWaiters: { version: number; resolve: () => void }[];
  /** Questions waiting for this worker's answer; called with undefined when it dies. */
  answers: Map<number, (message: FromWorker | undefined) => void>;
  /** Its counters as of its last answer (kept when it dies: they are part of the totals). */
  lastStats: RouteStats[];
}

export class ProxyPrimary implements ProxyControl {
  private readonly live = new Map<number, LiveWorker>();
  /** Counters of workers that died, as of their last answer. */
  private retired: RouteStats[] = [];
  /** The table most recently pushed (a worker forked now starts with it) and its version. */
  private latest: Route[];
  private version = 0;
  private nextQuestion = 0;
  private listenAddress: { host: string; port: number } | undefined;
  private closing = false;
  /** Set once every worker listened: from then on a worker that dies is replaced. */
  private serving = false;
  private refresh: NodeJS.Timeout | undefined;

  private constructor(
    private readonly table: FerryProxy,
    private readonly workerCount: number,
    private readonly log: (line: string) => void,
  ) {
    this.latest = table.listRoutes();
  }

  /** Opens the routes of the state dir; workers start with `listen`. */
  static async open(stateDir: string, workers: number, log: (line: string) => void = () => {}): Promise<ProxyPrimary> {
    let primary: ProxyPrimary | undefined;
    const table = await FerryProxy.open(stateDir, (routes) => {
      if (!primary) throw new Error("the primary is not open yet");
      return primary.publish(routes);
    });
    primary = new ProxyPrimary(table, workers, log);
    return primary;
  }

  listRoutes(): Route[] {
    return this.table.listRoutes();
  }

  putRoute(name: string, definition: RouteDefinition): Promise<PutRouteResult> {
    return this.table.putRoute(name, definition);
  }

  setRoute(name: string, upstream: string, colour?: string): Promise<SwitchResult> {
    return this.table.setRoute(name, upstream, colour);
  }

  setCanary(
    name: string,
    canary: { upstream: string; colour?: string | undefined; weight: number } | null,
  ): Promise<CanaryResult> {
    return this.table.setCanary(name, canary);
  }

  setMode(name: string, mode: RouteMode | null): Promise<{ route: Route }> {
    return this.table.setMode(name, mode);
  }

  /**
   * Drained when no route sends the upstream requests and no worker has one in flight on it:
   * every worker waits for its own (each answers at its deadline at the latest); in flight is
   * their sum. A worker that dies meanwhile has nothing left in flight.
   */
  async drain(upstream: string, deadlineMs: number): Promise<DrainResult> {
    const started = performance.now();
    // The primary's own table answers "still routed" at once (it serves nothing itself).
    const routed = await this.table.drain(upstream, 0);
    if (!routed.drained) return { ...routed, inFlight: (await this.gatherStats()).inFlightOf(upstream) };
    const results = await Promise.all(
      // A worker not ready yet has served nothing: nothing of it to wait for.
      this.readyWorkers().map((live) =>
        this.ask(live, (id) => ({ type: "drain", id, upstream, deadlineMs }), deadlineMs + ANSWER_SLACK_MS).then(
          (answer) =>
            answer?.type === "drained"
              ? answer.result
              : // Died (nothing in flight any more) or did not answer (its in-flight count unknown: not drained).
                { drained: !this.live.has(live.pid), inFlight: 0, waitedMs: 0, routedBy: [] },
        ),
      ),
    );
    const routedBy = [...new Set(results.flatMap((result) => result.routedBy))];
    return {
      drained: results.every((result) => result.drained),
      inFlight: results.reduce((sum, result) => sum + result.inFlight, 0),
      waitedMs: Math.round(performance.now() - started),
      routedBy,
    };
  }

  /** Every worker's counters, summed per route and upstream (workers that died count with their last figures). */
  async stats(): Promise<RouteStats[]> {
    return (await this.gatherStats()).routes;
  }

  /** Each live worker's totals, as of the last `stats()` (or the periodic refresh). */
  workers(): WorkerCounts[] {
    return [...this.live.values()]
      .map((live) => {
        const totals = { pid: live.pid, served: 0, failed: 0, inFlight: 0 };
        for (const entry of live.lastStats) {
          totals.served += entry.served;
          totals.failed += entry.failed;
          totals.inFlight += entry.inFlight;
        }
        return totals;
      })
      .sort((a, b) => a.pid - b.pid);
  }

  /** Forks the workers; resolves when every one listens (all on one socket). */
  async listen(host: string, port: number): Promise<{ host: string; port: number }> {
    // The kernel spreads the accepts of the shared socket (measured faster than round-robin
    // through the primary: ADR 0055). NODE_CLUSTER_SCHED_POLICY=rr still chooses the latter.
    if (process.env.NODE_CLUSTER_SCHED_POLICY === undefined) cluster.schedulingPolicy = cluster.SCHED_NONE;
    cluster.setupPrimary({
      exec: fileURLToPath(new URL("./proxyWorkerMain.js", import.meta.url)),
      args: [],
      silent: false,
    });
    // Every worker asks for the same address, port 0 included: node:cluster keys the shared
    // handle by it, so port 0 gives every worker (and every replacement) the first one's port.
    this.listenAddress = { host, port };
    let first: { host: string; port: number };
    try {
      first = await this.fork();
      await Promise.all(Array.from({ length: this.workerCount - 1 }, () => this.fork()));
    } catch (error) {
      await this.close(0);
      throw error;
    }
    this.serving = true;
    this.refresh = setInterval(() => {
      void this.gatherStats();
    }, STATS_REFRESH_MS);
    this.refresh.unref();
    return first;
  }

  /** Every worker stops accepting and finishes its requests for up to `graceMs`; how many were cut off in all. */
  async close(graceMs = 10_000): Promise<{ cutOff: number }> {
    this.closing = true;
    clearInterval(this.refresh);
    const cutOffs = await Promise.all(
      [...this.live.values()].map(async (live) => {
        const exited = new Promise<void>((resolve) => live.worker.once("exit", () => resolve()));
        if (!live.ready) {
          // Still starting: it has served nothing, and would not hear "close".
          live.worker.process.kill("SIGKILL");
          await exited;
          return 0;
        }
        const answer = await this.ask(live, (id) => ({ type: "close", id, graceMs }), graceMs + ANSWER_SLACK_MS);
        await Promise.race([exited, new Promise((resolve) => setTimeout(resolve, ANSWER_SLACK_MS))]);
        if (live.worker.process.exitCode === null && live.worker.process.signalCode === null) {
          live.worker.process.kill("SIGKILL");
        }
        return answer?.type === "closed" ? answer.cutOff : 0;
      }),
    );
    await this.table.close(0);
    return { cutOff: cutOffs.reduce((sum, count) => sum + count, 0) };
  }

  /**
   * The switch across processes: every live worker gets the new table and applies it in one
   * synchronous step; this resolves when each has acknowledged it (or died, or was killed as
   * hung). A worker forked meanwhile starts with this table.
   */
  private async publish(routes: readonly Route[]): Promise<void> {
    this.version += 1;
    const version = this.version;
    this.latest = [...routes];
    const message: ToWorker = { type: "routes", version, routes: this.latest };
    // Every live worker, listening or still starting: one that has had its "start" table gets
    // this one next, in order, before it serves anything; one not ready yet starts with this one.
    await Promise.all(
      [...this.live.values()]
        .filter((live) => live.ready)
        .map((live) => {
          const acked = new Promise<void>((resolve) => live.ackWaiters.push({ version, resolve }));
          post(live, message);
          return withTimeout(acked, ACK_TIMEOUT_MS).then((inTime) => {
            if (inTime || !this.live.has(live.pid)) return;
            this.log(
              `ferry proxy: worker ${live.pid} did not take the new routes within ${ACK_TIMEOUT_MS} ms; killed (it is replaced)`,
            );
            const exited = new Promise<void>((resolve) => live.worker.once("exit", () => resolve()));
            live.worker.process.kill("SIGKILL");
            return exited;
          });
        }),
    );
  }

  /** Starts one worker with the current table; resolves with its address once it listens. */
  private fork(): Promise<{ host: string; port: number }> {
    const address = this.listenAddress;
    if (!address) throw new Error("listen first");
    const worker = cluster.fork();
    const pid = worker.process.pid ?? -1;
    const live: LiveWorker = {
      worker,
      pid,
      startedAt: performance.now(),
      ready: false,
      acked: this.version,
      ackWaiters: [],
      answers: new Map(),
      lastStats: [],
    };
    this.live.set(pid, live);
    return new Promise((resolve, reject) => {
      worker.on("message", (message: FromWorker) => {
        switch (message.type) {
          case "ready":
            live.ready = true;
            // The table first, in the same message as the address: a worker never serves before it has one.
            post(live, { type: "start", version: this.version, routes: this.latest, ...address });
            break;
          case "listening":
            resolve({ host: message.host, port: message.port });
            break;
          case "listen-failed":
            // With its code: the CLI says "cannot listen … choose another" for EADDRINUSE as with one process.
            reject(Object.assign(new Error(message.message), { code: message.code }));
            break;
          case "ack":
            live.acked = Math.max(live.acked, message.version);
            live.ackWaiters = live.ackWaiters.filter((waiter) => {
              if (waiter.version > live.acked) return true;
              waiter.resolve();
              return false;
            });
            break;
          default:
            live.answers.get(message.id)?.(message);
            live.answers.delete(message.id);
        }
      });
      worker.once("exit", (code, signal) => {
        this.live.delete(pid);
        this.retired = sumStats([this.retired, live.lastStats.map((entry) => ({ ...entry, inFlight: 0 }))]);
        for (const waiter of live.ackWaiters) waiter.resolve();
        for (const answer of live.answers.values()) answer(undefined);
        live.answers.clear();
        reject(new Error(`worker ${pid} exited (${signal ?? `code ${code}`}) before it listened`));
        // Before `listen` has succeeded a failure is the caller's to report (a port in use), not to retry.
        if (this.closing || !this.serving) return;
        this.log(`ferry proxy: worker ${pid} exited (${signal ?? `code ${code}`}); starting another`);
        const soon = performance.now() - live.startedAt < RESTART_BACKOFF_MS;
        setTimeout(
          () => {
            if (this.closing) return;
            this.fork().catch((error: unknown) => this.log(`ferry proxy: ${(error as Error).message}`));
          },
          soon ? RESTART_BACKOFF_MS : 0,
        );
      });
    });
  }

  /** Workers that hear messages (a question to one still starting would go unheard). */
  private readyWorkers(): LiveWorker[] {
    return [...this.live.values()].filter((live) => live.ready);
  }

  /** Sends a question; resolves with the answer, or undefined when the worker died or did not answer in time. */
  private ask(
    live: LiveWorker,
    question: (id: number) => ToWorker,
    timeoutMs: number,
  ): Promise<FromWorker | undefined> {
    const id = ++this.nextQuestion;
    return new Promise((resolve) => {
      const timer = setTimeout(() => {
        live.answers.delete(id);
        resolve(undefined);
      }, timeoutMs);
      live.answers.set(id, (answer) => {
        clearTimeout(timer);
        resolve(answer);
      });
      post(live, question(id));
    });
  }

  /** Asks every live worker for its counters (a worker that does not answer in time counts with its last ones) and sums them. */
  private async gatherStats(): Promise<{ routes: RouteStats[]; inFlightOf(upstream: string): number }> {
    await Promise.all(
      this.readyWorkers().map(async (live) => {
        const answer = await this.ask(live, (id) => ({ type: "stats", id }), ANSWER_SLACK_MS);
        if (answer?.type === "stats") live.lastStats = answer.routes;
      }),
    );
    const routes = sumStats([this.retired, ...[...this.live.values()].map((live) => live.lastStats)]);
    return {
      routes,
      inFlightOf: (upstream) =>
        routes.filter((entry) => entry.upstream === upstream).reduce((sum, entry) => sum + entry.inFlight, 0),
    };
  }
}

/** Counters and histograms per route and upstream, added up (the histograms share their bounds). */
function sumStats(lists: readonly (readonly RouteStats[])[]): RouteStats[] {
  const sums = new Map<string, RouteStats>();
  for (const list of lists) {
    for (const entry of list) {
      const key = `${entry.route}\u0000${entry.upstream}`;
      const sum = sums.get(key);
      if (!sum) {
        sums.set(key, { ...entry, duration: copyDurations(entry.duration) });
        continue;
      }
      sum.served += entry.served;
      sum.failed += entry.failed;
      sum.retried += entry.retried;
      sum.inFlight += entry.inFlight;
      sum.serverErrors += entry.serverErrors;
      sum.duration = addDurations(sum.duration, entry.duration);
    }
  }
  return [...sums.values()].sort((a, b) => a.route.localeCompare(b.route) || a.upstream.localeCompare(b.upstream));
}

function copyDurations(duration: RequestDurations): RequestDurations {
  return { buckets: duration.buckets.map((bucket) => ({ ...bucket })), sum: duration.sum, count: duration.count };
}

function addDurations(a: RequestDurations, b: RequestDurations): RequestDurations {
  return {
    buckets: a.buckets.map((bucket, index) => ({
      le: bucket.le,
      count: bucket.count + (b.buckets[index]?.count ?? 0),
    })),
    sum: a.sum + b.sum,
    count: a.count + b.count,
  };
}

/** A message to a worker; one whose channel has closed (it is dying) is skipped: its exit settles what waited for it. */
function post(live: LiveWorker, message: ToWorker): void {
  if (!live.worker.isConnected()) return;
  live.worker.send(message, undefined, () => {});
}

function withTimeout(promise: Promise<void>, ms: number): Promise<boolean> {
  return new Promise((resolve) => {
    const timer = setTimeout(() => resolve(false), ms);
    void promise.then(() => {
      clearTimeout(timer);
      resolve(true);
    });
  });
}

/** A worker's side (proxyWorkerMain.ts): a replica `FerryProxy` driven by the primary's messages. */
export function runProxyWorker(): void {
  let proxy: FerryProxy | undefined;
  let closing = false;
  const send = (message: FromWorker, then?: () => void) => process.send?.(message, undefined, {}, then);
  const close = (graceMs: number, id = -1) => {
    if (closing || !proxy) return;
    closing = true;
    void proxy.close(graceMs).then(({ cutOff }) => {
      // Exits once the answer is out (the primary sums the cut-off counts).
      send({ type: "closed", id, cutOff }, () => process.exit(0));
    });
  };
  process.on("message", (message: ToWorker) => {
    switch (message.type) {
      case "start":
        proxy = FerryProxy.replica(message.routes);
        proxy.listen(message.host, message.port).then(
          (address) => send({ type: "listening", ...address }),
          (error: unknown) => {
            send({
              type: "listen-failed",
              message: (error as Error).message,
              code: (error as NodeJS.ErrnoException).code,
            });
            process.exit(1);
          },
        );
        break;
      case "routes":
        // Applied in this synchronous step, then acknowledged: no request resolved after the ack sees the old table.
        proxy?.replaceRoutes(message.routes);
        send({ type: "ack", version: message.version });
        break;
      case "stats":
        if (proxy) send({ type: "stats", id: message.id, routes: proxy.stats() });
        break;
      case "drain":
        void proxy
          ?.drain(message.upstream, message.deadlineMs)
          .then((result) => send({ type: "drained", id: message.id, result }));
        break;
      case "close":
        close(message.graceMs, message.id);
        break;
      default: {
        const unexpected: never = message;
        throw new Error(`unknown message ${JSON.stringify(unexpected)}`);
      }
    }
  });
  // Messages that come before a listener is attached are lost: the primary waits for this one.
  send({ type: "ready" });
  // Signals sent to the whole group (Ctrl-C) reach the workers too: each finishes its requests
  // as the primary would have told it to; the primary, stopping, starts no replacement.
  process.on("SIGTERM", () => close(10_000));
  process.on("SIGINT", () => close(10_000));
}
