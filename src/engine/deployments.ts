import { z } from "zod";
import type { PinnedImage, PinnedPackage } from "../domain/releases.js";
import {
  resolveVariables,
  type ScopeContext,
  type ScopedVariable,
  type SystemVariableValues,
  withSystemVariables,
} from "../domain/variableScoping.js";
import { registryClientForHost } from "../feeds/images.js";
import type { PackageFeed } from "../feeds/packages.js";
import type { LocalUser } from "../runtimes/localUser.js";
import { defaultOutboundPolicy, type OutboundPolicy } from "../security/outboundGuard.js";
import type { StoreContext } from "../store/common.js";
import {
  environmentTargets,
  lifecyclePhases,
  loadDeploymentRun,
  setSkippedSteps,
  type TargetInfo,
} from "../store/deployments.js";
import { unavailableTargetPolicyOf } from "../store/environments.js";
import { feedCredentialsForHost } from "../store/feeds.js";
import { openSnapshot } from "../store/releases.js";
import { recordTaskTarget } from "../store/taskTargets.js";
import { LocalTransport, localTarget } from "../transports/local.js";
import type { Target } from "../transports/types.js";
import type { ArtifactService } from "./artifacts.js";
import { autoDeployNext } from "./deploymentRequests.js";
import { LogMasker } from "./logMasker.js";
import { stepPackages } from "./packages.js";
import { type ProcessRunnerServices, runProcess } from "./processRunner.js";
import { defaultTargetHealthSettings, probeTarget } from "./targetHealth.js";
import { cleanUpTask, retryCleanUp } from "./taskCleanup.js";
import { TaskFailure, type TaskKind } from "./types.js";

export interface DeploymentServices {
  context: StoreContext;
  /** Where steps may keep files while a task runs (outside the data directory when local work runs as another user). */
  workRoot: string;
  /** The account local steps run as; left out: the server's own (for tests and embedding). */
  localUser?: LocalUser | undefined;
  /** Queues a task; the engine's enqueue (set once the engine exists). */
  enqueue(input: Parameters<import("./engine.js").TaskEngine["enqueue"]>[0]): Promise<{ id: string }>;
  /**
   * The host a target (or, for undefined / null, the server's own host) is reached on, with
   * its runtimes and router. Left out: every target is the server's own host, without a router.
   */
  target?: ((info: TargetInfo | undefined) => Target) | undefined;
  /** How long a target may take to answer the availability probe of a deployment (FERRY_TARGET_HEALTH_TIMEOUT_SECONDS). */
  targetProbeTimeoutMs?: number | undefined;
  /** FERRY_OUTBOUND_ALLOW, for http steps whose address a variable chose; absent: the guard's defaults. */
  outbound?: OutboundPolicy | undefined;
  /** Where steps' artifacts are kept (ADR 0037); absent: attaching fails, saying the server keeps none. */
  artifacts?: ArtifactService | undefined;
  /** The built-in package feed (ADR 0044); absent: steps that unpack a package fail saying the server has none. */
  packages?: PackageFeed | undefined;
  /**
   * Tells this node's trigger pollers that a trigger was created, changed or deleted, so
   * they plan their sleep again (set once they exist; absent: nothing polls here).
   */
  triggersChanged?: (() => void) | undefined;
}

/** What the process runner needs from the server, for deployments and runbook runs alike. */
export function processRunnerServices(services: DeploymentServices): ProcessRunnerServices {
  const outbound = services.outbound ?? defaultOutboundPolicy;
  return {
    target: targetResolver(services),
    registryCredentials: (registryHost) => feedCredentialsForHost(services.context, registryHost),
    registryClient: (registryHost) => registryClientForHost(services.context, registryHost, outbound),
    outbound: services.outbound,
    artifacts: services.artifacts,
    packagesFor: (scope) => stepPackages(services.packages, services.context.db, scope),
  };
}

/** The server's own host as a target, for steps without roles. */
const SERVER_HOST = { id: null, name: "this host", roles: [] as string[] };

/** Where the services say a target is, or the server's own host when they do not say. */
function targetResolver(services: DeploymentServices): (info: TargetInfo | undefined) => Target {
  if (services.target) return services.target;
  const transport = new LocalTransport(services.workRoot, services.localUser);
  return (info) => localTarget(transport, undefined, info ?? SERVER_HOST);
}

const deploymentPayloadSchema = z.object({
  deploymentId: z.string(),
  /** Guided failure: a failing required step waits for retry / skip / abort instead of failing. */
  guidedFailure: z.boolean().default(false),
});

/** What a variable's scope is matched against for one step on one target (also by the variable preview). */
export function scopeContextOf(where: {
  environmentId: string;
  target: TargetInfo | undefined;
  stepName: string;
}): ScopeContext {
  return {
    environment: where.environmentId,
    roles: where.target?.roles ?? [],
    ...(where.target && { target: where.target.id }),
    step: where.stepName,
  };
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
  packages: readonly PinnedPackage[] = [],
): Map<string, string> {
  const resolved = withSystemVariables(
    resolveVariables(
      variables.map((variable) => ({ ...variable, value: variable.value ?? "" })),
      scopeContextOf(where),
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
  for (const pinned of packages) {
    values.set(`Ferry.Package[${pinned.name}].Version`, pinned.version);
    values.set(`Ferry.Package[${pinned.name}].Sha256`, pinned.sha256);
  }
  return values;
}

/**
 * The task kind of a deployment: the release's process, run by the process runner on the
 * environment's targets; then the lifecycle's bookkeeping (skipped steps, auto-deploy).
 */
export function deploymentTaskKind(services: DeploymentServices): TaskKind<z.infer<typeof deploymentPayloadSchema>> {
  const runner = processRunnerServices(services);
  const { target } = runner;
  return {
    kind: "deployment",
    payload: deploymentPayloadSchema,
    async run(task, { deploymentId, guidedFailure }) {
      const { db } = services.context;
      // Written in the task's own transaction (requestDeployment).
      const { deployment, release, project, environment } = await loadDeploymentRun(db, deploymentId);
      const snapshot = openSnapshot(services.context, release);
      const masker = new LogMasker(snapshot.secrets);
      task.log.setMasker(masker);
      const targets = await environmentTargets(db, environment.id);
      const lifecycle = await lifecyclePhases(db, project.id);
      const phase = lifecycle.phases.find((candidate) => candidate.environmentIds.includes(environment.id));
      const system = (info: TargetInfo | undefined): SystemVariableValues => ({
        releaseNumber: release.version,
        environmentName: environment.name,
        environmentSlug: environment.slug,
        projectName: project.name,
        projectSlug: project.slug,
        deploymentId,
        taskId: task.taskId,
        ...(info && { targetName: info.name }),
      });

      task.log.info(`Deploying ${project.name} release ${release.version} to ${environment.name}`);
      const { failed, skippedSteps } = await runProcess(runner, {
        task,
        scope: {
          project: { id: project.id, slug: project.slug, name: project.name },
          environment: { id: environment.id, slug: environment.slug, name: environment.name },
          subject: { kind: "release", id: release.id, version: release.version },
        },
        steps: snapshot.process.steps,
        targets,
        variables: (step, info, outputs) =>
          stepVariables(
            snapshot.variables,
            { environmentId: environment.id, target: info, stepName: step.name },
            system(info),
            outputs,
            snapshot.images,
            snapshot.packages,
          ),
        guidedFailure,
        separateApprover: phase?.separateApprover ?? false,
        touch: (host) => recordTaskTarget(db, task.taskId, host.id),
        unavailableTargets: {
          policy: unavailableTargetPolicyOf(environment.unavailable_targets),
          probe: (host, signal) =>
            probeTarget(
              host,
              task.taskId,
              services.targetProbeTimeoutMs ?? defaultTargetHealthSettings.timeoutMs,
              signal,
            ),
        },
      });
      if (failed) throw new TaskFailure(failed);
      if (skippedSteps > 0) {
        await setSkippedSteps(db, deploymentId, skippedSteps);
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
    cleanup: (taskId, _payload, log) => cleanUpTask(services.context.db, target, taskId, log),
    retryCleanup: (pending, log) => retryCleanUp(services.context.db, target, pending, log),
  };
}
