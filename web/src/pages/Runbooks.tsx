import { Link, useParams } from "react-router";
import { useEnvironments, useProgression, useProject, useRunbooks } from "../api/hooks";
import type { Environment, RunbookListed, RunbookRunSummary, TaskState } from "../api/types";
import { Breadcrumbs } from "../components/Breadcrumbs";
import { ErrorNotice, Loading } from "../components/ErrorNotice";
import { RelativeTime } from "../components/RelativeTime";
import { StateBadge } from "../components/StateBadge";
import { Tags } from "../components/Tags";
import { useTitle } from "../lib/title";

/**
 * A project's runbooks: what each does, where it may run, which version runs use (or that
 * only a draft exists), and how its last run went in each environment, live (live.ts
 * refreshes the list when a runbook run changes).
 */
export function RunbooksPage() {
  const { project: slug = "" } = useParams();
  const project = useProject(slug);
  const runbooks = useRunbooks(slug);
  const environments = useEnvironments();
  const progression = useProgression(slug, { limit: 1, offset: 0 });
  const name = project.data?.name ?? slug;
  useTitle(`${name} runbooks`);
  const lifecycle = progression.data?.environments.map((each) => each.environment.slug) ?? [];

  return (
    <section className="page page-wide" aria-labelledby="runbooks-title">
      <Breadcrumbs
        trail={[{ label: "Dashboard", to: "/" }, { label: name, to: `/projects/${slug}` }, { label: "Runbooks" }]}
      />
      <div className="page-header">
        <h1 id="runbooks-title">Runbooks of {name}</h1>
      </div>
      <p className="small muted">
        Operations run against an environment (backups, restarts, clean-ups) with the project's variables and targets.
        Runs use the published version; editing changes a draft until it is published.
      </p>
      <ErrorNotice error={runbooks.error} what="The runbooks could not be loaded" />
      {runbooks.isPending && <Loading what="the runbooks" />}
      {runbooks.data?.length === 0 && (
        <p className="empty">
          No runbook yet. Declare one under <code>runbooks:</code> in ferry.yml and apply it, or create one with the
          API.
        </p>
      )}
      {runbooks.data && runbooks.data.length > 0 && (
        <div className="table-scroll">
          <table className="data" aria-labelledby="runbooks-title">
            <thead>
              <tr>
                <th scope="col">Runbook</th>
                <th scope="col">Runs in</th>
                <th scope="col">Published</th>
                <th scope="col">Last run</th>
              </tr>
            </thead>
            <tbody>
              {runbooks.data.map((runbook) => (
                <RunbookRow
                  key={runbook.id}
                  project={slug}
                  runbook={runbook}
                  environments={environments.data?.items ?? []}
                  lifecycle={lifecycle}
                />
              ))}
            </tbody>
          </table>
        </div>
      )}
    </section>
  );
}

function RunbookRow({
  project,
  runbook,
  environments,
  lifecycle,
}: {
  project: string;
  runbook: RunbookListed;
  environments: readonly Environment[];
  lifecycle: readonly string[];
}) {
  const nameOf = (slug: string) => environments.find((each) => each.slug === slug)?.name ?? slug;
  // Where runs may go is what the published version says (a draft's change applies once published).
  const runsIn = (runbook.published ?? runbook).environments;
  return (
    <tr>
      <th scope="row">
        <Link to={`/projects/${project}/runbooks/${encodeURIComponent(runbook.slug)}`}>{runbook.name}</Link>
        {runbook.description && <div className="small muted">{runbook.description}</div>}
      </th>
      <td>
        {runsIn.length > 0 ? (
          <Tags items={runsIn.map(nameOf)} />
        ) : (
          <>
            <Tags items={lifecycle.map(nameOf)} />
            <div className="small muted">any environment of the lifecycle</div>
          </>
        )}
      </td>
      <td>
        {runbook.published ? (
          <>
            version {runbook.published.version}{" "}
            <span className="small muted">
              <RelativeTime at={runbook.published.publishedAt} />
            </span>
            {runbook.draftChanged && <div className="small muted">the draft has unpublished changes</div>}
          </>
        ) : (
          <span className="tag">draft only</span>
        )}
      </td>
      <td>
        {runbook.lastRuns.length === 0 ? (
          <span className="muted">never run</span>
        ) : (
          <ul className="last-runs">
            {runbook.lastRuns.map((run) => (
              <LastRun key={run.runId} run={run} environment={nameOf(run.environment)} />
            ))}
          </ul>
        )}
      </td>
    </tr>
  );
}

function LastRun({ run, environment }: { run: RunbookRunSummary; environment: string }) {
  return (
    <li>
      <span className="last-run-environment">{environment}</span>{" "}
      <Link to={`/tasks/${run.taskId}`}>
        <StateBadge state={run.state as TaskState} />
        <span className="visually-hidden"> (the last run in {environment})</span>
      </Link>{" "}
      <span className="small muted">
        <RelativeTime at={run.finishedAt ?? run.createdAt} />
      </span>
    </li>
  );
}
