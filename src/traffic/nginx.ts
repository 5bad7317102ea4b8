import { spawn } from "node:child_process";
import { open, readdir, readFile, unlink } from "node:fs/promises";
import { isIPv4, isIPv6 } from "node:net";
import { join, resolve } from "node:path";
import { setTimeout as sleep } from "node:timers/promises";
import { z } from "zod";
import { ConflictError, InputError } from "../domain/errors.js";
import { writeFileAtomic } from "./atomicFile.js";
import { DurationHistogram } from "./durationHistogram.js";
import type {
  LiveUpstream,
  Router,
  RouterDrainResult,
  RouterSwitchResult,
  RouteSpec,
  UpstreamTraffic,
} from "./router.js";

/**
 * The nginx driver of `Router` (docs/decisions/0013-nginx-driver.md). Ferry owns a set of files
 * in a directory the operator's nginx.conf includes inside `http {}`:
 *
 * - `ferry-00-common.conf`: what every Ferry server block needs once (the `ferry_traffic`
 *   log format: route, upstream, status, `$request_time` and upstream address; the Upgrade →
 *   Connection map) and a `default_server` on the listen address that answers 404 for hosts
 *   no route serves;
 * - `ferry-host-<host>.conf`, one per host: one `# ferry-route {json}` line per route of the
 *   host (the record `live()` and `routes()` read back: the files are the truth, nothing is
 *   kept only in memory), one `upstream ferry_<route>` block per route, and one `server`
 *   block with the locations of all the host's routes. nginx allows one server block per
 *   `server_name` and listen address, hence one file per host rather than per route.
 *
 * A switch writes the files (temp file, rename), runs `nginx -t` (restoring the previous
 * files when it fails), sends SIGHUP to the master and returns once a worker with the new
 * config exists and every older worker has stopped accepting. The old workers finish what
 * they have in flight and then exit: that exit is how `drain` knows an upstream is idle.
 */

export interface NginxRouterOptions {
  /** The nginx binary; default "nginx" (found on PATH). */
  nginx?: string;
  /** The main nginx.conf, passed as `nginx -c <config>`. It must daemonise (nginx's default). */
  config: string;
  /** The directory the main config includes inside `http {}` as `include <sitesDir>/*.conf;`. */
  sitesDir: string;
  /** The `pid` file of the main config: how the driver finds the master process. */
  pidFile: string;
  /** Where the rendered server blocks listen, such as "127.0.0.1:18080" or "80". */
  listen: string;
  /**
   * Keep idle client connections open between requests (nginx's default). Off by default,
   * which renders `keepalive_timeout 0;`: a reload closes the old workers' idle keep-alive
   * connections, and a client that sends its next request on one just then sees a reset
   * (DESIGN.md measured 53 errors in 20 reloads under wrk, 0 with keep-alive off). Without
   * client keep-alive a switch costs clients nothing but a TCP handshake per request.
   */
  clientKeepalive?: boolean;
  /**
   * The access log `traffic()` counts (one short line per proxied request); default
   * `<sitesDir>/../ferry-access.log`. `false`: no log, and `traffic()` answers undefined.
   */
  accessLog?: string | false;
  /** Limit for each nginx command and for a reload to take effect; default 10 s. */
  timeoutMs?: number;
}

type StoredRoute = RouteSpec & LiveUpstream;

/** A process, told apart from a later one that reuses its pid by its start time. */
interface ProcessId {
  readonly pid: number;
  readonly startTime: string;
}

const COMMON_FILE = "ferry-00-common.conf";
const HOST_FILE = /^ferry-host-([a-z0-9.-]+)\.conf$/;
const RECORD_PREFIX = "# ferry-route ";
const POLL_MS = 5;
const DRAIN_POLL_MS = 20;

// Everything below is interpolated into nginx config, so each value is checked against an
// allow-list that leaves out whitespace, quotes, ';', '{', '}', '$' and '#'.
const ROUTE_NAME = /^[a-z0-9][a-z0-9._-]{0,62}$/i;
const HOST = /^[a-z0-9]([a-z0-9.-]*[a-z0-9])?$/;
const PATH_PREFIX = /^\/[A-Za-z0-9._~/-]*$/;
const LISTEN = /^(?:(?:\[[0-9a-f:.]+\]|[a-z0-9.-]+):)?[0-9]{1,5}$/i;
const FILE_PATH = /^\/[A-Za-z0-9._~/+-]*$/;
const COLOUR = /^[^\p{Cc}]{1,64}$/u;
/**
 * `$request_time`: seconds with millisecond resolution. No `$upstream_addr` looks like it (an
 * address with a port, a unix: path, an upstream's name or "-"): it tells the formats apart.
 */
const REQUEST_TIME = /^[0-9]+\.[0-9]{3}$/;

const routeRecordSchema = z.strictObject({
  name: z.string().regex(ROUTE_NAME),
  host: z.string().regex(HOST),
  pathPrefix: z.string().regex(PATH_PREFIX),
  upstream: z.string(),
  colour: z.string().regex(COLOUR).nullable(),
});

export class NginxRouter implements Router {
  readonly driver = "nginx";
  private readonly binary: string;
  private readonly accessLog: string | undefined;
  private readonly timeoutMs: number;
  /** Switches run one at a time, so files, `nginx -t` and reloads never interleave. */
  private changes: Promise<unknown> = Promise.resolve();
  /**
   * Per upstream that a switch took traffic off: the workers that were running when it did.
   * They are the only processes that can still have requests on it; once all have exited the
   * upstream is drained. Memory only: after a restart `drain` falls back to all old workers.
   */
  private readonly oldWorkers = new Map<string, ProcessId[]>();
  private readonly counts = new Map<
    string,
    { route: string; upstream: string; served: number; failed: number; durations: DurationHistogram }
  >();
  private logPosition = { inode: -1, offset: 0 };
  private reading: Promise<unknown> = Promise.resolve();

  constructor(private readonly options: NginxRouterOptions) {
    this.binary = options.nginx ?? "nginx";
    this.timeoutMs = options.timeoutMs ?? 10_000;
    if (!LISTEN.test(options.listen)) {
      throw new InputError(
        `listen ${JSON.stringify(options.listen)} is not an nginx listen address such as 127.0.0.1:8080`,
      );
    }
    if (options.accessLog === false) {
      this.accessLog = undefined;
    } else {
      this.accessLog = resolve(options.accessLog ?? join(options.sitesDir, "..", "ferry-access.log"));
      if (!FILE_PATH.test(this.accessLog)) {
        throw new InputError(
          `access log path ${JSON.stringify(this.accessLog)} may hold only letters, digits and . _ ~ / + -`,
        );
      }
    }
  }

  async live(route: string): Promise<LiveUpstream | undefined> {
    const found = (await this.readRoutes()).find((candidate) => candidate.name === route);
    return found ? { upstream: found.upstream, colour: found.colour } : undefined;
  }

  async routes(): Promise<(RouteSpec & LiveUpstream)[]> {
    return (await this.readRoutes()).map((route) => ({ ...route }));
  }

  async switch(route: RouteSpec, target: LiveUpstream): Promise<RouterSwitchResult> {
    // Validated before queueing, and before any file is touched.
    const wanted = validateRoute(route, target);
    const run = this.changes.then(() => this.applySwitch(wanted));
    this.changes = run.catch(() => undefined);
    return run;
  }

  async drain(upstream: string, deadlineMs: number): Promise<RouterDrainResult> {
    const target = parseUpstream(upstream).origin;
    const started = performance.now();
    const routedBy = async () => (await this.readRoutes()).some((route) => route.upstream === target);
    if (await routedBy()) return { drained: false, waitedMs: 0 };
    const recorded = this.oldWorkers.get(target);
    const waitingFor = recorded ?? (await this.shuttingDownWorkers());
    let remaining = await aliveOf(waitingFor);
    while (remaining.length > 0 && performance.now() - started < deadlineMs) {
      await sleep(Math.min(DRAIN_POLL_MS, Math.max(1, deadlineMs - (performance.now() - started))));
      remaining = await aliveOf(remaining);
    }
    if (recorded) {
      // A switch during the wait may have added workers: keep whichever of those still run.
      const left = await aliveOf(this.oldWorkers.get(target) ?? []);
      if (left.length === 0) this.oldWorkers.delete(target);
      else this.oldWorkers.set(target, left);
    }
    const drained = remaining.length === 0 && !(await routedBy());
    return { drained, waitedMs: Math.round(performance.now() - started) };
  }

  /**
   * Requests per route and upstream, counted from the access log since it was created (the
   * log outlives Ferry restarts, so these are nginx's counts, not this process's). Served: a
   * status below 500 with an upstream address; failed: 5xx, or no upstream reached. 499 (the
   * client gave up) is neither. Durations are nginx's `$request_time` of the served and
   * failed requests, in the buckets of `ferry proxy`; lines nginx wrote in the format of an
   * earlier Ferry (before the reload that brought the new one) are counted but not timed.
   * Reads only what was appended since the previous call.
   */
  traffic(): Promise<UpstreamTraffic[] | undefined> {
    const accessLog = this.accessLog;
    if (accessLog === undefined) return Promise.resolve(undefined);
    const run = this.reading.then(() => this.readTraffic(accessLog));
    this.reading = run.catch(() => undefined);
    return run;
  }

  /**
   * Whether this nginx is in use: Ferry's files record routes. When they do and no master
   * runs (the host rebooted, nginx was stopped), nginx is started again with them, after
   * `nginx -t`: the files are what was live. Never starts an nginx that has no routes.
   */
  async bringBack(): Promise<boolean> {
    if ((await this.readRoutes()).length === 0) return false;
    const run = this.changes.then(async () => {
      if (await this.runningMaster()) return;
      const test = await this.runNginx(["-c", this.options.config, "-t", "-q"]);
      if (test.code !== 0) {
        throw new Error(`nginx rejects its config, so it was not started again.\n${test.stderr.trim()}`);
      }
      const start = await this.runNginx(["-c", this.options.config]);
      if (start.code !== 0 || !(await this.waitForMaster())) {
        throw new Error(`nginx did not start again with Ferry's routes.\n${start.stderr.trim()}`);
      }
    });
    this.changes = run.catch(() => undefined);
    await run;
    return true;
  }

  /** nginx is the data plane and keeps serving: closing the driver only waits for a switch in progress. */
  async close(): Promise<void> {
    await this.changes;
    await this.reading;
  }

  private async applySwitch(wanted: StoredRoute): Promise<RouterSwitchResult> {
    const started = performance.now();
    const existing = await this.readRoutes();
    const current = existing.find((route) => route.name === wanted.name);
    for (const other of existing) {
      if (other.name === wanted.name) continue;
      if (other.host === wanted.host && other.pathPrefix === wanted.pathPrefix) {
        throw new ConflictError(
          `route '${other.name}' already serves ${wanted.host}${wanted.pathPrefix}; switch that route instead`,
        );
      }
      // nginx compares upstream names case-insensitively: ferry_App and ferry_app would clash.
      if (other.name.toLowerCase() === wanted.name.toLowerCase()) {
        throw new ConflictError(
          `route '${other.name}' differs from '${wanted.name}' only in case; nginx cannot tell them apart`,
        );
      }
    }
    const next = [...existing.filter((route) => route.name !== wanted.name), wanted];
    const previous = current ? { upstream: current.upstream, colour: current.colour } : undefined;

    const changed = await this.writeFiles(next);
    let master = await this.runningMaster();
    if (changed.length === 0 && master) return { previous, switchMs: performance.now() - started };

    const test = await this.runNginx(["-c", this.options.config, "-t", "-q"]);
    if (test.code !== 0) {
      await restoreFiles(changed);
      throw new Error(
        `nginx rejected the config for route '${wanted.name}'; the previous config stays live.\n${test.stderr.trim()}`,
      );
    }

    if (!master) {
      const start = await this.runNginx(["-c", this.options.config]);
      master = start.code === 0 ? await this.waitForMaster() : undefined;
      if (!master) {
        await restoreFiles(changed);
        throw new Error(`nginx did not start (the previous config files are restored).\n${start.stderr.trim()}`);
      }
      return { previous, switchMs: performance.now() - started };
    }

    const before = await workersOf(master);
    process.kill(master.pid, "SIGHUP");
    const reloaded = await this.waitForReload(master, before);
    if (!reloaded) {
      // The master kept its workers: it refused the new config (a host name that no longer
      // resolves, say). Put the files back so they describe what is live.
      await restoreFiles(changed);
      throw new Error(
        `nginx did not start workers with the new config for route '${wanted.name}' within ${this.timeoutMs} ms; ` +
          "the previous config stays live (see nginx's error log for why)",
      );
    }
    if (current && current.upstream !== wanted.upstream) {
      this.oldWorkers.set(current.upstream, [...(this.oldWorkers.get(current.upstream) ?? []), ...before]);
    }
    return { previous, switchMs: performance.now() - started };
  }

  /** Writes the files `routes` need (only those whose content differs); returns what to restore. */
  private async writeFiles(routes: readonly StoredRoute[]): Promise<FileChange[]> {
    const { sitesDir } = this.options;
    const settings: RenderSettings = {
      listen: this.options.listen,
      clientKeepalive: this.options.clientKeepalive ?? false,
      accessLog: this.accessLog,
    };
    const wanted = new Map<string, string>([[COMMON_FILE, renderCommonFile(settings)]]);
    const hosts = [...new Set(routes.map((route) => route.host))];
    for (const host of hosts) {
      wanted.set(
        hostFileName(host),
        renderHostFile(
          host,
          routes.filter((route) => route.host === host),
          settings,
        ),
      );
    }
    // Host files whose last route moved to another host are removed.
    for (const name of await listFiles(sitesDir)) {
      if (HOST_FILE.test(name) && !wanted.has(name)) wanted.set(name, "");
    }
    const changes: FileChange[] = [];
    try {
      for (const [name, content] of wanted) {
        const path = join(sitesDir, name);
        const before = await readOptional(path);
        if (before === (content === "" ? undefined : content)) continue;
        changes.push({ path, before });
        if (content === "") await unlink(path);
        else await writeFileAtomic(path, content, 0o644);
      }
    } catch (error) {
      await restoreFiles(changes);
      throw error;
    }
    return changes;
  }

  private async readRoutes(): Promise<StoredRoute[]> {
    const routes = new Map<string, StoredRoute>();
    for (const name of await listFiles(this.options.sitesDir)) {
      if (!HOST_FILE.test(name)) continue;
      const path = join(this.options.sitesDir, name);
      const text = await readOptional(path);
      for (const [index, line] of (text ?? "").split("\n").entries()) {
        if (!line.startsWith(RECORD_PREFIX)) continue;
        const parsed = routeRecordSchema.safeParse(safeJsonParse(line.slice(RECORD_PREFIX.length)));
        if (!parsed.success) {
          throw new Error(`${path}:${index + 1} is not a valid ferry-route record; fix or remove the file`);
        }
        if (routes.has(parsed.data.name)) {
          throw new Error(
            `route '${parsed.data.name}' is recorded twice (again in ${path}); remove one of the records`,
          );
        }
        routes.set(parsed.data.name, parsed.data);
      }
    }
    return [...routes.values()].sort((a, b) => a.name.localeCompare(b.name));
  }

  /** The master named by the pid file, when it runs (a stale pid file names nothing). */
  private async runningMaster(): Promise<ProcessId | undefined> {
    const text = await readOptional(this.options.pidFile);
    const pid = Number.parseInt(text?.trim() ?? "", 10);
    if (!Number.isInteger(pid) || pid <= 0) return undefined;
    const status = await processStatus(pid);
    if (!status || status.state === "Z") return undefined;
    // A pid file left by an nginx that died long ago may name an unrelated process now.
    const commandLine = await readOptional(`/proc/${pid}/cmdline`);
    if (!commandLine?.includes("master process")) return undefined;
    return { pid, startTime: status.startTime };
  }

  private async waitForMaster(): Promise<ProcessId | undefined> {
    const deadline = performance.now() + this.timeoutMs;
    while (performance.now() < deadline) {
      const master = await this.runningMaster();
      if (master && (await workersOf(master)).length > 0) return master;
      await sleep(POLL_MS);
    }
    return undefined;
  }

  /**
   * After SIGHUP the master forks workers with the new config, waits 100 ms and then tells the
   * old ones to shut down; until then both accept connections. So the switch is done when a
   * new worker exists and every old one has stopped accepting (title "…is shutting down").
   */
  private async waitForReload(master: ProcessId, before: readonly ProcessId[]): Promise<boolean> {
    const old = new Set(before.map((worker) => worker.pid));
    const deadline = performance.now() + this.timeoutMs;
    while (performance.now() < deadline) {
      const workers = await workersOf(master);
      if (workers.some((worker) => !old.has(worker.pid))) {
        const accepting = await Promise.all(
          workers.filter((worker) => old.has(worker.pid)).map((worker) => isAccepting(worker.pid)),
        );
        if (!accepting.includes(true)) return true;
      }
      await sleep(POLL_MS);
    }
    // The new config is live once new workers exist, even if an old one was slow to stop.
    return (await workersOf(master)).some((worker) => !old.has(worker.pid));
  }

  /** Workers of older configs: what an upstream this process has no record of may still be served by. */
  private async shuttingDownWorkers(): Promise<ProcessId[]> {
    const master = await this.runningMaster();
    if (!master) return [];
    const workers = await workersOf(master);
    const accepting = await Promise.all(workers.map((worker) => isAccepting(worker.pid)));
    return workers.filter((_worker, index) => !accepting[index]);
  }

  private async readTraffic(accessLog: string): Promise<UpstreamTraffic[]> {
    let file: Awaited<ReturnType<typeof open>>;
    try {
      file = await open(accessLog, "r");
    } catch (error) {
      if ((error as NodeJS.ErrnoException).code !== "ENOENT") throw error;
      return this.trafficCounts();
    }
    try {
      const info = await file.stat();
      // Rotated or truncated: the counts go on from the start of the new file.
      if (info.ino !== this.logPosition.inode || info.size < this.logPosition.offset) {
        this.logPosition = { inode: info.ino, offset: 0 };
      }
      const length = info.size - this.logPosition.offset;
      if (length > 0) {
        const buffer = Buffer.alloc(length);
        const { bytesRead } = await file.read(buffer, 0, length, this.logPosition.offset);
        const end = buffer.subarray(0, bytesRead).lastIndexOf(0x0a);
        // A line nginx is still writing is read next time.
        if (end >= 0) {
          for (const line of buffer.subarray(0, end).toString("utf8").split("\n")) this.countLine(line);
          this.logPosition.offset += end + 1;
        }
      }
    } finally {
      await file.close();
    }
    return this.trafficCounts();
  }

  /**
   * One line of `ferry_traffic`: `<route> <upstream> <status> <request_time> <upstream_addr…>`,
   * or `<route> <upstream> <status> <upstream_addr…>` as Ferry wrote it before it timed
   * requests: a running nginx keeps that format until the next switch reloads it, and its
   * old workers keep it for the requests they finish after that reload.
   */
  private countLine(line: string): void {
    const [route, upstream, statusText, ...rest] = line.split(" ");
    const status = Number(statusText);
    if (!route || route === "-" || !upstream || !Number.isInteger(status) || status === 499) return;
    const timed = rest[0] !== undefined && REQUEST_TIME.test(rest[0]);
    const addresses = timed ? rest.slice(1) : rest;
    const key = `${route} ${upstream}`;
    const entry = this.counts.get(key) ?? { route, upstream, served: 0, failed: 0, durations: new DurationHistogram() };
    if (status >= 500 || addresses.join(" ") === "-") entry.failed += 1;
    else entry.served += 1;
    if (timed) entry.durations.observe(Number(rest[0]));
    this.counts.set(key, entry);
  }

  private trafficCounts(): UpstreamTraffic[] {
    return [...this.counts.values()]
      .map(({ durations, ...counts }) => ({
        ...counts,
        // Left out while only untimed lines were counted, as for a `ferry proxy` of an earlier Ferry.
        ...(durations.count > 0 && { duration: durations.histogram() }),
      }))
      .sort((a, b) => a.route.localeCompare(b.route) || a.upstream.localeCompare(b.upstream));
  }

  private runNginx(args: readonly string[]): Promise<{ code: number | null; stderr: string }> {
    return new Promise((resolvePromise, reject) => {
      const child = spawn(this.binary, args, { stdio: ["ignore", "ignore", "pipe"] });
      let stderr = "";
      child.stderr.setEncoding("utf8");
      child.stderr.on("data", (chunk: string) => {
        stderr += chunk;
      });
      const timer = setTimeout(() => child.kill("SIGKILL"), this.timeoutMs);
      child.once("error", (error) => {
        clearTimeout(timer);
        reject(new Error(`could not run ${this.binary}: ${error.message}`));
      });
      child.once("exit", (code, signal) => {
        clearTimeout(timer);
        // A daemonised master could hold stderr open: read what is there, then let go.
        setTimeout(() => {
          child.stderr.destroy();
          if (signal === "SIGKILL")
            stderr += `\n${this.binary} ${args.join(" ")} took longer than ${this.timeoutMs} ms`;
          resolvePromise({ code, stderr });
        }, 20);
      });
    });
  }
}

interface RenderSettings {
  listen: string;
  clientKeepalive: boolean;
  accessLog: string | undefined;
}

interface FileChange {
  path: string;
  /** The content before the change; undefined when the file did not exist. */
  before: string | undefined;
}

/** The origin of an upstream, and what nginx's `server` directive gets ("127.0.0.1:8001"). Shared with the haproxy driver. */
export function parseUpstream(value: string): { origin: string; server: string } {
  const refuse = () =>
    new InputError(
      `upstream ${JSON.stringify(value)} is not an HTTP origin such as http://127.0.0.1:8001 (an IP address or host name and a port; no path, query or credentials)`,
    );
  if (!URL.canParse(value)) throw refuse();
  const url = new URL(value);
  const plain =
    url.protocol === "http:" &&
    url.username === "" &&
    url.password === "" &&
    url.pathname === "/" &&
    url.search === "" &&
    url.hash === "";
  const hostname = url.hostname;
  const validHost = hostname.startsWith("[")
    ? isIPv6(hostname.slice(1, -1))
    : isIPv4(hostname) || (HOST.test(hostname) && hostname.length <= 253);
  if (!plain || !validHost) throw refuse();
  return { origin: url.origin, server: `${hostname}:${url.port === "" ? "80" : url.port}` };
}

/** A route and its upstream checked against the allow-lists above (shared with the haproxy driver, whose config takes the same values). */
export function validateRoute(route: RouteSpec, target: LiveUpstream): StoredRoute {
  if (!ROUTE_NAME.test(route.name)) {
    throw new InputError(`route name ${JSON.stringify(route.name)} is not 1–63 letters, digits, '.', '_' or '-'`);
  }
  const host = route.host.toLowerCase();
  if (!HOST.test(host) || host.length > 253) {
    throw new InputError(
      `host ${JSON.stringify(route.host)} is not a host name: letters, digits, '.' and '-' only, such as app.example.com`,
    );
  }
  if (!PATH_PREFIX.test(route.pathPrefix) || route.pathPrefix.length > 1024) {
    throw new InputError(
      `path prefix ${JSON.stringify(route.pathPrefix)} must start with '/' and hold only letters, digits and . _ ~ / -`,
    );
  }
  if (target.colour !== null && !COLOUR.test(target.colour)) {
    throw new InputError(`colour ${JSON.stringify(target.colour)} must be 1–64 characters without control characters`);
  }
  return {
    name: route.name,
    host,
    pathPrefix: route.pathPrefix,
    upstream: parseUpstream(target.upstream).origin,
    colour: target.colour,
  };
}

function hostFileName(host: string): string {
  return `ferry-host-${host}.conf`;
}

function noRouteProblem(): string {
  const body = JSON.stringify({
    type: "urn:ferry:problem:no-route",
    title: "Not Found",
    status: 404,
    detail: "no route serves this host and path",
  });
  return ["default_type application/problem+json;", `return 404 '${body}';`].join(" ");
}

function renderCommonFile(settings: RenderSettings): string {
  const lines = [
    "# Written by Ferry's nginx router; do not edit: every switch rewrites it.",
    // Upgrade requests (WebSocket) pass "Connection: upgrade"; all others send no Connection
    // header, so connections to upstreams stay alive (`keepalive` in each upstream block).
    "map $http_upgrade $ferry_connection {",
    "  default upgrade;",
    '  "" "";',
    "}",
  ];
  // $upstream_addr goes last: it holds spaces when nginx tried several servers.
  if (settings.accessLog) {
    lines.push("log_format ferry_traffic '$ferry_route $ferry_upstream $status $request_time $upstream_addr';");
  }
  lines.push("server {", `  listen ${settings.listen} default_server;`);
  if (!settings.clientKeepalive) lines.push("  keepalive_timeout 0;");
  // `set` here declares the variables the log format names even while no route exists.
  if (settings.accessLog) lines.push('  set $ferry_route "-";', '  set $ferry_upstream "-";');
  lines.push(`  ${noRouteProblem()}`, "}", "");
  return lines.join("\n");
}

/**
 * The server block of one host. nginx's prefix locations do not stop at path segments, so a
 * route prefix "/api" becomes `location = /api` and `location /api/` (it serves "/api" and
 * "/api/x", not "/apix"), and "/api/" also gets `location = /api`, which would otherwise
 * redirect to "/api/". Each location goes to the route `ferry proxy` would pick for it.
 */
function renderHostFile(host: string, routes: readonly StoredRoute[], settings: RenderSettings): string {
  const sorted = [...routes].sort((a, b) => a.name.localeCompare(b.name));
  const lines = [
    `# Written by Ferry's nginx router for ${host}; do not edit: every switch of a route of ${host} rewrites it.`,
  ];
  for (const route of sorted) {
    lines.push(
      `${RECORD_PREFIX}${JSON.stringify({
        name: route.name,
        host: route.host,
        pathPrefix: route.pathPrefix,
        upstream: route.upstream,
        colour: route.colour,
      })}`,
    );
  }
  for (const route of sorted) {
    lines.push("", `upstream ${upstreamName(route)} {`, `  server ${parseUpstream(route.upstream).server};`);
    lines.push("  keepalive 32;", "}");
  }
  lines.push("", "server {", `  listen ${settings.listen};`, `  server_name ${host};`);
  if (!settings.clientKeepalive) lines.push("  keepalive_timeout 0;");
  if (settings.accessLog) lines.push(`  access_log ${settings.accessLog} ferry_traffic;`);
  lines.push(
    "  proxy_http_version 1.1;",
    "  proxy_set_header Host $http_host;",
    "  proxy_set_header Connection $ferry_connection;",
    "  proxy_set_header Upgrade $http_upgrade;",
    "  proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;",
    "  proxy_set_header X-Forwarded-Proto $scheme;",
    "  proxy_set_header X-Forwarded-Host $http_host;",
    // Long polls, SSE and WebSockets are not cut after nginx's default 60 s.
    "  proxy_read_timeout 1h;",
    "  proxy_send_timeout 1h;",
  );
  for (const location of locationsOf(sorted)) {
    const route = bestRoute(sorted, location.probe);
    lines.push(`  location ${location.exact ? "= " : ""}${location.path} {`);
    if (!route) {
      lines.push(`    ${noRouteProblem()}`);
    } else {
      if (settings.accessLog) {
        lines.push(`    set $ferry_route "${route.name}";`, `    set $ferry_upstream "${route.upstream}";`);
      }
      lines.push(`    proxy_pass http://${upstreamName(route)};`);
    }
    lines.push("  }");
  }
  lines.push("}", "");
  return lines.join("\n");
}

function upstreamName(route: StoredRoute): string {
  return `ferry_${route.name}`;
}

interface Location {
  exact: boolean;
  path: string;
  /** A request path that reaches this location and no longer one. */
  probe: string;
}

function locationsOf(routes: readonly StoredRoute[]): Location[] {
  const locations = new Map<string, Location>();
  const add = (exact: boolean, path: string) => {
    // "\u0000" appears in no prefix, so the probe matches exactly the routes whose prefix covers `path`.
    locations.set(`${exact ? "=" : ""}${path}`, { exact, path, probe: exact ? path : `${path}\u0000` });
  };
  add(false, "/");
  for (const { pathPrefix } of routes) {
    if (pathPrefix === "/") continue;
    if (pathPrefix.endsWith("/")) {
      add(false, pathPrefix);
      add(true, pathPrefix.slice(0, -1));
    } else {
      add(true, pathPrefix);
      add(false, `${pathPrefix}/`);
    }
  }
  return [...locations.values()].sort((a, b) => a.path.localeCompare(b.path) || Number(a.exact) - Number(b.exact));
}

/** The route with the longest prefix matching `path`, as `ferry proxy` picks it. */
function bestRoute(routes: readonly StoredRoute[], path: string): StoredRoute | undefined {
  let best: StoredRoute | undefined;
  for (const route of routes) {
    if (!prefixMatches(route.pathPrefix, path)) continue;
    if (!best || route.pathPrefix.length > best.pathPrefix.length) best = route;
  }
  return best;
}

/** "/api" matches "/api" and "/api/x", not "/apix" (the rule of `ferry proxy`). */
function prefixMatches(prefix: string, path: string): boolean {
  if (prefix === "/" || prefix === path) return true;
  if (!path.startsWith(prefix)) return false;
  if (prefix.endsWith("/")) return true;
  return path[prefix.length] === "/";
}

async function listFiles(directory: string): Promise<string[]> {
  try {
    return (await readdir(directory)).sort();
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code === "ENOENT") return [];
    throw error;
  }
}

async function readOptional(path: string): Promise<string | undefined> {
  try {
    return await readFile(path, "utf8");
  } catch (error) {
    const code = (error as NodeJS.ErrnoException).code;
    if (code === "ENOENT" || code === "ESRCH") return undefined;
    throw error;
  }
}

function safeJsonParse(text: string): unknown {
  try {
    return JSON.parse(text);
  } catch {
    return undefined;
  }
}

/** Puts back what the files held before a change (best effort for each file). */
async function restoreFiles(changes: readonly FileChange[]): Promise<void> {
  for (const { path, before } of [...changes].reverse()) {
    if (before === undefined) await unlink(path).catch(() => undefined);
    else await writeFileAtomic(path, before, 0o644);
  }
}

/** State and start time from /proc/<pid>/stat; undefined when there is no such process. */
async function processStatus(pid: number): Promise<{ state: string; parent: number; startTime: string } | undefined> {
  const text = await readOptional(`/proc/${pid}/stat`);
  if (text === undefined) return undefined;
  // The command name (field 2) may hold spaces and parentheses: fields are counted after its ')'.
  const fields = text.slice(text.lastIndexOf(")") + 2).split(" ");
  const [state, parent] = fields;
  const startTime = fields[19];
  if (state === undefined || parent === undefined || startTime === undefined) return undefined;
  return { state, parent: Number(parent), startTime };
}

/** The master's children: its workers (and cache processes, when configured). */
async function workersOf(master: ProcessId): Promise<ProcessId[]> {
  let pids: number[];
  const children = await readOptional(`/proc/${master.pid}/task/${master.pid}/children`);
  if (children !== undefined) {
    pids = children.split(" ").filter(Boolean).map(Number);
  } else {
    // Kernels without CONFIG_PROC_CHILDREN: look for processes whose parent is the master.
    const all = (await readdir("/proc")).filter((name) => /^[0-9]+$/.test(name)).map(Number);
    const statuses = await Promise.all(all.map((pid) => processStatus(pid).catch(() => undefined)));
    pids = all.filter((_pid, index) => statuses[index]?.parent === master.pid);
  }
  const statuses = await Promise.all(pids.map((pid) => processStatus(pid)));
  return pids.flatMap((pid, index) => {
    const status = statuses[index];
    return status && status.state !== "Z" && status.parent === master.pid ? [{ pid, startTime: status.startTime }] : [];
  });
}

/** The processes of `processes` that still run (a zombie has exited; a reused pid is another process). */
async function aliveOf(processes: readonly ProcessId[]): Promise<ProcessId[]> {
  const statuses = await Promise.all(processes.map((candidate) => processStatus(candidate.pid)));
  return processes.filter((candidate, index) => {
    const status = statuses[index];
    return status !== undefined && status.state !== "Z" && status.startTime === candidate.startTime;
  });
}

/** A worker that got the master's shutdown signal renames itself "worker process is shutting down". */
async function isAccepting(pid: number): Promise<boolean> {
  const commandLine = await readOptional(`/proc/${pid}/cmdline`);
  return commandLine !== undefined && !commandLine.includes("shutting down");
}
