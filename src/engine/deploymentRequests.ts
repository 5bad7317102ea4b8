import type { Access } from "../domain/access.js";
import type { DeploymentKind } from "../domain/deployments.js";
import { InputError, PreconditionError } from "../domain/errors.js";
import {
  autoDeployTargets,
  canDeploy,
  environmentsAcceptingSkippedSteps,
  type ProgressionPhase,
} from "../domain/progression.js";
import { findNamed, newId } from "../store/common.js";
import {
  environmentNames,
  environmentTargetIds,
  insertDeployment,
  lastDeploymentSucceeded,
  lifecyclePhases,
  succeededEnvironments,
  successfulReleases,
  taskStarterPrincipal,
} from "../store/deployments.js";
import { getEnvironment } from "../store/environments.js";
import { getReleaseRow } from "../store/releases.js";
import type { DeploymentServices } from "./deployments.js";
import { checkFreeze, FrozenError } from "./freezeCheck.js";
import type { TaskContext } from "./types.js";

/*
 * The deployment use cases: deploy a release to an environment (after the lifecycle says
 * it may go there), promote, roll back, and the automatic deployments a lifecycle asks for.
 * Each queues a deployment task (src/engine/deployments.ts runs it).
 */

export interface DeploymentRequest {
  project: string;
  release: string;
  environment: string;
  createdBy: string;
  /** Who asked, across their keys and sessions (principalOf): approvals may refuse them. */
  createdByPrincipal?: string | null | undefined;
  guidedFailure?: boolean | undefined;
  /** An environment to count as succeeded although its task is still finishing (auto-deploy). */
  justSucceeded?: string | undefined;
  /** Why it is requested (default "deploy"); recorded for DORA figures. */
  kind?: DeploymentKind | undefined;
  /** Deploy although a freeze covers the environment: the reason (needs overrideFreezes). */
  freezeOverride?: string | undefined;
  /** The caller's grants (for a freeze override); absent for the engine's own requests. */
  access?: Access | undefined;
}

export interface DeploymentCreated {
  deploymentId: string;
  taskId: string;
  project: string;
  release: string;
  environment: string;
  /** Set when a freeze was overridden: which, and why (the audit entry keeps it). */
  freezeOverride?: { freeze: string; reason: string };
}

/**
 * Queues a deployment of a release to an environment, after checking the lifecycle lets
 * the release go there. The deployment runs as a task holding the (project, environment)
 * lock and a lock per target, so deployments to one environment run one at a time, in order.
 */
export async function requestDeployment(
  services: DeploymentServices,
  request: DeploymentRequest,
): Promise<DeploymentCreated> {
  const { db } = services.context;
  const project = await findNamed(db, "projects", request.project);
  const environment = await findNamed(db, "environments", request.environment).catch(() => {
    throw new InputError(`no environment '${request.environment}'`, [
      { pointer: "/environment", detail: "use an environment slug or id ('ferry env list')" },
    ]);
  });
  const release = await getReleaseRow(db, project.id, request.release);
  if (!release) {
    throw new InputError(`project '${project.name}' has no release '${request.release}'`, [
      { pointer: "/release", detail: "create it first, or list releases with 'ferry release list'" },
    ]);
  }
  const lifecycle = await lifecyclePhases(db, project.id);
  const succeeded = await succeededEnvironments(db, release.id, environmentsAcceptingSkippedSteps(lifecycle.phases));
  if (request.justSucceeded) succeeded.add(request.justSucceeded);
  const decision = canDeploy(
    lifecycle.phases,
    environment.id,
    succeeded,
    { lifecycle: lifecycle.name, environment: await environmentNames(db) },
    { ephemeral: (await getEnvironment(services.context, environment.id)).ephemeral },
  );
  if (!decision.allowed) throw new PreconditionError(decision.reason);
  const freezeOverride = await checkFreeze(db, {
    project,
    environment,
    what: "deployment",
    action: `deploying ${project.name} ${release.version}`,
    override: request.freezeOverride,
    access: request.access,
  });

  const targets = await environmentTargetIds(db, environment.id);
  const deploymentId = newId("dep");
  const task = await services.enqueue({
    kind: "deployment",
    title: `Deploy ${project.name} ${release.version} to ${environment.name}`,
    projectId: project.id,
    environmentId: environment.id,
    payload: { deploymentId, guidedFailure: request.guidedFailure ?? false },
    lockKeys: [`deploy:${project.id}:${environment.id}`, ...targets.map((targetId) => `target:${targetId}`)],
    createdBy: request.createdBy,
    createdByPrincipal: request.createdByPrincipal,
    alongside: (trx, taskId) =>
      insertDeployment(trx, {
        id: deploymentId,
        projectId: project.id,
        releaseId: release.id,
        environmentId: environment.id,
        taskId,
        kind: request.kind ?? "deploy",
      }),
  });
  return {
    deploymentId,
    taskId: task.id,
    project: project.slug,
    release: release.version,
    environment: environment.slug,
    ...(freezeOverride && { freezeOverride }),
  };
}

/**
 * Promotes what the previous phase runs: the release most recently deployed successfully
 * to an environment of the phase before the one holding `to`.
 */
export async function promote(
  services: DeploymentServices,
  request: {
    project: string;
    to: string;
    createdBy: string;
    createdByPrincipal?: string | null | undefined;
    freezeOverride?: string | undefined;
    access?: Access | undefined;
  },
): Promise<DeploymentCreated> {
  const { db } = services.context;
  const project = await findNamed(db, "projects", request.project);
  const environment = await findNamed(db, "environments", request.to);
  const lifecycle = await lifecyclePhases(db, project.id);
  const index = lifecycle.phases.findIndex((phase) => phase.environmentIds.includes(environment.id));
  if (index < 0) {
    throw new PreconditionError(`environment '${environment.name}' is not in lifecycle '${lifecycle.name}'`);
  }
  const previous = lifecycle.phases[index - 1];
  if (!previous) {
    throw new PreconditionError(
      `'${environment.name}' is in the first phase of lifecycle '${lifecycle.name}': there is nothing to promote from; deploy a release instead`,
    );
  }
  // Only a deployment that counts for the lifecycle can be promoted from.
  const [latest] = await successfulReleases(db, project.id, previous.environmentIds, {
    acceptSkippedSteps: environmentsAcceptingSkippedSteps(lifecycle.phases),
  });
  if (!latest) {
    throw new PreconditionError(
      `no release has been deployed successfully to phase '${previous.name}' yet, so there is nothing to promote to '${environment.name}'`,
    );
  }
  return requestDeployment(services, {
    project: project.id,
    release: latest.releaseId,
    environment: environment.id,
    createdBy: request.createdBy,
    createdByPrincipal: request.createdByPrincipal,
    freezeOverride: request.freezeOverride,
    access: request.access,
    kind: "promote",
  });
}

/**
 * Rolls an environment back by redeploying an earlier release: `to`, or else the last
 * release that succeeded there before the current one ("last known good").
 */
export async function rollback(
  services: DeploymentServices,
  request: {
    project: string;
    environment: string;
    to?: string | undefined;
    createdBy: string;
    createdByPrincipal?: string | null | undefined;
    freezeOverride?: string | undefined;
    access?: Access | undefined;
  },
): Promise<DeploymentCreated> {
  const { db } = services.context;
  const project = await findNamed(db, "projects", request.project);
  const environment = await findNamed(db, "environments", request.environment);
  const history = await successfulReleases(db, project.id, [environment.id]);
  const current = history[0];
  let target: { releaseId: string } | undefined;
  if (request.to !== undefined) {
    const release = await getReleaseRow(db, project.id, request.to);
    if (!release) throw new InputError(`project '${project.name}' has no release '${request.to}'`);
    target = { releaseId: release.id };
  } else if (!(await lastDeploymentSucceeded(db, project.id, environment.id))) {
    // The environment's latest deployment failed: it no longer runs `current`, which is
    // the last known good release to go back to.
    target = current;
  } else {
    target = history.find((entry) => entry.releaseId !== current?.releaseId);
  }
  if (!target) {
    throw new PreconditionError(
      `'${environment.name}' has no earlier successful release to roll back to${current ? ` (it runs ${current.version})` : ""}`,
    );
  }
  return requestDeployment(services, {
    project: project.id,
    release: target.releaseId,
    environment: environment.id,
    createdBy: request.createdBy,
    createdByPrincipal: request.createdByPrincipal,
    freezeOverride: request.freezeOverride,
    access: request.access,
    kind: "rollback",
  });
}

/** A new release goes on its own to the environments of a first phase that auto-deploys. */
export async function autoDeployNewRelease(
  services: DeploymentServices,
  project: string,
  release: string,
  createdBy: string,
  createdByPrincipal?: string | null,
): Promise<DeploymentCreated[]> {
  const { db } = services.context;
  const projectRow = await findNamed(db, "projects", project);
  const lifecycle = await lifecyclePhases(db, projectRow.id);
  const queued: DeploymentCreated[] = [];
  for (const environmentId of autoDeployTargets(lifecycle.phases, new Set())) {
    // A freeze holds automatic deployments back (nobody is there to override it).
    const created = await skipWhenFrozen(() =>
      requestDeployment(services, {
        project,
        release,
        environment: environmentId,
        createdBy,
        createdByPrincipal,
        kind: "auto",
      }),
    );
    if (created) queued.push(created);
  }
  return queued;
}

/**
 * Deploys a release to every environment of its lifecycle's first phase, automatic or not
 * (a feed trigger: the release exists because its image was pushed, and the first phase is
 * where a pipeline takes it). A frozen environment is left out, its freeze reported.
 */
export async function deployToFirstPhase(
  services: DeploymentServices,
  project: string,
  release: string,
  createdBy: string,
  report: (message: string) => void,
): Promise<DeploymentCreated[]> {
  const { db } = services.context;
  const projectRow = await findNamed(db, "projects", project);
  const [first] = (await lifecyclePhases(db, projectRow.id)).phases;
  const queued: DeploymentCreated[] = [];
  for (const environmentId of first?.environmentIds ?? []) {
    const created = await skipWhenFrozen(
      () => requestDeployment(services, { project, release, environment: environmentId, createdBy, kind: "auto" }),
      report,
    );
    if (created) queued.push(created);
  }
  return queued;
}

/** After a success, deploys the same release to auto-deploy phases that just became reachable. */
export async function autoDeployNext(
  services: DeploymentServices,
  deployment: { project_id: string; release_id: string; environment_id: string },
  phases: readonly ProgressionPhase[],
  task: TaskContext,
): Promise<void> {
  const { db } = services.context;
  const succeeded = await succeededEnvironments(db, deployment.release_id, environmentsAcceptingSkippedSteps(phases));
  succeeded.add(deployment.environment_id);
  // Whoever started this deployment started the ones it causes: separation of duties holds across phases.
  const starter = await taskStarterPrincipal(db, task.taskId);
  for (const environmentId of autoDeployTargets(phases, succeeded)) {
    const queued = await skipWhenFrozen(
      () =>
        requestDeployment(services, {
          project: deployment.project_id,
          release: deployment.release_id,
          environment: environmentId,
          createdBy: "auto-deploy",
          createdByPrincipal: starter,
          // This deployment's own task is marked succeeded only after run() returns.
          justSucceeded: deployment.environment_id,
          kind: "auto",
        }),
      (message) => task.log.warn(`auto-deploy: not queued: ${message}`),
    );
    if (!queued) continue;
    task.log.info(`auto-deploy: queued ${queued.release} to ${queued.environment} (task ${queued.taskId})`);
  }
}

/** Runs an automatic request; a freeze makes it skip (reported, when a log is given) instead of fail. */
async function skipWhenFrozen<T>(
  request: () => Promise<T>,
  report?: (message: string) => void,
): Promise<T | undefined> {
  try {
    return await request();
  } catch (error) {
    if (!(error instanceof FrozenError)) throw error;
    report?.(error.message);
    return undefined;
  }
}
