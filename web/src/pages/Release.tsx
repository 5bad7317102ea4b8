import { useQuery } from "@tanstack/react-query";
import { type ReactNode, useId } from "react";
import { useParams, useSearchParams } from "react-router";
import { api, query } from "../api/client";
import { useProject } from "../api/hooks";
import type { Page, Plan, ProjectProgression, Release, ReleaseDiff } from "../api/types";
import { Breadcrumbs } from "../components/Breadcrumbs";
import { DataTable } from "../components/DataTable";
import { ErrorNotice, Loading } from "../components/ErrorNotice";
import { RelativeTime } from "../components/RelativeTime";
import { useTitle } from "../lib/title";
import { ReleaseCell } from "./Project";

/**
 * One release: what it froze (images by digest, the process's steps) and, for a chosen
 * environment, the variables a deployment there would get (sensitive values masked by the
 * server's plan), plus where it was deployed and may go, and what changed from the release
 * before it.
 */
export function ReleasePage() {
  const { project: slug = "", release: version = "" } = useParams();
  const [search, setSearch] = useSearchParams();
  const project = useProject(slug);
  const release = useQuery({
    queryKey: ["release", slug, version],
    queryFn: () => api<Release>("GET", `/projects/${encodeURIComponent(slug)}/releases/${encodeURIComponent(version)}`),
  });
  const progression = useQuery({
    queryKey: ["progression", slug, "release", version],
    queryFn: () =>
      api<ProjectProgression>(
        "GET",
        `/projects/${encodeURIComponent(slug)}/progression${query({ release: version, limit: 1 })}`,
      ),
  });
  useTitle(`${project.data?.name ?? slug} ${version}`);
  const environments = progression.data?.environments ?? [];
  const chosen = search.get("env") ?? environments[0]?.environment.slug ?? "";
  const plan = useQuery({
    queryKey: ["plan", slug, version, chosen],
    queryFn: () =>
      api<Plan>("GET", `/projects/${encodeURIComponent(slug)}/plan${query({ release: version, environment: chosen })}`),
    enabled: chosen !== "",
  });
  const environmentId = useId();
  const data = release.data;
  const progress = progression.data?.releases[0];

  return (
    <section className="page" aria-labelledby="release-title">
      <Breadcrumbs
        trail={[
          { label: "Dashboard", to: "/" },
          { label: project.data?.name ?? slug, to: `/projects/${slug}` },
          { label: `Release ${version}` },
        ]}
      />
      <div className="page-header">
        <h1 id="release-title">
          {project.data?.name ?? slug} <span className="mono">{version}</span>
        </h1>
      </div>
      {release.isPending && <Loading what="the release" />}
      <ErrorNotice error={release.error} what="The release could not be loaded" />
      {data && (
        <>
          <dl className="facts">
            <dt>Created</dt>
            <dd>
              <RelativeTime at={data.createdAt} /> by {data.createdBy}
            </dd>
            {data.variablesUpdatedAt && (
              <>
                <dt>Variables re-snapshotted</dt>
                <dd>
                  <RelativeTime at={data.variablesUpdatedAt} /> by {data.variablesUpdatedBy}
                </dd>
              </>
            )}
            {data.notes && (
              <>
                <dt>Notes</dt>
                <dd className="notes">{data.notes}</dd>
              </>
            )}
          </dl>

          <h2 id="progress-title">Environments</h2>
          <ErrorNotice error={progression.error} what="Where it may go could not be loaded" />
          {progress && (
            <div className="table-scroll">
              <table className="data" aria-labelledby="progress-title">
                <thead>
                  <tr>
                    {environments.map((environment) => (
                      <th scope="col" key={environment.environment.id}>
                        {environment.environment.name}
                      </th>
                    ))}
                  </tr>
                </thead>
                <tbody>
                  <tr>
                    {environments.map((environment) => {
                      const cell = progress.environments.find(
                        (each) => each.environment === environment.environment.slug,
                      );
                      return (
                        <td key={environment.environment.id}>
                          <ReleaseCell project={slug} release={progress} environment={environment} />
                          {cell?.reason && <p className="reason">{cell.reason}</p>}
                        </td>
                      );
                    })}
                  </tr>
                </tbody>
              </table>
            </div>
          )}

          <h2 id="images-title">Images</h2>
          {data.images.length === 0 ? (
            <p className="muted">This release pins no image (its steps run scripts or use no feed).</p>
          ) : (
            <div className="table-scroll">
              <table className="data" aria-labelledby="images-title">
                <thead>
                  <tr>
                    <th scope="col">Image</th>
                    <th scope="col">Tag when released</th>
                    <th scope="col">Digest (what is deployed)</th>
                  </tr>
                </thead>
                <tbody>
                  {data.images.map((image) => (
                    <tr key={image.name}>
                      <th scope="row">{image.name}</th>
                      <td className="mono">{image.tag}</td>
                      <td className="mono small">
                        <span title={image.reference}>{image.digest}</span>
                      </td>
                    </tr>
                  ))}
                </tbody>
              </table>
            </div>
          )}

          {(data.packages ?? []).length > 0 && (
            <>
              <h2 id="packages-title">Packages</h2>
              <div className="table-scroll">
                <table className="data" aria-labelledby="packages-title">
                  <thead>
                    <tr>
                      <th scope="col">Package</th>
                      <th scope="col">Version</th>
                      <th scope="col">SHA-256 (what is unpacked)</th>
                    </tr>
                  </thead>
                  <tbody>
                    {(data.packages ?? []).map((item) => (
                      <tr key={item.name}>
                        <th scope="row">{item.name}</th>
                        <td className="mono">{item.version}</td>
                        <td className="mono small">{item.sha256}</td>
                      </tr>
                    ))}
                  </tbody>
                </table>
              </div>
            </>
          )}

          <h2 id="process-title">Process</h2>
          <ol className="steps-list" aria-labelledby="process-title">
            {data.steps.map((step) => (
              <li key={step.name}>
                <strong>{step.name}</strong> <span className="tag">{step.kind}</span>
              </li>
            ))}
          </ol>

          <h2 id="variables-title">Variables</h2>
          <div className="filters">
            <label htmlFor={environmentId}>
              As deployed to
              <select
                id={environmentId}
                value={chosen}
                onChange={(event) => {
                  const next = new URLSearchParams(search);
                  next.set("env", event.target.value);
                  setSearch(next, { replace: true });
                }}
              >
                {environments.map((environment) => (
                  <option key={environment.environment.id} value={environment.environment.slug}>
                    {environment.environment.name}
                  </option>
                ))}
              </select>
            </label>
          </div>
          <ErrorNotice error={plan.error} what="The plan could not be made" />
          {plan.data && (
            <div className="table-scroll">
              <table className="data" aria-labelledby="variables-title">
                <thead>
                  <tr>
                    <th scope="col">Name</th>
                    <th scope="col">Value</th>
                  </tr>
                </thead>
                <tbody>
                  {plan.data.variables.map((variable) => (
                    <tr key={variable.name}>
                      <th scope="row" className="mono">
                        {variable.name}
                      </th>
                      <td className="mono">
                        {variable.sensitive ? (
                          <span className="muted">
                            <span aria-hidden="true">•••••• </span>sensitive (never shown)
                          </span>
                        ) : (
                          variable.value
                        )}
                      </td>
                    </tr>
                  ))}
                </tbody>
              </table>
            </div>
          )}
          {plan.data && (
            <>
              <h3>Steps in {plan.data.environment}</h3>
              <ol className="steps-list">
                {plan.data.steps.map((step) => (
                  <li key={step.name}>
                    <strong>{step.name}</strong> <span className="tag">{step.kind}</span>{" "}
                    {step.runs ? (
                      <span className="small">{step.actions.join("; ")}</span>
                    ) : (
                      <span className="small muted">skipped: {step.reason}</span>
                    )}
                  </li>
                ))}
              </ol>
            </>
          )}

          <ReleaseChanges project={slug} version={version} />
        </>
      )}
    </section>
  );
}

/** A field of a changed step, as `ferry release diff` prints it. */
function describeField(change: { field: string; from?: unknown; to?: unknown; sensitive?: true }): string {
  const show = (value: unknown) => {
    const text = JSON.stringify(value) ?? "null";
    return text.length > 200 ? `${text.slice(0, 197)}...` : text;
  };
  if (change.sensitive) return `${change.field}: changed (sensitive, not shown)`;
  if (change.from === undefined) return `${change.field}: added ${show(change.to)}`;
  if (change.to === undefined) return `${change.field}: removed (was ${show(change.from)})`;
  return `${change.field}: ${show(change.from)} → ${show(change.to)}`;
}

function scopeText(scope: { environments: string[]; roles: string[]; targets: string[] }, set?: string | null): string {
  const parts = [
    ...scope.environments.map((each) => `env: ${each}`),
    ...scope.roles.map((each) => `role: ${each}`),
    ...scope.targets.map((each) => `target: ${each}`),
  ];
  const where = parts.length === 0 ? "everywhere" : parts.join(", ");
  return set ? `${where} (set ${set})` : where;
}

/** One side (before or after) of a change: what it was, or "none" where there was nothing. */
function SideCell({ className, children }: { className: string; children: ReactNode }) {
  return <td className={className}>{children ?? <span className="muted">none</span>}</td>;
}

/** Added, removed or changed, in words and a sign (colour is never the only carrier). */
function ChangeBadge({ change }: { change: "added" | "removed" | "changed" }) {
  const sign = change === "added" ? "+" : change === "removed" ? "−" : "~";
  return (
    <span className={`change change-${change}`}>
      <span aria-hidden="true">{sign} </span>
      {change}
    </span>
  );
}

/**
 * What changed from another release (by default the one made just before) to this one:
 * images with digests, steps field by field, variables (a sensitive one only as changed:
 * the API never gives its values), notes. From GET /projects/:project/release-diff.
 */
function ReleaseChanges({ project, version }: { project: string; version: string }) {
  const [search, setSearch] = useSearchParams();
  const compareId = useId();
  // Newest first: the release after this one in the list is the one made just before it.
  const releases = useQuery({
    queryKey: ["releases", project, "for-diff"],
    queryFn: () =>
      api<Page<Release>>("GET", `/projects/${encodeURIComponent(project)}/releases${query({ limit: 500 })}`),
  });
  const items = releases.data?.items ?? [];
  const index = items.findIndex((release) => release.version === version);
  // The oldest of all (not merely the last of the 500 read).
  const isFirst = index >= 0 && index === (releases.data?.total ?? 0) - 1;
  const compare = search.get("compare");
  // Without a choice the API compares with the release made just before this one, wherever
  // it is in the project's history (the list above holds the newest 500 only).
  const diff = useQuery({
    queryKey: ["release-diff", project, compare ?? "(previous)", version],
    queryFn: () =>
      api<ReleaseDiff & { project: string }>(
        "GET",
        `/projects/${encodeURIComponent(project)}/release-diff${query(compare ? { from: compare, to: version } : { to: version })}`,
      ),
    enabled: releases.data !== undefined && (compare !== null || (!isFirst && releases.data.total > 1)),
  });
  const data = diff.data;
  const previous = index >= 0 ? items[index + 1]?.version : compare === null ? data?.from : undefined;
  const chosen = compare ?? previous ?? "";
  const listed = items.filter((release) => release.version !== version).map((release) => release.version);
  // The previous release may be older than the newest 500: it is a choice all the same.
  const others = previous !== undefined && !listed.includes(previous) ? [...listed, previous] : listed;
  const nothing =
    data && data.images.length === 0 && data.steps.length === 0 && data.variables.length === 0 && data.notes === null;

  return (
    <>
      <h2 id="changes-title">Changes</h2>
      <ErrorNotice error={releases.error} what="The other releases could not be loaded" />
      {releases.data && others.length === 0 && (
        <p className="muted">This is the project's only release: there is nothing to compare it with.</p>
      )}
      {others.length > 0 && isFirst && chosen === "" && (
        <p className="muted">This is the project's first release: choose another release to compare it with.</p>
      )}
      {others.length > 0 && (
        <div className="filters">
          <label htmlFor={compareId}>
            Compared with
            <select
              id={compareId}
              value={chosen}
              onChange={(event) => {
                const next = new URLSearchParams(search);
                next.set("compare", event.target.value);
                setSearch(next, { replace: true });
              }}
            >
              {chosen === "" && <option value="">choose a release</option>}
              {others.map((other) => (
                <option key={other} value={other}>
                  {other}
                  {other === previous ? " (the previous release)" : ""}
                </option>
              ))}
            </select>
          </label>
        </div>
      )}
      {diff.isFetching && !data && <Loading what="the changes" />}
      <ErrorNotice error={diff.error} what="The changes could not be loaded" />
      {data && nothing && (
        <p className="muted">
          Nothing changed from <span className="mono">{data.from}</span>: the same images, process, variables and notes.
        </p>
      )}
      {data && !nothing && (
        <div className="release-diff">
          <p className="small muted">
            From <span className="mono">{data.from}</span> to <span className="mono">{data.to}</span>.
          </p>
          {data.images.length > 0 && (
            <DataTable label="Image changes" columns={["Image", "Change", "Before", "After"]}>
              {data.images.map((image) => (
                <tr key={image.name}>
                  <th scope="row">{image.name}</th>
                  <td>
                    <ChangeBadge change={image.change} />
                  </td>
                  {[image.from, image.to].map((side, sideIndex) => (
                    <SideCell key={sideIndex === 0 ? "from" : "to"} className="mono small">
                      {side && (
                        <>
                          {side.repository}:{side.tag}
                          <br />
                          {side.digest}
                        </>
                      )}
                    </SideCell>
                  ))}
                </tr>
              ))}
            </DataTable>
          )}
          {data.steps.length > 0 && (
            <ul className="steps-list" aria-label="Step changes">
              {data.steps.map((step) => (
                <li key={step.name}>
                  <strong>{step.name}</strong> <span className="tag">{step.kind}</span>{" "}
                  <ChangeBadge change={step.change} />
                  {step.fields && step.fields.length > 0 && (
                    <ul className="field-changes">
                      {step.fields.map((field) => (
                        <li key={field.field} className="mono small">
                          {describeField(field)}
                        </li>
                      ))}
                    </ul>
                  )}
                </li>
              ))}
            </ul>
          )}
          {data.variables.length > 0 && (
            <DataTable label="Variable changes" columns={["Variable", "Scope", "Change", "Before", "After"]}>
              {data.variables.map((variable) => (
                <tr key={`${variable.name}|${scopeText(variable.scope, variable.set)}`}>
                  <th scope="row" className="mono">
                    {variable.name}
                  </th>
                  <td className="small">{scopeText(variable.scope, variable.set)}</td>
                  <td>
                    <ChangeBadge change={variable.change} />
                    {variable.note && <span className="small muted"> ({variable.note})</span>}
                  </td>
                  {variable.sensitive ? (
                    <td colSpan={2} className="muted">
                      <span aria-hidden="true">•••••• </span>sensitive: only that it{" "}
                      {variable.change === "changed" ? "changed" : `was ${variable.change}`} is shown
                    </td>
                  ) : (
                    <>
                      <SideCell className="mono value-cell">{variable.from}</SideCell>
                      <SideCell className="mono value-cell">{variable.to}</SideCell>
                    </>
                  )}
                </tr>
              ))}
            </DataTable>
          )}
          {data.notes && (
            <dl className="facts notes-change">
              <dt>Notes before</dt>
              <dd className="notes">{data.notes.from || <span className="muted">none</span>}</dd>
              <dt>Notes now</dt>
              <dd className="notes">{data.notes.to || <span className="muted">none</span>}</dd>
            </dl>
          )}
        </div>
      )}
    </>
  );
}
