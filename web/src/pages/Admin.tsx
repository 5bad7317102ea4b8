import { useQuery, useQueryClient } from "@tanstack/react-query";
import { useState } from "react";
import { NavLink, useParams } from "react-router";
import { api, describeError, query } from "../api/client";
import type { AccessRole, Page, Permission, Team, User } from "../api/types";
import { DeleteButton } from "../components/ConfirmButton";
import { DataTable } from "../components/DataTable";
import { ErrorNotice, Loading } from "../components/ErrorNotice";
import { FormCard, InlineEditor, SlugSelect } from "../components/Forms";
import { RelativeTime } from "../components/RelativeTime";
import { Tags } from "../components/Tags";
import { splitList } from "../lib/lists";
import { useTitle } from "../lib/title";
import { useUser } from "../session";

const SECTIONS = { users: "Users", teams: "Teams", roles: "Roles" } as const;
type Section = keyof typeof SECTIONS;

const PERMISSIONS = [
  "view",
  "deploy",
  "approve",
  "resolveFailures",
  "editProcess",
  "editVariables",
  "editVariableSets",
  "viewSensitiveNames",
  "runRunbooks",
  "editRunbooks",
  "overrideFreezes",
  "pushPackages",
  "administer",
] as const satisfies readonly Permission[];
// A permission the server gains must be offered here too: this fails to compile until it is.
const everyPermissionListed: Exclude<Permission, (typeof PERMISSIONS)[number]> extends never ? true : never = true;
void everyPermissionListed;

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

function Users({ selfId }: { selfId: string }) {
  const client = useQueryClient();
  const users = useList<User>("/users");
  const [username, setUsername] = useState("");
  const [displayName, setDisplayName] = useState("");
  const [password, setPassword] = useState("");
  const [isAdmin, setIsAdmin] = useState(false);
  const [rowError, setRowError] = useState<string | undefined>();
  const [notice, setNotice] = useState<string | undefined>();
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
      <p className="notice-slot" role="status">
        {notice && <span className="notice notice-ok">{notice}</span>}
      </p>
      {users.data && (
        <DataTable label="Users" columns={["User", "Administrator", "Status", "Created", "Actions"]}>
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
                    <ResetPassword
                      user={user}
                      onReset={() =>
                        setNotice(`${user.username}'s password was reset: their sessions ended; tell them the new one.`)
                      }
                    />
                    <DeleteButton
                      title={`Delete ${user.username}?`}
                      path={`/users/${encodeURIComponent(user.id)}`}
                      onDeleted={refresh}
                    >
                      <p>Their sessions end and their API keys stop working.</p>
                    </DeleteButton>
                  </div>
                )}
              </td>
            </tr>
          ))}
        </DataTable>
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
        <DataTable label="Teams" columns={["Team", "Members", "Roles granted", "Actions"]}>
          {teams.data.items.map((team) => (
            <tr key={team.id}>
              <th scope="row">{team.name}</th>
              <td>
                <Members team={team} onSaved={refresh} />
              </td>
              <td>
                <Grants team={team} roles={roles.data?.items ?? []} onSaved={refresh} />
              </td>
              <td>
                <DeleteButton
                  title={`Delete team ${team.name}?`}
                  path={`/teams/${encodeURIComponent(team.id)}`}
                  onDeleted={refresh}
                >
                  <p>Its members lose what it granted them.</p>
                </DeleteButton>
              </td>
            </tr>
          ))}
        </DataTable>
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
          <SlugSelect label="Role" value={role} onChange={setRole} items={roles.data?.items} none="none yet" />
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
        <DataTable label="Roles" columns={["Role", "Permissions", "Actions"]}>
          {roles.data.items.map((role) => (
            <tr key={role.id}>
              <th scope="row">
                {role.name}
                {role.builtIn && <span className="muted small"> (built in)</span>}
                {role.description && <div className="small muted">{role.description}</div>}
              </th>
              <td>
                {role.builtIn ? <Tags items={role.permissions} /> : <RolePermissions role={role} onSaved={refresh} />}
              </td>
              <td>
                {role.builtIn ? (
                  <span className="muted small">cannot change</span>
                ) : (
                  <DeleteButton
                    title={`Delete role ${role.name}?`}
                    path={`/roles/${encodeURIComponent(role.id)}`}
                    onDeleted={refresh}
                  >
                    <p>A role still granted to a team cannot be deleted; revoke it first.</p>
                  </DeleteButton>
                )}
              </td>
            </tr>
          ))}
        </DataTable>
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
        <PermissionChecks chosen={chosen} onChange={setChosen} />
      </FormCard>
    </>
  );
}

/** The permissions a role holds, as checkboxes. */
function PermissionChecks({ chosen, onChange }: { chosen: readonly Permission[]; onChange(next: Permission[]): void }) {
  return (
    <fieldset>
      <legend>Permissions</legend>
      {PERMISSIONS.map((permission) => (
        <label key={permission} className="inline">
          <input
            type="checkbox"
            checked={chosen.includes(permission)}
            onChange={(event) =>
              onChange(event.target.checked ? [...chosen, permission] : chosen.filter((each) => each !== permission))
            }
          />
          {permission}
        </label>
      ))}
    </fieldset>
  );
}

/** A role's permissions, changed in place; every team granted it gets the change at once. */
function RolePermissions({ role, onSaved }: { role: AccessRole; onSaved(): Promise<unknown> }) {
  const [chosen, setChosen] = useState<Permission[]>(role.permissions);
  const [description, setDescription] = useState(role.description);
  return (
    <InlineEditor
      summary={<Tags items={role.permissions} />}
      changeLabel={`Change the permissions of ${role.name}`}
      formLabel={`Permissions of ${role.name}`}
      saveLabel="Save role"
      onOpen={() => {
        setChosen(role.permissions);
        setDescription(role.description);
      }}
      onSave={async () => {
        await api("PATCH", `/roles/${encodeURIComponent(role.id)}`, { permissions: chosen, description });
        await onSaved();
      }}
    >
      <label>
        Description
        <input value={description} onChange={(event) => setDescription(event.target.value)} />
      </label>
      <PermissionChecks chosen={chosen} onChange={setChosen} />
      <p className="small muted">Every team granted {role.name} gets the change at once.</p>
    </InlineEditor>
  );
}

/** A team's members, changed in place (the API replaces the list). */
function Members({ team, onSaved }: { team: Team; onSaved(): Promise<unknown> }) {
  const [members, setMembers] = useState(team.members.join(", "));
  return (
    <InlineEditor
      summary={team.members.length === 0 ? <span className="muted">none</span> : team.members.join(", ")}
      changeLabel={`Change the members of ${team.name}`}
      formLabel={`Members of ${team.name}`}
      saveLabel="Save members"
      onOpen={() => setMembers(team.members.join(", "))}
      onSave={async () => {
        await api("PATCH", `/teams/${encodeURIComponent(team.id)}`, { members: splitList(members) });
        await onSaved();
      }}
    >
      <label>
        Members (usernames, comma-separated)
        <input value={members} onChange={(event) => setMembers(event.target.value)} />
      </label>
    </InlineEditor>
  );
}

interface GrantDraft {
  /** Stable across edits of the list (React's key). */
  key: number;
  role: string;
  projects: string;
  environments: string;
}

let nextGrantKey = 0;

function draftsOf(team: Team): GrantDraft[] {
  return team.roles.map((grant) => ({
    key: nextGrantKey++,
    role: grant.role,
    projects: grant.projects?.join(", ") ?? "",
    environments: grant.environments?.join(", ") ?? "",
  }));
}

/** What a team grants: each role on some projects × environments; changed in place (the API replaces the list). */
function Grants({ team, roles, onSaved }: { team: Team; roles: readonly AccessRole[]; onSaved(): Promise<unknown> }) {
  const [drafts, setDrafts] = useState<GrantDraft[]>(() => draftsOf(team));
  const change = (key: number, field: "role" | "projects" | "environments", value: string) =>
    setDrafts((current) => current.map((draft) => (draft.key === key ? { ...draft, [field]: value } : draft)));
  return (
    <InlineEditor
      summary={
        team.roles.length === 0 ? (
          <span className="muted">nothing</span>
        ) : (
          <ul className="diff">
            {team.roles.map((grant) => (
              <li key={`${grant.role} ${grant.projects?.join() ?? "*"} ${grant.environments?.join() ?? "*"}`}>
                <span className="tag">{grant.role}</span> on{" "}
                {grant.projects ? grant.projects.join(", ") : "every project"} ×{" "}
                {grant.environments ? grant.environments.join(", ") : "every environment"}
              </li>
            ))}
          </ul>
        )
      }
      changeLabel={`Change what ${team.name} grants`}
      formLabel={`Roles granted by ${team.name}`}
      saveLabel="Save grants"
      onOpen={() => setDrafts(draftsOf(team))}
      onSave={async () => {
        const grants = drafts.map((draft) => ({
          role: draft.role,
          ...(splitList(draft.projects).length > 0 && { projects: splitList(draft.projects) }),
          ...(splitList(draft.environments).length > 0 && { environments: splitList(draft.environments) }),
        }));
        await api("PATCH", `/teams/${encodeURIComponent(team.id)}`, { roles: grants });
        await onSaved();
      }}
    >
      {drafts.length === 0 && (
        <p className="small muted">No role granted: the members may do nothing through this team.</p>
      )}
      {drafts.map((draft, index) => (
        <fieldset key={draft.key} className="grant">
          <legend>Grant {index + 1}</legend>
          <label>
            Role
            <select value={draft.role} onChange={(event) => change(draft.key, "role", event.target.value)}>
              {roles.map((role) => (
                <option key={role.id} value={role.slug}>
                  {role.name}
                </option>
              ))}
            </select>
          </label>
          <label>
            On projects (empty: all)
            <input value={draft.projects} onChange={(event) => change(draft.key, "projects", event.target.value)} />
          </label>
          <label>
            In environments (empty: all)
            <input
              value={draft.environments}
              onChange={(event) => change(draft.key, "environments", event.target.value)}
            />
          </label>
          <button
            type="button"
            className="button button-small"
            onClick={() => setDrafts((current) => current.filter((each) => each.key !== draft.key))}
          >
            Remove grant {index + 1}
          </button>
        </fieldset>
      ))}
      <button
        type="button"
        className="button button-small"
        disabled={roles.length === 0}
        onClick={() =>
          setDrafts((current) => [
            ...current,
            { key: nextGrantKey++, role: roles[0]?.slug ?? "", projects: "", environments: "" },
          ])
        }
      >
        Add a grant
      </button>
    </InlineEditor>
  );
}

/** An administrator sets a new password for someone who lost theirs; the API ends their sessions. */
function ResetPassword({ user, onReset }: { user: User; onReset(): void }) {
  const [password, setPassword] = useState("");
  return (
    <InlineEditor
      summary={null}
      changeText="Reset password"
      changeLabel={`Reset password of ${user.username}`}
      formLabel={`New password for ${user.username}`}
      saveLabel="Set password"
      onOpen={() => setPassword("")}
      onSave={async () => {
        await api("PATCH", `/users/${encodeURIComponent(user.id)}`, { password });
        setPassword("");
        onReset();
      }}
    >
      <label>
        New password (12 characters or more)
        <input
          type="password"
          required
          minLength={12}
          autoComplete="new-password"
          value={password}
          onChange={(event) => setPassword(event.target.value)}
        />
      </label>
      <p className="small muted">Their sessions end; they sign in with this one.</p>
    </InlineEditor>
  );
}
