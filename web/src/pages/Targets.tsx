import { useQuery } from "@tanstack/react-query";
import { useMemo } from "react";
import { useSearchParams } from "react-router";
import { api, query } from "../api/client";
import { useEnvironments } from "../api/hooks";
import type { Page, Target } from "../api/types";
import { DataTable } from "../components/DataTable";
import { ErrorNotice, Loading } from "../components/ErrorNotice";
import { RelativeTime } from "../components/RelativeTime";
import { Tags } from "../components/Tags";
import { useTitle } from "../lib/title";

type Health = Target["health"];
type AgentLink = NonNullable<Target["agent"]>;

/** Every health state has a symbol and words; the colour only repeats them. */
const HEALTH_LOOK: Record<Health["state"], { symbol: string; label: string }> = {
  up: { symbol: "✔", label: "up" },
  down: { symbol: "✖", label: "down" },
  unknown: { symbol: "?", label: "not checked yet" },
};

const AGENT_LINK: Record<AgentLink["state"], string> = {
  connected: "connected",
  lost: "link lost",
  never: "enrolled, never connected",
  revoked: "credential revoked",
};

/** 82463371264 → "76.8 GiB" (binary units, as df -h). */
function humanBytes(bytes: number): string {
  const units = ["B", "KiB", "MiB", "GiB", "TiB", "PiB"];
  let value = bytes;
  let unit = 0;
  while (value >= 1024 && unit < units.length - 1) {
    value /= 1024;
    unit++;
  }
  return `${unit === 0 ? value : value.toFixed(1)} ${units[unit]}`;
}

/** The last scheduled check: state in words, when, and what it found (or what failed). */
function HealthCell({ health }: { health: Health }) {
  const look = HEALTH_LOOK[health.state];
  return (
    <>
      <span
        className={`state state-${health.state === "unknown" ? "cancelled" : health.state === "up" ? "succeeded" : "failed"}`}
      >
        <span aria-hidden="true" className="state-symbol">
          {look.symbol}
        </span>{" "}
        {look.label}
      </span>
      {health.checkedAt && (
        <div className="small muted">
          checked <RelativeTime at={health.checkedAt} />
        </div>
      )}
      {health.state === "down" && health.error && <div className="small health-error">{health.error}</div>}
      {health.state === "down" && (
        <div className="small muted">last up {health.lastUpAt ? <RelativeTime at={health.lastUpAt} /> : "never"}</div>
      )}
      {(health.dockerVersion !== null || health.diskFreeBytes !== null || health.router !== null) && (
        <dl className="health-facts small">
          {health.dockerVersion !== null && (
            <div>
              <dt>Docker</dt>
              <dd className="mono">{health.dockerVersion}</dd>
            </div>
          )}
          {health.diskFreeBytes !== null && (
            <div>
              <dt>Disk free</dt>
              <dd title={`${health.diskFreeBytes.toLocaleString("en")} bytes`}>{humanBytes(health.diskFreeBytes)}</dd>
            </div>
          )}
          {health.router !== null && (
            <div>
              <dt>Router</dt>
              <dd>{health.router}</dd>
            </div>
          )}
        </dl>
      )}
    </>
  );
}

/** How the host is reached; for an agent, the state of its link too. */
function TransportCell({ target }: { target: Target }) {
  if (target.transport === "local") return <>this server's host (local)</>;
  if (target.transport === "ssh") {
    return (
      <>
        SSH
        {target.ssh && (
          <div className="small muted mono">
            {target.ssh.user}@{target.ssh.host}
            {target.ssh.port === 22 ? "" : `:${target.ssh.port}`}
          </div>
        )}
      </>
    );
  }
  return (
    <>
      agent
      {target.agent && (
        <div className="small muted">
          {AGENT_LINK[target.agent.state]}
          {target.agent.since && (
            <>
              {" "}
              since <RelativeTime at={target.agent.since} />
            </>
          )}
        </div>
      )}
    </>
  );
}

/** The hosts deployments run on: their health, environments, roles, transport and runtimes. */
export function TargetsPage() {
  useTitle("Targets");
  const [search, setSearch] = useSearchParams();
  const environmentFilter = search.get("env") ?? "";
  const roleFilter = search.get("role") ?? "";
  const environments = useEnvironments();
  const targets = useQuery({
    queryKey: ["targets"],
    queryFn: () => api<Page<Target>>("GET", `/targets${query({ limit: 500 })}`),
    // Health is checked on a schedule by the server: keep the page's view of it current.
    refetchInterval: 10_000,
  });
  const roles = useMemo(
    () => [...new Set((targets.data?.items ?? []).flatMap((target) => target.roles))].sort(),
    [targets.data],
  );
  const shown = (targets.data?.items ?? []).filter(
    (target) =>
      (environmentFilter === "" || target.environments.includes(environmentFilter)) &&
      (roleFilter === "" || target.roles.includes(roleFilter)),
  );
  const setFilter = (name: string, value: string) => {
    const next = new URLSearchParams(search);
    if (value === "") next.delete(name);
    else next.set(name, value);
    setSearch(next, { replace: true });
  };

  return (
    <section className="page" aria-labelledby="targets-title">
      <div className="page-header">
        <h1 id="targets-title">Targets</h1>
        {targets.data && (
          <p className="summary">
            {targets.data.total} target{targets.data.total === 1 ? "" : "s"}
          </p>
        )}
      </div>
      <p className="small muted">
        Steps without roles run on the server's own host; a step with roles runs on each target of the environment that
        has one of them. Add targets with <code>ferry target create</code> or in <code>ferry.yml</code>.
      </p>
      <form className="filters" aria-label="Filter the targets" onSubmit={(event) => event.preventDefault()}>
        <label>
          Environment
          <select value={environmentFilter} onChange={(event) => setFilter("env", event.target.value)}>
            <option value="">all</option>
            {environments.data?.items.map((environment) => (
              <option key={environment.id} value={environment.slug}>
                {environment.name}
              </option>
            ))}
          </select>
        </label>
        <label>
          Role
          <select value={roleFilter} onChange={(event) => setFilter("role", event.target.value)}>
            <option value="">any</option>
            {roles.map((role) => (
              <option key={role} value={role}>
                {role}
              </option>
            ))}
          </select>
        </label>
      </form>
      {targets.isPending && <Loading what="the targets" />}
      <ErrorNotice error={targets.error} what="The targets could not be loaded" />
      {targets.data && shown.length === 0 && <p className="empty">No target here.</p>}
      {shown.length > 0 && (
        <DataTable
          labelledBy="targets-title"
          columns={["Target", "Health", "Environments", "Roles", "Reached through", "Runs", "Changed"]}
        >
          {shown.map((target) => (
            <tr key={target.id}>
              <th scope="row">
                {target.name}
                <div className="small muted mono">{target.slug}</div>
              </th>
              <td>
                <HealthCell health={target.health} />
              </td>
              <td>
                <Tags items={target.environments} />
              </td>
              <td>{target.roles.length === 0 ? <span className="muted">none</span> : <Tags items={target.roles} />}</td>
              <td>
                <TransportCell target={target} />
              </td>
              <td>
                <Tags
                  items={target.runtimes.map((runtime) => (runtime === "docker" ? "Docker containers" : "processes"))}
                />
              </td>
              <td>
                <RelativeTime at={target.updatedAt} />
              </td>
            </tr>
          ))}
        </DataTable>
      )}
    </section>
  );
}
