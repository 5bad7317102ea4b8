import { mkdir, rm } from "node:fs/promises";
import { join } from "node:path";
import { z } from "zod";
import type { DeploymentKind } from "../domain/deployments.js";
import { InputError, PreconditionError } from "../domain/errors.js";
import { type Step, stepRunsIn } from "../domain/process.js";
import {
  autoDeployTargets,
  canDeploy,
  environmentsAcceptingSkippedSteps,
  type ProgressionPhase,
} from "../domain/progression.js";
import type { PinnedImage } from "../domain/releases.js";
import { renderTemplate } from "../domain/templates.js";
import {
  resolveVariables,
  type ScopedVariable,
  type SystemVariableValues,
  withSystemVariables,
} from "../domain/variableScoping.js";
import { removeTaskContainers } from "../runtimes/docker.js";
import type { LocalUser } from "../runtimes/localUser.js";
import { killTaskProcesses } from "../runtimes/processGroups.js";
import type { OutboundPolicy } from "../security/outboundGuard.js";
import { stepKind } from "../steps/registry.js";
import type { StepRunContext } from "../steps/types.js";
import type { StoreContext } from "../store/common.js";
import { findNamed, newId, nowIso } from "../store/common.js";
import {
  environmentNames,
  environmentTargets,
  lastDeploymentSucceeded,
  lifecyclePhases,
  succeededEnvironments,
  successfulReleases,
  type TargetInfo,
} from "../store/deployments.js";
import { getFeedCredentials } from "../store/feeds.js";
import { getReleaseRow, openSnapshot } from "../store/releases.js";
import type { Router } from "../traffic/router.js";
import { LogMasker } from "./logMasker.js";
import type { TaskLog } from "./taskLog.js";
import { FinalFailure, type TaskContext, TaskFailure, type TaskKind } from "./types.js";

export interface DeploymentServices {
  context: StoreContext;
  /** Where steps may keep files while a task runs (outside the data directory when local work runs as another user). */
  workRoot: string;
  /** The account local steps run as; left out: the server's own (for tests and embedding). */
  localUser?: LocalUser | undefined;
  /** Queues a task; the engine's enqueue (set once the engine exists). */
  enqueue(input: Parameters<import("./engine.js").TaskEngine["enqueue"]>[0]): Promise<{ id: string }>;
  /** The traffic router of the server's host, for blue/green steps (connected on first use). */
  router?: () => Promise<Router>;
  /**
   * The router only when it is in use (connected, or with routes from an earlier run):
   * clean-up asks it which colours are live without starting a proxy nobody needs.
   */
  routerInUse?: () => Promise<Router | undefined>;
  /** FERRY_OUTBOUND_ALLOW, for http steps whose address a variable chose; absent: the guard's defaults. */
  outbound?: OutboundPolicy | undefined;
}

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
}

export interface DeploymentCreated {
  deploymentId: string;
  taskId: string;
  project: string;
  release: string;
  environment: string;
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
  const decision = canDeploy(lifecycle.phases, environment.id, succeeded, {
    lifecycle: lifecycle.name,
    environment: await environmentNames(db),
  });
  if (!decision.allowed) throw new PreconditionError(decision.reason);

  const targets = await db
    .selectFrom("target_environments")
    .select("target_id")
    .where("environment_id", "=", environment.id)
    .execute();
  const deploymentId = newId("dep");
  const task = await services.enqueue({
    kind: "deployment",
    title: `Deploy ${project.name} ${release.version} to ${environment.name}`,
    projectId: project.id,
    environmentId: environment.id,
    payload: { deploymentId, guidedFailure: request.guidedFailure ?? false },
    lockKeys: [`deploy:${project.id}:${environment.id}`, ...targets.map((target) => `target:${target.target_id}`)],
    createdBy: request.createdBy,
    createdByPrincipal: request.createdByPrincipal,
    alongside: async (trx, taskId) => {
      await trx
        .insertInto("deployments")
        .values({
          id: deploymentId,
          project_id: project.id,
          release_id: release.id,
          environment_id: environment.id,
          task_id: taskId,
          created_at: nowIso(),
          kind: request.kind ?? "deploy",
        })
        .execute();
    },
  });
  return {
    deploymentId,
    taskId: task.id,
    project: project.slug,
    release: release.version,
    environment: environment.slug,
  };
}

/**
 * Promotes what the previous phase runs: the release most recently deployed successfully
 * to an environment of the phase before the one holding `to`.
 */
export async function promote(
  services: DeploymentServices,
  request: { project: string; to: string; createdBy: string; createdByPrincipal?: string | null | undefined },
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
    kind: "rollback",
  });
}

const deploymentPayloadSchema = z.object({
  deploymentId: z.string(),
  /** Guided failure: a failing required step waits for retry / skip / abort instead of failing. */
  guidedFailure: z.boolean().default(false),
});

/** The targets a step runs on: once on the server's host without roles, else each target with a role. */
export function targetsOfStep(step: Step, targets: readonly TargetInfo[]): (TargetInfo | undefined)[] {
  return step.roles.length === 0
    ? [undefined]
    : targets.filter((target) => target.roles.some((role) => step.roles.includes(role)));
}

/**
 * The variables one step sees on one target: the release's values resolved by scope
 * precedence, the Ferry.* system variables, and earlier steps' outputs.
 */
export function stepVariables(
  variables: readonly { name: string; value: string | null; sensitive: boolean; scope: ScopedVariable["scope"] }[],
  where: { environmentId: string; target: TargetInfo | undefined; stepName: string },
  system: SystemVariableValues,
  outputs: ReadonlyMap<string, string> = new Map(),
  images: readonly PinnedImage[] = [],
): Map<string, string> {
  const resolved = withSystemVariables(
    resolveVariables(
      variables.map((variable) => ({ ...variable, value: variable.value ?? "" })),
      {
        environment: where.environmentId,
        roles: where.target?.roles ?? [],
        ...(where.target && { target: where.target.id }),
        step: where.stepName,
      },
    ),
    system,
  );
  const values = new Map([...resolved].map(([name, variable]) => [name, variable.value]));
  for (const [name, value] of outputs) values.set(name, value);
  for (const image of images) {
    values.set(`Ferry.Image[${image.name}]`, image.reference);
    values.set(`Ferry.Image[${image.name}].Tag`, image.tag);
    values.set(`Ferry.Image[${image.name}].Digest`, image.digest);
  }
  return values;
}

/** The task kind that runs a deployment's steps in order on the environment's targets. */
export function deploymentTaskKind(services: DeploymentServices): TaskKind<z.infer<typeof deploymentPayloadSchema>> {
  return {
    kind: "deployment",
    payload: deploymentPayloadSchema,
    async run(task, { deploymentId, guidedFailure }) {
      const { db } = services.context;
      // Written in the task's own transaction (requestDeployment).
      const deployment = await db
        .selectFrom("deployments")
        .selectAll()
        .where("id", "=", deploymentId)
        .executeTakeFirstOrThrow();
      const release = await db
        .selectFrom("releases")
        .selectAll()
        .where("id", "=", deployment.release_id)
        .executeTakeFirstOrThrow();
      const project = await db
        .selectFrom("projects")
        .selectAll()
        .where("id", "=", deployment.project_id)
        .executeTakeFirstOrThrow();
      const environment = await db
        .selectFrom("environments")
        .selectAll()
        .where("id", "=", deployment.environment_id)
        .executeTakeFirstOrThrow();
      const snapshot = openSnapshot(services.context, release);
      const masker = new LogMasker(snapshot.secrets);
      task.log.setRedactor((line) => masker.mask(line));
      const targets = await environmentTargets(db, environment.id);
      const lifecycle = await lifecyclePhases(db, project.id);
      const phase = lifecycle.phases.find((candidate) => candidate.environmentIds.includes(environment.id));
      const system = (target: TargetInfo | undefined): SystemVariableValues => ({
        releaseNumber: release.version,
        environmentName: environment.name,
        environmentSlug: environment.slug,
        projectName: project.name,
        projectSlug: project.slug,
        deploymentId,
        taskId: task.taskId,
        ...(target && { targetName: target.name }),
      });

      task.log.info(`Deploying ${project.name} release ${release.version} to ${environment.name}`);
      const workDirectory = join(services.workRoot, task.taskId);
      // The server's (0711): the local user passes through to a step's own directory, but
      // cannot list or change the server's records of the processes the task started.
      await mkdir(workDirectory, { recursive: true, mode: services.localUser?.kind === "user" ? 0o711 : 0o700 });
      const outputs = new Map<string, string>();
      let failed: string | undefined;
      /** Required steps a person skipped after they failed. */
      let skippedSteps = 0;
      try {
        for (const step of snapshot.process.steps) {
          if (!stepRunsIn(step, environment.slug)) {
            task.log.info(`skipping step '${step.name}': it does not run in ${environment.name}`);
            continue;
          }
          const variablesFor = (target: TargetInfo | undefined) =>
            stepVariables(
              snapshot.variables,
              { environmentId: environment.id, target, stepName: step.name },
              system(target),
              outputs,
              snapshot.images,
            );
          if (!shouldRun(step, failed !== undefined, variablesFor(undefined))) {
            task.log.info(`skipping step '${step.name}': its run condition is not met`);
            continue;
          }
          const stepTargets = targetsOfStep(step, targets);
          if (stepTargets.length === 0) {
            const message = `no target in ${environment.name} has role ${step.roles.join(" or ")} for step '${step.name}'`;
            if (step.required) {
              failed ??= message;
              task.log.error(message);
            } else {
              task.log.warn(message);
            }
            continue;
          }
          for (const target of stepTargets) {
            const labels = {
              "ferry.project": project.slug,
              "ferry.env": environment.slug,
              "ferry.release": release.version,
              "ferry.task": task.taskId,
            };
            try {
              const result = await runStepGuided(
                services,
                task,
                step,
                target,
                () => variablesFor(target),
                workDirectory,
                labels,
                {
                  guidedFailure: guidedFailure && step.required,
                  separateApprover: phase?.separateApprover ?? false,
                },
              );
              for (const [key, value] of Object.entries(result.outputs ?? {})) {
                outputs.set(`Ferry.Step[${step.name}].Output.${key}`, value);
              }
            } catch (error) {
              if (task.signal.aborted) throw error;
              const message = error instanceof Error ? error.message : String(error);
              if (error instanceof SkippedStep) {
                skippedSteps += 1;
                task.log.warn(message);
              } else if (step.required || error instanceof FinalFailure) {
                // A final failure (a rejected approval) fails the deployment even when the step is optional.
                failed ??= `step '${step.name}'${target ? ` on ${target.name}` : ""} failed: ${message}`;
                task.log.error(failed);
              } else {
                task.log.warn(`optional step '${step.name}' failed (${message}); continuing`);
              }
            }
          }
        }
      } finally {
        await rm(workDirectory, { recursive: true, force: true });
      }
      if (failed) throw new TaskFailure(failed);
      if (skippedSteps > 0) {
        await db
          .updateTable("deployments")
          .set({ skipped_steps: skippedSteps })
          .where("id", "=", deploymentId)
          .execute();
        if (!phase?.acceptSkippedSteps) {
          task.log.warn(
            `${skippedSteps} required step(s) failed and were skipped: this deployment does not count as a success for lifecycle '${lifecycle.name}' (its phase does not accept skipped steps), so the release cannot progress from ${environment.name} until it deploys here without skipping`,
          );
          return { deploymentId, release: release.version, environment: environment.slug, skippedSteps };
        }
        task.log.warn(
          `${skippedSteps} required step(s) failed and were skipped; phase '${phase.name}' accepts that, so the release may progress`,
        );
      }
      await autoDeployNext(services, deployment, lifecycle.phases, task);
      return { deploymentId, release: release.version, environment: environment.slug, skippedSteps };
    },
    async cleanup(taskId, _payload, log) {
      const killed = await killTaskProcesses(join(services.workRoot, taskId), taskId);
      if (killed > 0) log.warn(`clean-up: killed ${killed} process group(s) the task had started`);
      // A blue/green colour that went live before the task stopped is the live version
      // now (it passed its health check): it stays; anything else the task made goes.
      const liveColours = await liveColourNames(services, log);
      const removed = await removeTaskContainers(taskId, {
        keep: (container) => {
          const live = liveColours === "unknown" || liveColours.has(container.name);
          if (live) log.warn(`clean-up: colour ${container.name} went live before the task stopped: it keeps serving`);
          return live;
        },
      }).catch((error: unknown) => {
        log.warn(`clean-up: could not list the task's containers (${error instanceof Error ? error.message : error})`);
        return [] as string[];
      });
      if (removed.length > 0) log.warn(`clean-up: removed container(s) ${removed.join(", ")}`);
    },
  };
}

/** Names of the colours the router sends traffic to: none when no router is in use, "unknown" when it cannot be asked. */
async function liveColourNames(services: DeploymentServices, log: TaskLog): Promise<Set<string> | "unknown"> {
  try {
    const router = await services.routerInUse?.();
    if (!router) return new Set();
    const routes = await router.routes();
    return new Set(routes.flatMap((route) => (route.colour ? [route.colour] : [])));
  } catch (error) {
    log.warn(`clean-up: could not ask the traffic router which colours are live (${(error as Error).message})`);
    // Unknown: keep every container rather than risk removing the live one.
    return "unknown";
  }
}

function shouldRun(step: Step, somethingFailed: boolean, variables: ReadonlyMap<string, string>): boolean {
  const condition = step.condition;
  if (condition === "always") return true;
  if (condition === "success") return !somethingFailed;
  if (condition === "failure") return somethingFailed;
  return renderTemplate(`#{if ${condition.variable}}yes#{/if}`, variables) === "yes";
}

/** A step a person chose to skip after it failed (guided failure). */
class SkippedStep extends Error {}

/**
 * Runs a step; with guided failure, a failure asks whether to retry, skip or abort and
 * acts on the answer (retry re-renders the variables and runs the step again).
 */
async function runStepGuided(
  services: DeploymentServices,
  task: TaskContext,
  step: Step,
  target: TargetInfo | undefined,
  variables: () => ReadonlyMap<string, string>,
  workDirectory: string,
  labels: Record<string, string>,
  options: { guidedFailure: boolean; separateApprover: boolean },
) {
  for (;;) {
    try {
      return await runStep(services, task, step, target, variables(), workDirectory, labels, options);
    } catch (error) {
      // A final failure (a rejected approval) is never offered for retry or skip.
      if (!options.guidedFailure || task.signal.aborted || error instanceof FinalFailure) throw error;
      const message = error instanceof Error ? error.message : String(error);
      const decision = await task.waitForDecision({
        kind: "failure",
        prompt: `step '${step.name}'${target ? ` on ${target.name}` : ""} failed: ${message}`,
        allowed: ["retry", "skip", "abort"],
      });
      if (decision.decision === "skip") throw new SkippedStep(`step '${step.name}' failed and was skipped`);
      if (decision.decision === "abort") throw error;
    }
  }
}

/** Credentials of the feed whose URL points at this registry host, for pulling from it. */
async function feedCredentialsForHost(context: StoreContext, registryHost: string) {
  const feeds = await context.db.selectFrom("feeds").select(["id", "url"]).execute();
  const feed = feeds.find((candidate) => new URL(candidate.url).host === registryHost);
  return feed ? getFeedCredentials(context, feed.id) : undefined;
}

async function runStep(
  services: DeploymentServices,
  task: TaskContext,
  step: Step,
  target: TargetInfo | undefined,
  variables: ReadonlyMap<string, string>,
  workDirectory: string,
  labels: Record<string, string>,
  options: { separateApprover: boolean },
) {
  const kind = stepKind(step.kind);
  if (!kind) throw new TaskFailure(`this server does not know step kind '${step.kind}'`);
  const config = kind.config.parse(step.config);
  const stepContext: StepRunContext = {
    taskId: task.taskId,
    stepName: step.name,
    signal: task.signal,
    log: task.log,
    variables,
    render: (template) => renderTemplate(template, variables),
    // The lifecycle phase's default for separation of duties, unless the step says otherwise.
    waitForDecision: (question) =>
      task.waitForDecision({
        ...question,
        separateFromStarter: question.separateFromStarter ?? options.separateApprover,
      }),
    registryCredentials: (registryHost) => feedCredentialsForHost(services.context, registryHost),
    ...(services.router && { router: services.router }),
    ...(services.outbound && { outbound: services.outbound }),
    labels,
    workDirectory,
    localUser: services.localUser,
  };
  return task.log.step(target ? `${step.name} on ${target.name}` : step.name, () => kind.run(stepContext, config));
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
    queued.push(
      await requestDeployment(services, {
        project,
        release,
        environment: environmentId,
        createdBy,
        createdByPrincipal,
        kind: "auto",
      }),
    );
  }
  return queued;
}

/** After a success, deploys the same release to auto-deploy phases that just became reachable. */
async function autoDeployNext(
  services: DeploymentServices,
  deployment: { project_id: string; release_id: string; environment_id: string },
  phases: readonly ProgressionPhase[],
  task: TaskContext,
): Promise<void> {
  const { db } = services.context;
  const succeeded = await succeededEnvironments(db, deployment.release_id, environmentsAcceptingSkippedSteps(phases));
  succeeded.add(deployment.environment_id);
  // Whoever started this deployment started the ones it causes: separation of duties holds across phases.
  const starter = await db
    .selectFrom("tasks")
    .select("created_by_principal")
    .where("id", "=", task.taskId)
    .executeTakeFirst();
  for (const environmentId of autoDeployTargets(phases, succeeded)) {
    const queued = await requestDeployment(services, {
      project: deployment.project_id,
      release: deployment.release_id,
      environment: environmentId,
      createdBy: "auto-deploy",
      createdByPrincipal: starter?.created_by_principal ?? null,
      // This deployment's own task is marked succeeded only after run() returns.
      justSucceeded: deployment.environment_id,
      kind: "auto",
    });
    task.log.info(`auto-deploy: queued ${queued.release} to ${queued.environment} (task ${queued.taskId})`);
  }
}
