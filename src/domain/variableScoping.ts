/**
 * Which value of a variable a deployment sees. A project may define one name several
 * times with different scopes; the most specific scope that matches the deployment wins,
 * with precedence step > target > role > environment > unscoped (project). Between values
 * as specific as each other, the project's own beats a variable set's, and a set included
 * earlier beats one included later (ADR 0047).
 */
import { ConflictError } from "./errors.js";

/** Where a value applies; an empty (or absent) dimension places no restriction. */
export interface VariableScope {
  readonly environments: readonly string[];
  readonly roles: readonly string[];
  readonly targets: readonly string[];
  readonly steps?: readonly string[];
}

/** One stored value of a variable, with its scope (ids or slugs, compared as plain strings). */
export interface ScopedVariable {
  readonly name: string;
  readonly value: string;
  readonly sensitive: boolean;
  readonly scope: VariableScope;
  /** The variable set it comes from, and the set's place in the project's list (0 first); absent: the project's own. */
  readonly set?: VariableSource | undefined;
}

/** A set a value comes from: its slug (for words) and where the project includes it. */
interface VariableSource {
  readonly slug: string;
  readonly position: number;
}

/** What is being deployed where: the values scopes are matched against. */
export interface ScopeContext {
  readonly environment: string;
  /** The roles of the target; a role-scoped value applies when it names any of them. */
  readonly roles: readonly string[];
  readonly target?: string;
  readonly step?: string;
}

/** The value a deployment sees for one name. */
export interface ResolvedVariable {
  readonly value: string;
  readonly sensitive: boolean;
}

/** Two or more values of one name that match a context equally well. */
export interface ScopeAmbiguity {
  readonly name: string;
  readonly candidates: readonly ScopedVariable[];
}

/** Refuses to pick between equally specific values rather than choosing one silently. */
export class AmbiguousScopeError extends ConflictError {
  constructor(readonly ambiguities: readonly ScopeAmbiguity[]) {
    super(describeAmbiguities(ambiguities));
  }
}

/** Values of system variables for one deployment; see withSystemVariables for their names. */
export interface SystemVariableValues {
  /** A deployment's; a runbook run has none. */
  readonly releaseNumber?: string;
  readonly environmentName: string;
  readonly projectName: string;
  readonly deploymentId?: string;
  readonly runbookName?: string;
  readonly runbookRunId?: string;
  readonly projectSlug?: string;
  readonly environmentSlug?: string;
  readonly targetName?: string;
  readonly taskId?: string;
}

const SYSTEM_VARIABLE_NAMES: Readonly<Record<keyof SystemVariableValues, string>> = {
  releaseNumber: "Ferry.Release.Number",
  environmentName: "Ferry.Environment.Name",
  projectName: "Ferry.Project.Name",
  deploymentId: "Ferry.Deployment.Id",
  projectSlug: "Ferry.Project.Slug",
  environmentSlug: "Ferry.Environment.Slug",
  targetName: "Ferry.Target.Name",
  taskId: "Ferry.Task.Id",
  runbookName: "Ferry.Runbook.Name",
  runbookRunId: "Ferry.Runbook.RunId",
};

/** The value of each name for this context; throws AmbiguousScopeError naming every tie. */
export function resolveVariables(
  candidates: readonly ScopedVariable[],
  context: ScopeContext,
): Map<string, ResolvedVariable> {
  const resolved = new Map<string, ResolvedVariable>();
  const ambiguities: ScopeAmbiguity[] = [];
  for (const [name, winners] of bestCandidates(candidates, context)) {
    const [winner] = winners;
    if (winners.length > 1) {
      ambiguities.push({ name, candidates: winners });
    } else if (winner !== undefined) {
      resolved.set(name, { value: winner.value, sensitive: winner.sensitive });
    }
  }
  if (ambiguities.length > 0) {
    throw new AmbiguousScopeError(ambiguities);
  }
  return resolved;
}

/** Names whose best values tie for this context, so the API can refuse such a config up front. */
export function findAmbiguities(candidates: readonly ScopedVariable[], context: ScopeContext): ScopeAmbiguity[] {
  return [...bestCandidates(candidates, context)]
    .filter(([, winners]) => winners.length > 1)
    .map(([name, winners]) => ({ name, candidates: winners }));
}

/** Adds the Ferry.* variables; they replace any user value of the same name. */
export function withSystemVariables(
  variables: ReadonlyMap<string, ResolvedVariable>,
  system: SystemVariableValues,
): Map<string, ResolvedVariable> {
  const merged = new Map(variables);
  for (const [key, name] of Object.entries(SYSTEM_VARIABLE_NAMES)) {
    const value = system[key as keyof SystemVariableValues];
    if (value !== undefined) {
      merged.set(name, { value, sensitive: false });
    }
  }
  return merged;
}

/** Why a candidate value of a variable won or lost in a context (`ferry vars show --explain`). */
export type CandidateVerdict = "won" | "tied" | "outranked" | "not applicable";

export interface ExplainedCandidate {
  readonly candidate: ScopedVariable;
  readonly verdict: CandidateVerdict;
  /** The most specific dimension of its scope: step, target, role, environment or project (unscoped). */
  readonly rank: ScopeRank;
  /** In words, with the scope's values as the context gives them (ids, for a deployment). */
  readonly reason: string;
}

export type ScopeRank = "project" | "environment" | "role" | "target" | "step";

const RANKS: readonly ScopeRank[] = ["project", "environment", "role", "target", "step"];

/**
 * Every candidate of each name with the verdict resolveVariables reaches for it in this
 * context: the same matching and the same ranking (bestCandidates), so a preview cannot
 * disagree with what a deployment gets. `describe` turns a scope's values into words.
 */
export function explainVariables(
  candidates: readonly ScopedVariable[],
  context: ScopeContext,
): Map<string, ExplainedCandidate[]> {
  const best = bestCandidates(candidates, context);
  const explained = new Map<string, ExplainedCandidate[]>();
  for (const candidate of candidates) {
    const winners = best.get(candidate.name) ?? [];
    const rank = RANKS[specificityOf(candidate.scope).highest] ?? "project";
    const mismatch = whyNotApplicable(candidate.scope, context);
    let verdict: CandidateVerdict;
    let reason: string;
    if (mismatch !== undefined) {
      verdict = "not applicable";
      reason = mismatch;
    } else if (winners.includes(candidate)) {
      verdict = winners.length > 1 ? "tied" : "won";
      reason =
        winners.length > 1
          ? `as specific as ${winners.length - 1} other value(s) of ${sourceWords(candidate.set)} that also apply: a deployment here fails until one scope is more specific`
          : `the most specific value that applies here (${rank} scope, ${sourceWords(candidate.set)})`;
    } else {
      const [winner] = winners;
      const winnerRank = winner ? (RANKS[specificityOf(winner.scope).highest] ?? "project") : "project";
      verdict = "outranked";
      reason =
        winnerRank !== rank
          ? `applies, but a ${winnerRank}-scoped value is more specific than this ${rank}-scoped one (step > target > role > environment > project)`
          : winner && specificityOf(winner.scope).dimensions !== specificityOf(candidate.scope).dimensions
            ? `applies, but the winning ${rank}-scoped value is scoped in more dimensions`
            : `applies and is as specific, but ${sourceWords(winner?.set)} beats ${sourceWords(candidate.set)} (the project's own values, then its sets in the order it includes them)`;
    }
    const list = explained.get(candidate.name) ?? [];
    list.push({ candidate, verdict, rank, reason });
    explained.set(candidate.name, list);
  }
  return explained;
}

function sourceWords(set: VariableSource | undefined): string {
  return set === undefined ? "the project's own value" : `variable set '${set.slug}' (included #${set.position + 1})`;
}

/** Why a scope does not apply in this context, or undefined when it does (the same test as `applies`). */
function whyNotApplicable(scope: VariableScope, context: ScopeContext): string | undefined {
  if (applies(scope, context)) return undefined;
  const excludes = (allowed: readonly string[] | undefined, value: string | undefined) =>
    allowed !== undefined && allowed.length > 0 && (value === undefined || !allowed.includes(value));
  if (excludes(scope.environments, context.environment)) return "scoped to other environments";
  if (scope.roles.length > 0 && !scope.roles.some((role) => context.roles.includes(role))) {
    return context.roles.length === 0
      ? "scoped to target roles, and no target is in question here"
      : "scoped to roles the target does not have";
  }
  if (excludes(scope.targets, context.target)) {
    return context.target === undefined
      ? "scoped to targets, and no target is in question here"
      : "scoped to other targets";
  }
  return context.step === undefined ? "scoped to steps, and no step is in question here" : "scoped to other steps";
}

/** For each name, the applicable candidates of the highest specificity (one unless tied). */
function bestCandidates(candidates: readonly ScopedVariable[], context: ScopeContext): Map<string, ScopedVariable[]> {
  const best = new Map<string, { specificity: Specificity; winners: ScopedVariable[] }>();
  for (const candidate of candidates) {
    if (!applies(candidate.scope, context)) continue;
    const specificity = specificityOf(candidate.scope, candidate.set);
    const current = best.get(candidate.name);
    const order = current === undefined ? 1 : compareSpecificity(specificity, current.specificity);
    if (order > 0) {
      best.set(candidate.name, { specificity, winners: [candidate] });
    } else if (order === 0) {
      current?.winners.push(candidate);
    }
  }
  return new Map([...best].map(([name, { winners }]) => [name, winners]));
}

function applies(scope: VariableScope, context: ScopeContext): boolean {
  const matches = (allowed: readonly string[] | undefined, value: string | undefined) =>
    allowed === undefined || allowed.length === 0 || (value !== undefined && allowed.includes(value));
  return (
    matches(scope.environments, context.environment) &&
    (scope.roles.length === 0 || scope.roles.some((role) => context.roles.includes(role))) &&
    matches(scope.targets, context.target) &&
    matches(scope.steps, context.step)
  );
}

interface Specificity {
  /** The most specific dimension present: 4 step, 3 target, 2 role, 1 environment, 0 none. */
  readonly highest: number;
  /** How many dimensions are present; breaks ties between equal `highest`. */
  readonly dimensions: number;
  /** Breaks the remaining ties: 0 for the project's own value, -(n + 1) for the set included n-th (0 first). */
  readonly source: number;
}

function specificityOf(scope: VariableScope, set?: VariableSource): Specificity {
  // Least specific first, so a dimension's rank is its position + 1.
  const present = [scope.environments, scope.roles, scope.targets, scope.steps ?? []].map(
    (values) => values.length > 0,
  );
  return {
    highest: present.lastIndexOf(true) + 1,
    dimensions: present.filter(Boolean).length,
    source: set === undefined ? 0 : -(set.position + 1),
  };
}

function compareSpecificity(left: Specificity, right: Specificity): number {
  return left.highest - right.highest || left.dimensions - right.dimensions || left.source - right.source;
}

function describeAmbiguities(ambiguities: readonly ScopeAmbiguity[]): string {
  const described = ambiguities.map(
    ({ name, candidates }) =>
      `variable '${name}' has ${candidates.length} values whose scopes are ambiguous here ` +
      `(${candidates.map((candidate) => `${describeScope(candidate.scope)}${candidate.set ? ` in variable set '${candidate.set.slug}'` : ""}`).join(" / ")})`,
  );
  return `${described.join("; ")}; make one scope more specific or remove a value so exactly one applies`;
}

function describeScope(scope: VariableScope): string {
  const parts = [
    ["environments", scope.environments],
    ["roles", scope.roles],
    ["targets", scope.targets],
    ["steps", scope.steps ?? []],
  ] as const;
  const described = parts
    .filter(([, values]) => values.length > 0)
    .map(([dimension, values]) => `${dimension} ${values.join(", ")}`);
  return described.length > 0 ? described.join(" + ") : "unscoped";
}
