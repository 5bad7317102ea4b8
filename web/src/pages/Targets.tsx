import { useQuery } from "@tanstack/react-query";
import { useMemo } from "react";
import { useSearchParams } from "react-router";
import { api, query } from "../api/client";
import { useEnvironments } from "../api/hooks";
import type { Page, Target } from "../api/types";
import { ErrorNotice, Loading } from "../components/ErrorNotice";
import { RelativeTime } from "../components/RelativeTime";
import { Tags } from "../components/Tags";
import { useTitle } from "../lib/title";

/** The hosts deployments run on: their environments, roles, transport and runtimes. */
export function TargetsPage() {
  useTitle("Targets");
  const [search, setSearch] = useSearchParams();
  const environmentFilter = search.get("env") ?? "";
  const roleFilter = search.get("role") ?? "";
  const environments = useEnvironments();
  const targets = useQuery({
    queryKey: ["targets"],
    queryFn: () => api<Page<Target>>("GET", `/targets${query({ limit: 500 })}`),
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
        <div className="table-scroll">
          <table className="data" aria-labelledby="targets-title">
            <thead>
              <tr>
                <th scope="col">Target</th>
                <th scope="col">Environments</th>
                <th scope="col">Roles</th>
                <th scope="col">Reached through</th>
                <th scope="col">Runs</th>
                <th scope="col">Changed</th>
              </tr>
            </thead>
            <tbody>
              {shown.map((target) => (
                <tr key={target.id}>
                  <th scope="row">
                    {target.name}
                    <div className="small muted mono">{target.slug}</div>
                  </th>
                  <td>
                    <Tags items={target.environments} />
                  </td>
                  <td>
                    {target.roles.length === 0 ? <span className="muted">none</span> : <Tags items={target.roles} />}
                  </td>
                  <td>{target.transport === "local" ? "this server's host (local)" : target.transport}</td>
                  <td>
                    <Tags
                      items={target.runtimes.map((runtime) =>
                        runtime === "docker" ? "Docker containers" : "processes",
                      )}
                    />
                  </td>
                  <td>
                    <RelativeTime at={target.updatedAt} />
                  </td>
                </tr>
              ))}
            </tbody>
          </table>
        </div>
      )}
    </section>
  );
}
