import type { TransportKind } from "../domain/targets.js";
import { RemoteProcessRuntime } from "../runtimes/remoteProcess.js";
import type { TargetInfo } from "../store/deployments.js";
import type { HostRouter } from "../traffic/hostRouter.js";
import { hostRouter, type LazyRouter } from "../traffic/routers.js";
import type { AgentHub } from "./agent.js";
import { type LocalTransport, localTarget } from "./local.js";
import { remoteTarget } from "./remoteTarget.js";
import { type SshConnections, SshTransport } from "./ssh.js";
import type { Target, Transport } from "./types.js";

/** What the transports of a server share: the server's own host and its router, the SSH connection pool, the agents' hub. */
export interface TransportServices {
  local: LocalTransport;
  router: LazyRouter | undefined;
  ssh: SshConnections;
  agents: AgentHub;
  /** Where the routers of remote hosts say what they did (started a proxy there). */
  log?: ((message: string) => void) | undefined;
}

/** The server's own host as a target, for steps without roles. */
const SERVER_HOST = { id: null, name: "this host", roles: [] as string[] };

/**
 * Where each target is: one line per transport kind. The resolver is synchronous (the
 * process runner asks it per step); a remote transport connects on first use. One transport
 * per SSH target, so the runner and clean-up see one host as one host.
 */
export function targetResolver(services: TransportServices): (info: TargetInfo | undefined) => Target {
  const sshTransports = new Map<string, SshTransport>();
  const sshTransport = (targetId: string) => {
    let transport = sshTransports.get(targetId);
    if (!transport) {
      transport = new SshTransport(services.ssh, targetId);
      sshTransports.set(targetId, transport);
    }
    return transport;
  };
  // One router per remote host, made again when its settings change.
  const routers = new Map<string, { settings: string; router: HostRouter }>();
  // Any transport's: the router is driven through the Transport interface only (ADR 0031).
  const routerOfHost = (info: TargetInfo, transport: Transport): HostRouter | undefined => {
    if (info.router === null) return undefined;
    const settings = JSON.stringify(info.router);
    let entry = routers.get(info.id);
    if (!entry || entry.settings !== settings) {
      void entry?.router.close();
      entry = { settings, router: hostRouter(transport, info.router, info.name, services.log ?? (() => {})) };
      routers.set(info.id, entry);
    }
    return entry.router;
  };
  // One process runtime per remote host (it serialises the operations on each instance), through its transport.
  const processRuntimes = new Map<string, { command: string; runtime: RemoteProcessRuntime }>();
  const processesOfHost = (info: TargetInfo, transport: Transport): RemoteProcessRuntime => {
    // The router's command is the host's Ferry: the supervisors need the same one (ADR 0035).
    const command = info.router?.command ?? "ferry";
    let entry = processRuntimes.get(info.id);
    if (!entry || entry.command !== command) {
      entry = {
        command,
        runtime: new RemoteProcessRuntime(transport, { command, scope: info.slug, targetName: info.name }),
      };
      processRuntimes.set(info.id, entry);
    }
    return entry.runtime;
  };
  const kinds: Record<TransportKind, (info: TargetInfo) => Target> = {
    local: (info) => localTarget(services.local, services.router, info),
    ssh: (info) => {
      const transport = sshTransport(info.id);
      return remoteTarget(transport, info, routerOfHost(info, transport), processesOfHost(info, transport));
    },
    agent: (info) => {
      const transport = services.agents.transport(info.id, info.name);
      return remoteTarget(transport, info, routerOfHost(info, transport), processesOfHost(info, transport));
    },
  };
  return (info) => (info ? kinds[info.transport](info) : localTarget(services.local, services.router, SERVER_HOST));
}
