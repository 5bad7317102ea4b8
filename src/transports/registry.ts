import type { TransportKind } from "../domain/targets.js";
import type { TargetInfo } from "../store/deployments.js";
import type { LazyRouter } from "../traffic/routers.js";
import { type AgentHub, agentTarget } from "./agent.js";
import { type LocalTransport, localTarget } from "./local.js";
import { type SshConnections, SshTransport, sshTarget } from "./ssh.js";
import type { Target } from "./types.js";

/** What the transports of a server share: the server's own host and its router, the SSH connection pool, the agents' hub. */
export interface TransportServices {
  local: LocalTransport;
  router: LazyRouter | undefined;
  ssh: SshConnections;
  agents: AgentHub;
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
  const kinds: Record<TransportKind, (info: TargetInfo) => Target> = {
    local: (info) => localTarget(services.local, services.router, info),
    ssh: (info) => sshTarget(sshTransport(info.id), info),
    agent: (info) => agentTarget(services.agents.transport(info.id, info.name), info),
  };
  return (info) => (info ? kinds[info.transport](info) : localTarget(services.local, services.router, SERVER_HOST));
}
