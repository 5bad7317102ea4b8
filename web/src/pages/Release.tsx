import { useQuery } from "@tanstack/react-query";
import { useId } from "react";
import { useParams, useSearchParams } from "react-router";
import { api, query } from "../api/client";
import { useProject } from "../api/hooks";
import type { Plan, ProjectProgression, Release } from "../api/types";
import { Breadcrumbs } from "../components/Breadcrumbs";
import { ErrorNotice, Loading } from "../components/ErrorNotice";
import { RelativeTime } from "../components/RelativeTime";
import { useTitle } from "../lib/title";
import { ReleaseCell } from "./Project";

/**
 * One release: what it froze (images by digest, the process's steps) and, for a chosen
 * environment, the variables a deployment there would get (sensitive values masked by the
 * server's plan), plus where it was deployed and may go.
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
                onChange={(event) => setSearch({ env: event.target.value }, { replace: true })}
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
        </>
      )}
    </section>
  );
}
