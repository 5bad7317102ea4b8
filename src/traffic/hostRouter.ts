import type { BuiltinTargetRouter } from "../domain/targets.js";
import { TaskFailure } from "../engine/types.js";
import { HOST_SERVICE_WORK } from "../transports/hostCommand.js";
import type { Transport } from "../transports/types.js";
import type { BuiltinRouter } from "./builtin.js";
import type { AdminSender } from "./proxyClient.js";
import type { Router } from "./router.js";

/*
 * The traffic router of a remote target's host (docs/decisions/0031-data-plane-per-host.md),
 * driven only through what every Transport offers: a process run on the host (which makes
 * sure the router runs there and says how to reach it) and HTTP requests sent from the host
 * (its admin API on the host's loopback). Nothing here knows SSH: an agent transport gets
 * the same router by implementing Transport.
 *
 * The router itself runs on the host, in a session of its own: traffic there never depends
 * on the server, nor on the transport staying connected.
 */

/** How long `ferry proxy --detach` may take (it waits up to 10 s for a proxy it started). */
const DETACH_TIMEOUT_MS = 60_000;
/** Every admin call but a drain, which lasts up to its deadline. */
const ADMIN_TIMEOUT_MS = 10_000;
/** The state directory when the target's settings name none: the host account's own. */
const DEFAULT_STATE_DIR = "~/.local/state/ferry/proxy";

/** What `ferry proxy --detach --json` prints. */
type DetachAnswer = { running: false } | { running: true; started: boolean; admin: string; token: string };

/**
 * Runs `ferry proxy --detach --json` on the host: the proxy serving the state directory,
 * started when none answers (unless `existingOnly`). Undefined when `existingOnly` and the
 * host has none, running or with routes.
 */
async function detachOnHost(
  transport: Transport,
  settings: BuiltinTargetRouter,
  targetName: string,
  existingOnly: boolean,
  log: (message: string) => void,
): Promise<{ admin: string; token: string } | undefined> {
  const stdout: string[] = [];
  const stderr: string[] = [];
  const args = [
    "proxy",
    "--detach",
    "--json",
    "--state-dir",
    settings.stateDir ?? DEFAULT_STATE_DIR,
    "--listen",
    settings.listen,
    "--admin-port",
    String(settings.adminPort),
    ...(settings.workers !== undefined && settings.workers > 1 ? ["--workers", String(settings.workers)] : []),
    ...(existingOnly ? ["--existing"] : []),
  ];
  const exit = await transport.run({
    command: settings.command,
    args,
    env: {},
    cwd: "/",
    // A host service, not a task's work: on an agent it runs as the agent's own account, not
    // one allocated for a made-up task (ADR 0035); the id only names where its group is recorded.
    taskId: HOST_SERVICE_WORK,
    hostService: true,
    timeoutMs: DETACH_TIMEOUT_MS,
    signal: new AbortController().signal,
    // The answer holds the admin token: kept in memory, never logged.
    onLine: (stream, text) => (stream === "stdout" ? stdout : stderr).push(text),
  });
  const what = `the builtin router (ferry proxy) on target '${targetName}'`;
  if (exit.timedOut) throw new TaskFailure(`${what} did not answer within ${DETACH_TIMEOUT_MS / 1000} s`);
  if (exit.code !== 0) {
    const reason = stderr.join(" ").trim().slice(-500) || `exit ${exit.code ?? "by a signal"}`;
    const hint =
      exit.code === 127
        ? `: '${settings.command}' is not on the host's PATH. Install Ferry there (Node.js 20 or later, as for ferry agent) or set the target's router.command to its path`
        : "";
    throw new TaskFailure(`${what} could not be started (${reason})${hint}`);
  }
  const line = [...stdout].reverse().find((text) => text.startsWith("{"));
  let answer: DetachAnswer;
  try {
    answer = JSON.parse(line ?? "") as DetachAnswer;
  } catch {
    throw new TaskFailure(
      `${what} gave no answer Ferry understands: is '${settings.command}' on the host a Ferry of this version?`,
    );
  }
  if (!answer.running) return undefined;
  if (answer.started) {
    log(`started ferry proxy on target '${targetName}' (traffic on ${settings.listen}, admin API on ${answer.admin})`);
  }
  return { admin: answer.admin, token: answer.token };
}

/** Admin API calls sent from the host through its transport (the API listens on the host's loopback). */
function senderThrough(transport: Transport): AdminSender {
  return async (url, init) => {
    const outcome = await transport.request(url, {
      method: init.method,
      headers: init.headers,
      ...(init.body !== undefined && { body: init.body }),
      timeoutMs: init.timeoutMs,
      signal: AbortSignal.timeout(init.timeoutMs + 1_000),
    });
    if (!outcome.ok) throw new Error(outcome.problem);
    return { status: outcome.response.status, text: await outcome.response.text() };
  };
}

/** A host's router, connected on first use (as the server's own LazyRouter). */
export interface HostRouter {
  get(): Promise<Router>;
  /** The router when the host has one running or with routes; never starts one. */
  inUse(): Promise<Router | undefined>;
  close(): Promise<void>;
}

/**
 * The builtin router of a remote host. Connecting runs `ferry proxy --detach` there once;
 * later uses reuse the admin client, checking first that the proxy still answers (a host
 * rebooted meanwhile gets its proxy started again, with the routes it saved).
 */
export function builtinRouterOnHost(
  transport: Transport,
  settings: BuiltinTargetRouter,
  targetName: string,
  log: (message: string) => void,
): HostRouter {
  let current: BuiltinRouter | undefined;
  const connect = async (existingOnly: boolean): Promise<BuiltinRouter | undefined> => {
    // Loaded on first use, as the server's own router is: commands that never switch traffic stay quick.
    const { BuiltinRouter } = await import("./builtin.js");
    const { ProxyAdminClient, ProxyAdminError } = await import("./proxyClient.js");
    if (current) {
      try {
        await current.routes();
        return current;
      } catch (error) {
        // Not answering (the proxy or the host restarted): connect again below. A refusal
        // (a wrong token after the state dir was replaced) is an answer too: start over as well.
        if (!(error instanceof ProxyAdminError)) throw error;
        current = undefined;
      }
    }
    const found = await detachOnHost(transport, settings, targetName, existingOnly, log);
    if (!found) return undefined;
    current = new BuiltinRouter(
      new ProxyAdminClient({ url: found.admin, send: senderThrough(transport) }, found.token, ADMIN_TIMEOUT_MS),
    );
    return current;
  };
  let connecting: Promise<BuiltinRouter | undefined> | undefined;
  // One connect at a time: steps on the same host share it.
  const once = (existingOnly: boolean) => {
    connecting ??= connect(existingOnly).finally(() => {
      connecting = undefined;
    });
    return connecting;
  };
  return {
    async get() {
      const router = (await once(false)) ?? (await connect(false));
      if (!router) throw new TaskFailure(`the router on target '${targetName}' could not be started`);
      return router;
    },
    inUse: () => once(true),
    async close() {
      await current?.close();
      current = undefined;
    },
  };
}
