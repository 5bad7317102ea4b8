import { useQuery, useQueryClient } from "@tanstack/react-query";
import { useCallback, useMemo, useRef, useState } from "react";
import { Link, useParams } from "react-router";
import { api } from "../api/client";
import { permissionsIn, useProgression, useProject } from "../api/hooks";
import type { Artifact, Decision, Permission, Task, TaskDetail, TaskRunbookRun, TaskState } from "../api/types";
import { Breadcrumbs } from "../components/Breadcrumbs";
import { ConfirmButton } from "../components/ConfirmButton";
import { ErrorNotice, Loading } from "../components/ErrorNotice";
import { LogViewer, type LogViewerHandle } from "../components/LogViewer";
import { RelativeTime } from "../components/RelativeTime";
import { StateBadge } from "../components/StateBadge";
import type { LogModel } from "../lib/logModel";
import { stepDuration } from "../lib/logModel";
import { formatDuration, useSecondsWhile } from "../lib/time";
import { useTitle } from "../lib/title";
import { useTaskLog } from "../lib/useTaskLog";

const TERMINAL: ReadonlySet<TaskState> = new Set(["succeeded", "failed", "cancelled", "interrupted"]);

/** The permission that starts a task of the kind, which also cancels or aborts it (as src/api/tasks.ts decides). */
function startPermission(kind: string): Permission {
  return kind === "runbook" ? "runRunbooks" : "deploy";
}

/** The permission each answer needs (src/api/tasks.ts decides the same). */
function answerNeeds(answer: string, kind: string): Permission {
  switch (answer) {
    case "approve":
    case "reject":
      return "approve";
    case "retry":
    case "skip":
    case "exclude":
      return "resolveFailures";
    default:
      return startPermission(kind);
  }
}

const ANSWER_WORDS: Record<string, string> = {
  approve: "Approve",
  reject: "Reject",
  retry: "Retry the step",
  skip: "Skip the step",
  exclude: "Exclude the target from this deployment",
  abort: "Abort the deployment",
};

export function TaskPage() {
  const { task: taskId = "" } = useParams();
  const client = useQueryClient();
  const task = useQuery({
    queryKey: ["task", taskId],
    queryFn: () => api<TaskDetail>("GET", `/tasks/${encodeURIComponent(taskId)}`),
    // The live stream says when it changes; this only covers changes on another server node.
    refetchInterval: (current) => (current.state.data && TERMINAL.has(current.state.data.state) ? false : 10_000),
  });
  const data = task.data;
  useTitle(data ? data.title : "Task");
  const project = useProject(data?.project);
  const progression = useProgression(data?.project, { limit: 1, offset: 0 });
  const permissions = permissionsIn(progression.data, data?.environment);
  const environmentName = progression.data?.environments.find((each) => each.environment.id === data?.environment)
    ?.environment.name;
  const log = useTaskLog(taskId, Boolean(data));
  const [folded, setFolded] = useState<ReadonlySet<number>>(new Set());
  const logHandle = useRef<LogViewerHandle | undefined>(undefined);
  const onFold = useCallback((step: number, fold: boolean) => {
    setFolded((current) => {
      const next = new Set(current);
      if (fold) next.add(step);
      else next.delete(step);
      return next;
    });
  }, []);

  if (task.isPending) return <Loading what="the task" />;
  if (task.error || !data) {
    return (
      <section className="page">
        <h1>Task</h1>
        <ErrorNotice error={task.error} what="The task could not be loaded" />
      </section>
    );
  }

  const refresh = () => client.invalidateQueries({ queryKey: ["task", taskId] });
  const projectName = project.data?.name ?? "project";
  const may = (permission: Permission) => permissions === undefined || permissions.has(permission);
  const running = !TERMINAL.has(data.state);
  return (
    <section className="page page-wide" aria-labelledby="task-title">
      <Breadcrumbs
        trail={[
          { label: "Dashboard", to: "/" },
          ...(project.data ? [{ label: projectName, to: `/projects/${project.data.slug}` }] : []),
          ...(project.data && data.runbookRun
            ? [
                { label: "Runbooks", to: `/projects/${project.data.slug}/runbooks` },
                {
                  label: data.runbookRun.runbookName,
                  to: `/projects/${project.data.slug}/runbooks/${encodeURIComponent(data.runbookRun.runbook)}`,
                },
              ]
            : []),
          { label: `Task ${data.id}` },
        ]}
      />
      <div className="page-header">
        <h1 id="task-title">{data.title}</h1>
        <StateBadge state={data.state} />
        <div className="actions">
          {running && (
            <ConfirmButton
              label={data.cancelRequested ? "Cancelling…" : "Cancel task"}
              title={`Cancel “${data.title}”?`}
              confirmLabel="Cancel the task"
              className="button button-danger"
              disabled={data.cancelRequested || !may(startPermission(data.kind))}
              onConfirm={async () => {
                await api("POST", `/tasks/${encodeURIComponent(taskId)}/cancel`);
                await refresh();
              }}
            >
              <p>A running step is stopped and what it started is cleaned up. Traffic stays where it is.</p>
            </ConfirmButton>
          )}
        </div>
      </div>
      <p className="summary">
        Started by {data.createdBy} · queued <RelativeTime at={data.createdAt} />
        {data.startedAt && (
          <>
            {" "}
            · started <RelativeTime at={data.startedAt} />
          </>
        )}
        {data.finishedAt && (
          <>
            {" "}
            · ended <RelativeTime at={data.finishedAt} /> after{" "}
            {formatDuration(Date.parse(data.finishedAt) - Date.parse(data.startedAt ?? data.createdAt))}
          </>
        )}
        {environmentName && <> · environment {environmentName}</>}
      </p>
      {data.runbookRun && project.data && <RunbookRunFacts project={project.data.slug} run={data.runbookRun} />}
      {data.error && (
        <p className="notice notice-error" role="alert">
          <strong>Failed:</strong> {data.error}
        </p>
      )}
      {data.state === "waiting" && (
        <Decisions taskId={taskId} kind={data.kind} may={may} environment={environmentName} onAnswered={refresh} />
      )}
      <div className="task-layout">
        <LogViewer
          model={log.model}
          version={log.version}
          status={log.status}
          folded={folded}
          onFold={onFold}
          handle={logHandle}
        />
        <aside aria-label="Steps and traffic">
          <Timeline
            model={log.model}
            version={log.version}
            task={data}
            folded={folded}
            onShow={(step) => logHandle.current?.showStep(step)}
          />
          <Traffic model={log.model} version={log.version} />
          <Artifacts taskId={taskId} state={data.state} />
        </aside>
      </div>
    </section>
  );
}

function Decisions({
  taskId,
  kind,
  may,
  environment,
  onAnswered,
}: {
  taskId: string;
  kind: string;
  may(permission: Permission): boolean;
  environment: string | undefined;
  onAnswered(): Promise<unknown>;
}) {
  const decisions = useQuery({
    queryKey: ["task", taskId, "decisions"],
    queryFn: () => api<Decision[]>("GET", `/tasks/${encodeURIComponent(taskId)}/decisions`),
  });
  const open = (decisions.data ?? []).filter((decision) => decision.decision === null);
  return (
    <>
      <ErrorNotice error={decisions.error} what="The task's questions could not be loaded" />
      {open.map((decision) => (
        <section key={decision.id} className="notice notice-wait decision" aria-label="Waiting for you">
          <p>
            <strong>{decision.kind === "approval" ? "Approval needed" : "A step failed: what now?"}</strong> —{" "}
            {decision.prompt}
          </p>
          <div className="form-actions">
            {decision.allowed.map((answer) => {
              const needs = answerNeeds(answer, kind);
              const words =
                answer === "abort" && kind === "runbook" ? "Abort the run" : (ANSWER_WORDS[answer] ?? answer);
              const allowed = may(needs);
              const reasonId = `${decision.id}-${answer}-reason`;
              return (
                <span key={answer}>
                  <ConfirmButton
                    label={words}
                    title={`${words}?`}
                    className={`button ${answer === "approve" || answer === "retry" ? "button-primary" : ""}`}
                    disabled={!allowed}
                    describedBy={allowed ? undefined : reasonId}
                    withComment
                    onConfirm={async (comment) => {
                      await api("POST", `/tasks/${encodeURIComponent(taskId)}/decisions`, {
                        decision: answer,
                        ...(comment.trim() !== "" && { comment: comment.trim() }),
                      });
                      await onAnswered();
                    }}
                  >
                    <p>{decision.prompt}</p>
                  </ConfirmButton>
                  {!allowed && (
                    <span id={reasonId} className="reason">
                      {" "}
                      needs the {needs} permission{environment ? ` in ${environment}` : ""}
                    </span>
                  )}
                </span>
              );
            })}
          </div>
        </section>
      ))}
    </>
  );
}

function Timeline({
  model,
  version,
  task,
  folded,
  onShow,
}: {
  model: LogModel;
  version: number;
  task: Task;
  folded: ReadonlySet<number>;
  onShow(step: number): void;
}) {
  const now = useSecondsWhile(!TERMINAL.has(task.state));
  // biome-ignore lint/correctness/useExhaustiveDependencies: `version` says the model's steps changed
  const steps = useMemo(() => [...model.steps], [model, version]);
  if (steps.length === 0) return null;
  const start = Date.parse(steps[0]?.startedAt ?? task.createdAt);
  const end = task.finishedAt ? Date.parse(task.finishedAt) : Math.max(now, Date.parse(steps.at(-1)?.startedAt ?? ""));
  const span = Math.max(1, end - start);
  return (
    <section className="card" aria-labelledby="timeline-title">
      <h2 id="timeline-title">Steps</h2>
      <ol className="timeline">
        {steps.map((step) => {
          const duration = stepDuration(step, now, task.finishedAt, task.state);
          const outcome =
            step.outcome === "running" && TERMINAL.has(task.state)
              ? "stopped"
              : step.outcome === "running" && task.state === "waiting"
                ? "waiting"
                : step.outcome;
          const left = ((Date.parse(step.startedAt) - start) / span) * 100;
          const width = (duration / span) * 100;
          return (
            <li key={step.index}>
              <button type="button" onClick={() => onShow(step.index)} aria-describedby={`step-${step.index}-state`}>
                <span className="timeline-head">
                  <span>
                    <span aria-hidden="true">
                      {outcome === "succeeded"
                        ? "✔ "
                        : outcome === "failed"
                          ? "✖ "
                          : outcome === "waiting"
                            ? "⏸ "
                            : "⟳ "}
                    </span>
                    {step.name}
                    {folded.has(step.index) && <span className="muted small"> (folded)</span>}
                  </span>
                  <span className="muted">{formatDuration(duration)}</span>
                </span>
                <span id={`step-${step.index}-state`} className="visually-hidden">
                  {outcome}
                </span>
                <span className="timeline-bar" aria-hidden="true">
                  <span
                    className={`bar-${outcome}`}
                    style={{ left: `${Math.max(0, left)}%`, width: `${Math.max(0.5, Math.min(100, width))}%` }}
                  />
                </span>
              </button>
            </li>
          );
        })}
      </ol>
    </section>
  );
}

/** What a blue/green switch wrote about traffic: the switch itself and requests per colour. */
const TRAFFIC_LINE =
  /^(switched route |traffic: |traffic during this deployment|bake failed|colour \S+ (drained|still had))/;

function Traffic({ model, version }: { model: LogModel; version: number }) {
  // biome-ignore lint/correctness/useExhaustiveDependencies: `version` says the model's lines changed
  const lines = useMemo(() => [...model.matching(TRAFFIC_LINE)], [model, version]);
  if (lines.length === 0) return null;
  return (
    <section className="card" aria-labelledby="traffic-title">
      <h2 id="traffic-title">Traffic</h2>
      <ul className="traffic">
        {lines.map((line) => (
          <li key={line.line} className={line.level === "warn" ? "traffic-warn" : undefined}>
            <span className="muted small">{line.at.slice(11, 19)}</span> {line.text}
          </li>
        ))}
      </ul>
      <p className="small muted">
        From the deployment's log: the switch (the commit point) and the requests each colour served.
      </p>
    </section>
  );
}

/** What a runbook run ran: the runbook, its version (or the draft), where, and with which parameters (sensitive ones masked by the API). */
function RunbookRunFacts({ project, run }: { project: string; run: TaskRunbookRun }) {
  const parameters = Object.entries(run.parameters);
  return (
    <dl className="facts runbook-run" aria-label="What this run ran">
      <dt>Runbook</dt>
      <dd>
        <Link to={`/projects/${project}/runbooks/${encodeURIComponent(run.runbook)}`}>{run.runbookName}</Link>,{" "}
        {run.version === null ? "its draft (as it was when the run was requested)" : `published version ${run.version}`}
      </dd>
      <dt>Parameters</dt>
      <dd className="mono">
        {parameters.length === 0
          ? "none"
          : parameters.map(([name, value]) => (
              <span key={name} className="parameter">
                {name}={value}{" "}
              </span>
            ))}
      </dd>
      {run.targets && (
        <>
          <dt>Targets</dt>
          <dd>{run.targets.join(", ")}</dd>
        </>
      )}
      {run.freezeOverride && (
        <>
          <dt>Freeze overridden</dt>
          <dd>{run.freezeOverride}</dd>
        </>
      )}
    </dl>
  );
}

/** A size in bytes as people read it: 1.5 MiB, 312 KiB, 17 bytes. */
function formatBytes(bytes: number): string {
  if (bytes < 1024) return `${bytes} ${bytes === 1 ? "byte" : "bytes"}`;
  const units = ["KiB", "MiB", "GiB", "TiB"];
  let value = bytes / 1024;
  let unit = 0;
  while (value >= 1024 && unit < units.length - 1) {
    value /= 1024;
    unit++;
  }
  return `${value >= 100 ? value.toFixed(0) : value.toFixed(1)} ${units[unit]}`;
}

/**
 * The files the task's steps attached (ADR 0037): name, size, SHA-256 and a download through
 * the API (which streams them, and answers only those who may view the task). Steps attach
 * them when they end, so the list is read again while the task runs and once when it ends.
 */
function Artifacts({ taskId, state }: { taskId: string; state: TaskState }) {
  const running = !TERMINAL.has(state);
  const artifacts = useQuery({
    // The state in the key: the list is read again when the task ends.
    queryKey: ["task", taskId, "artifacts", running ? "running" : state],
    queryFn: () => api<Artifact[]>("GET", `/tasks/${encodeURIComponent(taskId)}/artifacts`),
    refetchInterval: running ? 5_000 : false,
  });
  const items = artifacts.data ?? [];
  return (
    <section className="card" aria-labelledby="artifacts-title">
      <h2 id="artifacts-title">Artifacts</h2>
      <ErrorNotice error={artifacts.error} what="The artifacts could not be loaded" />
      {artifacts.isPending && <Loading what="the artifacts" />}
      {artifacts.data && items.length === 0 && (
        <p className="empty">{running ? "None attached yet." : "No step attached a file."}</p>
      )}
      {items.length > 0 && (
        <ul className="artifacts-list">
          {items.map((artifact) => (
            <li key={artifact.id}>
              <a href={`/api/v1/artifacts/${encodeURIComponent(artifact.id)}/content`} download={artifact.name}>
                {artifact.name}
              </a>{" "}
              <span className="small">{formatBytes(artifact.size)}</span>
              <div className="small muted">
                from step {artifact.step}
                {artifact.target ? ` on ${artifact.target}` : ""} · <RelativeTime at={artifact.createdAt} />
              </div>
              <div className="small mono sha256">
                <span className="muted">SHA-256 </span>
                {artifact.sha256}
              </div>
            </li>
          ))}
        </ul>
      )}
    </section>
  );
}
