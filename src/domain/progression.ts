/**
 * Lifecycle progression: which environments a release may be deployed to, given where it
 * has already been deployed successfully, and which deploy on their own next.
 */

export interface ProgressionPhase {
  name: string;
  environmentIds: readonly string[];
  autoDeploy: boolean;
  optional: boolean;
  /** A deployment here that skipped a failed required step still counts as a success. */
  acceptSkippedSteps?: boolean | undefined;
  /** Approvals here refuse the person who started the deployment, unless a step says otherwise. */
  separateApprover?: boolean | undefined;
}

/** Environments whose phase counts a deployment with skipped required steps as a success. */
export function environmentsAcceptingSkippedSteps(phases: readonly ProgressionPhase[]): string[] {
  return phases.filter((phase) => phase.acceptSkippedSteps).flatMap((phase) => phase.environmentIds);
}

export type DeployDecision = { allowed: true } | { allowed: false; reason: string };

/**
 * A release may go to an environment of phase N when every earlier phase is complete:
 * optional, or deployed successfully to all of its environments (Octopus's default
 * "all environments must be complete"). Redeploying to a phase already reached is allowed.
 * An ephemeral environment outside the lifecycle (a branch's, a review app's) takes any
 * release (ADR 0069): it is where a release is tried before it enters the lifecycle, and
 * a deployment there counts for no phase.
 */
export function canDeploy(
  phases: readonly ProgressionPhase[],
  environmentId: string,
  succeededEnvironmentIds: ReadonlySet<string>,
  names: { lifecycle: string; environment: (id: string) => string },
  environment: { ephemeral: boolean } = { ephemeral: false },
): DeployDecision {
  const index = phases.findIndex((phase) => phase.environmentIds.includes(environmentId));
  if (index < 0) {
    if (environment.ephemeral) return { allowed: true };
    return {
      allowed: false,
      reason: `environment '${names.environment(environmentId)}' is not in lifecycle '${names.lifecycle}'; add it to a phase, make it ephemeral (then any release may go there) or deploy elsewhere`,
    };
  }
  for (const phase of phases.slice(0, index)) {
    if (phaseComplete(phase, succeededEnvironmentIds)) continue;
    const missing = phase.environmentIds.filter((id) => !succeededEnvironmentIds.has(id)).map(names.environment);
    return {
      allowed: false,
      reason:
        `lifecycle '${names.lifecycle}' requires phase '${phase.name}' first: deploy this release to ` +
        `${missing.map((name) => `'${name}'`).join(", ")} before '${names.environment(environmentId)}'`,
    };
  }
  return { allowed: true };
}

function phaseComplete(phase: ProgressionPhase, succeeded: ReadonlySet<string>): boolean {
  return phase.optional || phase.environmentIds.every((id) => succeeded.has(id));
}

/**
 * Environments that should now deploy on their own: those of auto-deploy phases that
 * just became reachable and have no successful deployment of the release yet.
 */
export function autoDeployTargets(
  phases: readonly ProgressionPhase[],
  succeededEnvironmentIds: ReadonlySet<string>,
): string[] {
  const targets: string[] = [];
  for (const phase of phases) {
    if (phase.autoDeploy) {
      targets.push(...phase.environmentIds.filter((id) => !succeededEnvironmentIds.has(id)));
    }
    if (!phaseComplete(phase, succeededEnvironmentIds)) break;
  }
  return targets;
}
