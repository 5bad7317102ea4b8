import { z } from "zod";
import type { Access } from "../domain/access.js";
import { type FieldIssue, ForbiddenError, InputError } from "../domain/errors.js";
import {
  type CreateRunbookRun,
  type PublishRunbook,
  type Runbook,
  type RunbookRunCreated,
  shownParameters,
  storedRunbookDefinitionSchema,
} from "../domain/runbooks.js";
import type { SystemVariableValues } from "../domain/variableScoping.js";
import { pinImages } from "../feeds/images.js";
import { defaultOutboundPolicy } from "../security/outboundGuard.js";
import { findNamed, newId } from "../store/common.js";
import { environmentTargets, type TargetInfo } from "../store/deployments.js";
import {
  getRunbookRow,
  insertRunbookRun,
  loadRunbookRun,
  publishRunbook,
  type RunbookDefinitionSource,
  sealedParameterContext,
  snapshotForRun,
} from "../store/runbooks.js";
import { recordTaskTarget } from "../store/taskTargets.js";
import { type DeploymentServices, processRunnerServices, stepVariables } from "./deployments.js";
import { checkFreeze } from "./freezeCheck.js";
import { LogMasker } from "./logMasker.js";
import { pinnedStepPackages } from "./packages.js";
import { runProcess } from "./processRunner.js";
import { checkRunParameters } from "./runbookParameters.js";
import { cleanUpTask } from "./taskCleanup.js";
import { TaskFailure, type TaskKind } from "./types.js";

/*
 * Runbook runs (issue 14, part 2): the use case that checks a run request and queues it, and
 * the task kind that runs the snapshot's process with the process runner, exactly as a
 * deployment runs a release's.
 */

/**
 * Publishes a runbook's draft with its image and package versions pinned (ADR 0068): the
 * images' tags (chosen, or the latest matching) resolved to digests through the registries
 * first, outside any transaction, then the snapshot with the packages' versions in one.
 */
export async function publishRunbookVersion(
  services: DeploymentServices,
  projectReference: string,
  reference: string,
  publishedBy: string,
  choices: PublishRunbook,
  options: { expectedUpdatedAt?: string } = {},
): Promise<Runbook> {
  const { context } = services;
  const project = await findNamed(context.db, "projects", projectReference);
  const row = await getRunbookRow(context.db, project.id, reference);
  const { process } = storedRunbookDefinitionSchema.parse(JSON.parse(row.draft));
  const images = await pinImages(context, process.images, choices.images, services.outbound ?? defaultOutboundPolicy);
  return publishRunbook(
    context,
    projectReference,
    reference,
    publishedBy,
    {
      images,
      packages: choices.packages,
      pinnedDraft: row.draft,
    },
    options,
  );
}

export interface RunbookRunRequest extends CreateRunbookRun {
  project: string;
  runbook: string;
  createdBy: string;
  createdByPrincipal?: string | null | undefined;
  /** The caller's grants: a draft run needs editRunbooks, a freeze override overrideFreezes. */
  access: Access;
  /** Set when a schedule queues the run: why (recorded with the run and in its log), and the firing. */
  schedule?: { id: string; cause: string; scheduledFor: Date } | undefined;
}

/**
 * Checks everything a run needs before anything is queued (the environment is one the
 * runbook may run in, every parameter is valid, the targets exist there, no freeze refuses
 * it), then queues the run's task with its snapshot and sealed parameters in one transaction.
 */
export async function requestRunbookRun(
  services: DeploymentServices,
  request: RunbookRunRequest,
): Promise<RunbookRunCreated & { freezeOverride?: { freeze: string; reason: string } }> {
  const { context } = services;
  const { db } = context;
  const project = await findNamed(db, "projects", request.project);
  const row = await getRunbookRow(db, project.id, request.runbook);
  const environment = await findNamed(db, "environments", request.environment).catch(() => {
    throw new InputError(`no environment '${request.environment}'`, [
      { pointer: "/environment", detail: "use an environment slug or id ('ferry env list')" },
    ]);
  });
  if (
    request.draft &&
    !request.access.allows({ permission: "editRunbooks", project: project.id, environment: environment.id })
  ) {
    throw new ForbiddenError(
      `running the draft of runbook '${row.slug}' needs the 'editRunbooks' permission on project '${project.slug}' in ${environment.name}; run the published version instead (leave out --draft)`,
    );
  }
  const source: RunbookDefinitionSource = await snapshotForRun(db, context, row, request.draft, request.createdBy, {
    dryRun: true,
  });
  const { definition } = source;
  if (definition.environments.length > 0 && !definition.environments.includes(environment.slug)) {
    throw new InputError(`runbook '${row.slug}' does not run in ${environment.name}`, [
      { pointer: "/environment", detail: `it runs in ${definition.environments.join(", ")} only` },
    ]);
  }
  const parameters = await checkRunParameters(definition.parameters, request.parameters);
  // A draft run resolves its images now (registry calls stay out of the queuing transaction);
  // its packages are pinned in that transaction, with its snapshot.
  const draftImages = request.draft
    ? await pinImages(context, definition.process.images, {}, services.outbound ?? defaultOutboundPolicy)
    : [];
  const targetIds = request.targets ? await resolveTargets(services, environment.id, request.targets) : null;
  const freezeOverride = await checkFreeze(db, {
    project,
    environment,
    what: "runbook",
    action: `running runbook '${row.name}'`,
    override: request.freezeOverride,
    access: request.access,
  });

  const runId = newId("rbr");
  const stored = Object.fromEntries(
    [...parameters.values].map(([name, value]) => [
      name,
      parameters.sensitive.has(name) ? context.secrets.seal(value, sealedParameterContext(runId, name)) : value,
    ]),
  );
  // Overlap is decided by locks (ADR 0034, 0068): a run that may not overlap deployments
  // shares the environment's deployment lock (other runbooks' runs hold it beside it, a
  // deployment waits for them all and they for it); one that may not overlap itself takes a
  // lock of its own, exclusively.
  const lockKeys = definition.overlapItself ? [] : [`runbook:${row.id}:${environment.id}`];
  const sharedLockKeys = definition.overlapDeployments ? [] : [`deploy:${project.id}:${environment.id}`];
  let version: number | null = source.version;
  let pinned = source.pinned;
  const task = await services.enqueue({
    kind: "runbook",
    title: `Run ${row.name}${request.draft ? " (draft)" : ""} of ${project.name} in ${environment.name}${request.schedule ? ` (${request.schedule.cause})` : ""}`,
    projectId: project.id,
    environmentId: environment.id,
    payload: { runId, guidedFailure: request.guidedFailure },
    lockKeys,
    sharedLockKeys,
    createdBy: request.createdBy,
    createdByPrincipal: request.createdByPrincipal,
    alongside: async (trx, taskId) => {
      // A draft run's snapshot is taken here, in the task's transaction, from the draft as it is now.
      const snapshot = request.draft
        ? await snapshotForRun(trx, context, row, true, request.createdBy, {
            pins: { images: draftImages, packages: {} },
          })
        : source;
      version = snapshot.version;
      pinned = snapshot.pinned;
      await insertRunbookRun(trx, {
        id: runId,
        runbookId: row.id,
        snapshotId: snapshot.id,
        projectId: project.id,
        environmentId: environment.id,
        taskId,
        parameters: stored,
        sensitive: [...parameters.sensitive],
        targetIds,
        freezeOverride: freezeOverride ? `${freezeOverride.freeze}: ${freezeOverride.reason}` : null,
        schedule: request.schedule,
      });
    },
  });
  return {
    runId,
    taskId: task.id,
    project: project.slug,
    runbook: row.slug,
    environment: environment.slug,
    version,
    parameters: shownParameters(parameters),
    ...pinned,
    ...(freezeOverride && { freezeOverride }),
  };
}

/** Target names or ids, each one of the environment's, or an issue at its index. */
async function resolveTargets(services: DeploymentServices, environmentId: string, references: readonly string[]) {
  const targets = await environmentTargets(services.context.db, environmentId);
  const issues: FieldIssue[] = [];
  const ids = references.map((reference, index) => {
    const target = targets.find((candidate) => candidate.id === reference || candidate.name === reference);
    if (!target) {
      issues.push({
        pointer: `/targets/${index}`,
        detail: `no target '${reference}' in this environment${targets.length ? ` (it has ${targets.map((t) => t.name).join(", ")})` : ""}`,
      });
    }
    return target?.id ?? "";
  });
  if (issues.length > 0) throw new InputError("the run names targets that are not in its environment", issues);
  return ids;
}

const runbookPayloadSchema = z.object({
  runId: z.string(),
  guidedFailure: z.boolean().default(false),
});

/**
 * The task kind of a runbook run: the snapshot's process, run by the process runner on the
 * environment's targets (or the ones the run names), with the snapshot's variables and the
 * run's parameters; every sensitive value masked in the log.
 */
export function runbookTaskKind(services: DeploymentServices): TaskKind<z.infer<typeof runbookPayloadSchema>> {
  const runner = processRunnerServices(services);
  const { target } = runner;
  return {
    kind: "runbook",
    payload: runbookPayloadSchema,
    async run(task, { runId, guidedFailure }) {
      const { db } = services.context;
      const loaded = await loadRunbookRun(services.context, runId);
      const { runbook, project, environment, definition } = loaded;
      const describedAs =
        loaded.version === null ? "this draft run of the runbook" : `runbook version ${loaded.version}`;
      // The snapshot's packages, not a release's: what a package step unpacks in this run.
      const runRunner = {
        ...runner,
        packagesFor: () =>
          pinnedStepPackages(services.packages, async () => loaded.packages, {
            owner: describedAs,
            fix:
              loaded.version === null
                ? "add the package to the runbook's process ('packages') and run the draft again"
                : "add the package to the runbook's process ('packages') and publish it again",
          }),
      };
      task.log.setMasker(new LogMasker(loaded.secrets));
      const all = await environmentTargets(db, environment.id);
      const targets = loaded.targetIds ? all.filter((info) => loaded.targetIds?.includes(info.id)) : all;
      const system = (info: TargetInfo | undefined): SystemVariableValues => ({
        environmentName: environment.name,
        environmentSlug: environment.slug,
        projectName: project.name,
        projectSlug: project.slug,
        runbookName: runbook.name,
        runbookRunId: runId,
        taskId: task.taskId,
        ...(info && { targetName: info.name }),
      });
      task.log.info(
        `Running runbook ${runbook.name} (${loaded.version === null ? "draft" : `published version ${loaded.version}`}) of ${project.name} in ${environment.name}`,
      );
      if (loaded.run.freeze_override) task.log.warn(`freeze overridden: ${loaded.run.freeze_override}`);
      if (loaded.run.cause)
        task.log.info(`Queued by ${loaded.run.cause}, for the firing due ${loaded.run.scheduled_for}`);
      for (const image of loaded.images) task.log.info(`image ${image.name}: ${image.tag} (${image.digest})`);
      for (const item of loaded.packages)
        task.log.info(`package ${item.name}: ${item.version} (sha256 ${item.sha256})`);
      const { failed, skippedSteps } = await runProcess(runRunner, {
        task,
        scope: {
          project: { id: project.id, slug: project.slug, name: project.name },
          environment: { id: environment.id, slug: environment.slug, name: environment.name },
          subject: { kind: "runbook", id: runbook.id, slug: runbook.slug, version: loaded.version },
        },
        steps: definition.process.steps,
        targets,
        variables: (step, info, outputs) => {
          const values = stepVariables(
            loaded.variables,
            { environmentId: environment.id, target: info, stepName: step.name },
            system(info),
            outputs,
            loaded.images,
            loaded.packages,
          );
          // Parameters come last: a run's answer wins over a project variable of the same name.
          for (const [name, value] of loaded.parameters) values.set(name, value);
          return values;
        },
        guidedFailure,
        separateApprover: false,
        touch: (host) => recordTaskTarget(db, task.taskId, host.id),
      });
      if (failed) throw new TaskFailure(failed);
      return { runId, runbook: runbook.slug, environment: environment.slug, skippedSteps };
    },
    cleanup: (taskId, _payload, log) => cleanUpTask(services.context.db, target, taskId, log),
  };
}
