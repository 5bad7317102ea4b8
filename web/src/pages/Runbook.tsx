import { useQuery, useQueryClient } from "@tanstack/react-query";
import { type FormEvent, type ReactNode, useId, useState } from "react";
import { Link, useNavigate, useParams, useSearchParams } from "react-router";
import { ApiError, api, describeError, query } from "../api/client";
import { useEnvironments, useProgression, useProject, useRunbook, useRunbookRuns } from "../api/hooks";
import type {
  Environment,
  Page,
  Permission,
  ProjectProgression,
  Runbook,
  RunbookParameter,
  RunbookRunCreated,
  Schedule,
  Target,
  TaskState,
} from "../api/types";
import { Breadcrumbs } from "../components/Breadcrumbs";
import { ConfirmButton } from "../components/ConfirmButton";
import { ErrorNotice, Loading } from "../components/ErrorNotice";
import { RelativeTime } from "../components/RelativeTime";
import { StateBadge } from "../components/StateBadge";
import { Tags } from "../components/Tags";
import { exactTime, relativeTime, useNow } from "../lib/time";
import { useTitle } from "../lib/title";

const RUNS_PAGE = 20;

type Definition = Pick<Runbook, "process" | "environments" | "parameters" | "overlapDeployments" | "overlapItself">;
type Step = Runbook["process"]["steps"][number];

/** The caller's permissions in each of the project's lifecycle environments, by slug. */
function permissionsBySlug(progression: ProjectProgression | undefined): Map<string, Set<Permission>> {
  return new Map(
    (progression?.environments ?? []).map((each) => [each.environment.slug, new Set(each.permissions)] as const),
  );
}

/**
 * One runbook: the published process and parameters that runs use, whether the draft
 * differs, a form to run it (in the environments it may run in and the caller may run it
 * in), its runs, and Publish for those who may edit runbooks.
 */
export function RunbookPage() {
  const { project: slug = "", runbook: reference = "" } = useParams();
  const [search, setSearch] = useSearchParams();
  const offset = Math.max(0, Number(search.get("offset") ?? 0) || 0);
  const project = useProject(slug);
  const runbook = useRunbook(slug, reference);
  const progression = useProgression(slug, { limit: 1, offset: 0 });
  const environments = useEnvironments();
  const projectName = project.data?.name ?? slug;
  const data = runbook.data;
  useTitle(data ? `${data.name} · ${projectName}` : "Runbook");
  const permissions = permissionsBySlug(progression.data);
  const mayEdit = [...permissions.values()].some((each) => each.has("editRunbooks"));
  const nameOf = (environmentSlug: string) =>
    environments.data?.items.find((each) => each.slug === environmentSlug)?.name ?? environmentSlug;

  return (
    <section className="page page-wide" aria-labelledby="runbook-title">
      <Breadcrumbs
        trail={[
          { label: "Dashboard", to: "/" },
          { label: projectName, to: `/projects/${slug}` },
          { label: "Runbooks", to: `/projects/${slug}/runbooks` },
          { label: data?.name ?? reference },
        ]}
      />
      {runbook.isPending && <Loading what="the runbook" />}
      <ErrorNotice error={runbook.error} what="The runbook could not be loaded" />
      {data && (
        <>
          <div className="page-header">
            <h1 id="runbook-title">{data.name}</h1>
            <span className="muted">{data.published ? `version ${data.published.version}` : "draft only"}</span>
            <div className="actions">
              {/* Only for those who may edit runbooks, like the draft run: to others a publish is no action of theirs. */}
              {mayEdit && <PublishButton project={slug} runbook={data} />}
            </div>
          </div>
          {(data.published?.description ?? data.description) && (
            <p>{data.published?.description ?? data.description}</p>
          )}
          <DraftStatus runbook={data} />
          <div className="runbook-layout">
            <div className="runbook-column">
              <ErrorNotice error={progression.error} what="What you may do here could not be loaded" />
              {/* Until the caller's permissions are known, the form could only say no. */}
              {progression.data ? (
                <RunForm
                  project={slug}
                  runbook={data}
                  permissions={permissions}
                  lifecycle={progression.data.environments.map((each) => each.environment)}
                  nameOf={nameOf}
                />
              ) : (
                progression.isPending && <Loading what="where you may run it" />
              )}
              <Runs
                project={slug}
                runbook={data.slug}
                offset={offset}
                nameOf={nameOf}
                onPage={(next) => setSearch(next === 0 ? {} : { offset: String(next) })}
              />
              <Schedules project={slug} runbook={data.slug} permissions={permissions} nameOf={nameOf} />
            </div>
            <div className="runbook-column">
              {data.published ? (
                <DefinitionView
                  title={`Published version ${data.published.version}`}
                  definition={data.published}
                  nameOf={nameOf}
                >
                  <p className="small muted">
                    Published <RelativeTime at={data.published.publishedAt} /> by {data.published.publishedBy}, with the
                    project's variables as they were then. Runs use this version.
                  </p>
                </DefinitionView>
              ) : (
                <DefinitionView title="Draft" definition={data} nameOf={nameOf} />
              )}
              {data.published && data.draftChanged && (
                <details className="card">
                  <summary>The draft (not published)</summary>
                  <DefinitionView title="Draft" definition={data} nameOf={nameOf} headingLevel={3} bare />
                </details>
              )}
            </div>
          </div>
        </>
      )}
    </section>
  );
}

function DraftStatus({ runbook }: { runbook: Runbook }) {
  if (!runbook.published) {
    return (
      <p className="notice notice-wait">
        Only a draft: nothing is published, so there is nothing runs can use yet. Someone who may edit runbooks can
        publish it, or run the draft.
      </p>
    );
  }
  if (!runbook.draftChanged) {
    return (
      <p className="small muted">
        The draft is the same as version {runbook.published.version}. Changes to the project's variables reach runs when
        it is published again.
      </p>
    );
  }
  return (
    <p className="notice notice-wait">
      The draft differs from version {runbook.published.version} (changed <RelativeTime at={runbook.updatedAt} /> by{" "}
      {runbook.updatedBy}). Runs keep using version {runbook.published.version} until the draft is published.
    </p>
  );
}

function PublishButton({ project, runbook }: { project: string; runbook: Runbook }) {
  const client = useQueryClient();
  const [published, setPublished] = useState<number | undefined>();
  const next = (runbook.published?.version ?? 0) + 1;
  return (
    <>
      <ConfirmButton
        label="Publish"
        title={`Publish ${runbook.name} as version ${next}?`}
        confirmLabel={`Publish version ${next}`}
        className="button button-primary"
        onConfirm={async () => {
          const answer = await api<Runbook>(
            "POST",
            `/projects/${encodeURIComponent(project)}/runbooks/${encodeURIComponent(runbook.slug)}/publish`,
          );
          client.setQueryData(["runbooks", project, runbook.slug], answer);
          await client.invalidateQueries({ queryKey: ["runbooks", project] });
          setPublished(answer.published?.version);
        }}
      >
        <p>
          Runs will use the draft as it is now
          {runbook.published && !runbook.draftChanged ? ` (the same as version ${runbook.published.version})` : ""},
          with the project's variables as they are now. Publishing is recorded in the audit log.
        </p>
      </ConfirmButton>
      {published !== undefined && (
        <span className="notice notice-ok" role="status">
          Published version {published}
        </span>
      )}
    </>
  );
}

function DefinitionView({
  title,
  definition,
  nameOf,
  headingLevel = 2,
  bare = false,
  children,
}: {
  title: string;
  definition: Definition;
  nameOf(slug: string): string;
  headingLevel?: 2 | 3;
  /** Inside another card: no card of its own. */
  bare?: boolean;
  children?: ReactNode;
}) {
  const Heading = headingLevel === 2 ? "h2" : "h3";
  const Sub = headingLevel === 2 ? "h3" : "h4";
  return (
    <section className={bare ? undefined : "card"} aria-label={title}>
      <Heading>{title}</Heading>
      {children}
      <p className="small">
        Runs in:{" "}
        {definition.environments.length > 0 ? (
          <Tags items={definition.environments.map(nameOf)} />
        ) : (
          "any environment of the project's lifecycle"
        )}
        <br />
        {definition.overlapDeployments
          ? "May run while a deployment to the environment runs."
          : "Waits for a deployment to the environment (and a deployment waits for it)."}{" "}
        {definition.overlapItself ? "Several runs may run at once." : "One run at a time per environment."}
      </p>
      <Sub>Steps</Sub>
      {definition.process.steps.length === 0 ? (
        <p className="muted">No step.</p>
      ) : (
        <ol className="steps-list">
          {definition.process.steps.map((step) => (
            <li key={step.name}>
              <strong>{step.name}</strong> <span className="tag">{step.kind}</span> <StepWhere step={step} />
            </li>
          ))}
        </ol>
      )}
      <Sub>Parameters</Sub>
      {definition.parameters.length === 0 ? (
        <p className="muted">No parameter.</p>
      ) : (
        <ul className="parameters-list">
          {definition.parameters.map((parameter) => (
            <li key={parameter.name}>
              <span className="mono">{parameter.name}</span> <span className="tag">{parameter.type}</span>
              {parameter.sensitive && <span className="tag">sensitive</span>}{" "}
              <span className="small muted">{parameterRules(parameter)}</span>
              {parameter.description && <div className="small">{parameter.description}</div>}
            </li>
          ))}
        </ul>
      )}
    </section>
  );
}

function StepWhere({ step }: { step: Step }) {
  const parts = [
    step.roles.length > 0 ? `on targets with role ${step.roles.join(", ")}` : "on the server's host",
    ...(step.environments.length > 0 ? [`only in ${step.environments.join(", ")}`] : []),
    ...(step.excludeEnvironments.length > 0 ? [`not in ${step.excludeEnvironments.join(", ")}`] : []),
    ...(step.required ? [] : ["optional"]),
  ];
  return <span className="small muted">{parts.join(" · ")}</span>;
}

/** A parameter's rules in words: required or its default, and what values it takes. */
function parameterRules(parameter: RunbookParameter): string {
  const rules = [
    parameter.default !== undefined
      ? `default ${String(parameter.default)}`
      : parameter.required
        ? "required"
        : "optional",
    ...(parameter.choices ? [`one of ${parameter.choices.join(", ")}`] : []),
    ...(parameter.pattern ? [`matches ${parameter.pattern}`] : []),
    ...(parameter.min !== undefined ? [`at least ${parameter.min}`] : []),
    ...(parameter.max !== undefined ? [`at most ${parameter.max}`] : []),
  ];
  return rules.join(" · ");
}

/** A field's problem, as the API said it (`pointer`), or undefined. */
function problemAt(error: unknown, pointer: string): string | undefined {
  if (!(error instanceof ApiError)) return undefined;
  const found = error.errors.filter((issue) => issue.pointer === pointer || issue.pointer?.startsWith(`${pointer}/`));
  return found.length > 0 ? found.map((issue) => issue.detail).join("; ") : undefined;
}

/** The pointers the form shows at a field; the rest of a refusal shows above the buttons. */
function placed(pointer: string | undefined, parameters: readonly RunbookParameter[]): boolean {
  if (pointer === undefined) return false;
  if (pointer === "/environment" || pointer.startsWith("/targets")) return true;
  return parameters.some((parameter) => pointer === `/parameters/${parameter.name}`);
}

function RunForm({
  project,
  runbook,
  permissions,
  lifecycle,
  nameOf,
}: {
  project: string;
  runbook: Runbook;
  permissions: Map<string, Set<Permission>>;
  lifecycle: readonly Pick<Environment, "id" | "slug" | "name">[];
  nameOf(slug: string): string;
}) {
  const client = useQueryClient();
  const navigate = useNavigate();
  const formId = useId();
  const [draft, setDraft] = useState(false);
  const [chosen, setChosen] = useState<string | undefined>();
  const [target, setTarget] = useState("");
  const [values, setValues] = useState<Record<string, string>>({});
  const [guided, setGuided] = useState(false);
  const [freezeReason, setFreezeReason] = useState("");
  const [error, setError] = useState<unknown>();
  const [busy, setBusy] = useState(false);

  const mayEditSomewhere = [...permissions.values()].some((each) => each.has("editRunbooks"));
  // A draft run uses the draft's environments and parameters; any other run the published version's.
  const definition: Definition | null = draft ? runbook : runbook.published;
  const candidates = definition
    ? definition.environments.length > 0
      ? definition.environments
      : lifecycle.map((each) => each.slug)
    : [];
  const needed: Permission[] = draft ? ["runRunbooks", "editRunbooks"] : ["runRunbooks"];
  const mayRunIn = (slug: string) => needed.every((permission) => permissions.get(slug)?.has(permission) ?? false);
  const allowed = candidates.filter(mayRunIn);
  const environment = chosen !== undefined && allowed.includes(chosen) ? chosen : allowed[0];
  const parameters = definition?.parameters ?? [];
  const shownValue = (parameter: RunbookParameter) =>
    values[parameter.name] ?? (parameter.default === undefined ? "" : String(parameter.default));
  const reason = !definition
    ? "nothing is published yet"
    : candidates.length === 0
      ? "it may run in no environment"
      : allowed.length === 0
        ? `you do not have the ${needed.join(" and ")} permission in ${candidates.map(nameOf).join(", ")}`
        : null;
  const reasonId = `${formId}-reason`;
  const mayOverride = environment !== undefined && (permissions.get(environment)?.has("overrideFreezes") ?? false);

  const targets = useQuery({
    queryKey: ["targets", "all"],
    queryFn: () => api<Page<Target>>("GET", `/targets${query({ limit: 500 })}`),
    staleTime: 60_000,
  });
  const targetsHere = (targets.data?.items ?? []).filter(
    (each) => environment !== undefined && each.environments.includes(environment),
  );

  const submit = async (event: FormEvent) => {
    event.preventDefault();
    if (busy || !environment) return;
    setBusy(true);
    setError(undefined);
    try {
      const created = await api<RunbookRunCreated>(
        "POST",
        `/projects/${encodeURIComponent(project)}/runbooks/${encodeURIComponent(runbook.slug)}/runs`,
        {
          environment,
          // Left empty: the API applies the default, or says the parameter is required.
          parameters: Object.fromEntries(
            parameters.flatMap((parameter) => {
              const value = shownValue(parameter);
              return value === "" ? [] : [[parameter.name, value]];
            }),
          ),
          ...(draft && { draft: true }),
          ...(target !== "" && { targets: [target] }),
          ...(guided && { guidedFailure: true }),
          ...(freezeReason.trim() !== "" && { freezeOverride: freezeReason.trim() }),
        },
      );
      // Nothing typed stays behind in this page's state (a sensitive value least of all).
      setValues({});
      await client.invalidateQueries({ queryKey: ["runbooks", project] });
      navigate(`/tasks/${created.taskId}`);
    } catch (failure) {
      setError(failure);
    } finally {
      setBusy(false);
    }
  };

  const unplaced =
    error instanceof ApiError
      ? [
          error.message,
          ...error.errors
            .filter((issue) => !placed(issue.pointer, parameters))
            .map((issue) => `${issue.pointer ? `${issue.pointer}: ` : ""}${issue.detail}`),
        ].join(" — ")
      : error
        ? describeError(error)
        : undefined;

  const field = (pointer: string) => {
    const problem = problemAt(error, pointer);
    const id = `${formId}${pointer.replaceAll("/", "-")}-problem`;
    return {
      problem,
      id,
      props: problem ? { "aria-invalid": true as const, "aria-describedby": id } : {},
      message: problem ? (
        <span className="field-problem" id={id}>
          {problem}
        </span>
      ) : null,
    };
  };

  const environmentField = field("/environment");
  const targetField = field("/targets");
  return (
    <form className="card" aria-labelledby={`${formId}-title`} onSubmit={(event) => void submit(event)} noValidate>
      <h2 id={`${formId}-title`}>
        Run {draft ? "the draft" : runbook.published ? `version ${runbook.published.version}` : ""}
      </h2>
      {mayEditSomewhere && (
        <label className="inline">
          <input type="checkbox" checked={draft} onChange={(event) => setDraft(event.target.checked)} />
          Run the draft instead of the published version (its environments and parameters)
        </label>
      )}
      {definition && (
        <div className="form-grid">
          <div className="field">
            <label htmlFor={`${formId}-environment`}>Environment</label>
            <select
              id={`${formId}-environment`}
              value={environment ?? ""}
              onChange={(event) => setChosen(event.target.value)}
              disabled={allowed.length === 0}
              {...environmentField.props}
            >
              {candidates.map((slug) => (
                <option key={slug} value={slug} disabled={!mayRunIn(slug)}>
                  {nameOf(slug)}
                  {mayRunIn(slug) ? "" : ` (needs ${needed.join(" and ")})`}
                </option>
              ))}
            </select>
            {environmentField.message}
          </div>
          <div className="field">
            <label htmlFor={`${formId}-target`}>Target (optional)</label>
            <select
              id={`${formId}-target`}
              value={target}
              onChange={(event) => setTarget(event.target.value)}
              {...targetField.props}
            >
              <option value="">all, by the steps' roles</option>
              {targetsHere.map((each) => (
                <option key={each.id} value={each.name}>
                  {each.name}
                </option>
              ))}
            </select>
            {targetField.message}
          </div>
          {parameters.map((parameter) => (
            <ParameterField
              key={parameter.name}
              parameter={parameter}
              value={shownValue(parameter)}
              onChange={(value) => setValues((current) => ({ ...current, [parameter.name]: value }))}
              problem={field(`/parameters/${parameter.name}`)}
            />
          ))}
        </div>
      )}
      {definition && (
        <>
          <label className="inline">
            <input type="checkbox" checked={guided} onChange={(event) => setGuided(event.target.checked)} />
            Guided failure: when a step fails, wait for someone to retry it, skip it or abort
          </label>
          {mayOverride && (
            <label>
              Freeze override (only if a deployment freeze covers runbook runs here: the reason, which is audited)
              <input value={freezeReason} onChange={(event) => setFreezeReason(event.target.value)} />
            </label>
          )}
        </>
      )}
      {unplaced && (
        <p className="notice notice-error" role="alert">
          {unplaced}
        </p>
      )}
      <div className="form-actions">
        <button
          type="submit"
          className="button button-primary"
          disabled={busy || reason !== null}
          aria-describedby={reason ? reasonId : undefined}
        >
          {busy ? "Starting…" : draft ? "Run the draft" : "Run"}
        </button>
      </div>
      {reason && (
        <p className="reason" id={reasonId}>
          <span aria-hidden="true">⊘ </span>Run: {reason}
        </p>
      )}
    </form>
  );
}

function ParameterField({
  parameter,
  value,
  onChange,
  problem,
}: {
  parameter: RunbookParameter;
  value: string;
  onChange(value: string): void;
  problem: {
    problem: string | undefined;
    id: string;
    props: Record<string, unknown>;
    message: ReactNode;
  };
}) {
  const hintId = useId();
  const id = useId();
  const label = parameter.label || parameter.name;
  const describedBy = [parameter.description ? hintId : "", problem.problem ? problem.id : ""].join(" ").trim();
  const common = {
    id,
    name: parameter.name,
    "aria-invalid": problem.problem ? true : undefined,
    "aria-describedby": describedBy === "" ? undefined : describedBy,
    "aria-required": parameter.required && parameter.default === undefined ? true : undefined,
  } as const;
  const empty = parameter.required && parameter.default === undefined ? "choose…" : "(not set)";
  return (
    <div className="field">
      <label htmlFor={id}>
        {label}
        {parameter.label && parameter.label !== parameter.name && (
          <span className="small muted mono"> {parameter.name}</span>
        )}
      </label>
      {parameter.type === "choice" ? (
        <select {...common} value={value} onChange={(event) => onChange(event.target.value)}>
          {parameter.default === undefined && <option value="">{empty}</option>}
          {(parameter.choices ?? []).map((choice) => (
            <option key={choice} value={choice}>
              {choice}
            </option>
          ))}
        </select>
      ) : parameter.type === "boolean" ? (
        <select {...common} value={value} onChange={(event) => onChange(event.target.value)}>
          {parameter.default === undefined && <option value="">{empty}</option>}
          <option value="true">true</option>
          <option value="false">false</option>
        </select>
      ) : parameter.sensitive ? (
        // Write-only and uncontrolled: React would copy a controlled value into the markup's
        // value attribute. Never filled in from anything; the browser is asked not to keep it.
        <input
          {...common}
          type="password"
          autoComplete="new-password"
          onChange={(event) => onChange(event.target.value)}
        />
      ) : (
        <input
          {...common}
          type={parameter.type === "number" ? "number" : "text"}
          inputMode={parameter.type === "number" ? "decimal" : undefined}
          min={parameter.min}
          max={parameter.max}
          value={value}
          onChange={(event) => onChange(event.target.value)}
        />
      )}
      {parameter.description && (
        <span className="small muted" id={hintId}>
          {parameter.description}
        </span>
      )}
      {problem.message}
    </div>
  );
}

function Runs({
  project,
  runbook,
  offset,
  nameOf,
  onPage,
}: {
  project: string;
  runbook: string;
  offset: number;
  nameOf(slug: string): string;
  onPage(offset: number): void;
}) {
  const runs = useRunbookRuns(project, runbook, { limit: RUNS_PAGE, offset });
  const titleId = useId();
  return (
    <section aria-labelledby={titleId}>
      <h2 id={titleId}>Runs</h2>
      <ErrorNotice error={runs.error} what="The runs could not be loaded" />
      {runs.isPending && <Loading what="the runs" />}
      {runs.data?.runs.length === 0 && offset === 0 && <p className="empty">Not run yet.</p>}
      {runs.data && runs.data.runs.length > 0 && (
        <div className="table-scroll">
          <table className="data" aria-labelledby={titleId}>
            <thead>
              <tr>
                <th scope="col">Run</th>
                <th scope="col">Environment</th>
                <th scope="col">Version</th>
                <th scope="col">Parameters</th>
                <th scope="col">Run by</th>
              </tr>
            </thead>
            <tbody>
              {runs.data.runs.map((run) => (
                <tr key={run.runId}>
                  <th scope="row">
                    <Link to={`/tasks/${run.taskId}`}>
                      <StateBadge state={run.state as TaskState} />
                    </Link>{" "}
                    <span className="small muted">
                      <RelativeTime at={run.createdAt} />
                    </span>
                  </th>
                  <td>{nameOf(run.environment)}</td>
                  <td>{run.version === null ? <span className="tag">draft</span> : `version ${run.version}`}</td>
                  <td className="mono small">
                    {Object.entries(run.parameters)
                      .map(([name, value]) => `${name}=${value}`)
                      .join(" ")}
                  </td>
                  <td>
                    {run.createdBy}
                    {run.cause && (
                      <div className="small muted">
                        fired: {run.cause}
                        {run.scheduledFor && (
                          <>
                            , due <RelativeTime at={run.scheduledFor} />
                          </>
                        )}
                      </div>
                    )}
                    {run.freezeOverride && <div className="small muted">through freeze {run.freezeOverride}</div>}
                  </td>
                </tr>
              ))}
            </tbody>
          </table>
        </div>
      )}
      {runs.data && (offset > 0 || runs.data.older) && (
        <nav className="form-actions" aria-label="Pages of runs">
          <button
            type="button"
            className="button"
            disabled={offset === 0}
            onClick={() => onPage(Math.max(0, offset - RUNS_PAGE))}
          >
            Newer
          </button>
          <span className="muted" aria-live="polite">
            {offset + 1}–{offset + runs.data.runs.length}
          </span>
          <button
            type="button"
            className="button"
            disabled={!runs.data.older}
            onClick={() => onPage(offset + RUNS_PAGE)}
          >
            Older
          </button>
        </nav>
      )}
    </section>
  );
}

/** A future time: the exact local time, and how far off it is. */
function Upcoming({ at }: { at: string }) {
  const now = useNow();
  return (
    <time dateTime={at}>
      {exactTime(at)} <span className="small muted">({relativeTime(at, Math.min(now, Date.now()))})</span>
    </time>
  );
}

/**
 * The runbook's schedules (ADR 0036) in the environments the caller may view: when each
 * fires (cron in its time zone, the next firing), whether it is paused, and what its last
 * firing did — the run it queued, or why it was refused — with its cause. Pause and Resume
 * for those who may edit runbooks in the schedule's environment (what the API checks).
 */
function Schedules({
  project,
  runbook,
  permissions,
  nameOf,
}: {
  project: string;
  runbook: string;
  permissions: Map<string, Set<Permission>>;
  nameOf(slug: string): string;
}) {
  const client = useQueryClient();
  const titleId = useId();
  const key = ["runbooks", project, runbook, "schedules"];
  const path = `/projects/${encodeURIComponent(project)}/runbooks/${encodeURIComponent(runbook)}/schedules`;
  const schedules = useQuery({
    queryKey: key,
    queryFn: () => api<Schedule[]>("GET", path),
    // A firing changes the next and last firing: read again now and then.
    refetchInterval: 30_000,
  });
  const [busy, setBusy] = useState<string | undefined>();
  const [error, setError] = useState<unknown>();
  const [done, setDone] = useState<string | undefined>();
  const toggle = async (schedule: Schedule) => {
    setBusy(schedule.name);
    setError(undefined);
    setDone(undefined);
    try {
      const verb = schedule.paused ? "resume" : "pause";
      const answer = await api<Schedule>("POST", `${path}/${encodeURIComponent(schedule.name)}/${verb}`);
      client.setQueryData<Schedule[]>(key, (current) =>
        current?.map((each) => (each.id === answer.id ? answer : each)),
      );
      setDone(`Schedule ${schedule.name} ${answer.paused ? "paused" : "resumed"}`);
    } catch (failure) {
      setError(failure);
    } finally {
      setBusy(undefined);
    }
  };
  const items = schedules.data ?? [];
  return (
    <section aria-labelledby={titleId} className="schedules">
      <h2 id={titleId}>Schedules</h2>
      <ErrorNotice error={schedules.error} what="The schedules could not be loaded" />
      {schedules.isPending && <Loading what="the schedules" />}
      {schedules.data && items.length === 0 && <p className="empty">No schedule.</p>}
      {error !== undefined && (
        <p className="notice notice-error" role="alert">
          {describeError(error)}
        </p>
      )}
      <p className="notice-slot" role="status">
        {done}
      </p>
      {items.length > 0 && (
        <div className="table-scroll">
          <table className="data" aria-labelledby={titleId}>
            <thead>
              <tr>
                <th scope="col">Schedule</th>
                <th scope="col">Environment</th>
                <th scope="col">When</th>
                <th scope="col">Next firing</th>
                <th scope="col">Last firing</th>
                <th scope="col">
                  <span className="visually-hidden">Actions</span>
                </th>
              </tr>
            </thead>
            <tbody>
              {items.map((schedule) => {
                const mayChange = permissions.get(schedule.environment)?.has("editRunbooks") ?? false;
                const last = schedule.lastFiring;
                return (
                  <tr key={schedule.id}>
                    <th scope="row">
                      {schedule.name} {schedule.paused && <span className="tag">paused</span>}
                    </th>
                    <td>{nameOf(schedule.environment)}</td>
                    <td>
                      <span className="mono">{schedule.cron}</span>{" "}
                      <span className="small muted">({schedule.timeZone})</span>
                      <div className="small muted">
                        missed firings: {schedule.missed === "runOnce" ? "run once" : "skipped"}
                      </div>
                    </td>
                    <td>
                      {schedule.paused ? (
                        <span className="muted">none while paused</span>
                      ) : schedule.nextRunAt ? (
                        <Upcoming at={schedule.nextRunAt} />
                      ) : (
                        <span className="muted">never again</span>
                      )}
                    </td>
                    <td>
                      {last ? (
                        <>
                          <RelativeTime at={last.scheduledFor} /> <span className="small">({last.cause})</span>
                          <div className="small">
                            {last.taskId ? (
                              <Link to={`/tasks/${last.taskId}`}>queued task {last.taskId}</Link>
                            ) : (
                              <span className="firing-error">refused: {last.error}</span>
                            )}
                          </div>
                        </>
                      ) : (
                        <span className="muted">not fired yet</span>
                      )}
                    </td>
                    <td>
                      {mayChange && (
                        <button
                          type="button"
                          className="button"
                          disabled={busy !== undefined}
                          onClick={() => void toggle(schedule)}
                          aria-label={`${schedule.paused ? "Resume" : "Pause"} schedule ${schedule.name}`}
                        >
                          {busy === schedule.name ? "…" : schedule.paused ? "Resume" : "Pause"}
                        </button>
                      )}
                    </td>
                  </tr>
                );
              })}
            </tbody>
          </table>
        </div>
      )}
    </section>
  );
}
