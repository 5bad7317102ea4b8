import { Access } from "../domain/access.js";
import { InputError } from "../domain/errors.js";
import { releaseSnapshotSchema } from "../domain/releases.js";
import {
  AmbiguousScopeError,
  type CandidateVerdict,
  explainVariables,
  type ScopedVariable,
  type ScopeRank,
} from "../domain/variableScoping.js";
import type { StoreContext } from "../store/common.js";
import { findNamed } from "../store/common.js";
import { environmentTargets, type TargetInfo } from "../store/deployments.js";
import { getProcess, getReleaseRow, snapshotVariables } from "../store/releases.js";
import { scopeContextOf, stepVariables } from "./deployments.js";
import { MASK } from "./logMasker.js";

/**
 * `ferry vars show`: the value each variable would have for a step on a target of an
 * environment, and why (issue 16 part 3). It works before any release exists: the
 * candidates are the project's variables as a release created now would snapshot them
 * (snapshotVariables), and the values come from the very function a deployment's steps get
 * theirs from (stepVariables), with the scope context built the same way (scopeContextOf).
 * The explanation uses the ranking that function uses (explainVariables, beside
 * resolveVariables). Sensitive values are never opened: they show as the mask.
 */

interface ScopeBySlug {
  environments: string[];
  roles: string[];
  targets: string[];
}

interface PreviewCandidate {
  value: string;
  sensitive: boolean;
  scope: ScopeBySlug;
  rank: ScopeRank;
  /** The variable set it comes from; null: the project's own. */
  set: string | null;
  verdict: CandidateVerdict;
  reason: string;
}

interface PreviewVariable {
  name: string;
  value: string;
  sensitive: boolean;
  /** Which scope won: a Ferry.* value is "system". */
  rank: ScopeRank | "system";
  /** The winner's scope (none for a system variable). */
  scope: ScopeBySlug | null;
  /** The variable set the winner comes from; null: the project's own (or a system variable). */
  set: string | null;
  candidates: PreviewCandidate[];
}

export interface VariablePreview {
  project: string;
  environment: string;
  target: string | null;
  step: string | null;
  release: string | null;
  variables: PreviewVariable[];
  /** Names whose best values tie here: a deployment fails on them, so they have no value. */
  ambiguous: { name: string; message: string; candidates: PreviewCandidate[] }[];
}

export async function previewVariables(
  context: StoreContext,
  request: {
    project: string;
    environment: string;
    target?: string | undefined;
    step?: string | undefined;
    /** A release: its snapshot instead of the project's variables now (what deploying it would give). */
    release?: string | undefined;
  },
  access: Access = Access.everything(),
): Promise<VariablePreview> {
  const { db } = context;
  const project = await findNamed(db, "projects", request.project);
  const environment = await findNamed(db, "environments", request.environment);
  const showsSensitiveNames = access.allows({
    permission: "viewSensitiveNames",
    project: project.id,
    environment: environment.id,
  });
  const targets = await environmentTargets(db, environment.id);
  const target = request.target === undefined ? undefined : targetIn(targets, request.target, environment.slug);
  const stepName = request.step ?? "";
  const release = request.release === undefined ? undefined : await releaseOf(db, project, request.release);
  if (request.step !== undefined) {
    const process = release ? release.snapshot.process : await getProcess(context, project.id);
    const steps = process.steps.map((step) => step.name);
    if (!steps.includes(request.step)) {
      throw new InputError(`project '${project.slug}' has no step '${request.step}'`, [
        {
          pointer: "/step",
          detail: `name one of its steps: ${steps.join(", ") || "(the process has none)"}`,
          in: "query",
        },
      ]);
    }
  }

  // Exactly what a release made now would hold (or the release's own); sensitive values stay sealed.
  const snapshot = release ? release.snapshot.variables : await snapshotVariables(db, project.id, () => "");
  const candidates = snapshot.map((variable) => ({
    ...variable,
    value: variable.sensitive ? MASK : variable.value,
  }));
  const where = { environmentId: environment.id, target, stepName };
  const system = {
    environmentName: environment.name,
    environmentSlug: environment.slug,
    projectName: project.name,
    projectSlug: project.slug,
    ...(target && { targetName: target.name }),
    ...(release && { releaseNumber: release.version }),
  };
  const images = release?.snapshot.images ?? [];
  let ambiguousNames = new Set<string>();
  let values: Map<string, string>;
  try {
    values = stepVariables(candidates, where, system, new Map(), images);
  } catch (error) {
    if (!(error instanceof AmbiguousScopeError)) throw error;
    // A deployment fails on these; the others still show what they would be.
    ambiguousNames = new Set(error.ambiguities.map((ambiguity) => ambiguity.name));
    values = stepVariables(
      candidates.filter((candidate) => !ambiguousNames.has(candidate.name)),
      where,
      system,
      new Map(),
      images,
    );
  }

  const slugs = await slugsById(context);
  const bySlug = (scope: ScopedVariable["scope"]): ScopeBySlug => ({
    environments: scope.environments.map((id) => slugs.get(id) ?? id),
    roles: [...scope.roles],
    targets: scope.targets.map((id) => slugs.get(id) ?? id),
  });
  const explained = explainVariables(
    candidates.map((candidate) => ({ ...candidate, value: candidate.value ?? "" })),
    scopeContextOf(where),
  );
  // Least specific first, as the precedence reads: project < environment < role < target < step;
  // within a rank, the later set first and the project's own last (ADR 0047).
  const order: readonly string[] = ["project", "environment", "role", "target", "step"];
  const sourceOrder = (set: { position: number } | undefined) => (set === undefined ? 0 : -(set.position + 1));
  const candidatesOf = (name: string): PreviewCandidate[] =>
    [...(explained.get(name) ?? [])]
      .sort(
        (a, b) =>
          order.indexOf(a.rank) - order.indexOf(b.rank) || sourceOrder(a.candidate.set) - sourceOrder(b.candidate.set),
      )
      .map(({ candidate, verdict, rank, reason }) => ({
        value: candidate.value,
        sensitive: candidate.sensitive,
        scope: bySlug(candidate.scope),
        rank,
        set: candidate.set?.slug ?? null,
        verdict,
        reason,
      }));
  const sensitiveNames = new Set(candidates.filter((candidate) => candidate.sensitive).map((c) => c.name));
  const visible = (name: string) => showsSensitiveNames || !sensitiveNames.has(name);

  const variables: PreviewVariable[] = [...values]
    .filter(([name]) => visible(name))
    .map(([name, value]) => {
      const explanation = candidatesOf(name);
      const winner = explanation.find((candidate) => candidate.verdict === "won");
      return winner
        ? {
            name,
            value,
            sensitive: winner.sensitive,
            rank: winner.rank,
            scope: winner.scope,
            set: winner.set,
            candidates: explanation,
          }
        : { name, value, sensitive: false, rank: "system" as const, scope: null, set: null, candidates: explanation };
    })
    .sort((a, b) => a.name.localeCompare(b.name));
  const ambiguous = [...ambiguousNames]
    .filter(visible)
    .sort()
    .map((name) => ({
      name,
      message: `'${name}' has values whose scopes are equally specific here: a deployment fails until one scope is more specific or a value is removed`,
      candidates: candidatesOf(name),
    }));
  return {
    project: project.slug,
    environment: environment.slug,
    target: target?.slug ?? null,
    step: request.step ?? null,
    release: release?.version ?? null,
    variables,
    ambiguous,
  };
}

async function releaseOf(db: StoreContext["db"], project: { id: string; slug: string }, reference: string) {
  const row = await getReleaseRow(db, project.id, reference);
  if (!row) {
    throw new InputError(`project '${project.slug}' has no release '${reference}'`, [
      { pointer: "/release", detail: "list releases with 'ferry release list --project …'", in: "query" },
    ]);
  }
  return { version: row.version, snapshot: releaseSnapshotSchema.parse(JSON.parse(row.snapshot)) };
}

function targetIn(targets: readonly TargetInfo[], reference: string, environmentSlug: string): TargetInfo {
  const found = targets.find((target) => target.id === reference || target.slug === reference);
  if (found) return found;
  throw new InputError(`target '${reference}' is not in environment '${environmentSlug}'`, [
    {
      pointer: "/target",
      detail: `name one of its targets: ${targets.map((target) => target.slug).join(", ") || "(it has none)"}`,
      in: "query",
    },
  ]);
}

/** Environment and target slugs by id: the snapshot's scopes hold ids. */
async function slugsById({ db }: StoreContext): Promise<Map<string, string>> {
  const environments = await db.selectFrom("environments").select(["id", "slug"]).execute();
  const targets = await db.selectFrom("targets").select(["id", "slug"]).execute();
  return new Map([...environments, ...targets].map((row) => [row.id, row.slug]));
}
