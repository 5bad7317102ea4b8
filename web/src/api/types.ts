/*
 * The API's answers, typed by the same zod schemas that validate and document them on the
 * server (src/domain): type-only imports, so nothing of the server reaches the bundle.
 */
export type { AccessRole, Permission, Team } from "../../../src/domain/access.js";
export type { Artifact } from "../../../src/domain/artifacts.js";
export type { Dashboard, DashboardCell } from "../../../src/domain/dashboard.js";
export type { Environment } from "../../../src/domain/environments.js";
export type { FeedTrigger } from "../../../src/domain/feedTriggers.js";
export type {
  ProgressionEnvironment,
  ProgressionRelease,
  ProjectProgression,
} from "../../../src/domain/projectProgression.js";
export type { Project } from "../../../src/domain/projects.js";
export type { ReleaseDiff } from "../../../src/domain/releaseDiff.js";
export type { Release } from "../../../src/domain/releases.js";
export type { Schedule } from "../../../src/domain/runbookSchedules.js";
export type {
  Runbook,
  RunbookParameter,
  RunbookRunCreated,
  RunbookRunSummary,
  TaskRunbookRun,
} from "../../../src/domain/runbooks.js";
export type { ScheduledTrigger } from "../../../src/domain/scheduledTriggers.js";
export type { Target } from "../../../src/domain/targets.js";
export type { Task, TaskLogLine, TaskState } from "../../../src/domain/tasks.js";
export type { User } from "../../../src/domain/users.js";
export type { Variable } from "../../../src/domain/variables.js";

export interface Page<T> {
  items: T[];
  total: number;
  limit: number;
  offset: number;
}

export interface Session {
  user: import("../../../src/domain/users.js").User;
  csrfToken: string;
}

export interface SignInMethods {
  password: boolean;
  oidc: boolean;
  /** Whether this browser's session cookie is signed in. */
  signedIn: boolean;
}

/** A question a task asked (approval, guided failure) and its answer. */
export interface Decision {
  id: string;
  taskId: string;
  kind: string;
  prompt: string;
  allowed: string[];
  decision: string | null;
  comment: string | null;
  decidedBy: string | null;
  createdAt: string;
  decidedAt: string | null;
}

export interface DeploymentCreated {
  deploymentId: string;
  taskId: string;
  project: string;
  release: string;
  environment: string;
}

export interface Plan {
  project: string;
  release: string;
  environment: string;
  steps: { name: string; kind: string; runs: boolean; reason?: string; targets: string[]; actions: string[] }[];
  variables: { name: string; value: string; sensitive: boolean }[];
}

export interface DoraSeries {
  project: string;
  environment: string;
  deploymentFrequency: { deployments: number; perDay: number };
  leadTime: { releases: number; medianSeconds: number | null; meanSeconds: number | null };
  changeFailureRate: { changes: number; failures: number; rate: number | null };
  timeToRestore: { incidents: number; restored: number; medianSeconds: number | null; meanSeconds: number | null };
}

export interface DoraReport {
  from: string;
  to: string;
  series: DoraSeries[];
}

export interface AuditEntry {
  seq: number;
  id: string;
  at: string;
  actor: { id: string | null; name: string };
  source: string;
  action: string;
  resource: { type: string; id: string | null; name: string | null };
  diff: Record<string, { from: unknown; to: unknown }>;
}

export interface AuditPage {
  items: AuditEntry[];
  total: number;
  limit: number;
  next: number | null;
}

/** A task that changed, as GET /api/v1/dashboard/events tells it. */
export interface TaskChange {
  taskId: string;
  kind: string;
  state: import("../../../src/domain/tasks.js").TaskState;
  project: string | null;
  environment: string | null;
}

/** A runbook as the project's list shows it: with its last run in each environment the caller may view. */
export type RunbookListed = import("../../../src/domain/runbooks.js").Runbook & {
  lastRuns: import("../../../src/domain/runbooks.js").RunbookRunSummary[];
};

/** GET /tasks/:task: a runbook run's task also says what it ran. */
export type TaskDetail = import("../../../src/domain/tasks.js").Task & {
  runbookRun?: import("../../../src/domain/runbooks.js").TaskRunbookRun;
};

/** GET /projects/:project/variable-preview (src/engine/variablePreview.ts): each value and why it won. */
type ScopeRank = "project" | "environment" | "role" | "target" | "step";

export interface PreviewScope {
  environments: string[];
  roles: string[];
  targets: string[];
}

export interface PreviewCandidate {
  /** The value, or ******** when sensitive. */
  value: string;
  sensitive: boolean;
  scope: PreviewScope;
  rank: ScopeRank;
  set: string | null;
  verdict: "won" | "tied" | "outranked" | "not applicable";
  reason: string;
}

export interface VariablePreview {
  project: string;
  environment: string;
  target: string | null;
  step: string | null;
  release: string | null;
  variables: {
    name: string;
    value: string;
    sensitive: boolean;
    rank: ScopeRank | "system";
    scope: PreviewScope | null;
    set: string | null;
    candidates: PreviewCandidate[];
  }[];
  ambiguous: { name: string; message: string; candidates: PreviewCandidate[] }[];
}
