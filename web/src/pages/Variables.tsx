import { useQuery, useQueryClient } from "@tanstack/react-query";
import { useId, useMemo, useState } from "react";
import { useParams, useSearchParams } from "react-router";
import { api, query } from "../api/client";
import { useEnvironments, useProgression, useProject } from "../api/hooks";
import type { Environment, Page, Variable } from "../api/types";
import { Breadcrumbs } from "../components/Breadcrumbs";
import { DeleteButton } from "../components/ConfirmButton";
import { ErrorNotice, Loading } from "../components/ErrorNotice";
import { FormError, SlugSelect, SubmitButton, useSubmit } from "../components/Forms";
import { Tags } from "../components/Tags";
import { VariablePreviewSection } from "../components/VariablePreview";
import { splitList } from "../lib/lists";
import { useTitle } from "../lib/title";

/**
 * A project's variables with their scopes. Sensitive values are write-only: the API never
 * returns them, so the editor shows that one is set and takes a new one, never the old.
 */
export function VariablesPage() {
  const { project: slug = "" } = useParams();
  const [search, setSearch] = useSearchParams();
  const client = useQueryClient();
  const project = useProject(slug);
  useTitle(`${project.data?.name ?? slug} variables`);
  const environments = useEnvironments();
  const progression = useProgression(slug, { limit: 1, offset: 0 });
  const variables = useQuery({
    queryKey: ["variables", slug],
    queryFn: () =>
      api<Page<Variable>>("GET", `/projects/${encodeURIComponent(slug)}/variables${query({ limit: 500 })}`),
  });
  const [adding, setAdding] = useState(false);
  const [editing, setEditing] = useState<string | undefined>();
  const environmentFilter = search.get("env") ?? "";
  const text = search.get("q") ?? "";
  const mayEdit = progression.data?.environments.some((each) => each.permissions.includes("editVariables")) ?? false;

  const shown = useMemo(
    () =>
      (variables.data?.items ?? []).filter(
        (variable) =>
          (environmentFilter === "" ||
            variable.scope.environments.length === 0 ||
            variable.scope.environments.includes(environmentFilter)) &&
          variable.name.toLowerCase().includes(text.toLowerCase()),
      ),
    [variables.data, environmentFilter, text],
  );
  const setFilter = (name: string, value: string) => {
    const next = new URLSearchParams(search);
    if (value === "") next.delete(name);
    else next.set(name, value);
    setSearch(next, { replace: true });
  };
  // The list is fresh before the form closes: the row never shows the old value after Save.
  const saved = async () => {
    await client.invalidateQueries({ queryKey: ["variables", slug] });
    setAdding(false);
    setEditing(undefined);
  };
  const allEnvironments = environments.data?.items ?? [];

  return (
    <section className="page" aria-labelledby="variables-title">
      <Breadcrumbs
        trail={[
          { label: "Dashboard", to: "/" },
          { label: project.data?.name ?? slug, to: `/projects/${slug}` },
          { label: "Variables" },
        ]}
      />
      <div className="page-header">
        <h1 id="variables-title">Variables of {project.data?.name ?? slug}</h1>
        <div className="actions">
          {mayEdit && !adding && (
            <button type="button" className="button button-primary" onClick={() => setAdding(true)}>
              Add variable
            </button>
          )}
        </div>
      </div>
      <p className="small muted">
        A release freezes the variables when it is created; re-snapshot a release to give it later changes. The most
        specific scope wins: step &gt; target &gt; role &gt; environment &gt; project.
      </p>
      {adding && (
        <VariableForm project={slug} environments={allEnvironments} onDone={saved} onCancel={() => setAdding(false)} />
      )}
      <form className="filters" aria-label="Filter the variables" onSubmit={(event) => event.preventDefault()}>
        <label>
          Name
          <input type="search" value={text} onChange={(event) => setFilter("q", event.target.value)} />
        </label>
        <SlugSelect
          label="Applies in"
          value={environmentFilter}
          onChange={(slug) => setFilter("env", slug)}
          items={allEnvironments}
          none="any environment"
        />
      </form>
      {variables.isPending && <Loading what="the variables" />}
      <ErrorNotice error={variables.error} what="The variables could not be loaded" />
      {variables.data && shown.length === 0 && <p className="empty">No variable here.</p>}
      {shown.length > 0 && (
        <div className="table-scroll">
          <table className="data" aria-labelledby="variables-title">
            <thead>
              <tr>
                <th scope="col">Name</th>
                <th scope="col">Value</th>
                <th scope="col">Scope</th>
                {mayEdit && <th scope="col">Actions</th>}
              </tr>
            </thead>
            <tbody>
              {shown.map((variable) =>
                editing === variable.id ? (
                  <tr key={variable.id}>
                    <td colSpan={mayEdit ? 4 : 3}>
                      <VariableForm
                        project={slug}
                        environments={allEnvironments}
                        variable={variable}
                        onDone={saved}
                        onCancel={() => setEditing(undefined)}
                      />
                    </td>
                  </tr>
                ) : (
                  <tr key={variable.id}>
                    <th scope="row" className="mono">
                      {variable.name}
                    </th>
                    <td className="mono value-cell">
                      {variable.sensitive ? (
                        <span className="muted">
                          <span aria-hidden="true">•••••• </span>sensitive, set (write-only)
                        </span>
                      ) : (
                        variable.value
                      )}
                    </td>
                    <td>
                      <Scope variable={variable} />
                    </td>
                    {mayEdit && (
                      <td>
                        <div className="form-actions">
                          <button
                            type="button"
                            className="button button-small"
                            onClick={() => setEditing(variable.id)}
                            aria-label={`Edit ${variable.name}`}
                          >
                            Edit
                          </button>
                          <DeleteButton
                            title={`Delete ${variable.name}?`}
                            path={`/projects/${encodeURIComponent(slug)}/variables/${encodeURIComponent(variable.id)}`}
                            onDeleted={saved}
                          >
                            <p>New releases will not have it; releases already made keep their snapshot.</p>
                          </DeleteButton>
                        </div>
                      </td>
                    )}
                  </tr>
                ),
              )}
            </tbody>
          </table>
        </div>
      )}
      <VariablePreviewSection project={slug} environments={allEnvironments} />
    </section>
  );
}

function Scope({ variable }: { variable: Variable }) {
  const { environments, roles, targets } = variable.scope;
  if (environments.length + roles.length + targets.length === 0) return <span className="muted">everywhere</span>;
  return (
    <>
      <Tags items={environments} prefix="env: " />
      {environments.length > 0 && roles.length + targets.length > 0 && " "}
      <Tags items={roles} prefix="role: " />
      {roles.length > 0 && targets.length > 0 && " "}
      <Tags items={targets} prefix="target: " />
    </>
  );
}

function VariableForm({
  project,
  environments,
  variable,
  onDone,
  onCancel,
}: {
  project: string;
  environments: Environment[];
  variable?: Variable;
  onDone(): Promise<void>;
  onCancel(): void;
}) {
  const [name, setName] = useState(variable?.name ?? "");
  const [value, setValue] = useState(variable && !variable.sensitive ? variable.value : "");
  const [sensitive, setSensitive] = useState(variable?.sensitive ?? false);
  const [scopeEnvironments, setScopeEnvironments] = useState<string[]>(variable?.scope.environments ?? []);
  const [roles, setRoles] = useState(variable?.scope.roles.join(", ") ?? "");
  const [targets, setTargets] = useState(variable?.scope.targets.join(", ") ?? "");
  const valueHelp = useId();
  const keepsSecret = variable?.sensitive === true;

  const { error, busy, submit } = useSubmit(async () => {
    const scope = { environments: scopeEnvironments, roles: splitList(roles), targets: splitList(targets) };
    if (variable) {
      const body: Record<string, unknown> = { scope };
      if (name !== variable.name) body.name = name;
      if (sensitive !== variable.sensitive) body.sensitive = sensitive;
      // A sensitive value left empty keeps the stored one (it is never sent to the browser).
      if (!(keepsSecret && value === "")) body.value = value;
      await api("PATCH", `/projects/${encodeURIComponent(project)}/variables/${encodeURIComponent(variable.id)}`, body);
    } else {
      await api("POST", `/projects/${encodeURIComponent(project)}/variables`, { name, value, sensitive, scope });
    }
    setValue("");
    await onDone();
  });

  return (
    <form
      className="card variable-form"
      onSubmit={submit}
      aria-label={variable ? `Edit ${variable.name}` : "Add a variable"}
    >
      <div className="form-grid">
        <label>
          Name
          <input name="name" required value={name} onChange={(event) => setName(event.target.value)} />
        </label>
        <label>
          Value
          <textarea
            name="value"
            value={value}
            aria-describedby={valueHelp}
            placeholder={keepsSecret ? "unchanged" : ""}
            autoComplete="off"
            onChange={(event) => setValue(event.target.value)}
          />
          <span id={valueHelp} className="small muted">
            {keepsSecret
              ? "Sensitive: the stored value is never shown. Leave empty to keep it, or type a new one."
              : sensitive
                ? "Sensitive values are encrypted at rest, masked in logs and never shown again."
                : "Templates like #{Other.Variable} are allowed."}
          </span>
        </label>
      </div>
      <label className="inline">
        <input type="checkbox" checked={sensitive} onChange={(event) => setSensitive(event.target.checked)} />
        Sensitive (write-only)
      </label>
      <fieldset>
        <legend>Environments (none: all)</legend>
        {environments.map((environment) => (
          <label key={environment.id} className="inline">
            <input
              type="checkbox"
              checked={scopeEnvironments.includes(environment.slug)}
              onChange={(event) =>
                setScopeEnvironments((current) =>
                  event.target.checked
                    ? [...current, environment.slug]
                    : current.filter((each) => each !== environment.slug),
                )
              }
            />
            {environment.name}
          </label>
        ))}
      </fieldset>
      <div className="form-grid">
        <label>
          Roles (comma-separated)
          <input name="roles" value={roles} onChange={(event) => setRoles(event.target.value)} />
        </label>
        <label>
          Targets (comma-separated)
          <input name="targets" value={targets} onChange={(event) => setTargets(event.target.value)} />
        </label>
      </div>
      <FormError error={error} />
      <div className="form-actions">
        <SubmitButton busy={busy} label={variable ? "Save" : "Add variable"} />
        <button type="button" className="button" onClick={onCancel}>
          Cancel
        </button>
      </div>
    </form>
  );
}
