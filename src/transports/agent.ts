import { randomUUID } from "node:crypto";
import type { IncomingMessage, ServerResponse } from "node:http";
import { Agent as HttpAgent } from "node:http";
import type { Socket } from "node:net";
import { type Duplex, type Readable, Transform } from "node:stream";
import { pipeline } from "node:stream/promises";
import { Response } from "undici";
import type { AgentCall, EventsRequest, PollAnswer, PollRequest } from "../domain/agents.js";
import { TaskFailure } from "../engine/types.js";
import { DockerRuntime } from "../runtimes/docker.js";
import type { RuntimeKind, RuntimesByKind } from "../runtimes/types.js";
import type { OutboundPolicy } from "../security/outboundGuard.js";
import type { HttpOutcome, HttpRequest } from "../steps/http.js";
import { type AgentIdentity, connectedAgents, setAgentState } from "../store/agents.js";
import type { StoreContext } from "../store/common.js";
import { completedStream } from "./fileStream.js";
import { StreamSocket } from "./streamSocket.js";
import { type ProcessExit, type ProcessSpec, stepFileName, type Transport } from "./types.js";
import { announcedBytes, checkUpload, type UploadSpec, uploadOutcome, watchSource } from "./upload.js";

/** How long an operation other than a step's process (a directory, a file, a tunnel) may take. */
const OPERATION_TIMEOUT_MS = 30_000;
/** At most this many calls in one poll answer; the rest go with the next poll (which comes at once). */
const CALLS_PER_ANSWER = 100;
/** Where the Docker engine listens on an agent's host. */
const DOCKER_SOCKET = "/var/run/docker.sock";

export interface AgentHubOptions {
  context: StoreContext;
  /**
   * FERRY_AGENT_TIMEOUT_SECONDS: an agent not heard from for this long is marked lost and the
   * steps running on it fail. A poll is held at most a third of it, so a healthy agent is
   * heard from at least three times per timeout.
   */
  timeoutMs: number;
  /** Longest a poll is held when there is nothing to do (25 s, or a third of the timeout). */
  holdMs?: number;
  log?: (message: string) => void;
}

/** A call waiting for the agent's answer. */
interface PendingCall {
  call: AgentCall;
  /** Sent in a poll answer (and not known to have been lost). */
  delivered: boolean;
  /** The server asked the agent to stop it (a cancel or timeout). */
  cancelled: boolean;
  resolve(value: unknown): void;
  reject(error: Error): void;
  onLine: ((stream: "stdout" | "stderr", text: string, cut: boolean) => void) | undefined;
}

interface PendingTunnel {
  resolve(socket: Duplex): void;
  reject(error: Error): void;
}

/** One enrolled agent as this server sees it: its link, its calls, its held poll. */
class AgentSession {
  state: "connected" | "lost" = "lost";
  lastSeen = 0;
  /** Unanswered calls, delivered or not, by id. */
  readonly calls = new Map<string, PendingCall>();
  /** Calls the server gave up on (the link was lost): the agent is told to stop them while it still runs them. */
  readonly abandoned = new Set<string>();
  readonly tunnels = new Map<string, PendingTunnel>();
  /** Ends the held poll: with the work waiting (new work came) or empty (superseded, lost, closing). */
  waiter: ((withWork: boolean) => void) | undefined;
  instance = "";
  sequence = -1;

  constructor(
    readonly targetId: string,
    public name: string,
  ) {}
}

/**
 * The server's side of `ferry agent` (docs/decisions/0030-agents.md): each agent long-polls
 * for calls and posts their output and answers back. Calls live in this process's memory, on
 * the server node the agent polls; nothing here is stored but an agent's link state, written
 * when it changes (connected, lost), never per poll.
 */
export class AgentHub {
  readonly #sessions = new Map<string, AgentSession>();
  readonly #timer: NodeJS.Timeout;
  readonly holdMs: number;
  #closed = false;

  constructor(private readonly options: AgentHubOptions) {
    this.holdMs = options.holdMs ?? Math.min(25_000, Math.floor(options.timeoutMs / 3));
    this.#timer = setInterval(() => this.#checkLinks(), Math.min(1_000, options.timeoutMs / 4)).unref();
  }

  get timeoutMs(): number {
    return this.options.timeoutMs;
  }

  /**
   * After a restart, the agents that were connected get a full timeout to poll again before
   * they are marked lost: a server restart is not a lost host.
   */
  async start(): Promise<void> {
    for (const agent of await connectedAgents(this.options.context)) {
      const session = this.#session(agent.targetId, agent.name);
      session.state = "connected";
      session.lastSeen = Date.now();
    }
  }

  /** How many agents are connected now (for metrics and the benchmark). */
  get connectedCount(): number {
    let count = 0;
    for (const session of this.#sessions.values()) if (session.state === "connected") count++;
    return count;
  }

  readonly #transports = new Map<string, AgentTransport>();

  /** One transport per agent target, so its Docker engine client is shared by the steps on it. */
  transport(targetId: string, name: string): AgentTransport {
    let transport = this.#transports.get(targetId);
    if (!transport) {
      transport = new AgentTransport(this, this.#session(targetId, name));
      this.#transports.set(targetId, transport);
    }
    return transport;
  }

  #session(targetId: string, name: string): AgentSession {
    let session = this.#sessions.get(targetId);
    if (!session) {
      session = new AgentSession(targetId, name);
      this.#sessions.set(targetId, session);
    }
    return session;
  }

  #seen(session: AgentSession): void {
    session.lastSeen = Date.now();
    if (session.state !== "connected") {
      session.state = "connected";
      this.options.log?.(`agent of target '${session.name}' connected`);
      void setAgentState(this.options.context, session.targetId, "connected").catch(() => undefined);
    }
  }

  /** A poll: answered at once when there is work, otherwise held until work comes, holdMs passes or the agent goes. */
  async poll(identity: AgentIdentity, request: PollRequest, gone: AbortSignal): Promise<PollAnswer> {
    const session = this.#session(identity.targetId, identity.targetName);
    session.name = identity.targetName;
    if (request.leaving) {
      await this.#lose(session, "stopped (ferry agent was shut down)");
      return this.#empty();
    }
    this.#seen(session);
    for (const interrupted of request.interrupted) {
      const pending = session.calls.get(interrupted.id);
      if (!pending) continue;
      session.calls.delete(interrupted.id);
      pending.reject(
        new TaskFailure(
          `the agent on target '${session.name}' ${interrupted.reason} while this step ran (execution ${interrupted.id}); it was stopped there and is not run again`,
        ),
      );
    }
    const running = new Set(request.running);
    // A call delivered but neither running nor answered never reached the agent (the answer
    // carrying it was lost with its connection): deliver it again. The agent recognises an id
    // it has seen (its journal), so this cannot run anything twice.
    for (const pending of session.calls.values()) {
      if (pending.delivered && !running.has(pending.call.id)) pending.delivered = false;
    }
    for (const id of session.abandoned) if (!running.has(id)) session.abandoned.delete(id);
    // An older poll of the same agent still held (its connection died unnoticed) answers empty.
    session.waiter?.(false);
    session.waiter = undefined;
    const answer = this.#take(session, identity, running);
    if (answer.calls.length > 0 || answer.cancel.length > 0 || answer.credential !== undefined || this.#closed) {
      return answer;
    }
    return new Promise<PollAnswer>((resolve) => {
      let timer: NodeJS.Timeout | undefined;
      const finish = (value: PollAnswer) => {
        clearTimeout(timer);
        gone.removeEventListener("abort", onGone);
        if (session.waiter === wake) session.waiter = undefined;
        resolve(value);
      };
      // Woken by new work: the answer is made now, so what it carries is marked delivered only then.
      const wake = (withWork: boolean) => finish(withWork ? this.#take(session, identity, running) : this.#empty());
      const onGone = () => finish(this.#empty());
      timer = setTimeout(() => finish(this.#empty()), this.holdMs);
      gone.addEventListener("abort", onGone, { once: true });
      session.waiter = wake;
    });
  }

  #empty(): PollAnswer {
    return { calls: [], cancel: [], timeoutMs: this.options.timeoutMs, holdMs: this.holdMs };
  }

  #take(session: AgentSession, identity: AgentIdentity, running: ReadonlySet<string>): PollAnswer {
    const calls: AgentCall[] = [];
    const cancel: string[] = [];
    for (const pending of session.calls.values()) {
      if (!pending.delivered && !pending.cancelled && calls.length < CALLS_PER_ANSWER) {
        pending.delivered = true;
        calls.push(pending.call);
      }
      if (pending.cancelled && running.has(pending.call.id)) cancel.push(pending.call.id);
    }
    for (const id of session.abandoned) cancel.push(id);
    return {
      calls,
      cancel,
      timeoutMs: this.options.timeoutMs,
      holdMs: this.holdMs,
      ...(identity.nextCredential !== undefined && { credential: identity.nextCredential }),
    };
  }

  #wake(session: AgentSession): void {
    const waiter = session.waiter;
    session.waiter = undefined;
    waiter?.(true);
  }

  /** Output lines and answers of calls, in the order the agent produced them. */
  events(identity: AgentIdentity, request: EventsRequest): void {
    const session = this.#session(identity.targetId, identity.targetName);
    this.#seen(session);
    // A batch whose answer was lost is sent again: taken once.
    if (request.instance === session.instance && request.sequence <= session.sequence) return;
    session.instance = request.instance;
    session.sequence = request.sequence;
    for (const event of request.events) {
      const pending = session.calls.get(event.call);
      if (!pending) continue;
      if (event.kind === "line") {
        pending.onLine?.(event.stream, event.text, event.cut);
      } else if (event.kind === "result") {
        session.calls.delete(event.call);
        pending.resolve(event.value);
      } else {
        session.calls.delete(event.call);
        pending.reject(new TaskFailure(`on target '${session.name}': ${event.message}`));
      }
    }
  }

  /** The agent's connection for a tunnel the server asked for: its request body is the host side's bytes, the response ours. */
  tunnel(identity: AgentIdentity, tunnelId: string, request: IncomingMessage, response: ServerResponse): boolean {
    const session = this.#session(identity.targetId, identity.targetName);
    const pending = session.tunnels.get(tunnelId);
    if (!pending) return false;
    session.tunnels.delete(tunnelId);
    this.#seen(session);
    response.writeHead(200, { "content-type": "application/octet-stream", "cache-control": "no-store" });
    response.flushHeaders();
    pending.resolve(new StreamSocket(request, response));
    return true;
  }

  /** Sends a call to the agent and waits for its answer. */
  call(
    session: AgentSession,
    operation: string,
    input: unknown,
    options: {
      signal?: AbortSignal | undefined;
      onLine?: PendingCall["onLine"];
      timeoutMs?: number | undefined;
      id?: string;
    } = {},
  ): Promise<unknown> {
    if (this.#closed) return Promise.reject(new TaskFailure("the server is shutting down"));
    if (session.state !== "connected") {
      return Promise.reject(
        new TaskFailure(
          `the agent of target '${session.name}' is not connected: start ferry agent on the host, or check that it can reach this server (ferry target show ${session.name} shows its state)`,
        ),
      );
    }
    const id = options.id ?? randomUUID();
    return new Promise<unknown>((resolve, reject) => {
      let timer: NodeJS.Timeout | undefined;
      const cleanUp = () => {
        clearTimeout(timer);
        options.signal?.removeEventListener("abort", onAbort);
      };
      const pending: PendingCall = {
        call: { id, operation, input },
        delivered: false,
        cancelled: false,
        resolve: (value) => {
          cleanUp();
          resolve(value);
        },
        reject: (error) => {
          cleanUp();
          reject(error);
        },
        onLine: options.onLine,
      };
      const onAbort = () => {
        if (!pending.delivered) {
          // Never reached the agent: it simply does not go.
          session.calls.delete(id);
          pending.reject(new TaskFailure("cancelled"));
          return;
        }
        pending.cancelled = true;
        this.#wake(session);
      };
      if (options.timeoutMs !== undefined) {
        timer = setTimeout(() => {
          session.calls.delete(id);
          if (pending.delivered) session.abandoned.add(id);
          pending.reject(
            new TaskFailure(
              `the agent of target '${session.name}' did not answer within ${Math.round((options.timeoutMs ?? 0) / 1000)} s (${operation})`,
            ),
          );
        }, options.timeoutMs);
      }
      options.signal?.addEventListener("abort", onAbort, { once: true });
      session.calls.set(id, pending);
      this.#wake(session);
    });
  }

  /** A tunnel to a unix socket on the agent's host (its Docker engine), as a socket. */
  async openTunnel(session: AgentSession, socketPath: string): Promise<Duplex> {
    const tunnelId = randomUUID();
    const opened = new Promise<Duplex>((resolve, reject) => session.tunnels.set(tunnelId, { resolve, reject }));
    opened.catch(() => undefined);
    try {
      await this.call(session, "tunnel", { tunnel: tunnelId, socket: socketPath }, { timeoutMs: OPERATION_TIMEOUT_MS });
      return await withTimeout(
        opened,
        OPERATION_TIMEOUT_MS,
        () => new TaskFailure(`the agent of target '${session.name}' did not open ${socketPath} within 30 s`),
      );
    } catch (error) {
      session.tunnels.delete(tunnelId);
      throw error;
    }
  }

  /**
   * A file of the agent's host, streamed up a tunnel: the agent reads it (as the task's
   * account, as its local transport reads) and sends its bytes as the body of the tunnel's
   * request, with the request's flow control as backpressure. The call's answer comes once the
   * agent sent it all and says how many bytes that was: the stream ends only when that answer
   * came and matches what arrived, so a tunnel cut short is an error, never a shorter file.
   */
  async openFileStream(session: AgentSession, taskId: string, path: string, signal: AbortSignal): Promise<Readable> {
    const tunnelId = randomUUID();
    const opened = new Promise<Duplex>((resolve, reject) => session.tunnels.set(tunnelId, { resolve, reject }));
    opened.catch(() => undefined);
    const sent = this.call(session, "readStream", { tunnel: tunnelId, taskId, path }, { signal }) as Promise<{
      bytes?: unknown;
    }>;
    sent.catch(() => undefined);
    let socket: Duplex;
    try {
      socket = await Promise.race([
        withTimeout(
          opened,
          OPERATION_TIMEOUT_MS,
          () => new TaskFailure(`the agent of target '${session.name}' did not start sending a file within 30 s`),
        ),
        // A refusal (no such file) may come instead of the tunnel.
        sent.then(() => new Promise<never>(() => {})),
      ]);
    } catch (error) {
      session.tunnels.delete(tunnelId);
      throw error;
    }
    let received = 0;
    const counter = new Transform({
      transform(chunk: Buffer, _encoding, callback) {
        received += chunk.length;
        callback(null, chunk);
      },
    });
    socket.pipe(counter);
    socket.once("error", (error) => counter.destroy(error));
    const drained = new Promise<void>((resolve) => counter.once("end", resolve));
    const finished = Promise.all([sent, drained]).then(([answer]) => {
      if (answer?.bytes !== received) {
        throw new TaskFailure(
          `the agent of target '${session.name}' sent ${String(answer?.bytes)} bytes of ${path.slice(0, 500)} but ${received} arrived`,
        );
      }
      // Everything came: the tunnel's response ends, and the agent's request with it.
      socket.end();
    });
    return completedStream(counter, finished, () => socket.destroy());
  }

  /**
   * A file sent down a tunnel to the agent's host: the agent asks for the tunnel and writes
   * its response body (our bytes, paced by its reading) as the task's account, as its local
   * transport writes (announced size and sha256 checked there before the file takes its
   * name). The call's answer comes once the file is in place; a tunnel cut short leaves the
   * host short of bytes, and the answer is then that failure.
   */
  async sendFile(session: AgentSession, spec: UploadSpec, source: Readable): Promise<void> {
    const tunnelId = randomUUID();
    const opened = new Promise<Duplex>((resolve, reject) => session.tunnels.set(tunnelId, { resolve, reject }));
    opened.catch(() => undefined);
    const { taskId, path, mode, bytes, sha256, directories, timeoutMs } = spec;
    const written = this.call(
      session,
      "upload",
      { tunnel: tunnelId, taskId, path, mode, bytes, sha256, directories, timeoutMs },
      { signal: spec.signal, timeoutMs: timeoutMs + OPERATION_TIMEOUT_MS },
    );
    written.catch(() => undefined);
    let socket: Duplex;
    try {
      socket = await Promise.race([
        withTimeout(
          opened,
          OPERATION_TIMEOUT_MS,
          () => new TaskFailure(`the agent of target '${session.name}' did not start receiving a file within 30 s`),
        ),
        // A refusal (a path it may not write) may come instead of the tunnel.
        written.then(() => {
          throw new TaskFailure(`the agent of target '${session.name}' answered an upload without receiving it`);
        }),
      ]);
    } catch (error) {
      session.tunnels.delete(tunnelId);
      source.destroy();
      throw error;
    }
    // The agent gave up (its own failure, a cancel, the link lost): the sending stops too.
    written.catch(() => socket.destroy());
    const checked = announcedBytes(spec);
    const sourceError = watchSource(source, checked, socket);
    const sendError = await pipeline(source, checked, socket).then(
      () => undefined,
      (error: unknown) => (error instanceof Error ? error : new Error(String(error))),
    );
    const where = `the agent of target '${session.name}'`;
    // The source's own failure says what happened; the agent only saw its tunnel end early.
    const fromSource = sourceError();
    if (fromSource) {
      socket.destroy();
      await written.catch(() => undefined);
      throw uploadOutcome({ path, where, stopped: undefined, sourceError: fromSource, code: 0, stderr: "", sendError });
    }
    // The agent's answer says the file is in place, checked there: an error sending the last
    // bytes then is only the agent closing its end of the tunnel first.
    await written;
  }

  /** The credential of this agent was revoked: its calls fail and its held poll ends. */
  revoked(targetId: string): void {
    const session = this.#sessions.get(targetId);
    if (session) void this.#lose(session, "had its credential revoked", false);
  }

  #lose(session: AgentSession, why: string, persist = true): Promise<void> {
    const wasConnected = session.state === "connected";
    session.state = "lost";
    session.waiter?.(false);
    session.waiter = undefined;
    if (wasConnected) this.options.log?.(`agent of target '${session.name}' ${why}`);
    const persisted =
      persist && wasConnected
        ? setAgentState(this.options.context, session.targetId, "lost").catch(() => undefined)
        : Promise.resolve();
    for (const [id, pending] of session.calls) {
      if (pending.delivered) session.abandoned.add(id);
      pending.reject(
        new TaskFailure(
          `the agent of target '${session.name}' ${why}; the target is marked lost and this step failed. When the agent is back it stops what it still runs for this step (docs/targets.md)`,
        ),
      );
    }
    session.calls.clear();
    for (const tunnel of session.tunnels.values())
      tunnel.reject(new TaskFailure(`the agent of target '${session.name}' ${why}`));
    session.tunnels.clear();
    return persisted;
  }

  #checkLinks(): void {
    const now = Date.now();
    for (const session of this.#sessions.values()) {
      if (session.state === "connected" && now - session.lastSeen > this.options.timeoutMs) {
        void this.#lose(
          session,
          `has not been heard from for ${Math.round((now - session.lastSeen) / 1000)} s (FERRY_AGENT_TIMEOUT_SECONDS=${Math.round(this.options.timeoutMs / 1000)}): its link is down or its host is gone`,
        );
      }
    }
  }

  /** Ends every held poll (the server is stopping); agents reconnect to the next server. */
  close(): void {
    this.#closed = true;
    clearInterval(this.#timer);
    for (const session of this.#sessions.values()) {
      session.waiter?.(false);
      session.waiter = undefined;
    }
  }
}

async function withTimeout<T>(promise: Promise<T>, milliseconds: number, timedOut: () => Error): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  try {
    return await Promise.race([
      promise,
      new Promise<never>((_, reject) => {
        timer = setTimeout(() => reject(timedOut()), milliseconds);
      }),
    ]);
  } finally {
    clearTimeout(timer);
  }
}

/** An outbound policy as JSON (its address ranges' bytes as arrays), for the agent to apply on its host. */
function policyToJson(policy: OutboundPolicy): unknown {
  return {
    allow: policy.allow.map((rule) => (rule.kind === "range" ? { ...rule, bytes: [...rule.bytes] } : rule)),
  };
}

/** What the agent answers to a `request` call. */
export type RemoteHttpOutcome =
  | { ok: true; status: number; statusText: string; headers: [string, string][]; body: string }
  | { ok: false; problem: string };

/**
 * The host of an agent target: every Transport method is one call to its agent (the same
 * name and input on both sides: src/transports/agentHost.ts), so adding a method is one line
 * here and one in the agent's table. Work runs there as the agent's local transport runs it.
 */
export class AgentTransport implements Transport {
  readonly kind = "agent" as const;
  #docker: DockerRuntime | undefined;

  constructor(
    private readonly hub: AgentHub,
    private readonly session: AgentSession,
  ) {}

  #operation(operation: string, input: unknown): Promise<unknown> {
    return this.hub.call(this.session, operation, input, { timeoutMs: OPERATION_TIMEOUT_MS });
  }

  async run(spec: ProcessSpec): Promise<ProcessExit> {
    spec.signal.throwIfAborted();
    const { command, args, env, cwd, taskId, timeoutMs, stdin, hostService } = spec;
    try {
      return (await this.hub.call(
        this.session,
        "run",
        {
          command,
          args,
          env,
          cwd,
          taskId,
          timeoutMs,
          ...(stdin !== undefined && { stdin }),
          ...(hostService && { hostService }),
        },
        { signal: spec.signal, onLine: (stream, text, cut) => spec.onLine(stream, text, cut) },
      )) as ProcessExit;
    } catch (error) {
      // Cancelled before the agent had it: the step was stopped, as a killed process would be.
      if (spec.signal.aborted && error instanceof TaskFailure && error.message === "cancelled") {
        return { code: null, timedOut: false };
      }
      throw error;
    }
  }

  async stepDirectory(taskId: string, prefix: string): Promise<string> {
    return (await this.#operation("stepDirectory", { taskId, prefix })) as string;
  }

  async readFile(path: string): Promise<string | undefined> {
    const answer = (await this.#operation("readFile", { path })) as { text: string | null };
    return answer.text ?? undefined;
  }

  readStream(taskId: string, path: string, signal: AbortSignal): Promise<Readable> {
    if (!path.startsWith("/"))
      return Promise.reject(new TaskFailure("a file to read on the host needs an absolute path"));
    return this.hub.openFileStream(this.session, taskId, path, signal);
  }

  upload(spec: UploadSpec, source: Readable): Promise<void> {
    try {
      checkUpload(spec);
      spec.signal.throwIfAborted();
    } catch (error) {
      source.destroy();
      return Promise.reject(error);
    }
    return this.hub.sendFile(this.session, spec, source);
  }

  async removeDirectory(path: string): Promise<void> {
    await this.#operation("removeDirectory", { path });
  }

  /** The agent reads the file and removes the step's directory itself: one round trip at the step's end. */
  async finishStep(directory: string, fileName: string): Promise<string | undefined> {
    const answer = (await this.#operation("finishStep", { directory, fileName: stepFileName(fileName) })) as {
      text: string | null;
    };
    return answer.text ?? undefined;
  }

  /**
   * The agent answers a call now: one round trip through its held poll, nothing run on the
   * host. Not connected (not heard from within the timeout, or stopped): refused at once.
   */
  async checkReachable(timeoutMs: number, signal: AbortSignal): Promise<void> {
    await this.hub.call(this.session, "ping", {}, { signal, timeoutMs });
  }

  async finishTask(taskId: string): Promise<void> {
    await this.#operation("finishTask", { taskId });
  }

  async killTaskProcesses(taskId: string): Promise<number> {
    return (await this.#operation("killTaskProcesses", { taskId })) as number;
  }

  /** Sent by the agent from its host (a colour on the host's loopback), the guard applied there with the host's resolver. */
  async request(url: URL, request: HttpRequest): Promise<HttpOutcome> {
    request.signal.throwIfAborted();
    const answer = (await this.hub.call(
      this.session,
      "request",
      {
        url: url.href,
        method: request.method,
        headers: request.headers,
        body: request.body,
        timeoutMs: request.timeoutMs,
        followRedirects: request.followRedirects,
        guard: request.guard ? policyToJson(request.guard) : undefined,
      },
      { signal: request.signal, timeoutMs: request.timeoutMs + OPERATION_TIMEOUT_MS },
    )) as RemoteHttpOutcome;
    if (!answer.ok) return answer;
    const body = Buffer.from(answer.body, "base64");
    const empty = [101, 204, 205, 304].includes(answer.status);
    return {
      ok: true,
      response: new Response(empty ? null : body, {
        status: answer.status,
        statusText: answer.statusText,
        headers: answer.headers,
      }),
    };
  }

  /**
   * The host's Docker engine: dockerode talks HTTP over tunnels the agent opens to its
   * socket, one streamed HTTP connection to this server each (docs/decisions/0030-agents.md).
   */
  runtime<K extends RuntimeKind>(kind: K): RuntimesByKind[K] {
    if (kind !== "docker") {
      throw new TaskFailure(
        // The process runtime is the target's (RemoteProcessRuntime, made in transports/registry.ts with the target's slug).
        `the ${kind} runtime through an agent comes from the target, not from its transport`,
      );
    }
    this.#docker ??= new DockerRuntime({ socketPath: DOCKER_SOCKET, agent: new TunnelAgent(this) });
    return this.#docker as RuntimesByKind[K];
  }

  openSocket(path: string): Promise<Duplex> {
    return this.hub.openTunnel(this.session, path);
  }
}

/** An HTTP agent whose connections are tunnels to the engine's socket on the agent's host. */
class TunnelAgent extends HttpAgent {
  constructor(private readonly transport: AgentTransport) {
    super({ keepAlive: false });
  }

  override createConnection(
    _options: unknown,
    callback?: (error: Error | null, socket: Socket) => void,
  ): Socket | undefined {
    this.transport.openSocket(DOCKER_SOCKET).then(
      (socket) => callback?.(null, socket as Socket),
      (error: Error) => callback?.(error, undefined as never),
    );
    return undefined;
  }
}
