import { type Step, stepRunsIn } from "../domain/process.js";
import { renderTemplate } from "../domain/templates.js";
import type { OutboundPolicy } from "../security/outboundGuard.js";
import { AllAtOnce } from "../steps/blueGreen/allAtOnce.js";
import { stepKind } from "../steps/registry.js";
import type { StepRunContext } from "../steps/types.js";
import type { TargetInfo } from "../store/deployments.js";
import type { Target } from "../transports/types.js";
import type { TaskLog } from "./taskLog.js";
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

/** The label naming the target a step ran for, on what it created (absent: the server's own host, or made before targets were named). */
export const TARGET_LABEL = "ferry.target";

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
      if (stepTargets.length > 1 && runsTogether(step)) {
        const infos = stepTargets as TargetInfo[];
        const outcome = await task.log.step(`${step.name} on ${infos.length} targets, all at once`, () =>
          runStepTogether(services, run, step, infos, touched, outputs),
        );
        for (const [key, value] of Object.entries(outcome.outputs)) {
          outputs.set(`Ferry.Step[${step.name}].Output.${key}`, value);
        }
        if (outcome.failed !== undefined) {
          if (step.required) {
            failed ??= outcome.failed;
            task.log.error(outcome.failed);
          } else {
            task.log.warn(`optional ${outcome.failed}; continuing`);
          }
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

/** Whether the step's config asks to run on all its targets together (a blue/green `switch: allAtOnce`). */
function runsTogether(step: Step): boolean {
  const kind = stepKind(step.kind);
  if (!kind?.together) return false;
  const parsed = kind.config.safeParse(step.config);
  return parsed.success && kind.together(parsed.data);
}

/**
 * Runs a step on all its targets at once, each meeting the others at the step's checkpoints
 * (steps/blueGreen/allAtOnce.ts): one that fails makes the others undo what they did. Guided
 * failure does not apply (a retry of one target alone would switch it alone); the step fails
 * as a whole, naming each target's outcome.
 */
async function runStepTogether(
  services: ProcessRunnerServices,
  run: ProcessRun,
  step: Step,
  infos: readonly TargetInfo[],
  touched: Set<Target["transport"]>,
  earlierOutputs: ReadonlyMap<string, string>,
): Promise<{ failed: string | undefined; outputs: Record<string, string> }> {
  const { task } = run;
  const meeting = new AllAtOnce(infos.length);
  task.log.info(`step '${step.name}' runs on ${infos.map((info) => info.name).join(", ")} all at once`);
  const outcomes = await Promise.allSettled(
    infos.map(async (info) => {
      const target = services.target(info);
      try {
        await run.touch(target);
        touched.add(target.transport);
        return await runStep(services, run, step, info, target, run.variables(step, info, earlierOutputs), meeting);
      } catch (error) {
        meeting.fail(info.name, error instanceof Error ? error.message : String(error));
        throw error;
      }
    }),
  );
  if (task.signal.aborted) task.signal.throwIfAborted();
  const failures = outcomes.flatMap((outcome, index) =>
    outcome.status === "rejected"
      ? [`${infos[index]?.name}: ${outcome.reason instanceof Error ? outcome.reason.message : String(outcome.reason)}`]
      : [],
  );
  const outputs: Record<string, string> = {};
  for (const outcome of outcomes) if (outcome.status === "fulfilled") Object.assign(outputs, outcome.value.outputs);
  return {
    failed: failures.length > 0 ? `step '${step.name}' failed (all at once): ${failures.join("; ")}` : undefined,
    outputs,
  };
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
  allAtOnce?: AllAtOnce,
) {
  const { task } = run;
  const kind = stepKind(step.kind);
  if (!kind) throw new TaskFailure(`this server does not know step kind '${step.kind}'`);
  const config = kind.config.parse(step.config);
  const stepContext: StepRunContext = {
    taskId: task.taskId,
    stepName: step.name,
    signal: task.signal,
    // Targets running together write to one log at once: each line says which target it is about.
    log: allAtOnce && info ? prefixedLog(task.log, `[${info.name}] `) : task.log,
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
    // The target too: two targets on one host must each find only what was made for them.
    labels: { ...scopeLabels(run.scope, task.taskId), ...(info && { [TARGET_LABEL]: info.slug }) },
    ...(services.outbound && { outbound: services.outbound }),
    ...(allAtOnce && { allAtOnce }),
  };
  if (allAtOnce) return kind.run(stepContext, config);
  return task.log.step(info ? `${step.name} on ${info.name}` : step.name, () => kind.run(stepContext, config));
}

/** The task's log with every info, warning and error line starting with `prefix`. */
function prefixedLog(log: TaskLog, prefix: string): TaskLog {
  return new Proxy(log, {
    get(target, property) {
      if (property === "info" || property === "warn" || property === "error") {
        return (text: string) => target[property](`${prefix}${text}`);
      }
      const value: unknown = Reflect.get(target, property, target);
      return typeof value === "function" ? value.bind(target) : value;
    },
  });
}
