/**
 * A Router sends a route's traffic to one live upstream and switches it to another: the
 * commit point of a blue/green deployment. Drivers: the builtin `ferry proxy`
 * (builtin.ts), nginx (nginx.ts), HAProxy (haproxy.ts); an etcd publisher (etcd.ts) wraps
 * any of them and mirrors every switch under /ferry/routes/<host>/<route>/….
 *
 * The Router's own state is the truth for "which colour is live" (DESIGN.md, data plane):
 * blue/green asks it, never the database.
 */

/** Where a route listens: a host name and a path prefix. */
export interface RouteSpec {
  /** 1–63 letters, digits, '.', '_' or '-'; by default "<project>-<environment>". */
  readonly name: string;
  readonly host: string;
  readonly pathPrefix: string;
}

/** What a route sends its traffic to: an HTTP origin and the colour (container) behind it. */
export interface LiveUpstream {
  /** "http://127.0.0.1:32768" */
  readonly upstream: string;
  readonly colour: string | null;
}

export interface RouterSwitchResult {
  /** The upstream the route had before; undefined when the route was just created. */
  readonly previous: LiveUpstream | undefined;
  /** How long the switch itself took, until the router confirmed that new requests go to the new upstream. */
  readonly switchMs: number;
}

export interface RouterDrainResult {
  /** True when nothing is in flight on the upstream any more (and nothing routes to it). */
  readonly drained: boolean;
  readonly waitedMs: number;
  /** What was still in flight when the deadline passed, when the driver knows. */
  readonly inFlight?: number;
}

/**
 * A canary on a route (ADR 0049): besides its live upstream, the route sends `weight` per
 * cent of its visitors to a second upstream. The router itself keeps each visitor on one
 * side (a cookie it sets), and the request header `X-Ferry-Colour: new` reaches the canary
 * whatever the weight (0 included: testers only).
 */
export interface TrafficSplit extends LiveUpstream {
  /** 0–100: the share of visitors sent to this upstream. */
  readonly weight: number;
}

/** A route's mode besides serving (kamal-proxy's maintenance and pause; issue 17 part 5). */
export type RouteMode =
  | { readonly mode: "maintenance"; readonly page?: string | undefined }
  | { readonly mode: "paused"; readonly timeoutSeconds: number };

/** Requests of one upstream of one route, counted by the router since it started. */
export interface UpstreamTraffic {
  readonly route: string;
  readonly upstream: string;
  /** Requests answered (whatever the status), and requests that failed in the router (connection errors, cut answers). */
  readonly served: number;
  readonly failed: number;
  /** Of `served`, those the upstream answered with a 5xx status, when the driver counts them. */
  readonly serverErrors?: number;
  /** Attempts that could not connect and were sent again to the live upstream, when the driver counts them. */
  readonly retried?: number;
  /** How long the served and failed requests took, when the driver measures it. */
  readonly duration?: RequestDurations;
}

/** A histogram of request durations in seconds: cumulative counts per upper bound (+Inf is `count`). */
export interface RequestDurations {
  readonly buckets: readonly { readonly le: number; readonly count: number }[];
  readonly sum: number;
  readonly count: number;
}

export interface Router {
  /** "builtin", "nginx", "haproxy", "builtin+etcd"… for log lines. */
  readonly driver: string;
  /** The route's live upstream; undefined when the router has no such route. */
  live(route: string): Promise<LiveUpstream | undefined>;
  /** Every route the router has, with its live upstream (for start-up reconciliation) and its canary, if any. */
  routes(): Promise<(RouteSpec & LiveUpstream & { readonly canary?: TrafficSplit | undefined })[]>;
  /**
   * Creates the route or points it at another upstream, atomically: requests that start
   * after this resolves go to `target`; requests already on the previous upstream finish
   * there. Throws (and leaves the previous upstream live) when the switch cannot be made.
   */
  switch(route: RouteSpec, target: LiveUpstream): Promise<RouterSwitchResult>;
  /**
   * Resolves when `upstream` has nothing in flight, or when the deadline passes. Only then
   * may the colour behind it be stopped.
   */
  drain(upstream: string, deadlineMs: number): Promise<RouterDrainResult>;
  /**
   * Sends `split.weight` per cent of the route's visitors to `split.upstream` besides its live
   * upstream, sticky per visitor; null takes the split away (everything back on the live
   * upstream). A later `switch` replaces the split too (promotion). Absent when the driver
   * cannot split traffic by weight (nginx): a canary is refused there before anything starts.
   */
  split?(route: string, split: TrafficSplit | null): Promise<{ readonly switchMs: number }>;
  /**
   * Puts a route in maintenance (every request answered 503, with `page` as HTML when given)
   * or pauses it (requests held up to `timeoutSeconds`, then sent on when it is resumed);
   * null serves it again. The mode lasts across a restart of the router. Absent when the
   * driver has no modes (nginx); a driver that has only maintenance (HAProxy) refuses a pause
   * with a ConflictError saying so. A route the router does not have is a NotFoundError.
   */
  setMode?(route: string, mode: RouteMode | null): Promise<void>;
  /** Request counts per upstream; undefined when the driver cannot count. */
  traffic(): Promise<UpstreamTraffic[] | undefined>;
  close(): Promise<void>;
}

/** The counts of `after` minus those of `before`, per route and upstream: the traffic of a window. */
export function trafficBetween(
  before: readonly UpstreamTraffic[],
  after: readonly UpstreamTraffic[],
): UpstreamTraffic[] {
  const start = new Map(before.map((entry) => [`${entry.route} ${entry.upstream}`, entry]));
  return after
    .map((entry) => {
      const earlier = start.get(`${entry.route} ${entry.upstream}`);
      return {
        route: entry.route,
        upstream: entry.upstream,
        served: entry.served - (earlier?.served ?? 0),
        failed: entry.failed - (earlier?.failed ?? 0),
      };
    })
    .filter((entry) => entry.served > 0 || entry.failed > 0);
}
