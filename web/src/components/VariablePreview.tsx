import { useQuery } from "@tanstack/react-query";
import { useId } from "react";
import { useSearchParams } from "react-router";
import type { Process } from "../../../src/domain/process.js";
import { api, query } from "../api/client";
import type { Environment, Page, PreviewCandidate, PreviewScope, Target, VariablePreview } from "../api/types";
import { ErrorNotice, Loading } from "./ErrorNotice";

const MASKED = (
  <span className="muted">
    <span aria-hidden="true">•••••• </span>sensitive (never shown)
  </span>
);

function scopeText(scope: PreviewScope | null, set: string | null): string {
  if (scope === null) return "system (set by Ferry)";
  const parts = [
    ...scope.environments.map((each) => `env: ${each}`),
    ...scope.roles.map((each) => `role: ${each}`),
    ...scope.targets.map((each) => `target: ${each}`),
  ];
  const where = parts.length === 0 ? "everywhere" : parts.join(", ");
  return set ? `${where} (set ${set})` : where;
}

const VERDICT_SIGN: Record<PreviewCandidate["verdict"], string> = {
  won: "✔",
  tied: "=",
  outranked: "✗",
  "not applicable": "–",
};

function Candidates({ candidates }: { candidates: PreviewCandidate[] }) {
  return (
    <ul className="candidates">
      {candidates.map((candidate, index) => (
        // Candidates have no id: their order is the API's (and stable for one answer).
        // biome-ignore lint/suspicious/noArrayIndexKey: see above
        <li key={index}>
          <strong>
            <span aria-hidden="true">{VERDICT_SIGN[candidate.verdict]} </span>
            {candidate.verdict}
          </strong>
          : <span className="mono">{candidate.sensitive ? "••••••" : candidate.value}</span> —{" "}
          {scopeText(candidate.scope, candidate.set)} ({candidate.rank} scope). {candidate.reason}
        </li>
      ))}
    </ul>
  );
}

/**
 * The variable preview (issue 16, `ferry vars show`): for an environment, and optionally a
 * target of it and a step, each variable's effective value, the scope that won and, for a
 * name asked about, every candidate and why it lost. Sensitive values come masked from the
 * API. It needs no release. The choices live in the address (pe, pt, ps, explain).
 */
export function VariablePreviewSection({ project, environments }: { project: string; environments: Environment[] }) {
  const [search, setSearch] = useSearchParams();
  const environmentId = useId();
  const targetId = useId();
  const stepId = useId();
  const environment = search.get("pe") ?? "";
  const target = search.get("pt") ?? "";
  const step = search.get("ps") ?? "";
  const explain = search.get("explain") ?? "";
  const set = (changes: Record<string, string>) => {
    const next = new URLSearchParams(search);
    for (const [name, value] of Object.entries(changes)) {
      if (value === "") next.delete(name);
      else next.set(name, value);
    }
    setSearch(next, { replace: true });
  };
  const targets = useQuery({
    queryKey: ["targets", "all"],
    queryFn: () => api<Page<Target>>("GET", `/targets${query({ limit: 500 })}`),
    enabled: environment !== "",
  });
  const process = useQuery({
    queryKey: ["process", project],
    queryFn: () => api<Process>("GET", `/projects/${encodeURIComponent(project)}/process`),
  });
  const preview = useQuery({
    queryKey: ["variable-preview", project, environment, target, step],
    queryFn: () =>
      api<VariablePreview>(
        "GET",
        `/projects/${encodeURIComponent(project)}/variable-preview${query({ environment, target, step })}`,
      ),
    enabled: environment !== "",
  });
  const targetsHere = (targets.data?.items ?? []).filter((each) => each.environments.includes(environment));
  const data = preview.data;

  return (
    <>
      <h2 id="preview-title">Preview</h2>
      <p className="small muted">
        The value each variable would have in a deployment, and which scope won. No release is needed; sensitive values
        stay masked.
      </p>
      <form className="filters" aria-label="Preview the variables" onSubmit={(event) => event.preventDefault()}>
        <label htmlFor={environmentId}>
          Environment
          <select id={environmentId} value={environment} onChange={(event) => set({ pe: event.target.value, pt: "" })}>
            <option value="">choose an environment</option>
            {environments.map((each) => (
              <option key={each.id} value={each.slug}>
                {each.name}
              </option>
            ))}
          </select>
        </label>
        <label htmlFor={targetId}>
          Target
          <select
            id={targetId}
            value={target}
            disabled={environment === ""}
            onChange={(event) => set({ pt: event.target.value })}
          >
            <option value="">any (no target)</option>
            {targetsHere.map((each) => (
              <option key={each.id} value={each.slug}>
                {each.name}
              </option>
            ))}
          </select>
        </label>
        <label htmlFor={stepId}>
          Step
          <select
            id={stepId}
            value={step}
            disabled={environment === ""}
            onChange={(event) => set({ ps: event.target.value })}
          >
            <option value="">any (no step)</option>
            {(process.data?.steps ?? []).map((each) => (
              <option key={each.name} value={each.name}>
                {each.name}
              </option>
            ))}
          </select>
        </label>
      </form>
      {environment === "" && <p className="empty">Choose an environment to see the values a deployment would use.</p>}
      {preview.isPending && environment !== "" && <Loading what="the preview" />}
      <ErrorNotice error={preview.error} what="The preview could not be made" />
      {data && data.ambiguous.length > 0 && (
        <div className="notice notice-error" role="alert">
          <p>A deployment here would fail: these names have values of equal rank.</p>
          {data.ambiguous.map((each) => (
            <div key={each.name}>
              <p>
                <strong className="mono">{each.name}</strong>: {each.message}
              </p>
              <Candidates candidates={each.candidates} />
            </div>
          ))}
        </div>
      )}
      {data && (
        <div className="table-scroll">
          <table className="data" aria-labelledby="preview-title">
            <thead>
              <tr>
                <th scope="col">Name</th>
                <th scope="col">Effective value</th>
                <th scope="col">Won by</th>
                <th scope="col">Explain</th>
              </tr>
            </thead>
            <tbody>
              {data.variables.map((variable) => {
                const open = explain === variable.name;
                return (
                  <tr key={variable.name}>
                    <th scope="row" className="mono">
                      {variable.name}
                    </th>
                    <td className="mono value-cell">{variable.sensitive ? MASKED : variable.value}</td>
                    <td className="small">
                      {variable.rank === "system" ? "system" : `${variable.rank} scope`}
                      {variable.rank !== "system" && `: ${scopeText(variable.scope, variable.set)}`}
                      {open && variable.candidates.length > 0 && <Candidates candidates={variable.candidates} />}
                    </td>
                    <td>
                      {variable.candidates.length > 0 && (
                        <button
                          type="button"
                          className="button button-small"
                          aria-expanded={open}
                          aria-label={`${open ? "Hide" : "Why?"} ${variable.name}`}
                          onClick={() => set({ explain: open ? "" : variable.name })}
                        >
                          {open ? "Hide" : "Why?"}
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
    </>
  );
}
