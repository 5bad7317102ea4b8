import { type Step, stepRunsIn } from "../domain/process.js";
import { renderTemplate } from "../domain/templates.js";
import type { OutboundPolicy } from "../security/outboundGuard.js";
import { stepKind } from "../steps/registry.js";
import type { StepRunContext } from "../steps/types.js";
import type { TargetInfo } from "../store/deployments.js";
import type { Target } from "../transports/types.js";
import { FinalFailure, type TaskContext, TaskFailure } from "./types.js";

/**
 * What a process runs for: the project and environment always, and the release a
 * deployment delivers or the runbook (and its published version, null for a draft run) a
 * runbook run executes. Steps learn it from here; the labels on what they create are
 * derived from it (`scopeLabels`), so clean-up finds exactly what one run made.
 */
export interface RunScope {
  readonly project: { readonly id: string; readonly slug: string; readonly name: string };
  readonly environment: { readonly id: string; readonly slug: string; readonly name: string };
  readonly subject:
    | { readonly kind: "release"; readonly id: string; readonly version: string }
    | { readonly kind: "runbook"; readonly id: string; readonly slug: string; readonly version: number | null };
}

/** The labels every resource a run creates carries (Docker labels today). */
function scopeLabels(scope: RunScope, taskId: string): Record<string, string> {
  const subject = scope.subject;
  const labels: Record<string, string> = { "ferry.project": scope.project.slug, "ferry.env": scope.environment.slug };
  switch (subject.kind) {
    case "release":
      labels["ferry.release"] = subject.version;
      break;
    case "runbook":
      labels["ferry.runbook"] = subject.slug;
      labels["ferry.runbook.version"] = subject.version === null ? "draft" : String(subject.version);
      break;
    default: {
      const unknown: never = subject;
      throw new Error(`unknown run subject ${String(unknown)}`);
    }
  }
  labels["ferry.task"] = taskId;
  return labels;
}

/** What the runner needs from the server: how hosts are reached, credentials. */
export interface ProcessRunnerServices {
  /** The host a step runs on: a target of the environment, or the server's own host (undefined). */
  target(info: TargetInfo | undefined): Target;
  /** Feed credentials for pulling from a registry host. */
  registryCredentials(registryHost: string): Promise<{ username: string; password: string } | undefined>;
  /** FERRY_OUTBOUND_ALLOW, for http steps whose address a variable chose. */
  outbound?: OutboundPolicy | undefined;
}

export interface ProcessRun {
  task: TaskContext;
  scope: RunScope;
  steps: readonly Step[];
  /** The environment's targets; a step with roles runs on each target having one of them. */
  targets: readonly TargetInfo[];
  /** The variables a step sees on a target, with the outputs of the steps before it. */
  variables(step: Step, target: TargetInfo | undefined, outputs: ReadonlyMap<string, string>): Map<string, string>;
  /** Guided failure: a failing required step waits for retry / skip / abort instead of failing. */
  guidedFailure: boolean;
  /** The default of approval steps that do not say whether their starter may approve. */
  separateApprover: boolean;
  /** Called once per target a step is about to run on, before it runs (clean-up reaches it later). */
  touch(target: Target): Promise<void>;
}

export interface ProcessOutcome {
  /** Why the process failed; undefined when it succeeded. */
  failed: string | undefined;
  /** Required steps a person skipped after they failed. */
  skippedSteps: number;
}

/**
 * Runs a process's steps in order on the scope's environment: each step once on the
 * server's host (no roles) or on every target with one of its roles, honouring run
 * conditions, optional steps and guided failure. Used by deployments and, next, runbooks.
 */
export async function runProcess(services: ProcessRunnerServices, run: ProcessRun): Promise<ProcessOutcome> {
  const { task, scope } = run;
  const outputs = new Map<string, string>();
  let failed: string | undefined;
  let skippedSteps = 0;
  /** The hosts steps ran on, each once: their work files go when the process ends. */
  const touched = new Set<Target["transport"]>();
  try {
    for (const step of run.steps) {
      if (!stepRunsIn(step, scope.environment.slug)) {
        task.log.info(`skipping step '${step.name}': it does not run in ${scope.environment.name}`);
        continue;
      }
      if (!shouldRun(step, failed !== undefined, run.variables(step, undefined, outputs))) {
        task.log.info(`skipping step '${step.name}': its run condition is not met`);
        continue;
      }
      const stepTargets = targetsOfStep(step, run.targets);
      if (stepTargets.length === 0) {
        const message = `no target in ${scope.environment.name} has role ${step.roles.join(" or ")} for step '${step.name}'`;
        if (step.required) {
          failed ??= message;
          task.log.error(message);
        } else {
          task.log.warn(message);
        }
        continue;
      }
      for (const info of stepTargets) {
        const target = services.target(info);
        try {
          await run.touch(target);
          touched.add(target.transport);
          const result = await runStepGuided(services, run, step, info, target, () =>
            run.variables(step, info, outputs),
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
            // A final failure (a rejected approval) fails the process even when the step is optional.
            failed ??= `step '${step.name}'${info ? ` on ${info.name}` : ""} failed: ${message}`;
            task.log.error(failed);
          } else {
            task.log.warn(`optional step '${step.name}' failed (${message}); continuing`);
          }
        }
      }
    }
  } finally {
    for (const transport of touched) {
      // A failure to tidy up must not hide how the process went: it is only logged.
      await transport.finishTask(task.taskId).catch((error: unknown) => {
        task.log.warn(`could not remove the task's work files on a host (${(error as Error).message})`);
      });
    }
  }
  return { failed, skippedSteps };
}

/** The targets a step runs on: once on the server's host without roles, else each target with a role. */
export function targetsOfStep(step: Step, targets: readonly TargetInfo[]): (TargetInfo | undefined)[] {
  return step.roles.length === 0
    ? [undefined]
    : targets.filter((target) => target.roles.some((role) => step.roles.includes(role)));
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
  services: ProcessRunnerServices,
  run: ProcessRun,
  step: Step,
  info: TargetInfo | undefined,
  target: Target,
  variables: () => ReadonlyMap<string, string>,
) {
  const { task } = run;
  const guided = run.guidedFailure && step.required;
  for (;;) {
    try {
      return await runStep(services, run, step, info, target, variables());
    } catch (error) {
      // A final failure (a rejected approval) is never offered for retry or skip.
      if (!guided || task.signal.aborted || error instanceof FinalFailure) throw error;
      const message = error instanceof Error ? error.message : String(error);
      const decision = await task.waitForDecision({
        kind: "failure",
        prompt: `step '${step.name}'${info ? ` on ${info.name}` : ""} failed: ${message}`,
        allowed: ["retry", "skip", "abort"],
      });
      if (decision.decision === "skip") throw new SkippedStep(`step '${step.name}' failed and was skipped`);
      if (decision.decision === "abort") throw error;
    }
  }
}

async function runStep(
  services: ProcessRunnerServices,
  run: ProcessRun,
  step: Step,
  info: TargetInfo | undefined,
  target: Target,
  variables: ReadonlyMap<string, string>,
) {
  const { task } = run;
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
        separateFromStarter: question.separateFromStarter ?? run.separateApprover,
      }),
    registryCredentials: services.registryCredentials,
    scope: run.scope,
    target,
    labels: scopeLabels(run.scope, task.taskId),
    ...(services.outbound && { outbound: services.outbound }),
  };
  return task.log.step(info ? `${step.name} on ${info.name}` : step.name, () => kind.run(stepContext, config));
}
