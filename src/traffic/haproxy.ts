import { spawn } from "node:child_process";
import { lookup } from "node:dns/promises";
import { closeSync, openSync, readFileSync } from "node:fs";
import { mkdir, open, readFile } from "node:fs/promises";
import { connect, isIP } from "node:net";
import { join, resolve } from "node:path";
import { setTimeout as sleep } from "node:timers/promises";
import { z } from "zod";
import { ConflictError, InputError, NotFoundError } from "../domain/errors.js";
import { writeFileAtomic } from "./atomicFile.js";
import { DurationHistogram } from "./durationHistogram.js";
import { parseUpstream, validateRoute } from "./nginx.js";
import { bucketCookieName } from "./proxy.js";
import type {
  LiveUpstream,
  RouteMode,
  Router,
  RouterDrainResult,
  RouterSwitchResult,
  RouteSpec,
  TrafficSplit,
  UpstreamTraffic,
} from "./router.js";

/**
 * The HAProxy driver of `Router` (docs/decisions/0048-haproxy-router.md). Ferry owns one
 * HAProxy (Debian's `haproxy`, master-worker mode, daemonised in a session of its own) and
 * everything in its state directory:
 *
 * - `haproxy.cfg`: written by Ferry. One `# ferry-route {json}` line per route (the record
 *   `live()` and `routes()` read back), one frontend on the listen address whose
 *   `use_backend` rules pick a route by host and longest path prefix, and one backend per
 *   route with two server slots, `a` and `b`: the live colour in one, the previous colour
 *   (or a copy of the live one) `disabled` in the other;
 * - `haproxy.sock`: the runtime API (admin level, mode 0600);
 * - `haproxy.pid`: the master's pid;
 * - `access.log`: one short line per request, written by HAProxy through an inherited file
 *   descriptor (`log fd@3`): what `traffic()` counts.
 *
 * A switch of an existing route is never a reload: through the runtime API the idle slot
 * gets the new upstream's address (`set server … addr … port …`) and `state ready`, and the
 * live slot `state maint`, in one line of commands; `show servers state` confirms it, then
 * the file is rewritten to say the same, so a HAProxy that restarts (or is started again by
 * the driver after a crash) comes back on the live colour. Requests already on the old slot
 * finish there; `drain` waits for its current sessions (`show stat` scur) to reach 0. Only a
 * new route (a new backend and frontend rule) or a route whose host or path prefix changed
 * reloads HAProxy (SIGUSR2 to the master: the listening sockets pass to the new worker).
 */

export interface HaproxyRouterOptions {
  /** The haproxy binary; default "haproxy" (found on PATH). */
  haproxy?: string;
  /** The directory Ferry owns: haproxy.cfg, haproxy.sock, haproxy.pid, access.log. */
  stateDir: string;
  /** Where the frontend listens: "127.0.0.1:8000", "0.0.0.0:80", "[::]:80". */
  listen: string;
  /** Limit for each haproxy command, start or reload; default 10 s. */
  timeoutMs?: number;
}

type Slot = "a" | "b";

const recordSchema = z.strictObject({
  name: z.string(),
  host: z.string(),
  pathPrefix: z.string(),
  upstream: z.string(),
  colour: z.string().nullable(),
  /** The server slot the live upstream is in. */
  slot: z.enum(["a", "b"]),
  /** "ip:port" of the live upstream as HAProxy's server line has it. */
  server: z.string(),
  /** What the other slot holds, disabled: the previous upstream. */
  idle: z.strictObject({ upstream: z.string(), colour: z.string().nullable(), server: z.string() }).nullable(),
  /**
   * A canary (ADR 0053): the idle slot holds the new colour and takes `weight` per cent of the
   * new visitors. `base`: the slot's connection-error count (`show stat`) when it took the
   * canary, so that only the canary's own are reported.
   */
  canary: z.strictObject({ weight: z.number().int().min(0).max(99), base: z.number().int().min(0) }).optional(),
});
type RouteRecord = z.infer<typeof recordSchema>;

const CONFIG_FILE = "haproxy.cfg";
const SOCKET_FILE = "haproxy.sock";
const PID_FILE = "haproxy.pid";
const ACCESS_LOG = "access.log";
/** route name → the slot holding its canary; read by the backends' `use-server` rules for X-Ferry-Colour. */
const CANARY_MAP = "canary.map";
/**
 * route name → its maintenance page, base64 (HAProxy's `b64dec` gives it back), or
 * MAINTENANCE_PROBLEM for the problem answer; a route not in it serves (ADR 0071). The map is
 * changed through the runtime API and rewritten after, so a restart keeps the mode.
 */
const MAINTENANCE_MAP = "maintenance.map";
/**
 * The Lua service that answers with a route's maintenance page: `http-request return`'s
 * lf-string would encode the page's line breaks (%0A), Lua sends it byte for byte.
 */
const MAINTENANCE_LUA = "maintenance.lua";
const MAINTENANCE_SERVICE = "ferry_maintenance";
const MAINTENANCE_LUA_SOURCE = `-- Written by Ferry's haproxy router (ADR 0071): a route's maintenance page, as set in txn.ferry_page.
core.register_service("${MAINTENANCE_SERVICE}", "http", function(applet)
  local page = applet:get_var("txn.ferry_page") or ""
  applet:set_status(503)
  applet:add_header("content-type", "text/html; charset=utf-8")
  applet:add_header("cache-control", "no-store")
  applet:add_header("content-length", tostring(string.len(page)))
  applet:start_response()
  applet:send(page)
end)
`;
/** Not base64 (7 characters): no page encodes to it. */
const MAINTENANCE_PROBLEM = "problem";
/**
 * A page travels as one runtime API line and is answered from one buffer (tune.bufsize,
 * 16 KiB): 8 KiB of HTML is ~11 KiB of base64, with room for the headers.
 */
const MAX_MAINTENANCE_PAGE = 8 * 1024;
/** The sum of the two slots' weights while a canary runs (HAProxy takes 0–256). */
const TOTAL_WEIGHT = 100;
const RECORD_PREFIX = "# ferry-route ";
const BACKEND_PREFIX = "ferry_r_";
const POLL_MS = 5;
const DRAIN_POLL_MS = 20;
const SUPERVISE_MS = 1_000;
/** sockaddr_un's sun_path holds 108 bytes with the final NUL. */
const MAX_SOCKET_PATH = 107;
const LISTEN = /^(?:\[[0-9a-f:.]+\]|[a-z0-9.-]+):[0-9]{1,5}$/i;
const STATE_DIR = /^\/[A-Za-z0-9._~/+-]*$/;

/** `show servers state` fields: server name, address, operational state, admin state, port. */
interface ServerState {
  name: string;
  address: string;
  operational: number;
  admin: number;
  port: number;
}
/** srv_admin_state bit set by `set server … state maint`. */
const FORCED_MAINT = 0x01;
/** srv_op_state of a server taking traffic. */
const RUNNING = 2;

export class HaproxyRouter implements Router {
  readonly driver = "haproxy";
  private readonly binary: string;
  private readonly timeoutMs: number;
  private readonly stateDir: string;
  private readonly configPath: string;
  private readonly socketPath: string;
  private readonly pidPath: string;
  private readonly accessLogPath: string;
  private readonly canaryMapPath: string;
  private readonly maintenanceMapPath: string;
  /** Switches, starts and reloads run one at a time, so the file and the runtime never interleave. */
  private changes: Promise<unknown> = Promise.resolve();
  private readonly counts = new Map<
    string,
    {
      route: string;
      upstream: string;
      served: number;
      failed: number;
      serverErrors: number;
      durations: DurationHistogram;
    }
  >();
  private logPosition = { inode: -1, offset: 0 };
  private reading: Promise<unknown> = Promise.resolve();
  private supervisor: NodeJS.Timeout | undefined;

  constructor(options: HaproxyRouterOptions) {
    this.binary = options.haproxy ?? "haproxy";
    this.timeoutMs = options.timeoutMs ?? 10_000;
    this.stateDir = resolve(options.stateDir);
    if (!STATE_DIR.test(this.stateDir)) {
      throw new InputError(
        `haproxy state dir ${JSON.stringify(this.stateDir)} may hold only letters, digits and . _ ~ / + - (it goes into haproxy.cfg)`,
      );
    }
    this.configPath = join(this.stateDir, CONFIG_FILE);
    this.socketPath = join(this.stateDir, SOCKET_FILE);
    this.pidPath = join(this.stateDir, PID_FILE);
    this.accessLogPath = join(this.stateDir, ACCESS_LOG);
    this.canaryMapPath = join(this.stateDir, CANARY_MAP);
    this.maintenanceMapPath = join(this.stateDir, MAINTENANCE_MAP);
    if (Buffer.byteLength(this.socketPath) > MAX_SOCKET_PATH) {
      throw new InputError(
        `haproxy state dir ${JSON.stringify(this.stateDir)} is too long for its runtime API socket (${this.socketPath} must be at most ${MAX_SOCKET_PATH} bytes); choose a shorter FERRY_HAPROXY_STATE_DIR`,
      );
    }
    if (!LISTEN.test(options.listen)) {
      throw new InputError(
        `listen ${JSON.stringify(options.listen)} is not an address HAProxy can bind, such as 127.0.0.1:8000 or [::]:80`,
      );
    }
    this.listen = options.listen;
  }

  private readonly listen: string;

  /** Whether the state directory records routes (sync: the registry asks it at server start). */
  static hasRoutes(stateDir: string): boolean {
    try {
      return readFileSync(join(stateDir, CONFIG_FILE), "utf8").includes(`\n${RECORD_PREFIX}`);
    } catch {
      return false;
    }
  }

  async live(route: string): Promise<LiveUpstream | undefined> {
    const found = (await this.readRecords()).find((candidate) => candidate.name === route);
    return found ? { upstream: found.upstream, colour: found.colour } : undefined;
  }

  async routes(): Promise<(RouteSpec & LiveUpstream & { canary?: TrafficSplit })[]> {
    return (await this.readRecords()).map(({ name, host, pathPrefix, upstream, colour, canary, idle }) => ({
      name,
      host,
      pathPrefix,
      upstream,
      colour,
      ...(canary && idle && { canary: { upstream: idle.upstream, colour: idle.colour, weight: canary.weight } }),
    }));
  }

  /**
   * Sends `split.weight` per cent of the route's new visitors to a second upstream (ADR 0053),
   * through the runtime API only: the idle slot gets the canary's address, both slots their
   * weights (`set weight`), and the backend's dynamic cookie is enabled, so HAProxy itself
   * keeps each visitor on the colour it reached. null: the canary slot goes to maintenance
   * (its cookie holders go back to the live colour) and the cookie is no longer set.
   */
  split(route: string, split: TrafficSplit | null): Promise<{ switchMs: number }> {
    const run = this.changes.then(() => this.applySplit(route, split));
    this.changes = run.catch(() => undefined);
    return run;
  }

  /**
   * Maintenance through the runtime API only (ADR 0071): the route's entry in the maintenance
   * map, which its backend's `http-request return` rules read, so every request is answered
   * 503 (the page, or a problem) without a reload. A pause is refused: HAProxy cannot hold
   * requests and send them on later (its queue times out per request, and only when every
   * server is full), so only the builtin proxy pauses.
   */
  setMode(route: string, mode: RouteMode | null): Promise<void> {
    if (mode?.mode === "paused") {
      return Promise.reject(
        new ConflictError(
          `the haproxy router cannot pause route '${route}' (HAProxy cannot hold requests and send them on when resumed); put it in maintenance instead, or use the builtin router (ferry proxy), which pauses`,
        ),
      );
    }
    if (mode?.page !== undefined && Buffer.byteLength(mode.page) > MAX_MAINTENANCE_PAGE) {
      return Promise.reject(
        new InputError(`the maintenance page is too long for haproxy`, [
          {
            pointer: "/page",
            detail: `the haproxy router serves a maintenance page of at most ${MAX_MAINTENANCE_PAGE / 1024} KiB (this one is ${Buffer.byteLength(mode.page)} bytes); link to images and styles instead of inlining them`,
          },
        ]),
      );
    }
    const run = this.changes.then(() => this.applyMode(route, mode));
    this.changes = run.catch(() => undefined);
    return run;
  }

  switch(route: RouteSpec, target: LiveUpstream): Promise<RouterSwitchResult> {
    let wanted: ReturnType<typeof validateRoute>;
    try {
      wanted = validateRoute(route, target);
    } catch (error) {
      return Promise.reject(error);
    }
    const run = this.changes.then(() => this.applySwitch(wanted));
    this.changes = run.catch(() => undefined);
    return run;
  }

  async drain(upstream: string, deadlineMs: number): Promise<RouterDrainResult> {
    const origin = parseUpstream(upstream).origin;
    const started = performance.now();
    const records = await this.readRecords();
    if (records.some((record) => record.upstream === origin)) return { drained: false, waitedMs: 0 };
    // The slots that held it: the idle slot of each route whose previous upstream it was.
    const slots = records.flatMap((record) =>
      record.idle?.upstream === origin ? [{ backend: backendName(record.name), slot: otherSlot(record.slot) }] : [],
    );
    if (slots.length === 0 || !(await this.runningMaster())) {
      return { drained: true, waitedMs: Math.round(performance.now() - started) };
    }
    let inFlight = await this.sessionsOn(slots);
    while (inFlight > 0 && performance.now() - started < deadlineMs) {
      await sleep(Math.min(DRAIN_POLL_MS, Math.max(1, deadlineMs - (performance.now() - started))));
      inFlight = await this.sessionsOn(slots);
    }
    const stillRouted = (await this.readRecords()).some((record) => record.upstream === origin);
    return {
      drained: inFlight === 0 && !stillRouted,
      waitedMs: Math.round(performance.now() - started),
      ...(inFlight > 0 && { inFlight }),
    };
  }

  /**
   * Requests per route and upstream, counted from the access log HAProxy writes (it outlives
   * Ferry and HAProxy restarts, as nginx's does). Served: a status below 500 from a server;
   * failed: 5xx, or no server reached. A request the client gave up on before any answer is
   * neither. Durations: HAProxy's `%Ta` (request received to last byte sent, in ms).
   */
  traffic(): Promise<UpstreamTraffic[] | undefined> {
    const run = this.reading.then(() => this.readTraffic());
    this.reading = run.catch(() => undefined);
    return run;
  }

  /**
   * Whether this HAProxy is in use: its file records routes. When it does and HAProxy does
   * not run (a reboot, a crash, kill -9), HAProxy is started again from the file, which is
   * what was live; when it runs, the runtime state is set to what the file says (a server
   * that stopped between a runtime change and its file write comes back on the file's colour).
   */
  async bringBack(): Promise<boolean> {
    if ((await this.readRecords()).length === 0) return false;
    const run = this.changes.then(async () => {
      const records = await this.readRecords();
      if (!(await this.runningMaster())) await this.start();
      await this.applyRecords(records);
    });
    this.changes = run.catch(() => undefined);
    await run;
    return true;
  }

  /**
   * Watches HAProxy every second while the driver is open, and starts it again from the file
   * when it stopped with routes recorded: the data plane comes back on the live colour
   * without waiting for the next deployment or server restart.
   */
  supervise(log: (message: string) => void): void {
    if (this.supervisor) return;
    let checking = false;
    this.supervisor = setInterval(() => {
      if (checking) return;
      checking = true;
      void (async () => {
        if (!HaproxyRouter.hasRoutes(this.stateDir) || (await this.runningMaster())) return;
        log("haproxy is not running: starting it again with Ferry's routes");
        await this.bringBack();
        log("haproxy started again, serving the live colours of its file");
      })()
        .catch((error: unknown) => log(`haproxy could not be started again: ${(error as Error).message}`))
        .finally(() => {
          checking = false;
        });
    }, SUPERVISE_MS);
    this.supervisor.unref();
  }

  /** HAProxy is the data plane and keeps serving: closing the driver stops watching it and waits for a switch in progress. */
  async close(): Promise<void> {
    if (this.supervisor) clearInterval(this.supervisor);
    this.supervisor = undefined;
    await this.changes;
    await this.reading;
  }

  private async applySplit(name: string, split: TrafficSplit | null): Promise<{ switchMs: number }> {
    const records = await this.readRecords();
    const current = records.find((record) => record.name === name);
    if (!current) throw new InputError(`route '${name}' does not exist in haproxy; switch it to a colour first`);
    const backend = backendName(name);
    const idleSlot = otherSlot(current.slot);
    const running = await this.runningMaster();
    if (!running)
      throw new Error(
        `haproxy is not running, so route '${name}' cannot be split; it is started again from ${this.configPath} by the next switch`,
      );
    const started = performance.now();
    if (split === null) {
      if (!current.canary) return { switchMs: 0 };
      await this.command(canaryOff(current, this.canaryMapPath).join("; "));
      const switchMs = performance.now() - started;
      const { canary: _removed, ...next } = current;
      await this.recordOrRevert(records, current, next);
      return { switchMs };
    }
    if (!Number.isInteger(split.weight) || split.weight < 0 || split.weight > 99) {
      throw new InputError(`canary weight ${split.weight} must be a whole number from 0 to 99 (100 is a switch)`);
    }
    const origin = parseUpstream(split.upstream).origin;
    if (origin === current.upstream) {
      throw new InputError(`the canary of route '${name}' must be another upstream than its live one (${origin})`);
    }
    const server = await this.resolveServer(origin);
    const slots = slotWeights(split.weight);
    const weights = [
      `set weight ${backend}/${current.slot} ${slots.live}`,
      `set weight ${backend}/${idleSlot} ${slots.canary}`,
    ];
    if (current.canary && current.idle?.upstream === origin && current.idle.server === server) {
      // A later stage: only the weights change; cookie holders stay where they are.
      await this.command(weights.join("; "));
      const switchMs = performance.now() - started;
      await this.recordOrRevert(records, current, { ...current, canary: { ...current.canary, weight: split.weight } });
      return { switchMs };
    }
    const base = (await this.connectionErrors()).get(`${backend},${idleSlot}`) ?? 0;
    const { address, port } = splitServer(server);
    const answer = await this.command(
      [
        `set server ${backend}/${idleSlot} state maint`,
        `set server ${backend}/${idleSlot} addr ${address} port ${port}`,
        ...weights,
        `del map ${this.canaryMapPath} ${name}`,
        `add map ${this.canaryMapPath} ${name} ${idleSlot}`,
        `enable dynamic-cookie backend ${backend}`,
        `set server ${backend}/${idleSlot} state ready`,
        `show servers state ${backend}`,
      ].join("; "),
    );
    const states = parseServerStates(answer, backend);
    const canarySlot = states.find((state) => state.name === idleSlot);
    const liveSlot = states.find((state) => state.name === current.slot);
    if (
      !canarySlot ||
      `${formatAddress(canarySlot.address)}:${canarySlot.port}` !== server ||
      canarySlot.operational !== RUNNING ||
      !liveSlot ||
      liveSlot.operational !== RUNNING
    ) {
      await this.applyRecords([current]).catch(() => undefined);
      throw new Error(
        `haproxy did not take the canary of route '${name}' to ${origin}; everyone stays on ${current.upstream}`,
      );
    }
    const switchMs = performance.now() - started;
    await this.recordOrRevert(records, current, {
      ...current,
      idle: { upstream: origin, colour: split.colour, server },
      canary: { weight: split.weight, base },
    });
    return { switchMs };
  }

  private async applyMode(name: string, mode: Extract<RouteMode, { mode: "maintenance" }> | null): Promise<void> {
    const records = await this.readRecords();
    if (!records.some((record) => record.name === name)) {
      throw new NotFoundError(`route '${name}' does not exist in haproxy; switch it to a colour first`);
    }
    const running = await this.runningMaster();
    if (!running) {
      throw new Error(
        `haproxy is not running, so route '${name}' cannot be put in maintenance or served again; it is started again from ${this.configPath} by the next switch`,
      );
    }
    const entries = await this.readMaintenance();
    const before = entries.get(name);
    const value =
      mode === null
        ? undefined
        : mode.page === undefined
          ? MAINTENANCE_PROBLEM
          : Buffer.from(mode.page).toString("base64");
    if (value === undefined) entries.delete(name);
    else entries.set(name, value);
    const answer = await this.command(
      [
        `del map ${this.maintenanceMapPath} ${name}`,
        ...(value === undefined ? [] : [`add map ${this.maintenanceMapPath} ${name} ${value}`]),
      ].join("; "),
    );
    if (/unknown map/i.test(answer)) {
      // A HAProxy started from the file of an earlier Ferry, without the maintenance rules:
      // once, the file with them is loaded by a reload (the listening sockets pass over).
      await this.writeRecords(records, entries);
      await this.reload(running);
      await this.applyRecords(await this.readRecords());
      return;
    }
    try {
      await this.writeRecords(records, entries);
    } catch (error) {
      await this.command(
        [
          `del map ${this.maintenanceMapPath} ${name}`,
          ...(before === undefined ? [] : [`add map ${this.maintenanceMapPath} ${name} ${before}`]),
        ].join("; "),
      ).catch(() => undefined);
      throw new Error(
        `could not record the mode of route '${name}' in ${this.maintenanceMapPath} (${(error as Error).message}); it stays as it was`,
      );
    }
  }

  /** The maintenance map's entries: route name → base64 page or MAINTENANCE_PROBLEM. */
  private async readMaintenance(): Promise<Map<string, string>> {
    const entries = new Map<string, string>();
    for (const line of ((await readOptional(this.maintenanceMapPath)) ?? "").split("\n")) {
      const [name, value] = line.split(" ");
      if (name && value) entries.set(name, value);
    }
    return entries;
  }

  /** Writes `next` in place of `current`; when that fails, puts the runtime back to what the file still says. */
  private async recordOrRevert(
    records: readonly RouteRecord[],
    current: RouteRecord,
    next: RouteRecord,
  ): Promise<void> {
    try {
      await this.writeRecords(records.map((record) => (record === current ? next : record)));
    } catch (error) {
      await this.applyRecords([current]).catch(() => undefined);
      throw new Error(
        `could not record route '${current.name}' in ${this.configPath} (${(error as Error).message}); its previous traffic split stays live`,
      );
    }
  }

  /** Connection errors per server (`backend,slot`) since HAProxy's worker started: `show stat` econ + wretr + wredis. */
  private async connectionErrors(): Promise<Map<string, number>> {
    const counts = new Map<string, number>();
    const text = await this.command("show stat");
    for (const line of text.split("\n")) {
      const fields = line.split(",");
      if (!fields[0]?.startsWith(BACKEND_PREFIX) || fields[1] === "BACKEND" || fields[1] === "FRONTEND") continue;
      counts.set(
        `${fields[0]},${fields[1]}`,
        (Number(fields[13]) || 0) + (Number(fields[15]) || 0) + (Number(fields[16]) || 0),
      );
    }
    return counts;
  }

  private async applySwitch(wanted: ReturnType<typeof validateRoute>): Promise<RouterSwitchResult> {
    const started = performance.now();
    const records = await this.readRecords();
    const current = records.find((record) => record.name === wanted.name);
    for (const other of records) {
      if (other.name !== wanted.name && other.host === wanted.host && other.pathPrefix === wanted.pathPrefix) {
        throw new ConflictError(
          `route '${other.name}' already serves ${wanted.host}${wanted.pathPrefix}; switch that route instead`,
        );
      }
    }
    const previous = current ? { upstream: current.upstream, colour: current.colour } : undefined;
    const server = await this.resolveServer(wanted.upstream);
    const running = await this.runningMaster();
    const sameShape = current !== undefined && current.host === wanted.host && current.pathPrefix === wanted.pathPrefix;

    if (current && sameShape && running) {
      if (current.upstream === wanted.upstream && current.server === server) {
        // A switch replaces a canary: everyone on the live colour.
        if (current.canary) await this.command(canaryOff(current, this.canaryMapPath).join("; "));
        if (current.colour !== wanted.colour || current.canary) {
          const { canary: _removed, ...kept } = current;
          await this.writeRecords(records.map((record) => (record === current ? { ...kept, ...wanted } : record)));
        }
        return { previous, switchMs: performance.now() - started };
      }
      const backend = backendName(current.name);
      const to = otherSlot(current.slot);
      const { address, port } = splitServer(server);
      // One line, one round trip: the idle slot gets the new address and takes traffic, the
      // live slot stops taking any, and HAProxy's answer ends with the state it is now in.
      const switching = performance.now();
      const answer = await this.command(
        [
          `set server ${backend}/${to} addr ${address} port ${port}`,
          `set weight ${backend}/${to} ${TOTAL_WEIGHT}`,
          `set server ${backend}/${to} state ready`,
          `set server ${backend}/${current.slot} state maint`,
          // The promotion of a canary (or a switch past one) ends it: no more cookies.
          ...(current.canary
            ? [`disable dynamic-cookie backend ${backend}`, `del map ${this.canaryMapPath} ${current.name}`]
            : []),
          `show servers state ${backend}`,
        ].join("; "),
      );
      const confirmed = confirm(parseServerStates(answer, backend), backend, to, server);
      if (!confirmed.ok) {
        await this.applyRecords([current]).catch(() => undefined);
        throw new Error(
          `haproxy did not take route '${wanted.name}' to ${wanted.upstream} (${confirmed.reason}); the previous upstream stays live`,
        );
      }
      // The switch itself: from the runtime command to HAProxy confirming it (the file is written after).
      const switchMs = performance.now() - switching;
      const next: RouteRecord = {
        ...wanted,
        slot: to,
        server,
        idle: { upstream: current.upstream, colour: current.colour, server: current.server },
      };
      try {
        await this.writeRecords(records.map((record) => (record === current ? next : record)));
      } catch (error) {
        // The file must describe what is live: put the runtime back to what it still says.
        await this.applyRecords([current]).catch(() => undefined);
        throw new Error(
          `could not record route '${wanted.name}' in ${this.configPath} (${(error as Error).message}); the previous upstream stays live`,
        );
      }
      return { previous, switchMs };
    }

    // A new route, a route that moved to another host or path, or HAProxy not running: the
    // file changes shape, so HAProxy starts or reloads with it.
    const next: RouteRecord = current
      ? {
          ...wanted,
          slot: otherSlot(current.slot),
          server,
          idle: { upstream: current.upstream, colour: current.colour, server: current.server },
        }
      : { ...wanted, slot: "a", server, idle: null };
    const before = await readOptional(this.configPath);
    await this.writeRecords([...records.filter((record) => record !== current), next]);
    try {
      if (running) await this.reload(running);
      else await this.start();
      // A new worker starts with every backend's dynamic cookie on: only canaries keep it.
      await this.applyRecords(await this.readRecords());
    } catch (error) {
      if (before === undefined) await writeFileAtomic(this.configPath, renderConfig([], this.settings()), 0o600);
      else await writeFileAtomic(this.configPath, before, 0o600);
      throw new Error(
        `haproxy did not take the config for route '${wanted.name}'; the previous config stays live.\n${(error as Error).message}`,
      );
    }
    return { previous, switchMs: performance.now() - started };
  }

  /** Sets the runtime state of each record's backend to what the record says. */
  private async applyRecords(records: readonly RouteRecord[]): Promise<void> {
    for (const record of records) {
      const backend = backendName(record.name);
      const live = splitServer(record.server);
      const idle = splitServer(record.idle?.server ?? record.server);
      const idleSlot = otherSlot(record.slot);
      const weights = slotWeights(record.canary?.weight ?? 0);
      await this.command(
        [
          `set server ${backend}/${record.slot} addr ${live.address} port ${live.port}`,
          `set weight ${backend}/${record.slot} ${weights.live}`,
          `set server ${backend}/${record.slot} state ready`,
          `set server ${backend}/${idleSlot} state maint`,
          `set server ${backend}/${idleSlot} addr ${idle.address} port ${idle.port}`,
          `set weight ${backend}/${idleSlot} ${weights.canary}`,
          `del map ${this.canaryMapPath} ${record.name}`,
          ...(record.canary
            ? [
                `add map ${this.canaryMapPath} ${record.name} ${idleSlot}`,
                `enable dynamic-cookie backend ${backend}`,
                `set server ${backend}/${idleSlot} state ready`,
              ]
            : [`disable dynamic-cookie backend ${backend}`]),
        ].join("; "),
      );
    }
  }

  private settings(): RenderSettings {
    return {
      listen: this.listen,
      socket: this.socketPath,
      canaryMap: this.canaryMapPath,
      maintenanceMap: this.maintenanceMapPath,
      maintenanceLua: join(this.stateDir, MAINTENANCE_LUA),
    };
  }

  private async writeRecords(
    records: readonly RouteRecord[],
    maintenance?: ReadonlyMap<string, string>,
  ): Promise<void> {
    await mkdir(this.stateDir, { recursive: true, mode: 0o700 });
    // The maps HAProxy loads at start (the runtime API changes them after that); before the config that names them.
    await writeFileAtomic(this.canaryMapPath, renderCanaryMap(records), 0o600);
    const names = new Set(records.map((record) => record.name));
    const entries = [...(maintenance ?? (await this.readMaintenance()))].filter(([name]) => names.has(name));
    await writeFileAtomic(join(this.stateDir, MAINTENANCE_LUA), MAINTENANCE_LUA_SOURCE, 0o600);
    await writeFileAtomic(
      this.maintenanceMapPath,
      entries.map(([name, value]) => `${name} ${value}\n`).join(""),
      0o600,
    );
    await writeFileAtomic(this.configPath, renderConfig(records, this.settings()), 0o600);
  }

  private async readRecords(): Promise<RouteRecord[]> {
    const text = await readOptional(this.configPath);
    const records: RouteRecord[] = [];
    for (const [index, line] of (text ?? "").split("\n").entries()) {
      if (!line.startsWith(RECORD_PREFIX)) continue;
      const parsed = recordSchema.safeParse(safeJsonParse(line.slice(RECORD_PREFIX.length)));
      if (!parsed.success) {
        throw new Error(`${this.configPath}:${index + 1} is not a valid ferry-route record; fix or remove the line`);
      }
      records.push(parsed.data);
    }
    return records.sort((a, b) => a.name.localeCompare(b.name));
  }

  /** "ip:port" for the upstream's origin; a host name is resolved once, at the switch. */
  private async resolveServer(upstream: string): Promise<string> {
    const url = new URL(upstream);
    const port = url.port === "" ? "80" : url.port;
    const host = url.hostname.startsWith("[") ? url.hostname.slice(1, -1) : url.hostname;
    if (isIP(host) !== 0) return `${formatAddress(host)}:${port}`;
    try {
      const found = await lookup(host);
      return `${formatAddress(found.address)}:${port}`;
    } catch (error) {
      throw new InputError(`upstream ${upstream}: could not resolve ${host} (${(error as Error).message})`);
    }
  }

  /** The master named by the pid file, when it runs this state dir's config. */
  private async runningMaster(): Promise<number | undefined> {
    const text = await readOptional(this.pidPath);
    const pid = Number.parseInt(text?.trim().split("\n")[0] ?? "", 10);
    if (!Number.isInteger(pid) || pid <= 0) return undefined;
    const stat = await readOptional(`/proc/${pid}/stat`);
    if (!stat || stat.slice(stat.lastIndexOf(")") + 2, stat.lastIndexOf(")") + 3) === "Z") return undefined;
    // A pid file left by a HAProxy that died long ago may name an unrelated process now.
    const commandLine = (await readOptional(`/proc/${pid}/cmdline`))?.split("\0") ?? [];
    return commandLine.includes(this.configPath) ? pid : undefined;
  }

  /** Starts HAProxy from the file, checked first; resolves once its runtime API answers. */
  private async start(): Promise<void> {
    const check = await this.runHaproxy(["-c", "-q", "-f", this.configPath]);
    if (check.code !== 0) throw new Error(`haproxy rejects ${this.configPath}: ${check.stderr.trim()}`);
    const logFd = openSync(this.accessLogPath, "a", 0o600);
    let started: { code: number | null; stderr: string };
    try {
      started = await this.runHaproxy(["-W", "-D", "-f", this.configPath, "-p", this.pidPath], logFd);
    } finally {
      closeSync(logFd);
    }
    if (started.code !== 0) throw new Error(`haproxy did not start: ${started.stderr.trim()}`);
    const deadline = performance.now() + this.timeoutMs;
    while (performance.now() < deadline) {
      if ((await this.workerPid().catch(() => undefined)) !== undefined) return;
      await sleep(POLL_MS);
    }
    throw new Error(
      `haproxy started but its runtime API (${this.socketPath}) did not answer within ${this.timeoutMs} ms`,
    );
  }

  /** Checks the file, reloads the master (SIGUSR2) and waits for a worker of the new config to answer. */
  private async reload(master: number): Promise<void> {
    const check = await this.runHaproxy(["-c", "-q", "-f", this.configPath]);
    if (check.code !== 0) throw new Error(`haproxy rejects ${this.configPath}: ${check.stderr.trim()}`);
    const before = await this.workerPid().catch(() => undefined);
    process.kill(master, "SIGUSR2");
    const deadline = performance.now() + this.timeoutMs;
    while (performance.now() < deadline) {
      const now = await this.workerPid().catch(() => undefined);
      if (now !== undefined && now !== before) return;
      await sleep(POLL_MS);
    }
    throw new Error(`haproxy did not start a worker with the new config within ${this.timeoutMs} ms`);
  }

  private async workerPid(): Promise<number | undefined> {
    const info = await this.command("show info");
    const pid = /^Pid: (\d+)$/m.exec(info)?.[1];
    return pid === undefined ? undefined : Number(pid);
  }

  /** The current sessions (`show stat` scur) of the given servers, summed. */
  private async sessionsOn(slots: readonly { backend: string; slot: Slot }[]): Promise<number> {
    const wanted = new Set(slots.map(({ backend, slot }) => `${backend},${slot}`));
    const text = await this.command("show stat");
    let total = 0;
    for (const line of text.split("\n")) {
      const fields = line.split(",");
      if (wanted.has(`${fields[0]},${fields[1]}`)) total += Number(fields[4]) || 0;
    }
    return total;
  }

  /** One line of runtime API commands (';'-separated) on a fresh connection; what HAProxy answered. */
  private command(line: string): Promise<string> {
    return new Promise((resolvePromise, reject) => {
      const socket = connect(this.socketPath);
      let answer = "";
      socket.setEncoding("utf8");
      const timer = setTimeout(
        () => socket.destroy(new Error(`haproxy's runtime API did not answer within ${this.timeoutMs} ms`)),
        this.timeoutMs,
      );
      socket.once("connect", () => socket.write(`${line}\n`));
      socket.on("data", (chunk: string) => {
        answer += chunk;
      });
      socket.once("error", (error) => {
        clearTimeout(timer);
        reject(new Error(`haproxy's runtime API (${this.socketPath}): ${error.message}`));
      });
      socket.once("close", (hadError) => {
        clearTimeout(timer);
        if (!hadError) resolvePromise(answer);
      });
    });
  }

  private runHaproxy(args: readonly string[], logFd?: number): Promise<{ code: number | null; stderr: string }> {
    return new Promise((resolvePromise, reject) => {
      const child = spawn(this.binary, args, {
        stdio: ["ignore", "ignore", "pipe", ...(logFd === undefined ? [] : [logFd])],
        detached: true,
      });
      let stderr = "";
      const errors = child.stderr as NonNullable<typeof child.stderr>;
      errors.setEncoding("utf8");
      errors.on("data", (chunk: string) => {
        stderr += chunk;
      });
      const timer = setTimeout(() => child.kill("SIGKILL"), this.timeoutMs);
      child.once("error", (error) => {
        clearTimeout(timer);
        reject(new Error(`could not run ${this.binary}: ${error.message}`));
      });
      child.once("exit", (code, signal) => {
        clearTimeout(timer);
        // The daemonised master may hold stderr open: read what is there, then let go.
        setTimeout(() => {
          errors.destroy();
          if (signal === "SIGKILL")
            stderr += `\n${this.binary} ${args.join(" ")} took longer than ${this.timeoutMs} ms`;
          resolvePromise({ code, stderr });
        }, 20);
      });
    });
  }

  private async readTraffic(): Promise<UpstreamTraffic[]> {
    let file: Awaited<ReturnType<typeof open>>;
    try {
      file = await open(this.accessLogPath, "r");
    } catch (error) {
      if ((error as NodeJS.ErrnoException).code !== "ENOENT") throw error;
      return this.trafficCounts();
    }
    try {
      const info = await file.stat();
      if (info.ino !== this.logPosition.inode || info.size < this.logPosition.offset) {
        this.logPosition = { inode: info.ino, offset: 0 };
      }
      const length = info.size - this.logPosition.offset;
      if (length > 0) {
        const buffer = Buffer.alloc(length);
        const { bytesRead } = await file.read(buffer, 0, length, this.logPosition.offset);
        const end = buffer.subarray(0, bytesRead).lastIndexOf(0x0a);
        if (end >= 0) {
          const records = await this.readRecords();
          const origins = new Map<string, string>();
          for (const record of records) {
            if (record.idle) origins.set(`${record.name} ${record.idle.server}`, record.idle.upstream);
            origins.set(`${record.name} ${record.server}`, record.upstream);
          }
          const liveOf = new Map(records.map((record) => [record.name, record.upstream]));
          for (const line of buffer.subarray(0, end).toString("utf8").split("\n")) {
            this.countLine(line, origins, liveOf);
          }
          this.logPosition.offset += end + 1;
        }
      }
    } finally {
      await file.close();
    }
    return this.trafficCounts();
  }

  /** One line of Ferry's log-format: `<backend> <server> <ip:port> <status> <Ta ms> <termination state>`. */
  private countLine(line: string, origins: Map<string, string>, liveOf: Map<string, string>): void {
    const [backend, server, address, statusText, activeText, termination] = line.split(" ");
    if (!backend?.startsWith(BACKEND_PREFIX) || !server || !address || !termination) return;
    const route = backend.slice(BACKEND_PREFIX.length);
    const status = Number(statusText);
    const reached = server !== "<NOSRV>";
    // The client went away before any answer (nginx's 499): neither served nor failed.
    if (status < 100 && termination.startsWith("C")) return;
    const upstream = reached ? (origins.get(`${route} ${address}`) ?? `http://${address}`) : (liveOf.get(route) ?? "-");
    const key = `${route} ${upstream}`;
    const entry = this.counts.get(key) ?? {
      route,
      upstream,
      served: 0,
      failed: 0,
      serverErrors: 0,
      durations: new DurationHistogram(),
    };
    // A 5xx the server answered (the session ended normally, "--") is served, and a server
    // error; one HAProxy made up (server unreachable, cut or timed out) is a failure.
    if (!reached || status < 100 || (status >= 500 && !termination.startsWith("--"))) entry.failed += 1;
    else {
      entry.served += 1;
      if (status >= 500) entry.serverErrors += 1;
    }
    const active = Number(activeText);
    if (Number.isFinite(active) && active >= 0) entry.durations.observe(active / 1000);
    this.counts.set(key, entry);
  }

  /**
   * Connection errors per upstream from `show stat` (econ + wretr + wredis of its slot): a
   * request that could not reach the canary and was retried on the live colour is logged as
   * the live colour's, so only HAProxy's per-server counters tell whose it was. A canary's
   * count starts at its split (`base`); an empty map when HAProxy does not run.
   */
  private async retriedByUpstream(records: readonly RouteRecord[]): Promise<Map<string, number>> {
    const retried = new Map<string, number>();
    if (!(await this.runningMaster())) return retried;
    const counts = await this.connectionErrors().catch(() => new Map<string, number>());
    for (const record of records) {
      const backend = backendName(record.name);
      retried.set(`${record.name} ${record.upstream}`, counts.get(`${backend},${record.slot}`) ?? 0);
      if (record.canary && record.idle) {
        const count = counts.get(`${backend},${otherSlot(record.slot)}`) ?? 0;
        // A reload restarts the counters: below the base, they count from the reload.
        retried.set(
          `${record.name} ${record.idle.upstream}`,
          count >= record.canary.base ? count - record.canary.base : count,
        );
      }
    }
    return retried;
  }

  private async trafficCounts(): Promise<UpstreamTraffic[]> {
    const retried = await this.retriedByUpstream(await this.readRecords());
    const entries = [...this.counts.values()];
    for (const [key, count] of retried) {
      const [route = "", upstream = ""] = key.split(" ");
      if (count > 0 && !this.counts.has(key)) {
        entries.push({ route, upstream, served: 0, failed: 0, serverErrors: 0, durations: new DurationHistogram() });
      }
    }
    return entries
      .map(({ durations, ...counts }) => ({
        ...counts,
        retried: retried.get(`${counts.route} ${counts.upstream}`) ?? 0,
        ...(durations.count > 0 && { duration: durations.histogram() }),
      }))
      .sort((a, b) => a.route.localeCompare(b.route) || a.upstream.localeCompare(b.upstream));
  }
}

/** Connects the server's HAProxy: brings it back when its file records routes, and watches it. */
export async function connectHaproxyRouter(
  options: HaproxyRouterOptions,
  log: (message: string) => void,
): Promise<HaproxyRouter> {
  const router = new HaproxyRouter(options);
  await router.bringBack();
  router.supervise(log);
  return router;
}

/** The servers of `backend` in an answer holding `show servers state`. */
function parseServerStates(text: string, backend: string): ServerState[] {
  return text
    .split("\n")
    .filter((line) => /^\d+ /.test(line))
    .map((line) => line.split(" "))
    .filter((fields) => fields[1] === backend)
    .map((fields) => ({
      name: fields[3] ?? "",
      address: fields[4] ?? "",
      operational: Number(fields[5]),
      admin: Number(fields[6]),
      port: Number(fields[18]),
    }));
}

/** Whether `slot` of `backend` runs on `server` and the backend's other slot is in maintenance. */
function confirm(
  states: readonly ServerState[],
  backend: string,
  slot: Slot,
  server: string,
): { ok: true } | { ok: false; reason: string } {
  const live = states.find((state) => state.name === slot);
  const old = states.find((state) => state.name === otherSlot(slot));
  if (!live || !old) return { ok: false, reason: `backend ${backend} has no servers ${slot} and ${otherSlot(slot)}` };
  if (`${formatAddress(live.address)}:${live.port}` !== server) {
    return { ok: false, reason: `server ${slot} is at ${live.address}:${live.port}` };
  }
  if (live.operational !== RUNNING) return { ok: false, reason: `server ${slot} is not running` };
  if ((old.admin & FORCED_MAINT) === 0) return { ok: false, reason: `server ${otherSlot(slot)} is not in maintenance` };
  return { ok: true };
}

interface RenderSettings {
  listen: string;
  socket: string;
  canaryMap: string;
  maintenanceMap: string;
  maintenanceLua: string;
}

/** Runtime commands that take a route's canary away: its slot to maintenance, everyone on the live one. */
function canaryOff(record: RouteRecord, canaryMap: string): string[] {
  const backend = backendName(record.name);
  return [
    `set server ${backend}/${otherSlot(record.slot)} state maint`,
    `set weight ${backend}/${record.slot} ${TOTAL_WEIGHT}`,
    `disable dynamic-cookie backend ${backend}`,
    `del map ${canaryMap} ${record.name}`,
  ];
}

/**
 * The two slots' weights for a canary of `weight` per cent, reduced by their greatest common
 * divisor (10 % → 1 and 9, 50 % → 1 and 1): roundrobin applies a weight change from its next
 * cycle, whose length grows with the weights' sum, so small weights keep the share right
 * just after a stage change (ADR 0053).
 */
function slotWeights(weight: number): { live: number; canary: number } {
  const divisor = greatestCommonDivisor(weight, TOTAL_WEIGHT - weight);
  return { live: (TOTAL_WEIGHT - weight) / divisor, canary: weight / divisor };
}

function greatestCommonDivisor(a: number, b: number): number {
  return b === 0 ? a : greatestCommonDivisor(b, a % b);
}

function renderCanaryMap(records: readonly RouteRecord[]): string {
  return records
    .filter((record) => record.canary)
    .map((record) => `${record.name} ${otherSlot(record.slot)}\n`)
    .join("");
}

function backendName(route: string): string {
  return `${BACKEND_PREFIX}${route}`;
}

function otherSlot(slot: Slot): Slot {
  return slot === "a" ? "b" : "a";
}

/** An IPv6 address in brackets, as HAProxy's server lines and Ferry's records write it. */
function formatAddress(address: string): string {
  return isIP(address) === 6 ? `[${address}]` : address;
}

function splitServer(server: string): { address: string; port: string } {
  const colon = server.lastIndexOf(":");
  const host = server.slice(0, colon);
  return { address: host.startsWith("[") ? host.slice(1, -1) : host, port: server.slice(colon + 1) };
}

/** The problem a route in maintenance answers without a page, as `ferry proxy` words it. */
function maintenanceBody(route: string): string {
  return JSON.stringify({
    type: "urn:ferry:problem:maintenance",
    title: "Service unavailable",
    status: 503,
    detail: `route '${route}' is in maintenance; try again later`,
  });
}

function noRouteBody(): string {
  return JSON.stringify({
    type: "urn:ferry:problem:no-route",
    title: "Not Found",
    status: 404,
    detail: "no route serves this host and path",
  });
}

/**
 * The whole haproxy.cfg. Routes are matched in the order `ferry proxy` picks them: longest
 * path prefix first; "/api" matches "/api" and "/api/x", not "/apix".
 */
function renderConfig(records: readonly RouteRecord[], settings: RenderSettings): string {
  const sorted = [...records].sort((a, b) => a.name.localeCompare(b.name));
  const lines = [
    "# Written by Ferry's haproxy router; do not edit: every switch rewrites it, and the route",
    "# records below are what Ferry reads back as the live colour of each route.",
    ...sorted.map((record) => `${RECORD_PREFIX}${JSON.stringify(record)}`),
    "",
    "global",
    `  stats socket ${settings.socket} mode 600 level admin expose-fd listeners`,
    "  stats timeout 10s",
    `  lua-load ${settings.maintenanceLua}`,
    // Ferry passes access.log as file descriptor 3 when it starts HAProxy; the master keeps it across reloads.
    "  log fd@3 format raw local0",
    // One thread: with several, threads that find the log descriptor busy drop their line
    // (HAProxy's DroppedLogs counter), and traffic() would under-count what was served.
    "  nbthread 1",
    "",
    "defaults",
    "  mode http",
    "  log global",
    "  option dontlognull",
    '  log-format "%b %s %si:%sp %ST %Ta %tsc"',
    "  option forwardfor",
    "  option redispatch 1",
    "  retries 3",
    "  retry-on conn-failure empty-response",
    "  http-reuse safe",
    "  timeout connect 5s",
    "  timeout http-request 30s",
    "  timeout http-keep-alive 60s",
    // Long polls, SSE and WebSockets are not cut after a minute.
    "  timeout client 1h",
    "  timeout server 1h",
    "  timeout tunnel 1h",
    "",
    "frontend ferry",
    `  bind ${settings.listen}`,
    "  http-request set-var(txn.ferry_host) req.hdr(host),field(1,:),lower",
    "  http-request set-header X-Forwarded-Proto http",
    "  http-request set-header X-Forwarded-Host %[req.hdr(host)]",
  ];
  const byPrefix = [...sorted].sort(
    (a, b) => b.pathPrefix.length - a.pathPrefix.length || a.name.localeCompare(b.name),
  );
  for (const record of byPrefix) {
    const host = `{ var(txn.ferry_host) -m str ${record.host} }`;
    const backend = backendName(record.name);
    if (record.pathPrefix === "/") {
      lines.push(`  use_backend ${backend} if ${host}`);
    } else if (record.pathPrefix.endsWith("/")) {
      lines.push(`  use_backend ${backend} if ${host} { path -m beg ${record.pathPrefix} }`);
    } else {
      lines.push(
        `  use_backend ${backend} if ${host} { path -m str ${record.pathPrefix} } || ${host} { path -m beg ${record.pathPrefix}/ }`,
      );
    }
  }
  lines.push(
    "  default_backend ferry_no_route",
    "",
    "backend ferry_no_route",
    `  http-request return status 404 content-type application/problem+json string '${noRouteBody()}'`,
  );
  for (const record of sorted) {
    const idle = record.idle?.server ?? record.server;
    const idleSlot = otherSlot(record.slot);
    const weights = slotWeights(record.canary?.weight ?? 0);
    const slotIs = (slot: Slot) => `{ str(${record.name}),map(${settings.canaryMap}) -m str ${slot} }`;
    const inMaintenance = `str(${record.name}),map(${settings.maintenanceMap})`;
    lines.push(
      "",
      `backend ${backendName(record.name)}`,
      "  balance roundrobin",
      // Maintenance (ADR 0071): answered here, before any server is picked, while the route is in the map.
      `  http-request return status 503 content-type application/problem+json hdr cache-control no-store string "${maintenanceBody(record.name).replaceAll('"', '\\"')}" if { ${inMaintenance} -m str ${MAINTENANCE_PROBLEM} }`,
      `  http-request set-var(txn.ferry_page) ${inMaintenance},b64dec if { ${inMaintenance} -m found }`,
      `  http-request use-service lua.${MAINTENANCE_SERVICE} if { var(txn.ferry_page) -m found }`,
      // Stickiness of a canary (ADR 0053): HAProxy sets a cookie whose value is a hash of the
      // server's address, so a visitor stays on the colour it reached; enabled at runtime only
      // while the route has a canary (a new worker starts with it on; the driver turns it off).
      `  cookie ${bucketCookieName(record.name)} insert indirect nocache httponly dynamic attr SameSite=Lax maxlife 24h`,
      `  dynamic-cookie-key ferry-${record.name}`,
      // Without a canary, and for pinned requests, the cookie is neither read nor set.
      `  ignore-persist unless { str(${record.name}),map(${settings.canaryMap}) -m found }`,
      "  ignore-persist if { req.hdr(x-ferry-colour) -m found }",
      // X-Ferry-Colour pins testers: "new" reaches the canary at any weight, "stable" the live colour.
      ...(["a", "b"] as const).flatMap((slot) => [
        `  use-server ${slot} if { req.hdr(x-ferry-colour) -m str new } ${slotIs(slot)}`,
        `  use-server ${slot} if { req.hdr(x-ferry-colour) -m str stable } ${slotIs(otherSlot(slot))}`,
      ]),
      `  server ${record.slot} ${record.server} weight ${weights.live}`,
      `  server ${idleSlot} ${idle} weight ${weights.canary}${record.canary ? "" : " disabled"}`,
    );
  }
  lines.push("");
  return lines.join("\n");
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
