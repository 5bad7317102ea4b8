import { spawn } from "node:child_process";
import { lookup } from "node:dns/promises";
import { closeSync, openSync, readFileSync } from "node:fs";
import { mkdir, open, readFile } from "node:fs/promises";
import { connect, isIP } from "node:net";
import { join, resolve } from "node:path";
import { setTimeout as sleep } from "node:timers/promises";
import { z } from "zod";
import { ConflictError, InputError } from "../domain/errors.js";
import { writeFileAtomic } from "./atomicFile.js";
import { DurationHistogram } from "./durationHistogram.js";
import { parseUpstream, validateRoute } from "./nginx.js";
import type {
  LiveUpstream,
  Router,
  RouterDrainResult,
  RouterSwitchResult,
  RouteSpec,
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
});
type RouteRecord = z.infer<typeof recordSchema>;

const CONFIG_FILE = "haproxy.cfg";
const SOCKET_FILE = "haproxy.sock";
const PID_FILE = "haproxy.pid";
const ACCESS_LOG = "access.log";
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
  /** Switches, starts and reloads run one at a time, so the file and the runtime never interleave. */
  private changes: Promise<unknown> = Promise.resolve();
  private readonly counts = new Map<
    string,
    { route: string; upstream: string; served: number; failed: number; durations: DurationHistogram }
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

  async routes(): Promise<(RouteSpec & LiveUpstream)[]> {
    return (await this.readRecords()).map(({ name, host, pathPrefix, upstream, colour }) => ({
      name,
      host,
      pathPrefix,
      upstream,
      colour,
    }));
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
      if (await this.runningMaster()) await this.applyRecords(records);
      else await this.start();
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
        if (current.colour !== wanted.colour) {
          await this.writeRecords(records.map((record) => (record === current ? { ...record, ...wanted } : record)));
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
          `set server ${backend}/${to} state ready`,
          `set server ${backend}/${current.slot} state maint`,
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
      await this.command(
        [
          `set server ${backend}/${record.slot} addr ${live.address} port ${live.port}`,
          `set server ${backend}/${record.slot} state ready`,
          `set server ${backend}/${idleSlot} state maint`,
          `set server ${backend}/${idleSlot} addr ${idle.address} port ${idle.port}`,
        ].join("; "),
      );
    }
  }

  private settings(): RenderSettings {
    return { listen: this.listen, socket: this.socketPath };
  }

  private async writeRecords(records: readonly RouteRecord[]): Promise<void> {
    await mkdir(this.stateDir, { recursive: true, mode: 0o700 });
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
    const entry = this.counts.get(key) ?? { route, upstream, served: 0, failed: 0, durations: new DurationHistogram() };
    if (!reached || status < 100 || status >= 500) entry.failed += 1;
    else entry.served += 1;
    const active = Number(activeText);
    if (Number.isFinite(active) && active >= 0) entry.durations.observe(active / 1000);
    this.counts.set(key, entry);
  }

  private trafficCounts(): UpstreamTraffic[] {
    return [...this.counts.values()]
      .map(({ durations, ...counts }) => ({
        ...counts,
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
    // Ferry passes access.log as file descriptor 3 when it starts HAProxy; the master keeps it across reloads.
    "  log fd@3 format raw local0",
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
    lines.push(
      "",
      `backend ${backendName(record.name)}`,
      `  server ${record.slot} ${record.server}`,
      `  server ${otherSlot(record.slot)} ${idle} disabled`,
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
