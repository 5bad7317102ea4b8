import type { ColumnType } from "kysely";

/**
 * Row types of the database, one interface per table. They are the store's own and
 * separate from the domain types the API speaks. The same column types are used on
 * SQLite and PostgreSQL (text, integer) so every store function is dialect-neutral:
 * booleans are 0/1, timestamps ISO-8601 UTC text (sortable), lists JSON text.
 */
export interface Database {
  environments: EnvironmentRow;
  lifecycles: LifecycleRow;
  lifecycle_phases: LifecyclePhaseRow;
  lifecycle_phase_environments: LifecyclePhaseEnvironmentRow;
  projects: ProjectRow;
  targets: TargetRow;
  agent_enrolment_tokens: AgentEnrolmentTokenRow;
  agents: AgentRow;
  target_environments: TargetEnvironmentRow;
  feeds: FeedRow;
  variables: VariableRow;
  variable_scopes: VariableScopeRow;
  variable_sets: VariableSetRow;
  variable_set_variables: VariableSetVariableRow;
  variable_set_scopes: VariableScopeRow;
  project_variable_sets: ProjectVariableSetRow;
  api_keys: ApiKeyRow;
  users: UserRow;
  sessions: SessionRow;
  login_failures: LoginFailureRow;
  oidc_logins: OidcLoginRow;
  roles: RoleRow;
  teams: TeamRow;
  team_members: TeamMemberRow;
  team_roles: TeamRoleRow;
  counters: CounterRow;
  tasks: TaskRow;
  task_counts: TaskCountRow;
  task_lock_requests: TaskLockRequestRow;
  task_locks: TaskLockRow;
  task_logs: TaskLogRow;
  releases: ReleaseRow;
  deployments: DeploymentRow;
  task_decisions: TaskDecisionRow;
  task_targets: TaskTargetRow;
  target_health: TargetHealthRow;
  pending_cleanups: PendingCleanupRow;
  webhooks: WebhookRow;
  feed_triggers: FeedTriggerRow;
  feed_trigger_firings: FeedTriggerFiringRow;
  scheduled_triggers: ScheduledTriggerRow;
  audit_events: AuditEventRow;
  audit_chain: AuditChainRow;
  runbooks: RunbookRow;
  runbook_snapshots: RunbookSnapshotRow;
  runbook_runs: RunbookRunRow;
  freezes: FreezeRow;
  runbook_schedules: RunbookScheduleRow;
  runbook_retention: RunbookRetentionRow;
  artifacts: ArtifactRow;
  artifact_retention: ArtifactRetentionRow;
  package_versions: PackageVersionRow;
  release_packages: ReleasePackageRow;
}

interface Timestamps {
  created_at: string;
  updated_at: string;
}

export interface EnvironmentRow extends Timestamps {
  id: string;
  slug: string;
  name: string;
  description: string;
  position: number;
  /** "fail" | "skip" (UnavailableTargetPolicy). */
  unavailable_targets: string;
  /** 1: ephemeral (ADR 0045): torn down by `ferry env delete` or after ttl_minutes. */
  ephemeral: number;
  /** Minutes after its last deployment (or creation) an ephemeral environment is torn down; null: never on its own. */
  ttl_minutes: number | null;
}

export interface LifecycleRow extends Timestamps {
  id: string;
  slug: string;
  name: string;
  description: string;
}

interface LifecyclePhaseRow {
  lifecycle_id: string;
  position: number;
  name: string;
  auto_deploy: number;
  optional: number;
  /** 1: a deployment that skipped a failed required step still counts as a success here. */
  accept_skipped_steps: ColumnType<number, number | undefined, number>;
  /** 1: approvals in this phase refuse the person who started the deployment (unless a step says otherwise). */
  separate_approver: ColumnType<number, number | undefined, number>;
}

interface LifecyclePhaseEnvironmentRow {
  lifecycle_id: string;
  phase_position: number;
  environment_id: string;
  position: number;
}

interface ProjectRow extends Timestamps {
  id: string;
  slug: string;
  name: string;
  description: string;
  lifecycle_id: string;
  /** JSON deployment process ({ steps: [...] }), each step's config validated by its kind. */
  process: ColumnType<string, string | undefined, string>;
  version_pattern: ColumnType<string, string | undefined, string>;
}

export interface TargetRow extends Timestamps {
  id: string;
  slug: string;
  name: string;
  transport: string;
  /** JSON array of role names. */
  roles: string;
  /** JSON array of runtime kinds. */
  runtimes: string;
  /** SSH settings (transport "ssh"); null otherwise. */
  ssh_host: string | null;
  ssh_port: number | null;
  ssh_user: string | null;
  /** The trusted host key fingerprint (SHA256:…); null until trusted. */
  ssh_host_key: string | null;
  /** JSON { host, port, user, hostKey } of the jump host, or null. */
  ssh_jump_host: string | null;
  /** SecretBox text, context `target:<id>:ssh-private-key`. */
  ssh_private_key_sealed: string | null;
  /** SecretBox text, context `target:<id>:ssh-passphrase`. */
  ssh_passphrase_sealed: string | null;
  /** JSON TargetRouter: the traffic router on the host (remote targets); null: none. */
  router: string | null;
}

export interface AgentEnrolmentTokenRow {
  id: string;
  /** SHA-256 (hex) of the token. */
  token_hash: string;
  note: string;
  /** JSON array of environment ids, or null (any). */
  environment_ids: string | null;
  /** JSON array of role names, or null (any). */
  roles: string | null;
  created_at: string;
  expires_at: string;
  used_at: string | null;
  used_by_target_id: string | null;
  revoked_at: string | null;
}

export interface AgentRow {
  target_id: string;
  credential_hash: string;
  next_credential_hash: string | null;
  /** SecretBox text, context `agent:<target id>:next-credential`. */
  next_credential_sealed: string | null;
  revoked_at: string | null;
  state: string;
  state_at: string | null;
  created_at: string;
}

interface TargetEnvironmentRow {
  target_id: string;
  environment_id: string;
}

export interface FeedRow extends Timestamps {
  id: string;
  slug: string;
  name: string;
  type: string;
  url: string;
  username: string | null;
  /** SecretBox-sealed password, bound to "feed:<id>:password". */
  password_sealed: string | null;
}

export interface VariableRow extends Timestamps {
  id: string;
  project_id: string;
  name: string;
  sensitive: number;
  /** The value when not sensitive; null when sensitive. */
  value: string | null;
  /** SecretBox-sealed value when sensitive, bound to "variable:<id>". */
  value_sealed: string | null;
  /** Canonical scope text; (project, name, scope_key) is unique. */
  scope_key: string;
}

/** A variable set shared by several projects (ADR 0047). */
export interface VariableSetRow extends Timestamps {
  id: string;
  slug: string;
  name: string;
  description: string;
}

/** One value of a set; like VariableRow, sealed bound to "variable-set-variable:<id>". */
interface VariableSetVariableRow extends Timestamps {
  id: string;
  set_id: string;
  name: string;
  sensitive: number;
  value: string | null;
  value_sealed: string | null;
  /** Canonical scope text; (set, name, scope_key) is unique. */
  scope_key: string;
}

/** A project includes a set; position orders a project's sets (0 first, and first wins a tie). */
interface ProjectVariableSetRow {
  project_id: string;
  set_id: string;
  position: number;
}

interface VariableScopeRow {
  variable_id: string;
  /** "environment" | "role" | "target" */
  kind: string;
  /** Environment id, role name or target id. */
  value: string;
}

interface ApiKeyRow {
  id: string;
  name: string;
  prefix: string;
  hash: string;
  role: string;
  created_at: string;
  expires_at: string | null;
  last_used_at: string | null;
  revoked_at: string | null;
  user_id: string | null;
}

interface UserRow {
  id: string;
  username: string;
  display_name: string;
  password_hash: string;
  is_admin: number;
  disabled: number;
  created_at: string;
  updated_at: string;
  /** The linked OIDC identity (migration 0012_oidc); null for local-only users. Optional on insert. */
  oidc_issuer: ColumnType<string | null, string | null | undefined, string | null>;
  oidc_subject: ColumnType<string | null, string | null | undefined, string | null>;
}

interface OidcLoginRow {
  state_hash: string;
  code_verifier: string;
  nonce: string;
  return_to: string;
  created_at: string;
  expires_at: string;
}

interface SessionRow {
  id: string;
  token_hash: string;
  user_id: string;
  csrf_token: string;
  created_at: string;
  last_seen_at: string;
  expires_at: string;
}

interface RoleRow {
  id: string;
  slug: string;
  name: string;
  description: string;
  /** JSON array of permission names. */
  permissions: string;
  built_in: number;
  created_at: string;
  updated_at: string;
}

interface TeamRow {
  id: string;
  slug: string;
  name: string;
  description: string;
  created_at: string;
  updated_at: string;
}

interface TeamMemberRow {
  team_id: string;
  user_id: string;
}

interface TeamRoleRow {
  id: string;
  team_id: string;
  role_id: string;
  position: number;
  /** JSON array of project ids; null = every project. */
  projects: string | null;
  /** JSON array of environment ids; null = every environment. */
  environments: string | null;
}

interface LoginFailureRow {
  id: string;
  subject: string;
  at: string;
}

interface CounterRow {
  name: string;
  value: number;
}

/** Tasks per state, kept by triggers on tasks (migration 0013_task_counts). */
interface TaskCountRow {
  state: string;
  n: number;
}

export interface TaskRow {
  id: string;
  /** Enqueue order; tasks wanting the same lock run in this order. */
  sequence: number;
  kind: string;
  /** queued | running | waiting | succeeded | failed | cancelled | interrupted */
  state: string;
  title: string;
  project_id: string | null;
  environment_id: string | null;
  /** JSON, validated by the task kind's schema. */
  payload: string;
  /** JSON outcome of a finished task. */
  result: string | null;
  error: string | null;
  created_by: string;
  /** "user:<id>" or "key:<id>" of whoever started it; null for the engine's own tasks. */
  created_by_principal: string | null;
  created_at: string;
  started_at: string | null;
  finished_at: string | null;
  /** Engine instance running the task, and until when its claim holds without a heartbeat. */
  lease_owner: string | null;
  lease_expires_at: string | null;
  cancel_requested: number;
  log_lines: number;
  log_bytes: number;
}

interface TaskLockRequestRow {
  task_id: string;
  lock_key: string;
  /** 1: a shared request (ADR 0068), held beside other shared holders; 0: exclusive. */
  shared: ColumnType<number, number | undefined, number>;
}

/** A held lock: one row per holder (an exclusive lock has one; a shared one, one per task). */
interface TaskLockRow {
  lock_key: string;
  task_id: string;
  owner: string;
  lease_expires_at: string;
  shared: ColumnType<number, number | undefined, number>;
}

interface TaskLogRow {
  task_id: string;
  line: number;
  at: string;
  /** info | warn | error | step (a step boundary) */
  level: string;
  step: string | null;
  text: string;
}

export interface ReleaseRow {
  id: string;
  project_id: string;
  version: string;
  notes: string;
  /** JSON ReleaseSnapshot: its sensitive variables sealed, bound to "release:<id>:variable:<index>". */
  snapshot: string;
  created_by: string;
  created_at: string;
  variables_updated_at: string | null;
  variables_updated_by: string | null;
}

interface DeploymentRow {
  id: string;
  project_id: string;
  release_id: string;
  environment_id: string;
  task_id: string;
  created_at: string;
  /** "deploy" | "promote" | "rollback" | "auto" (DeploymentKind). */
  kind: ColumnType<string, string | undefined, string>;
  /** Required steps a person skipped after they failed (guided failure). */
  skipped_steps: ColumnType<number, number | undefined, number>;
}

export interface TargetHealthRow {
  target_id: string;
  /** "up" | "down" | "unknown" */
  state: string;
  checked_at: string | null;
  /** 1 | 0; null before the first check. */
  reachable: number | null;
  docker_version: string | null;
  /** A bigint column: PostgreSQL answers it as text. */
  disk_free_bytes: ColumnType<string | number | null, number | null, number | null>;
  /** "up" | "down"; null without a router in use. */
  router: string | null;
  error: string | null;
  last_up_at: string | null;
  /** When some server node should check the target next (the shared schedule). */
  next_check_at: string;
}

interface TaskTargetRow {
  task_id: string;
  target_id: string;
}

export interface TaskDecisionRow {
  id: string;
  task_id: string;
  /** "approval" | "failure" */
  kind: string;
  prompt: string;
  /** JSON array of the decisions that answer it. */
  allowed: string;
  decision: string | null;
  comment: string | null;
  decided_by: string | null;
  /** The principal who may not answer it (separation of duties), "user:<id>" / "key:<id>". */
  excluded_principal: string | null;
  created_at: string;
  decided_at: string | null;
}

export interface WebhookRow extends Timestamps {
  id: string;
  project_id: string;
  url: string;
  /** JSON array of deployment event names. */
  events: string;
  /** SecretBox-sealed signing secret, bound to "webhook:<id>:secret". */
  secret_sealed: string;
}

/** A project's feed trigger (src/store/feedTriggers.ts, migration 0026). */
export interface FeedTriggerRow extends Timestamps {
  id: string;
  project_id: string;
  name: string;
  /** The name of one of the project's images. */
  image: string;
  /** RE2 pattern whose first group is the release version taken from a tag; null: the tag itself. */
  version_from_tag: string | null;
  /** SecretBox-sealed secret the registry's notifications carry, bound to "feed-trigger:<id>:secret". */
  secret_sealed: string;
  /** Seconds between polls of the registry; null: notifications only. */
  poll_seconds: number | null;
  paused: number;
  next_poll_at: string | null;
  last_polled_at: string | null;
  last_error: string | null;
}

interface FeedTriggerFiringRow {
  trigger_id: string;
  digest: string;
  tag: string;
  /** "notification", "poll" or "baseline" (there when the trigger first polled: no release). */
  cause: string;
  release_version: string | null;
  at: string;
}

/** A project's scheduled trigger (src/store/scheduledTriggers.ts, migration 0028). */
export interface ScheduledTriggerRow extends Timestamps {
  id: string;
  project_id: string;
  name: string;
  cron: string;
  time_zone: string;
  from_environment_id: string;
  to_environment_id: string;
  paused: number;
  /** The next firing; null while paused or when the expression never fires again. */
  next_fire_at: string | null;
  last_fired_at: string | null;
  last_outcome: string | null;
}

/** One audit log entry (src/store/audit.ts). Rows are only ever inserted. */
export interface AuditEventRow {
  /** 1, 2, 3 … without gaps: the order of the hash chain. */
  seq: number;
  id: string;
  at: string;
  actor_id: string | null;
  actor_name: string;
  source: string;
  action: string;
  resource_type: string;
  resource_id: string | null;
  resource_name: string | null;
  /** Canonical JSON of the field-level diff; secrets only as "(sensitive)" / "(changed)". */
  diff: string;
  key_id: string;
  prev_hash: string;
  hash: string;
}

/** The one row (id 1) holding the newest entry's seq and hash; its row lock serialises appends. */
interface AuditChainRow {
  id: number;
  seq: number;
  hash: string;
}

/** The clean-up of a task on a host that could not be reached when it ran: retried until it is done. */
interface PendingCleanupRow {
  task_id: string;
  target_id: string;
  created_at: string;
  /** When it is tried next (ISO 8601); later after each failure. */
  next_attempt_at: string;
  attempts: number;
  last_error: string | null;
}

export interface RunbookRow extends Timestamps {
  id: string;
  project_id: string;
  slug: string;
  name: string;
  /** JSON RunbookDefinition: what editors change. */
  draft: string;
  /** 1 when the draft differs from the published snapshot (or none is published). */
  draft_changed: number;
  published_snapshot_id: string | null;
  updated_by: string;
}

export interface RunbookSnapshotRow {
  id: string;
  runbook_id: string;
  /** 1, 2, … for published snapshots; null for a draft run's. */
  version: number | null;
  /** JSON RunbookSnapshot: the definition and the sealed variables. */
  snapshot: string;
  created_by: string;
  created_at: string;
}

interface RunbookRunRow {
  id: string;
  runbook_id: string;
  snapshot_id: string;
  project_id: string;
  environment_id: string;
  task_id: string;
  /** JSON { name: value }: sensitive values sealed bound to "runbook-run:<id>:<name>". */
  parameters: string;
  /** JSON array of the sensitive parameters' names. */
  sensitive: string;
  /** JSON array of target ids the run is limited to; null: every target. */
  target_ids: string | null;
  /** The reason a person overrode a freeze to queue it; null when no freeze was in effect. */
  freeze_override: string | null;
  /** Why a schedule queued it ("schedule nightly", "missed firings of schedule nightly"); null: a person did. */
  cause: string | null;
  schedule_id: string | null;
  /** The firing it is for (ISO 8601); null when a person queued it. */
  scheduled_for: string | null;
  created_at: string;
}

export interface RunbookScheduleRow extends Timestamps {
  id: string;
  runbook_id: string;
  project_id: string;
  environment_id: string;
  name: string;
  cron: string;
  time_zone: string;
  /** JSON { name: value }: sensitive values sealed bound to "runbook-schedule:<id>:parameter:<name>". */
  parameters: string;
  /** JSON array of the sensitive parameters' names. */
  sensitive: string;
  /** JSON array of target references (names or ids), resolved at each firing; null: every target. */
  targets: string | null;
  /** "skip" | "runOnce" */
  missed: string;
  paused: number;
  /**
   * The next firing (ISO 8601 UTC); the claim: a node fires it by moving it forward with a
   * conditional UPDATE. Null while paused or when the expression never fires again.
   */
  next_run_at: string | null;
  last_scheduled_for: string | null;
  last_cause: string | null;
  last_task_id: string | null;
  last_error: string | null;
  created_by: string;
}

interface RunbookRetentionRow {
  runbook_id: string;
  /** An environment id, or "*" for every environment without a row of its own. */
  environment_id: string;
  keep_runs: number | null;
  keep_days: number | null;
}

export interface FreezeRow {
  id: string;
  project_id: string;
  name: string;
  description: string;
  /** JSON array of environment ids. */
  environment_ids: string;
  /** JSON FreezeWindow. */
  window: string;
  time_zone: string;
  /** 1: runbook runs are refused too. */
  runbooks: number;
  created_by: string;
  created_at: string;
}

/** A file a step attached to its task (its bytes are in the directory or a large object: `storage`, `location`). */
export interface ArtifactRow {
  id: string;
  task_id: string;
  project_id: string;
  environment_id: string;
  /** The runbook of a runbook run's artifact (retention is per runbook and environment); null for a deployment's. */
  runbook_id: string | null;
  step_name: string;
  /** The target the step ran on; null for the server's own host (or bytes the step made itself). */
  target_name: string | null;
  name: string;
  size: ColumnType<string | number, number, number>;
  sha256: string;
  /** "directory" | "largeObject". */
  storage: string;
  location: string;
  created_at: string;
}

/** How long a runbook's artifacts are kept in an environment ("*": every environment without a row). */
export interface ArtifactRetentionRow {
  runbook_id: string;
  environment_id: string;
  keep_runs: number | null;
  keep_days: number | null;
}

export interface PackageVersionRow {
  id: string;
  name: string;
  version: string;
  /** "tar.gz" | "zip". */
  format: string;
  size: ColumnType<string | number, number, number>;
  sha256: string;
  entries: number;
  /** "directory" | "largeObject" (as an artifact's). */
  storage: string;
  location: string;
  pushed_by: string;
  created_at: string;
}

interface ReleasePackageRow {
  release_id: string;
  package_version_id: string;
}
