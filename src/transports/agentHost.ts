import { randomUUID } from "node:crypto";
import { mkdir, open, readdir, readFile, rename, rm } from "node:fs/promises";
import { type ClientRequest, request as httpRequest, type IncomingMessage } from "node:http";
import { Agent as HttpsAgent, request as httpsRequest } from "node:https";
import { isIP, connect as netConnect, type Socket } from "node:net";
import { join, resolve as resolvePath, sep } from "node:path";
import { Transform } from "node:stream";
import { pipeline } from "node:stream/promises";
import { setTimeout as sleep } from "node:timers/promises";
import { connect as tlsConnect } from "node:tls";
import { z } from "zod";
import {
  type AgentCall,
  type AgentEvent,
  enrolAnswerSchema,
  fullJitterDelay,
  type PollAnswer,
} from "../domain/agents.js";
import { ferryBinary } from "../runtimes/process.js";
import type { OutboundPolicy } from "../security/outboundGuard.js";
import { sendRequest } from "../steps/http.js";
import type { RemoteHttpOutcome } from "./agent.js";
import type { LocalTransport } from "./local.js";
import { type OutputGate, stepFileName } from "./types.js";

/**
 * `ferry agent`'s side of the protocol (docs/decisions/0030-agents.md): it long-polls the
 * server for calls, makes each with the host's LocalTransport (the same rules as the server's
 * own host: argv and env, process groups, per-task work directories and accounts) and posts
 * output and answers back in order, through a bounded buffer that makes a process wait when
 * the server is slow.
 */

/** Exit code when the credential is refused (revoked, unknown): systemd's RestartPreventExitStatus keeps it stopped. */
const EXIT_CREDENTIAL_REFUSED = 78;

/**
 * Reconnecting: full jitter over an exponential window from 0.5 s, capped at 10 s. The jitter
 * spreads a fleet's returns; the cap bounds how long the last one takes (1,000 agents over
 * 10 s are ~100 polls a second, which one server takes easily).
 */
const BACKOFF = { baseMs: 500, capMs: 10_000 };
/** Buffered output above this makes the processes wait; below half of it they go on. */
const BUFFER_HIGH_BYTES = 1024 * 1024;
/** One events request carries at most this much text: JSON escaping may make it up to 6× larger, still under the server's 1 MiB. */
const BATCH_BYTES = 128 * 1024;
/** A response body a `request` call answers with is cut here (health checks read little). */
const MAX_RESPONSE_BYTES = 1024 * 1024;
/** Until the server tells its own: how long without it before running work is stopped. */
const DEFAULT_TIMEOUT_MS = 45_000;
/** Journalled executions are kept this long after they ended (for a call delivered again). */
const JOURNAL_KEEP_MS = 24 * 60 * 60 * 1000;

/** What `ferry agent` keeps in its state directory (0600): who it is and its own credential. */
const credentialFileSchema = z.object({
  server: z.string(),
  targetId: z.string(),
  targetName: z.string(),
  credential: z.string(),
});
export type AgentCredentialFile = z.infer<typeof credentialFileSchema>;

const credentialPath = (stateDir: string) => join(stateDir, "agent.json");

/** Written whole or not at all, readable by the agent's account only. */
async function writePrivateFile(path: string, text: string): Promise<void> {
  const temporary = `${path}.${process.pid}.tmp`;
  const handle = await open(temporary, "w", 0o600);
  try {
    await handle.writeFile(text);
    await handle.sync();
  } finally {
    await handle.close();
  }
  await rename(temporary, path);
}

export async function readCredentialFile(stateDir: string): Promise<AgentCredentialFile | undefined> {
  const text = await readFile(credentialPath(stateDir), "utf8").catch(() => undefined);
  if (text === undefined) return undefined;
  return credentialFileSchema.parse(JSON.parse(text));
}

export function saveCredentialFile(stateDir: string, file: AgentCredentialFile): Promise<void> {
  return writePrivateFile(credentialPath(stateDir), `${JSON.stringify(file)}\n`);
}

/** An HTTP failure with the server's problem detail. */
class AgentHttpError extends Error {
  constructor(
    readonly status: number,
    message: string,
  ) {
    super(message);
  }
}

/**
 * HTTPS through the proxy HTTPS_PROXY names (CONNECT, then TLS to the server inside), for
 * agents that only reach out through one. NO_PROXY is honoured for exact host names.
 */
function proxyAgentFor(server: URL, environment: NodeJS.ProcessEnv): HttpsAgent | undefined {
  const proxy = environment.HTTPS_PROXY ?? environment.https_proxy;
  if (server.protocol !== "https:" || !proxy) return undefined;
  const noProxy = (environment.NO_PROXY ?? environment.no_proxy ?? "").split(",").map((entry) => entry.trim());
  if (noProxy.includes(server.hostname) || noProxy.includes("*")) return undefined;
  const proxyUrl = new URL(proxy);
  class ConnectAgent extends HttpsAgent {
    override createConnection(
      options: import("node:http").RequestOptions & { servername?: string; ca?: string | Buffer | (string | Buffer)[] },
      done?: (error: Error | null, stream: import("node:stream").Duplex) => void,
    ) {
      const callback = (error: Error | null, socket?: import("node:stream").Duplex) => done?.(error, socket as never);
      const port = Number(options.port) || 443;
      const host = String(options.host);
      const connectRequest = httpRequest({
        host: proxyUrl.hostname,
        port: Number(proxyUrl.port) || 80,
        method: "CONNECT",
        path: `${host}:${port}`,
        headers: { host: `${host}:${port}` },
      });
      connectRequest.once("connect", (response: IncomingMessage, socket: Socket) => {
        if (response.statusCode !== 200) {
          socket.destroy();
          callback(new Error(`the proxy ${proxyUrl.host} refused CONNECT to ${host}:${port} (${response.statusCode})`));
          return;
        }
        // The name to check the certificate against is the server's, not the proxy's; SNI takes names only.
        const servername = options.servername || host;
        const tls = tlsConnect({
          socket,
          host,
          ...(isIP(servername) === 0 && { servername }),
          ...(options.ca !== undefined && { ca: options.ca }),
        });
        tls.once("secureConnect", () => callback(null, tls));
        tls.once("error", (error) => callback(error));
      });
      connectRequest.once("error", (error) => callback(error));
      connectRequest.end();
      return undefined;
    }
  }
  return new ConnectAgent({ keepAlive: true });
}

/** The server as the agent calls it: JSON requests with its credential, over HTTP(S), through a proxy if set. */
export class ServerClient {
  readonly #agent: HttpsAgent | undefined;
  readonly #ca: string | undefined;

  /**
   * @param options.environment where HTTPS_PROXY and NO_PROXY are read (the process's own by default)
   * @param options.ca PEM certificates to trust for an https server (a private CA), instead of the system's
   */
  constructor(
    readonly server: URL,
    public credential: string | undefined,
    options: { environment?: NodeJS.ProcessEnv; ca?: string | undefined } = {},
  ) {
    this.#agent = proxyAgentFor(server, options.environment ?? process.env);
    this.#ca = options.ca;
  }

  /** Starts a request to the server (the caller writes the body). */
  open(method: string, path: string, headers: Record<string, string>): ClientRequest {
    const url = new URL(path, this.server);
    const send = url.protocol === "https:" ? httpsRequest : httpRequest;
    return send(url, {
      method,
      headers: {
        ...headers,
        ...(this.credential !== undefined && { authorization: `Bearer ${this.credential}` }),
      },
      ...(this.#agent && { agent: this.#agent }),
      ...(this.#ca !== undefined && url.protocol === "https:" && { ca: this.#ca }),
    });
  }

  /** A JSON request; the answer's JSON (undefined for 204), or an AgentHttpError with the problem's detail. */
  json(method: string, path: string, body: unknown, timeoutMs: number, signal?: AbortSignal): Promise<unknown> {
    return new Promise((resolve, reject) => {
      const payload = Buffer.from(JSON.stringify(body));
      const request = this.open(method, path, {
        "content-type": "application/json",
        "content-length": String(payload.length),
      });
      const timer = setTimeout(
        () => request.destroy(new Error(`no answer from ${this.server.origin} within ${timeoutMs / 1000} s`)),
        timeoutMs,
      );
      const onAbort = () => request.destroy(new Error("stopped"));
      signal?.addEventListener("abort", onAbort, { once: true });
      const done = () => {
        clearTimeout(timer);
        signal?.removeEventListener("abort", onAbort);
      };
      request.once("error", (error) => {
        done();
        reject(error);
      });
      request.once("response", (response) => {
        const chunks: Buffer[] = [];
        response.on("data", (chunk: Buffer) => chunks.push(chunk));
        response.once("error", (error) => {
          done();
          reject(error);
        });
        response.once("end", () => {
          done();
          const text = Buffer.concat(chunks).toString("utf8");
          const status = response.statusCode ?? 0;
          if (status >= 200 && status < 300) {
            resolve(text === "" ? undefined : JSON.parse(text));
            return;
          }
          let detail = text.slice(0, 500);
          try {
            detail = String((JSON.parse(text) as { detail?: string }).detail ?? detail);
          } catch {
            // Not a problem document (a proxy's page): its start is the detail.
          }
          reject(new AgentHttpError(status, detail));
        });
      });
      request.end(payload);
    });
  }
}

/** Enrols this host once with a one-time token; the credential file is written before anything else happens. */
export async function enrol(
  client: ServerClient,
  stateDir: string,
  input: { token: string; name: string; environments: string[]; roles: string[]; runtimes: string[] },
): Promise<AgentCredentialFile> {
  const answer = enrolAnswerSchema.parse(await client.json("POST", "/api/v1/agent/enrol", input, 30_000));
  const file: AgentCredentialFile = {
    server: client.server.href,
    targetId: answer.target.id,
    targetName: answer.target.name,
    credential: answer.credential,
  };
  await mkdir(stateDir, { recursive: true, mode: 0o700 });
  await saveCredentialFile(stateDir, file);
  return file;
}

// The calls, validated here: the agent trusts its server, but a path outside its work root
// or an id that is not one is refused rather than acted on with the agent's rights.
const taskIdSchema = z.string().regex(/^[A-Za-z0-9_.-]{1,100}$/);
const runInputSchema = z.object({
  command: z.string().min(1).max(4096),
  args: z.array(z.string()).max(10_000),
  env: z.record(z.string(), z.string()),
  cwd: z.string().min(1).max(4096),
  taskId: taskIdSchema,
  timeoutMs: z.number().int().min(1),
  stdin: z
    .string()
    .max(16 * 1024 * 1024)
    .optional(),
  hostService: z.boolean().optional(),
});
/** How the server names a host's Docker engine in a tunnel call (transports/agent.ts). */
const SERVER_ENGINE_SOCKET = "/var/run/docker.sock";
/** What the server may run on an agent's host as the agent's own account: its own Ferry's host services, nothing else. */
const HOST_SERVICES = new Set(["proxy", "processes"]);
const requestInputSchema = z.object({
  url: z.string(),
  method: z.string().optional(),
  headers: z.record(z.string(), z.string()).optional(),
  body: z.string().optional(),
  timeoutMs: z.number().int().min(1),
  followRedirects: z.boolean().optional(),
  guard: z
    .object({
      allow: z.array(
        z.union([
          z.object({
            kind: z.literal("range"),
            bytes: z.array(z.number()),
            prefix: z.number(),
            port: z.number().optional(),
          }),
          z.object({ kind: z.literal("host"), host: z.string(), port: z.number().optional() }),
        ]),
      ),
    })
    .optional(),
});

interface CallContext {
  id: string;
  signal: AbortSignal;
  line(stream: "stdout" | "stderr", text: string, cut: boolean): void;
  gate: OutputGate;
}

/** A journalled execution of a `run` call. */
interface JournalEntry {
  id: string;
  taskId: string;
  state: "running" | "done" | "interrupted";
  result?: unknown;
  at: string;
}

export interface AgentHostOptions {
  client: ServerClient;
  stateDir: string;
  local: LocalTransport;
  /** The LocalTransport's work root: paths the server names must be inside it. */
  workRoot: string;
  /** The only unix socket a tunnel may reach (the Docker engine's). */
  dockerSocket: string;
  /** After SIGTERM, how long running calls may take to finish before they are stopped and reported. */
  stopGraceMs: number;
  log(message: string): void;
  /** Why process instances may not run on this host (the agent's local work is refused), if they may not. */
  processesRefused?: string | undefined;
  /** Added to the environment of its host services (FERRY_WORK_DIR, FERRY_RUN_AS): the agent's own settings. */
  hostServiceEnv?: Readonly<Record<string, string>>;
  /** A rotated credential: saved before it is used. */
  saveCredential(credential: string): Promise<void>;
}

/** Why a call was stopped by the agent itself, as the server's message says it. */
class StopReason extends Error {}

export class AgentHost {
  /** Calls being made now, by id. */
  readonly #active = new Map<string, AbortController>();
  /** Answered calls whose answer the server has not acknowledged yet. */
  readonly #unacknowledged = new Set<string>();
  /** Answers of recent non-journalled calls, for one delivered again. */
  readonly #recent = new Map<string, AgentEvent>();
  #events: AgentEvent[] = [];
  #bufferedBytes = 0;
  #drainWaiters: (() => void)[] = [];
  #eventsWaiter: (() => void) | undefined;
  #interrupted: { id: string; reason: string }[] = [];
  readonly #instance = randomUUID();
  #sequence = 0;
  #lastContact = Date.now();
  #timeoutMs = DEFAULT_TIMEOUT_MS;
  /** Until the server tells its own: the longest it holds a poll. */
  #holdMs = 25_000;
  #stopping = false;
  readonly #journalDir: string;
  readonly #operations: Record<string, (input: unknown, call: CallContext) => Promise<unknown>>;

  constructor(private readonly options: AgentHostOptions) {
    this.#journalDir = join(options.stateDir, "executions");
    const { local } = options;
    const inside = (path: unknown) => this.#insideWorkRoot(path);
    // One entry per Transport method (and the Docker tunnel): the server's AgentTransport calls them by name.
    this.#operations = {
      run: (input, call) => this.#run(input, call),
      stepDirectory: async (input) => {
        const { taskId, prefix } = z
          .object({ taskId: taskIdSchema, prefix: z.string().regex(/^[A-Za-z0-9_.-]{0,64}$/) })
          .parse(input);
        return local.stepDirectory(taskId, prefix);
      },
      readFile: async (input) => ({ text: (await local.readFile(inside((input as { path?: unknown }).path))) ?? null }),
      removeDirectory: async (input) => {
        await local.removeDirectory(inside((input as { path?: unknown }).path));
        return null;
      },
      finishStep: async (input) => {
        const { directory, fileName } = z.object({ directory: z.string(), fileName: z.string() }).parse(input);
        return { text: (await local.finishStep(inside(directory), stepFileName(fileName))) ?? null };
      },
      // The server's availability probe before a deployment: answering at all is the proof.
      ping: async () => null,
      finishTask: async (input) => {
        await local.finishTask(taskIdSchema.parse((input as { taskId?: unknown }).taskId));
        return null;
      },
      killTaskProcesses: async (input) =>
        local.killTaskProcesses(taskIdSchema.parse((input as { taskId?: unknown }).taskId)),
      request: (input, call) => this.#request(input, call),
      tunnel: (input) => this.#tunnel(input),
      readStream: (input, call) => this.#readStream(input, call),
      upload: (input, call) => this.#upload(input, call),
    };
  }

  #insideWorkRoot(path: unknown): string {
    const text = z.string().min(1).max(4096).parse(path);
    const resolved = resolvePath(text);
    if (resolved !== text || !resolved.startsWith(this.options.workRoot + sep)) {
      throw new Error(`the path ${text.slice(0, 200)} is outside this agent's work directory`);
    }
    return resolved;
  }

  /**
   * Runs until stopped (SIGTERM: `stop` aborts) or refused. What the journal holds of an
   * earlier run of the agent (executions it was making when it was killed) is reported
   * interrupted in the first poll, and their processes killed: they never run twice.
   */
  async run(stop: AbortSignal): Promise<number> {
    await mkdir(this.#journalDir, { recursive: true, mode: 0o700 });
    await this.#recoverJournal();
    // The sender outlives the poll loop (answers still to deliver), then ends with the agent.
    const senderStop = new AbortController();
    const sender = this.#sendLoop(senderStop.signal);
    const watchdog = setInterval(() => this.#checkServer(), 1_000);
    let code = 0;
    try {
      code = await this.#pollLoop(stop);
    } finally {
      clearInterval(watchdog);
    }
    this.#stopping = true;
    await this.#finishRunning();
    // What is left to say (answers, interrupted steps) goes before the agent says goodbye.
    await Promise.race([this.#flushed(), sleep(5_000)]);
    this.#wakeSender();
    if (code === 0) {
      await this.options.client
        .json("POST", "/api/v1/agent/poll", { running: [], interrupted: [], leaving: true }, 3_000)
        .catch(() => undefined);
    }
    senderStop.abort();
    this.#wakeSender();
    await Promise.race([sender, sleep(1_000)]);
    return code;
  }

  async #recoverJournal(): Promise<void> {
    const now = Date.now();
    for (const name of await readdir(this.#journalDir).catch(() => [] as string[])) {
      if (!name.endsWith(".json")) continue;
      const path = join(this.#journalDir, name);
      let entry: JournalEntry;
      try {
        entry = JSON.parse(await readFile(path, "utf8")) as JournalEntry;
      } catch {
        await rm(path, { force: true });
        continue;
      }
      if (entry.state === "running") {
        // Killed mid-step: whatever the step started is stopped, and the server told so.
        const killed = await this.options.local.killTaskProcesses(entry.taskId).catch(() => 0);
        this.options.log(
          `execution ${entry.id} of task ${entry.taskId} was running when the agent stopped: reported interrupted${killed > 0 ? `, ${killed} process group(s) killed` : ""}`,
        );
        await this.#journal({ ...entry, state: "interrupted", at: new Date().toISOString() });
        this.#interrupted.push({ id: entry.id, reason: "restarted (ferry agent was killed or crashed)" });
      } else if (now - Date.parse(entry.at) > JOURNAL_KEEP_MS) {
        await rm(path, { force: true });
      }
    }
  }

  async #journal(entry: JournalEntry): Promise<void> {
    await writePrivateFile(join(this.#journalDir, `${entry.id}.json`), JSON.stringify(entry));
  }

  async #journalled(id: string): Promise<JournalEntry | undefined> {
    const text = await readFile(join(this.#journalDir, `${id}.json`), "utf8").catch(() => undefined);
    return text === undefined ? undefined : (JSON.parse(text) as JournalEntry);
  }

  async #pollLoop(stop: AbortSignal): Promise<number> {
    let attempt = 0;
    while (!stop.aborted) {
      let answer: PollAnswer;
      const credential = this.options.client.credential;
      try {
        answer = (await this.options.client.json(
          "POST",
          "/api/v1/agent/poll",
          { running: [...this.#active.keys(), ...this.#unacknowledged], interrupted: this.#interrupted },
          // A held poll answers within holdMs; one still open 10 s later went into a dead link.
          this.#holdMs + 10_000,
          stop,
        )) as PollAnswer;
      } catch (error) {
        if (stop.aborted) break;
        if (error instanceof AgentHttpError && error.status === 401 && this.options.client.credential !== credential) {
          continue;
        }
        if (error instanceof AgentHttpError && error.status === 401) {
          this.options.log(`the server refused this agent: ${error.message}`);
          return EXIT_CREDENTIAL_REFUSED;
        }
        const delay = fullJitterDelay(attempt++, BACKOFF);
        this.options.log(
          `could not reach the server (${(error as Error).message}); trying again in ${(delay / 1000).toFixed(1)} s`,
        );
        await sleep(delay, undefined, { signal: stop }).catch(() => undefined);
        continue;
      }
      if (attempt > 0) this.options.log("connected to the server again");
      attempt = 0;
      this.#contact();
      this.#interrupted = [];
      this.#timeoutMs = answer.timeoutMs;
      this.#holdMs = answer.holdMs;
      if (answer.credential !== undefined && answer.credential !== this.options.client.credential) {
        // Saved first: an agent killed right after must not come back with a credential it lost.
        await this.options.saveCredential(answer.credential);
        this.options.client.credential = answer.credential;
        this.options.log("the server rotated this agent's credential: the new one is saved and in use");
      }
      for (const id of answer.cancel) this.#active.get(id)?.abort(new StopReason("cancelled"));
      for (const call of answer.calls) await this.#accept(call);
    }
    return 0;
  }

  #contact(): void {
    this.#lastContact = Date.now();
  }

  /**
   * Without the server for the link timeout, running work is stopped: the server has failed
   * those steps by now, and a step must not run on unattended (as sshd ends a lost session).
   */
  #checkServer(): void {
    if (Date.now() - this.#lastContact <= this.#timeoutMs || this.#active.size === 0) return;
    this.options.log(
      `no contact with the server for ${Math.round(this.#timeoutMs / 1000)} s: stopping the running steps`,
    );
    for (const controller of this.#active.values()) {
      controller.abort(new StopReason("lost the server (no contact within the link timeout)"));
    }
    // Their output cannot be delivered in time: it is dropped so the processes can end.
    this.#events = this.#events.filter((event) => event.kind !== "line");
    this.#bufferedBytes = this.#events.reduce((total, event) => total + eventBytes(event), 0);
    this.#releaseDrainWaiters();
  }

  async #accept(call: AgentCall): Promise<void> {
    // Ids name journal files: only the server's UUIDs are taken.
    if (!/^[A-Za-z0-9-]{1,100}$/.test(call.id)) return;
    // Delivered again (an answer lost on its way): never made twice.
    if (this.#active.has(call.id) || this.#unacknowledged.has(call.id)) return;
    const recent = this.#recent.get(call.id);
    if (recent) {
      this.#queue(recent);
      return;
    }
    if (call.operation === "run") {
      const entry = await this.#journalled(call.id);
      if (entry?.state === "done") {
        this.#queue({ call: call.id, kind: "result", value: entry.result });
        return;
      }
      if (entry) {
        this.#queue({
          call: call.id,
          kind: "error",
          message: `execution ${call.id} was interrupted by a restart of the agent; it is not run again`,
        });
        return;
      }
    }
    const operation = this.#operations[call.operation];
    if (!operation) {
      this.#queue({
        call: call.id,
        kind: "error",
        message: `this agent does not know the operation '${call.operation}': update ferry agent on the host to the server's version`,
      });
      return;
    }
    const controller = new AbortController();
    this.#active.set(call.id, controller);
    const context: CallContext = {
      id: call.id,
      signal: controller.signal,
      line: (stream, text, cut) => this.#queue({ call: call.id, kind: "line", stream, text, cut }),
      gate: this.#gate,
    };
    void operation(call.input, context).then(
      (value) => this.#answer({ call: call.id, kind: "result", value: value ?? null }),
      (error: unknown) => {
        const message =
          error instanceof z.ZodError
            ? `the agent refused the call's input: ${error.issues.map((issue) => `${issue.path.join(".")}: ${issue.message}`).join("; ")}`
            : error instanceof Error
              ? error.message
              : String(error);
        this.#answer({ call: call.id, kind: "error", message: message.slice(0, 4000) });
      },
    );
  }

  #answer(event: AgentEvent): void {
    this.#active.delete(event.call);
    this.#unacknowledged.add(event.call);
    this.#recent.set(event.call, event);
    if (this.#recent.size > 1_000) {
      const oldest = this.#recent.keys().next().value;
      if (oldest !== undefined) this.#recent.delete(oldest);
    }
    this.#queue(event);
  }

  async #run(input: unknown, call: CallContext): Promise<unknown> {
    const parsed = runInputSchema.parse(input);
    const spec = parsed.hostService ? this.#hostService(parsed) : parsed;
    if (!spec.hostService) this.#insideWorkRoot(spec.cwd);
    // Journalled (and synced) before the process starts: after a kill -9 the agent knows it ran.
    await this.#journal({ id: call.id, taskId: spec.taskId, state: "running", at: new Date().toISOString() });
    let exit: unknown;
    try {
      exit = await this.options.local.run({
        ...spec,
        signal: call.signal,
        onLine: call.line,
        outputGate: call.gate,
      });
    } catch (error) {
      await this.#journal({ id: call.id, taskId: spec.taskId, state: "interrupted", at: new Date().toISOString() });
      throw error;
    }
    const reason = call.signal.reason;
    if (call.signal.aborted && reason instanceof StopReason && reason.message !== "cancelled") {
      await this.#journal({ id: call.id, taskId: spec.taskId, state: "interrupted", at: new Date().toISOString() });
      throw new Error(`the agent ${reason.message} while this step ran; its process was stopped`);
    }
    await this.#journal({
      id: call.id,
      taskId: spec.taskId,
      state: "done",
      result: exit,
      at: new Date().toISOString(),
    });
    return exit;
  }

  /**
   * A host service (the router, the process runtime's supervisors) runs as the agent's own
   * account, not a task's, so the agent runs only its own Ferry for it: the server names the
   * command group, never a program (docs/decisions/0035-process-runtime-on-every-target.md).
   */
  #hostService(spec: z.infer<typeof runInputSchema>): z.infer<typeof runInputSchema> {
    const [group] = spec.args;
    if (group === "nginx-router") {
      // nginx -c <a config the server names> runs what that config loads (load_module) as the
      // agent's own account, which task work never gets: not done through an agent (ADR 0039).
      throw new Error(
        "nginx as the router of an agent's host is not supported: it would run nginx with a config the server names as the agent's own account; use the builtin router there (ADR 0039)",
      );
    }
    if (group === "haproxy-router") {
      // The same boundary as nginx: haproxy -f <a config in a directory the server names>, with
      // a binary the server names, would run as the agent's own account (ADR 0039, 0048).
      throw new Error(
        "HAProxy as the router of an agent's host is not supported: it would run a program and config the server names as the agent's own account; use the builtin router there (ADR 0048)",
      );
    }
    if (group === undefined || !HOST_SERVICES.has(group)) {
      throw new Error(`the agent runs only its own 'ferry proxy' and 'ferry processes' as a host service`);
    }
    // Instances run as the account the agent's own work would: an agent that refuses to run
    // work with its own rights (not root, no --run-as) refuses instances for the same reason.
    if (group === "processes" && this.options.processesRefused !== undefined)
      throw new Error(this.options.processesRefused);
    return {
      ...spec,
      command: process.execPath,
      args: [ferryBinary(), ...spec.args],
      cwd: "/",
      // Where the agent keeps its instances and which account they run as: the agent's settings, not the server's.
      env: { ...spec.env, ...this.options.hostServiceEnv },
    };
  }

  async #request(input: unknown, call: CallContext): Promise<RemoteHttpOutcome> {
    const parsed = requestInputSchema.parse(input);
    const guard: OutboundPolicy | undefined = parsed.guard && {
      allow: parsed.guard.allow.map((rule) =>
        rule.kind === "range" ? { ...rule, bytes: Uint8Array.from(rule.bytes) } : rule,
      ),
    };
    const outcome = await sendRequest(new URL(parsed.url), {
      ...(parsed.method !== undefined && { method: parsed.method }),
      ...(parsed.headers !== undefined && { headers: parsed.headers }),
      ...(parsed.body !== undefined && { body: parsed.body }),
      ...(parsed.followRedirects !== undefined && { followRedirects: parsed.followRedirects }),
      timeoutMs: parsed.timeoutMs,
      signal: call.signal,
      guard,
    });
    if (!outcome.ok) return outcome;
    const { response } = outcome;
    const chunks: Buffer[] = [];
    let size = 0;
    if (response.body) {
      for await (const chunk of response.body as AsyncIterable<Uint8Array>) {
        chunks.push(Buffer.from(chunk));
        size += chunk.length;
        if (size >= MAX_RESPONSE_BYTES) break;
      }
    }
    return {
      ok: true,
      status: response.status,
      statusText: response.statusText,
      headers: [...response.headers.entries()],
      body: Buffer.concat(chunks).subarray(0, MAX_RESPONSE_BYTES).toString("base64"),
    };
  }

  /**
   * A tunnel to the host's Docker socket: the socket's bytes go up as the body of a request
   * to the server, the server's come down as its response, both streamed (a pull or a log
   * follow is not buffered). Answered once the server took the connection.
   */
  async #tunnel(input: unknown): Promise<unknown> {
    const { tunnel, socket: path } = z
      .object({ tunnel: z.string().regex(/^[A-Za-z0-9-]{1,100}$/), socket: z.string() })
      .parse(input);
    // The server names the Docker engine by its usual socket; the agent's --docker-socket says
    // where this host's engine really listens (before, any other path was refused and
    // --docker-socket made every container step fail).
    if (path !== SERVER_ENGINE_SOCKET && path !== this.options.dockerSocket)
      throw new Error(`this agent opens no socket but the Docker engine's (${this.options.dockerSocket})`);
    const engine = this.options.dockerSocket;
    const socket = await new Promise<Socket>((resolve, reject) => {
      const connection = netConnect(engine);
      connection.once("connect", () => resolve(connection));
      connection.once("error", (error) => reject(new Error(`could not open ${engine}: ${error.message}`)));
    });
    return new Promise((resolve, reject) => {
      const request = this.options.client.open("POST", `/api/v1/agent/tunnels/${tunnel}`, {
        "content-type": "application/octet-stream",
        "transfer-encoding": "chunked",
      });
      request.flushHeaders();
      request.once("response", (response) => {
        if (response.statusCode !== 200) {
          socket.destroy();
          response.resume();
          reject(new Error(`the server refused the tunnel (${response.statusCode})`));
          return;
        }
        response.pipe(socket);
        resolve(null);
      });
      request.once("error", (error) => {
        socket.destroy();
        reject(error);
      });
      socket.pipe(request);
      socket.once("error", () => request.destroy());
      socket.once("close", () => request.end());
    });
  }

  /**
   * A file of this host sent up a tunnel (AgentHub.openFileStream): read as the task's
   * account by the local transport, its bytes the body of the tunnel's request, paced by the
   * server's reading. Answered with the number of bytes once all were sent; a read that fails
   * part-way aborts the request and answers with the failure.
   */
  async #readStream(input: unknown, call: CallContext): Promise<unknown> {
    const { tunnel, taskId, path } = z
      .object({
        tunnel: z.string().regex(/^[A-Za-z0-9-]{1,100}$/),
        taskId: taskIdSchema,
        path: z.string().min(1).max(4096),
      })
      .parse(input);
    const file = await this.options.local.readStream(taskId, path, call.signal);
    let bytes = 0;
    const counter = new Transform({
      transform(chunk: Buffer, _encoding, callback) {
        bytes += chunk.length;
        callback(null, chunk);
      },
    });
    const request = this.options.client.open("POST", `/api/v1/agent/tunnels/${tunnel}`, {
      "content-type": "application/octet-stream",
      "transfer-encoding": "chunked",
    });
    const responded = new Promise<void>((resolve, reject) => {
      request.once("response", (response) => {
        response.resume();
        if (response.statusCode === 200) resolve();
        else reject(new Error(`the server refused the file's tunnel (${response.statusCode})`));
      });
    });
    responded.catch((error: Error) => request.destroy(error));
    try {
      await Promise.all([pipeline(file, counter, request), responded]);
    } catch (error) {
      file.destroy();
      request.destroy();
      throw error;
    }
    return { bytes };
  }

  /**
   * A file the server sends down a tunnel (AgentHub.sendFile): the tunnel's response body is
   * the file, written by the local transport as the task's account, which checks the
   * announced size and sha256 before the file takes its name. Answered once it is in place.
   */
  async #upload(input: unknown, call: CallContext): Promise<unknown> {
    const spec = z
      .object({
        tunnel: z.string().regex(/^[A-Za-z0-9-]{1,100}$/),
        taskId: taskIdSchema,
        path: z.string().min(1).max(4096),
        mode: z.number().int().min(0).max(0o777),
        bytes: z.number().int().min(0).max(Number.MAX_SAFE_INTEGER),
        sha256: z.string().regex(/^[0-9a-f]{64}$/),
        directories: z.enum(["private", "shared"]),
        timeoutMs: z
          .number()
          .int()
          .positive()
          .max(7 * 24 * 3600 * 1000),
      })
      .parse(input);
    const request = this.options.client.open("POST", `/api/v1/agent/tunnels/${spec.tunnel}`, {
      "content-type": "application/octet-stream",
      "content-length": "0",
    });
    const onAbort = () => request.destroy(new Error("cancelled"));
    call.signal.addEventListener("abort", onAbort, { once: true });
    try {
      const response = await new Promise<IncomingMessage>((resolve, reject) => {
        request.once("response", (response) => {
          if (response.statusCode === 200) return resolve(response);
          response.resume();
          reject(new Error(`the server refused the file's tunnel (${response.statusCode})`));
        });
        request.on("error", reject);
        request.end();
      });
      await this.options.local.upload({ ...spec, signal: call.signal }, response);
      return { bytes: spec.bytes };
    } catch (error) {
      request.destroy();
      throw error;
    } finally {
      call.signal.removeEventListener("abort", onAbort);
    }
  }

  get #gate(): OutputGate {
    return {
      full: this.#bufferedBytes > BUFFER_HIGH_BYTES,
      drained: () =>
        this.#bufferedBytes <= BUFFER_HIGH_BYTES / 2
          ? Promise.resolve()
          : new Promise<void>((resolve) => this.#drainWaiters.push(resolve)),
    };
  }

  #queue(event: AgentEvent): void {
    this.#events.push(event);
    this.#bufferedBytes += eventBytes(event);
    this.#wakeSender();
  }

  #wakeSender(): void {
    const waiter = this.#eventsWaiter;
    this.#eventsWaiter = undefined;
    waiter?.();
  }

  #releaseDrainWaiters(): void {
    if (this.#bufferedBytes > BUFFER_HIGH_BYTES / 2) return;
    const waiters = this.#drainWaiters;
    this.#drainWaiters = [];
    for (const waiter of waiters) waiter();
  }

  async #flushed(): Promise<void> {
    while (this.#events.length > 0) await sleep(20);
  }

  /** Posts events in order, one batch at a time: a slow server slows the agent's processes, never its memory. */
  async #sendLoop(stop: AbortSignal): Promise<void> {
    let attempt = 0;
    for (;;) {
      if (this.#events.length === 0) {
        if (stop.aborted && this.#stopping) return;
        await new Promise<void>((resolve) => {
          this.#eventsWaiter = resolve;
          setTimeout(resolve, 1_000);
        });
        continue;
      }
      let count = 0;
      let bytes = 0;
      while (count < this.#events.length && count < 5_000) {
        const size = eventBytes(this.#events[count] as AgentEvent);
        if (count > 0 && bytes + size > BATCH_BYTES) break;
        bytes += size;
        count++;
      }
      const batch = this.#events.slice(0, count);
      const credential = this.options.client.credential;
      try {
        await this.options.client.json(
          "POST",
          "/api/v1/agent/events",
          { instance: this.#instance, sequence: this.#sequence, events: batch },
          30_000,
        );
      } catch (error) {
        // Sent with the credential a rotation just replaced: again, with the new one.
        if (error instanceof AgentHttpError && error.status === 401 && this.options.client.credential !== credential) {
          continue;
        }
        if (error instanceof AgentHttpError && error.status === 401) return;
        if (
          error instanceof AgentHttpError &&
          error.status >= 400 &&
          error.status < 500 &&
          error.status !== 408 &&
          error.status !== 429
        ) {
          // Refused as it is (malformed, too large): sending it again would not help. Its output
          // lines are dropped; answers go again on their own (the server waits for them), and
          // are dropped only when refused alone.
          const lines = batch.filter((event) => event.kind === "line");
          this.options.log(
            `the server refused a batch of output (${error.message}); ${lines.length > 0 ? `${lines.length} line(s) dropped` : "answers dropped"}`,
          );
          const dropped = new Set(lines.length > 0 ? lines : batch);
          this.#events = this.#events.filter((event) => !dropped.has(event));
          this.#bufferedBytes = this.#events.reduce((total, event) => total + eventBytes(event), 0);
          for (const event of dropped) if (event.kind !== "line") this.#unacknowledged.delete(event.call);
          this.#releaseDrainWaiters();
          continue;
        } else {
          if (stop.aborted && this.#stopping && attempt > 3) return;
          await sleep(fullJitterDelay(attempt++, BACKOFF));
          continue;
        }
      }
      attempt = 0;
      this.#contact();
      this.#sequence++;
      // Another batch may have been dropped meanwhile (lost server): remove what was sent, by identity.
      const sent = new Set(batch);
      this.#events = this.#events.filter((event) => !sent.has(event));
      this.#bufferedBytes = Math.max(0, this.#bufferedBytes - bytes);
      for (const event of batch) if (event.kind !== "line") this.#unacknowledged.delete(event.call);
      this.#releaseDrainWaiters();
    }
  }

  /** SIGTERM: running calls get the grace period to finish, then are stopped and reported. */
  async #finishRunning(): Promise<void> {
    if (this.#active.size === 0) return;
    this.options.log(
      `stopping: waiting up to ${this.options.stopGraceMs / 1000} s for ${this.#active.size} running call(s)`,
    );
    const deadline = Date.now() + this.options.stopGraceMs;
    while (this.#active.size > 0 && Date.now() < deadline) await sleep(100);
    for (const controller of this.#active.values()) {
      controller.abort(new StopReason("was stopped (SIGTERM)"));
    }
    while (this.#active.size > 0) await sleep(50);
  }
}

function eventBytes(event: AgentEvent): number {
  return event.kind === "line" ? event.text.length + 64 : 256;
}
