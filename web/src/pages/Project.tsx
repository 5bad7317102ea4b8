import { useQueryClient } from "@tanstack/react-query";
import { type FormEvent, useId, useState } from "react";
import { Link, useNavigate, useParams, useSearchParams } from "react-router";
import { api, describeError } from "../api/client";
import { useProgression, useProject } from "../api/hooks";
import type {
  DeploymentCreated,
  ProgressionEnvironment,
  ProgressionRelease,
  ProjectProgression,
  Release,
} from "../api/types";
import { Breadcrumbs } from "../components/Breadcrumbs";
import { ConfirmButton } from "../components/ConfirmButton";
import { ErrorNotice, Loading } from "../components/ErrorNotice";
import { Pager } from "../components/Pager";
import { RelativeTime } from "../components/RelativeTime";
import { StateBadge } from "../components/StateBadge";
import { useTitle } from "../lib/title";

const PAGE_SIZE = 20;

export function ProjectPage() {
  const { project: slug = "" } = useParams();
  const [search, setSearch] = useSearchParams();
  const offset = Math.max(0, Number(search.get("offset") ?? 0) || 0);
  const project = useProject(slug);
  const progression = useProgression(slug, { limit: PAGE_SIZE, offset });
  useTitle(project.data?.name ?? slug);
  const data = progression.data;
  const mayDeployAnywhere = data?.environments.some((each) => each.permissions.includes("deploy")) ?? false;

  return (
    <section className="page page-wide" aria-labelledby="project-title">
      <Breadcrumbs trail={[{ label: "Dashboard", to: "/" }, { label: project.data?.name ?? slug }]} />
      <div className="page-header">
        <h1 id="project-title">{project.data?.name ?? slug}</h1>
        {data && <span className="muted">lifecycle {data.lifecycle.name}</span>}
        <div className="actions">
          <Link className="button" to={`/projects/${slug}/runbooks`}>
            Runbooks
          </Link>
          <Link className="button" to={`/projects/${slug}/variables`}>
            Variables
          </Link>
          <Link className="button" to={`/projects/${slug}/triggers`}>
            Triggers
          </Link>
        </div>
      </div>
      {project.data?.description && <p>{project.data.description}</p>}
      <ErrorNotice error={project.error ?? progression.error} what="The project could not be loaded" />
      {progression.isPending && <Loading what="the project" />}
      {data && (
        <>
          {mayDeployAnywhere && <CreateRelease project={slug} versionPattern={project.data?.versionPattern} />}
          <h2>Environments</h2>
          <div className="phases">
            {data.environments.map((environment) => (
              <EnvironmentCard key={environment.environment.id} project={slug} environment={environment} />
            ))}
          </div>
          <h2 id="releases-title">Releases</h2>
          <Releases project={slug} data={data} />
          <Pager
            offset={offset}
            total={data.total}
            onChange={(next) => setSearch(next === 0 ? {} : { offset: String(next) })}
          />
        </>
      )}
    </section>
  );
}

function CreateRelease({ project, versionPattern }: { project: string; versionPattern: string | undefined }) {
  const client = useQueryClient();
  const navigate = useNavigate();
  const [open, setOpen] = useState(false);
  const [version, setVersion] = useState("");
  const [notes, setNotes] = useState("");
  const [error, setError] = useState<string | undefined>();
  const [busy, setBusy] = useState(false);

  const submit = async (event: FormEvent) => {
    event.preventDefault();
    setBusy(true);
    setError(undefined);
    try {
      const created = await api<Release & { deployments: DeploymentCreated[] }>(
        "POST",
        `/projects/${encodeURIComponent(project)}/releases`,
        { ...(version.trim() !== "" && { version: version.trim() }), notes },
      );
      await client.invalidateQueries({ queryKey: ["progression", project] });
      setOpen(false);
      setVersion("");
      setNotes("");
      // A lifecycle that deploys on its own started a deployment: watch it.
      const first = created.deployments[0];
      if (first) navigate(`/tasks/${first.taskId}`);
      else navigate(`/projects/${project}/releases/${encodeURIComponent(created.version)}`);
    } catch (failure) {
      setError(describeError(failure));
    } finally {
      setBusy(false);
    }
  };

  if (!open) {
    return (
      <p>
        <button type="button" className="button button-primary" onClick={() => setOpen(true)} aria-expanded={false}>
          Create release
        </button>
      </p>
    );
  }
  return (
    <form className="card" onSubmit={(event) => void submit(event)} aria-label="Create a release">
      <h2>Create a release</h2>
      <p className="small muted">
        It freezes the process, the variables and each image's digest; the lifecycle's automatic phase deploys it.
      </p>
      <div className="form-grid">
        <label>
          Version
          <input
            name="version"
            value={version}
            placeholder={versionPattern ? `next by ${versionPattern}` : "e.g. 1.4.2"}
            onChange={(event) => setVersion(event.target.value)}
          />
        </label>
        <label>
          Notes
          <textarea name="notes" value={notes} onChange={(event) => setNotes(event.target.value)} />
        </label>
      </div>
      {error && (
        <p className="notice notice-error" role="alert">
          {error}
        </p>
      )}
      <div className="form-actions">
        <button type="submit" className="button button-primary" disabled={busy}>
          {busy ? "Creating…" : "Create release"}
        </button>
        <button type="button" className="button" onClick={() => setOpen(false)}>
          Cancel
        </button>
      </div>
    </form>
  );
}

function EnvironmentCard({ project, environment }: { project: string; environment: ProgressionEnvironment }) {
  const client = useQueryClient();
  const navigate = useNavigate();
  const { live, latest, promotion } = environment;
  const name = environment.environment.name;
  const mayDeploy = environment.permissions.includes("deploy");
  const promoteReasonId = useId();
  const rollbackReasonId = useId();
  const canPromote = promotion.allowed && mayDeploy;
  const promoteReason = !promotion.allowed
    ? promotion.reason
    : mayDeploy
      ? null
      : `you do not have the deploy permission in ${name}`;
  const rollbackReason = !mayDeploy
    ? `you do not have the deploy permission in ${name}`
    : live === null
      ? `nothing has been deployed to ${name} yet`
      : null;
  const started = async (created: DeploymentCreated) => {
    await client.invalidateQueries({ queryKey: ["progression", project] });
    navigate(`/tasks/${created.taskId}`);
  };
  return (
    <article className="card environment-card" aria-labelledby={`${environment.environment.id}-title`}>
      <h3 id={`${environment.environment.id}-title`}>{name}</h3>
      <p className="phase">
        phase {environment.phaseIndex + 1}: {environment.phase}
        {environment.autoDeploy && " · deploys automatically"}
        {environment.optional && " · optional"}
      </p>
      <p>
        {live ? (
          <>
            <Link className="live-release" to={`/projects/${project}/releases/${encodeURIComponent(live.release)}`}>
              {live.release}
            </Link>{" "}
            <span className="muted small">
              live since <RelativeTime at={live.finishedAt} />
            </span>
          </>
        ) : (
          <span className="muted">nothing deployed</span>
        )}
      </p>
      {latest && latest.deploymentId !== live?.deploymentId && (
        <p>
          <Link to={`/tasks/${latest.taskId}`}>
            <StateBadge state={latest.state} /> {latest.release}
          </Link>{" "}
          <span className="muted small">
            <RelativeTime at={latest.finishedAt ?? latest.createdAt} />
          </span>
        </p>
      )}
      <div className="card-actions">
        {environment.phaseIndex > 0 && (
          <ConfirmButton
            label={promotion.release ? `Promote ${promotion.release}` : "Promote"}
            title={`Promote ${promotion.release ?? ""} to ${name}?`}
            confirmLabel={`Deploy to ${name}`}
            className="button button-primary"
            disabled={!canPromote}
            describedBy={promoteReason ? promoteReasonId : undefined}
            onConfirm={async () =>
              started(
                await api<DeploymentCreated>("POST", `/projects/${encodeURIComponent(project)}/promotions`, {
                  to: environment.environment.slug,
                }),
              )
            }
          >
            <p>
              Deploys {promotion.release}, which the previous phase runs, to {name}.
            </p>
          </ConfirmButton>
        )}
        <ConfirmButton
          label="Roll back"
          title={`Roll ${name} back?`}
          confirmLabel={`Roll back ${name}`}
          className="button"
          disabled={rollbackReason !== null}
          describedBy={rollbackReason ? rollbackReasonId : undefined}
          onConfirm={async () =>
            started(
              await api<DeploymentCreated>("POST", `/projects/${encodeURIComponent(project)}/rollbacks`, {
                environment: environment.environment.slug,
              }),
            )
          }
        >
          <p>
            Redeploys the last release that succeeded in {name} before {live?.release ?? "the current one"} (on
            blue/green targets, a switch back to the retained colour).
          </p>
        </ConfirmButton>
      </div>
      {promoteReason && environment.phaseIndex > 0 && (
        <p className="reason" id={promoteReasonId}>
          <span aria-hidden="true">⊘ </span>Promote: {promoteReason}
        </p>
      )}
      {rollbackReason && (
        <p className="reason" id={rollbackReasonId}>
          <span aria-hidden="true">⊘ </span>Roll back: {rollbackReason}
        </p>
      )}
    </article>
  );
}

function Releases({ project, data }: { project: string; data: ProjectProgression }) {
  if (data.releases.length === 0) {
    return <p className="empty">No release yet. Create one above, or from CI with `ferry release create`.</p>;
  }
  return (
    <div className="table-scroll">
      <table className="data" aria-labelledby="releases-title">
        <thead>
          <tr>
            <th scope="col">Release</th>
            <th scope="col">Created</th>
            {data.environments.map((environment) => (
              <th scope="col" key={environment.environment.id}>
                {environment.environment.name}
              </th>
            ))}
          </tr>
        </thead>
        <tbody>
          {data.releases.map((release) => (
            <tr key={release.id}>
              <th scope="row">
                <Link className="mono" to={`/projects/${project}/releases/${encodeURIComponent(release.version)}`}>
                  {release.version}
                </Link>
                {release.notes && <div className="small muted">{release.notes.split("\n")[0]}</div>}
              </th>
              <td>
                <RelativeTime at={release.createdAt} />
                <div className="small muted">{release.createdBy}</div>
              </td>
              {data.environments.map((environment) => (
                <td key={environment.environment.id}>
                  <ReleaseCell project={project} release={release} environment={environment} />
                </td>
              ))}
            </tr>
          ))}
        </tbody>
      </table>
    </div>
  );
}

/** Where a release stands in one environment: its newest deployment there, and a Deploy button when it may go. */
export function ReleaseCell({
  project,
  release,
  environment,
}: {
  project: string;
  release: Pick<ProgressionRelease, "version" | "environments">;
  environment: ProgressionEnvironment;
}) {
  const client = useQueryClient();
  const navigate = useNavigate();
  const reasonId = useId();
  const [guided, setGuided] = useState(false);
  const cell = release.environments.find((each) => each.environment === environment.environment.slug);
  if (!cell) return null;
  const mayDeploy = environment.permissions.includes("deploy");
  const reason = !cell.allowed ? cell.reason : mayDeploy ? null : `needs the deploy permission`;
  const deployed = cell.deployment;
  const isLive = environment.live?.release === release.version;
  return (
    <div className="progress-cell">
      {deployed && (
        <Link to={`/tasks/${deployed.taskId}`}>
          <StateBadge state={deployed.state} />
          <span className="visually-hidden">
            {" "}
            ({release.version} in {environment.environment.name})
          </span>
        </Link>
      )}
      {isLive && <span className="tag">live</span>}
      <ConfirmButton
        label={deployed ? "Redeploy" : "Deploy"}
        title={`Deploy ${release.version} to ${environment.environment.name}?`}
        confirmLabel={`Deploy to ${environment.environment.name}`}
        className="button button-small"
        disabled={reason !== null}
        describedBy={reason ? reasonId : undefined}
        onConfirm={async () => {
          const created = await api<DeploymentCreated>("POST", `/projects/${encodeURIComponent(project)}/deployments`, {
            release: release.version,
            environment: environment.environment.slug,
            guidedFailure: guided,
          });
          await client.invalidateQueries({ queryKey: ["progression", project] });
          navigate(`/tasks/${created.taskId}`);
        }}
      >
        <label className="inline">
          <input type="checkbox" checked={guided} onChange={(event) => setGuided(event.target.checked)} />
          Guided failure: when a step fails, wait for someone to retry it, skip it or abort
        </label>
      </ConfirmButton>
      {reason && (
        <span id={reasonId} className="visually-hidden">
          {reason}
        </span>
      )}
    </div>
  );
}
