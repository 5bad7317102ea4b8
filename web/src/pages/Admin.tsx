import { useQuery, useQueryClient } from "@tanstack/react-query";
import { type FormEvent, type ReactNode, useState } from "react";
import { NavLink, useParams } from "react-router";
import { api, describeError, query } from "../api/client";
import type { AccessRole, Page, Permission, Team, User } from "../api/types";
import { ConfirmButton } from "../components/ConfirmButton";
import { ErrorNotice, Loading } from "../components/ErrorNotice";
import { RelativeTime } from "../components/RelativeTime";
import { Tags } from "../components/Tags";
import { useTitle } from "../lib/title";
import { useUser } from "../session";

const SECTIONS = { users: "Users", teams: "Teams", roles: "Roles" } as const;
type Section = keyof typeof SECTIONS;

const PERMISSIONS: Permission[] = [
  "view",
  "deploy",
  "approve",
  "resolveFailures",
  "editProcess",
  "editVariables",
  "viewSensitiveNames",
  "runRunbooks",
  "administer",
];

/** Users, teams and roles (administrators: the API refuses everyone else). */
export function AdminPage() {
  const { section = "users" } = useParams();
  const current: Section = section in SECTIONS ? (section as Section) : "users";
  useTitle(SECTIONS[current]);
  const user = useUser();
  return (
    <section className="page" aria-labelledby="admin-title">
      <h1 id="admin-title">Users, teams and roles</h1>
      <nav aria-label="Administration">
        <ul className="tabs">
          {Object.entries(SECTIONS).map(([path, label]) => (
            <li key={path}>
              <NavLink to={`/admin/${path}`}>{label}</NavLink>
            </li>
          ))}
        </ul>
      </nav>
      {!user.isAdmin && (
        <p className="notice notice-error" role="alert">
          Only administrators manage users, teams and roles.
        </p>
      )}
      {current === "users" && <Users selfId={user.id} />}
      {current === "teams" && <Teams />}
      {current === "roles" && <Roles />}
    </section>
  );
}

function useList<T>(path: string) {
  return useQuery({
    queryKey: ["admin", path],
    queryFn: () => api<Page<T>>("GET", `${path}${query({ limit: 500 })}`),
  });
}

/** A form that reports the API's refusal beside it and resets after success. */
function FormCard({
  title,
  submitLabel,
  onSubmit,
  children,
}: {
  title: string;
  submitLabel: string;
  onSubmit(): Promise<unknown>;
  children: ReactNode;
}) {
  const [error, setError] = useState<string | undefined>();
  const [busy, setBusy] = useState(false);
  const submit = async (event: FormEvent<HTMLFormElement>) => {
    event.preventDefault();
    const form = event.currentTarget;
    setBusy(true);
    setError(undefined);
    try {
      await onSubmit();
      form.reset();
    } catch (failure) {
      setError(describeError(failure));
    } finally {
      setBusy(false);
    }
  };
  return (
    <form className="card" aria-label={title} onSubmit={(event) => void submit(event)}>
      <h2>{title}</h2>
      {children}
      {error && (
        <p className="notice notice-error" role="alert">
          {error}
        </p>
      )}
      <div className="form-actions">
        <button type="submit" className="button button-primary" disabled={busy}>
          {busy ? "Saving…" : submitLabel}
        </button>
      </div>
    </form>
  );
}

function Users({ selfId }: { selfId: string }) {
  const client = useQueryClient();
  const users = useList<User>("/users");
  const [username, setUsername] = useState("");
  const [displayName, setDisplayName] = useState("");
  const [password, setPassword] = useState("");
  const [isAdmin, setIsAdmin] = useState(false);
  const [rowError, setRowError] = useState<string | undefined>();
  const refresh = () => client.invalidateQueries({ queryKey: ["admin", "/users"] });
  const change = async (user: User, body: Partial<Pick<User, "isAdmin" | "disabled">>) => {
    setRowError(undefined);
    try {
      await api("PATCH", `/users/${encodeURIComponent(user.id)}`, body);
      await refresh();
    } catch (failure) {
      setRowError(describeError(failure));
    }
  };
  return (
    <>
      {users.isPending && <Loading what="the users" />}
      <ErrorNotice error={users.error} what="The users could not be loaded" />
      {rowError && (
        <p className="notice notice-error" role="alert">
          {rowError}
        </p>
      )}
      {users.data && (
        <div className="table-scroll">
          <table className="data" aria-label="Users">
            <thead>
              <tr>
                <th scope="col">User</th>
                <th scope="col">Administrator</th>
                <th scope="col">Status</th>
                <th scope="col">Created</th>
                <th scope="col">Actions</th>
              </tr>
            </thead>
            <tbody>
              {users.data.items.map((user) => (
                <tr key={user.id}>
                  <th scope="row">
                    {user.displayName}
                    <div className="small muted mono">{user.username}</div>
                  </th>
                  <td>{user.isAdmin ? "yes" : "no"}</td>
                  <td>{user.disabled ? "⊘ disabled" : "active"}</td>
                  <td>
                    <RelativeTime at={user.createdAt} />
                  </td>
                  <td>
                    {user.id === selfId ? (
                      <span className="muted small">you</span>
                    ) : (
                      <div className="form-actions">
                        <button
                          type="button"
                          className="button button-small"
                          onClick={() => void change(user, { disabled: !user.disabled })}
                        >
                          {user.disabled ? `Enable ${user.username}` : `Disable ${user.username}`}
                        </button>
                        <button
                          type="button"
                          className="button button-small"
                          onClick={() => void change(user, { isAdmin: !user.isAdmin })}
                        >
                          {user.isAdmin ? "Remove administrator" : "Make administrator"}
                        </button>
                        <ConfirmButton
                          label="Delete"
                          title={`Delete ${user.username}?`}
                          className="button button-small button-danger"
                          onConfirm={async () => {
                            await api("DELETE", `/users/${encodeURIComponent(user.id)}`);
                            await refresh();
                          }}
                        >
                          <p>Their sessions end and their API keys stop working.</p>
                        </ConfirmButton>
                      </div>
                    )}
                  </td>
                </tr>
              ))}
            </tbody>
          </table>
        </div>
      )}
      <FormCard
        title="Add a user"
        submitLabel="Add user"
        onSubmit={async () => {
          await api("POST", "/users", {
            username,
            password,
            isAdmin,
            ...(displayName.trim() !== "" && { displayName: displayName.trim() }),
          });
          setUsername("");
          setDisplayName("");
          setPassword("");
          setIsAdmin(false);
          await refresh();
        }}
      >
        <div className="form-grid">
          <label>
            Username
            <input required value={username} onChange={(event) => setUsername(event.target.value)} />
          </label>
          <label>
            Display name
            <input value={displayName} onChange={(event) => setDisplayName(event.target.value)} />
          </label>
          <label>
            Initial password (12 characters or more)
            <input
              type="password"
              required
              minLength={12}
              autoComplete="new-password"
              value={password}
              onChange={(event) => setPassword(event.target.value)}
            />
          </label>
        </div>
        <label className="inline">
          <input type="checkbox" checked={isAdmin} onChange={(event) => setIsAdmin(event.target.checked)} />
          Administrator
        </label>
      </FormCard>
    </>
  );
}

function splitList(text: string): string[] {
  return text
    .split(/[\s,]+/)
    .map((each) => each.trim())
    .filter(Boolean);
}

function Teams() {
  const client = useQueryClient();
  const teams = useList<Team>("/teams");
  const roles = useList<AccessRole>("/roles");
  const [name, setName] = useState("");
  const [members, setMembers] = useState("");
  const [role, setRole] = useState("");
  const [projects, setProjects] = useState("");
  const [environments, setEnvironments] = useState("");
  const refresh = () => client.invalidateQueries({ queryKey: ["admin", "/teams"] });
  return (
    <>
      {teams.isPending && <Loading what="the teams" />}
      <ErrorNotice error={teams.error} what="The teams could not be loaded" />
      {teams.data && teams.data.items.length === 0 && <p className="empty">No team yet.</p>}
      {teams.data && teams.data.items.length > 0 && (
        <div className="table-scroll">
          <table className="data" aria-label="Teams">
            <thead>
              <tr>
                <th scope="col">Team</th>
                <th scope="col">Members</th>
                <th scope="col">Roles granted</th>
                <th scope="col">Actions</th>
              </tr>
            </thead>
            <tbody>
              {teams.data.items.map((team) => (
                <tr key={team.id}>
                  <th scope="row">{team.name}</th>
                  <td>
                    <Members team={team} onSaved={refresh} />
                  </td>
                  <td>
                    <ul className="diff">
                      {team.roles.map((grant) => (
                        <li key={`${grant.role} ${grant.projects?.join() ?? "*"} ${grant.environments?.join() ?? "*"}`}>
                          <span className="tag">{grant.role}</span> on{" "}
                          {grant.projects ? grant.projects.join(", ") : "every project"} ×{" "}
                          {grant.environments ? grant.environments.join(", ") : "every environment"}
                        </li>
                      ))}
                    </ul>
                  </td>
                  <td>
                    <ConfirmButton
                      label="Delete"
                      title={`Delete team ${team.name}?`}
                      className="button button-small button-danger"
                      onConfirm={async () => {
                        await api("DELETE", `/teams/${encodeURIComponent(team.id)}`);
                        await refresh();
                      }}
                    >
                      <p>Its members lose what it granted them.</p>
                    </ConfirmButton>
                  </td>
                </tr>
              ))}
            </tbody>
          </table>
        </div>
      )}
      <FormCard
        title="Add a team"
        submitLabel="Add team"
        onSubmit={async () => {
          const grant =
            role === ""
              ? []
              : [
                  {
                    role,
                    ...(splitList(projects).length > 0 && { projects: splitList(projects) }),
                    ...(splitList(environments).length > 0 && { environments: splitList(environments) }),
                  },
                ];
          await api("POST", "/teams", { name, members: splitList(members), roles: grant });
          setName("");
          setMembers("");
          setRole("");
          setProjects("");
          setEnvironments("");
          await refresh();
        }}
      >
        <div className="form-grid">
          <label>
            Name
            <input required value={name} onChange={(event) => setName(event.target.value)} />
          </label>
          <label>
            Members (usernames, comma-separated)
            <input value={members} onChange={(event) => setMembers(event.target.value)} />
          </label>
          <label>
            Role
            <select value={role} onChange={(event) => setRole(event.target.value)}>
              <option value="">none yet</option>
              {roles.data?.items.map((each) => (
                <option key={each.id} value={each.slug}>
                  {each.name}
                </option>
              ))}
            </select>
          </label>
          <label>
            On projects (empty: all)
            <input value={projects} onChange={(event) => setProjects(event.target.value)} />
          </label>
          <label>
            In environments (empty: all)
            <input value={environments} onChange={(event) => setEnvironments(event.target.value)} />
          </label>
        </div>
      </FormCard>
    </>
  );
}

/** A team's members, changed in place (the API replaces the list). */
function Members({ team, onSaved }: { team: Team; onSaved(): Promise<unknown> }) {
  const [editing, setEditing] = useState(false);
  const [members, setMembers] = useState(team.members.join(", "));
  const [error, setError] = useState<string | undefined>();
  if (!editing) {
    return (
      <>
        {team.members.length === 0 ? <span className="muted">none</span> : team.members.join(", ")}{" "}
        <button
          type="button"
          className="button button-small"
          aria-label={`Change the members of ${team.name}`}
          onClick={() => {
            setMembers(team.members.join(", "));
            setEditing(true);
          }}
        >
          Change
        </button>
      </>
    );
  }
  const save = async (event: FormEvent) => {
    event.preventDefault();
    setError(undefined);
    try {
      await api("PATCH", `/teams/${encodeURIComponent(team.id)}`, { members: splitList(members) });
      await onSaved();
      setEditing(false);
    } catch (failure) {
      setError(describeError(failure));
    }
  };
  return (
    <form onSubmit={(event) => void save(event)} aria-label={`Members of ${team.name}`}>
      <label>
        Members (usernames, comma-separated)
        <input value={members} onChange={(event) => setMembers(event.target.value)} />
      </label>
      {error && (
        <p className="notice notice-error" role="alert">
          {error}
        </p>
      )}
      <div className="form-actions">
        <button type="submit" className="button button-small button-primary">
          Save members
        </button>
        <button type="button" className="button button-small" onClick={() => setEditing(false)}>
          Cancel
        </button>
      </div>
    </form>
  );
}

function Roles() {
  const client = useQueryClient();
  const roles = useList<AccessRole>("/roles");
  const [name, setName] = useState("");
  const [description, setDescription] = useState("");
  const [chosen, setChosen] = useState<Permission[]>(["view"]);
  const refresh = () => client.invalidateQueries({ queryKey: ["admin", "/roles"] });
  return (
    <>
      {roles.isPending && <Loading what="the roles" />}
      <ErrorNotice error={roles.error} what="The roles could not be loaded" />
      {roles.data && (
        <div className="table-scroll">
          <table className="data" aria-label="Roles">
            <thead>
              <tr>
                <th scope="col">Role</th>
                <th scope="col">Permissions</th>
                <th scope="col">Actions</th>
              </tr>
            </thead>
            <tbody>
              {roles.data.items.map((role) => (
                <tr key={role.id}>
                  <th scope="row">
                    {role.name}
                    {role.builtIn && <span className="muted small"> (built in)</span>}
                    {role.description && <div className="small muted">{role.description}</div>}
                  </th>
                  <td>
                    <Tags items={role.permissions} />
                  </td>
                  <td>
                    {role.builtIn ? (
                      <span className="muted small">cannot change</span>
                    ) : (
                      <ConfirmButton
                        label="Delete"
                        title={`Delete role ${role.name}?`}
                        className="button button-small button-danger"
                        onConfirm={async () => {
                          await api("DELETE", `/roles/${encodeURIComponent(role.id)}`);
                          await refresh();
                        }}
                      >
                        <p>A role still granted to a team cannot be deleted; revoke it first.</p>
                      </ConfirmButton>
                    )}
                  </td>
                </tr>
              ))}
            </tbody>
          </table>
        </div>
      )}
      <FormCard
        title="Add a role"
        submitLabel="Add role"
        onSubmit={async () => {
          await api("POST", "/roles", {
            name,
            permissions: chosen,
            ...(description.trim() !== "" && { description: description.trim() }),
          });
          setName("");
          setDescription("");
          setChosen(["view"]);
          await refresh();
        }}
      >
        <div className="form-grid">
          <label>
            Name
            <input required value={name} onChange={(event) => setName(event.target.value)} />
          </label>
          <label>
            Description
            <input value={description} onChange={(event) => setDescription(event.target.value)} />
          </label>
        </div>
        <fieldset>
          <legend>Permissions</legend>
          {PERMISSIONS.map((permission) => (
            <label key={permission} className="inline">
              <input
                type="checkbox"
                checked={chosen.includes(permission)}
                onChange={(event) =>
                  setChosen((current) =>
                    event.target.checked ? [...current, permission] : current.filter((each) => each !== permission),
                  )
                }
              />
              {permission}
            </label>
          ))}
        </fieldset>
      </FormCard>
    </>
  );
}
