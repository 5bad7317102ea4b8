import { getMaxListeners, setMaxListeners } from "node:events";
import { setTimeout as sleep } from "node:timers/promises";
import type { UnavailableTargetPolicy } from "../domain/environments.js";
import { type RollingConfig, type Step, stepRunsIn } from "../domain/process.js";
import { rollingBatches, windowSize } from "../domain/rolling.js";
import { renderTemplate } from "../domain/templates.js";
import type { RegistryClient } from "../feeds/registry.js";
import type { OutboundPolicy } from "../security/outboundGuard.js";
import { AllAtOnce } from "../steps/blueGreen/allAtOnce.js";
import { parseStoredStepConfig, stepKind } from "../steps/registry.js";
import { writeStepFiles } from "../steps/stepFiles.js";
import type { NestedRun, StepRunContext } from "../steps/types.js";
import type { TargetInfo } from "../store/deployments.js";
import type { Target } from "../transports/types.js";
import { type ArtifactService, noArtifacts } from "./artifacts.js";
import { noPackages, type StepPackages } from "./packages.js";
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
  /** A client of a registry host with its feed's credentials (the registry-retag step). */
  registryClient(registryHost: string): Promise<RegistryClient>;
  /** FERRY_OUTBOUND_ALLOW, for http steps whose address a variable chose. */
  outbound?: OutboundPolicy | undefined;
  /** Where steps' artifacts go; left out (an engine embedded in a test), attaching fails saying so. */
  artifacts?: ArtifactService | undefined;
  /** The packages a run's release pins, for steps that unpack one (ADR 0044); absent: such steps fail saying so. */
  packagesFor?: ((scope: RunScope) => StepPackages) | undefined;
}

export interface ProcessRun {
  task: TaskContext;
  scope: RunScope;
  steps: readonly Step[];
  /** The environment's targets; a step with roles runs on each target having one of them. */
  targets: readonly TargetInfo[];
  /** The variables a step sees on a target, with the outputs of the steps before it. */
  variables(step: Step, target: TargetInfo | undefined, outputs: ReadonlyMap<string, string>): Map<string, string>;
  /** Guided failure: a failing required step waits for retry / skip / exclude / abort instead of failing. */
  guidedFailure: boolean;
  /** The default of approval steps that do not say whether their starter may approve. */
  separateApprover: boolean;
  /** Called once per target a step is about to run on, before it runs (clean-up reaches it later). */
  touch(target: Target): Promise<void>;
  /**
   * What to do with a target that cannot be reached (the environment's policy, ADR 0032):
   * `fail` the process, or `skip` the target and go on. Absent: fail, without probing.
   */
  unavailableTargets?: UnavailableTargets | undefined;
}

/** The environment's policy for unreachable targets, and how the runner finds out. */
interface UnavailableTargets {
  policy: UnavailableTargetPolicy;
  /** Undefined when the target answers now, else why it does not (engine/targetHealth.ts probeTarget). */
  probe(target: Target, signal: AbortSignal): Promise<string | undefined>;
}

export interface ProcessOutcome {
  /** Why the process failed; undefined when it succeeded. */
  failed: string | undefined;
  /** Required steps a person skipped after they failed, and targets a person excluded. */
  skippedSteps: number;
}

/** How one step went on one target, once failures were dealt with. */
type TargetOutcome =
  | { kind: "succeeded"; outputs: Record<string, string> }
  /** A person chose skip (guided failure): the step counts as skipped there. */
  | { kind: "skipped"; message: string }
  /** A person chose exclude: the target is left out of the rest of the process. */
  | { kind: "excluded"; message: string }
  /** The target could not be reached and the environment's policy is skip. */
  | { kind: "unavailable"; message: string }
  | { kind: "failed"; error: unknown };

/**
 * Runs a process's steps in order on the scope's environment: each step once on the
 * server's host (no roles) or on every target with one of its roles — one after another, or
 * for a rolling step in batches that run in parallel — honouring run conditions, optional
 * steps, guided failure and the environment's policy for unreachable targets. Used by
 * deployments and, next, runbooks.
 */
export async function runProcess(services: ProcessRunnerServices, run: ProcessRun): Promise<ProcessOutcome> {
  const { task, scope } = run;
  // Each target probed or run at once (a rolling batch) listens for the task's cancel: a
  // batch of 20 is not the leak Node warns about past 10 listeners.
  setMaxListeners(Math.max(getMaxListeners(task.signal), run.targets.length * 4 + 10), task.signal);
  const outputs = new Map<string, string>();
  let failed: string | undefined;
  let skippedSteps = 0;
  /** Targets left out of the rest of the process: unreachable (policy skip), or excluded by a person. */
  const leftOut = new Set<string>();
  /** The hosts steps ran on, each once: their work files go when the process ends. */
  const touched = new Set<Target["transport"]>();
  const touch = async (target: Target) => {
    await run.touch(target);
    touched.add(target.transport);
  };
  // One question at a time: the engine keeps one open decision per task, and the targets
  // of a rolling batch run at once.
  let asking: Promise<unknown> = Promise.resolve();
  const waitForDecision: TaskContext["waitForDecision"] = (question) => {
    const answer = asking.then(() => task.waitForDecision(question));
    asking = answer.catch(() => undefined);
    return answer;
  };
  const context = { services, run, waitForDecision, touch };
  /** Applies how a step went on a target: outputs, counts, log lines, and whether the process failed. */
  const settle = (step: Step, info: TargetInfo | undefined, outcome: TargetOutcome): boolean => {
    const where = info ? ` on ${info.name}` : "";
    switch (outcome.kind) {
      case "succeeded":
        for (const [key, value] of Object.entries(outcome.outputs)) {
          outputs.set(`Ferry.Step[${step.name}].Output.${key}`, value);
        }
        return false;
      case "skipped":
        skippedSteps += 1;
        task.log.warn(outcome.message);
        return false;
      case "excluded":
        skippedSteps += 1;
        if (info) leftOut.add(info.id);
        task.log.warn(outcome.message);
        return false;
      case "unavailable":
        if (info) leftOut.add(info.id);
        task.log.warn(outcome.message);
        return false;
      case "failed": {
        if (task.signal.aborted) throw outcome.error;
        const message = messageOf(outcome.error);
        if (step.required || outcome.error instanceof FinalFailure) {
          // A final failure (a rejected approval) fails the process even when the step is optional.
          const reason = `step '${step.name}'${where} failed: ${message}`;
          failed ??= reason;
          task.log.error(reason);
          return true;
        }
        task.log.warn(`optional step '${step.name}' failed (${message})${where}; continuing`);
        return false;
      }
      default:
        return assertNever(outcome);
    }
  };
  try {
    const atStart = await probeBeforeStart(context);
    if (atStart.failed) return { failed: atStart.failed, skippedSteps };
    for (const id of atStart.leftOut) leftOut.add(id);
    for (const step of run.steps) {
      if (!stepRunsIn(step, scope.environment.slug)) {
        task.log.info(`skipping step '${step.name}': it does not run in ${scope.environment.name}`);
        continue;
      }
      if (!shouldRun(step, failed !== undefined, run.variables(step, undefined, outputs))) {
        task.log.info(`skipping step '${step.name}': its run condition is not met`);
        continue;
      }
      const matching = targetsOfStep(step, run.targets);
      const stepTargets = matching.filter((info) => !info || !leftOut.has(info.id));
      if (stepTargets.length === 0) {
        const message =
          matching.length === 0
            ? `no target in ${scope.environment.name} has role ${step.roles.join(" or ")} for step '${step.name}'`
            : `every target of step '${step.name}' was left out of this deployment (unreachable or excluded)`;
        if (step.required) {
          failed ??= message;
          task.log.error(message);
        } else {
          task.log.warn(message);
        }
        continue;
      }
      if (stepTargets.length > 1 && runsTogether(step)) {
        if (step.rolling) {
          task.log.warn(`step '${step.name}' switches all its targets at once: its rolling window does not apply`);
        }
        const infos = stepTargets as TargetInfo[];
        const outcome = await task.log.step(`${step.name} on ${infos.length} targets, all at once`, () =>
          runStepTogether(context, step, infos, outputs),
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
      const variablesOf = (info: TargetInfo | undefined) => () => run.variables(step, info, outputs);
      if (step.rolling) {
        await runRolling(context, step, step.rolling, stepTargets as TargetInfo[], variablesOf, settle);
        continue;
      }
      for (const info of stepTargets) {
        const outcome = await runOnTarget(context, step, info, variablesOf(info), "guided");
        settle(step, info, outcome);
      }
    }
  } finally {
    // Every host at once: one after another, twenty agents' round trips were most of a
    // fan-out's wind-down (docs/benchmarks.md, rolling-agents). A failure to tidy up must not
    // hide how the process went: it is only logged.
    await Promise.all(
      [...touched].map((transport) =>
        transport.finishTask(task.taskId).catch((error: unknown) => {
          task.log.warn(`could not remove the task's work files on a host (${(error as Error).message})`);
        }),
      ),
    );
  }
  return { failed, skippedSteps };
}

interface RunnerContext {
  services: ProcessRunnerServices;
  run: ProcessRun;
  waitForDecision: TaskContext["waitForDecision"];
  touch(target: Target): Promise<void>;
}

/**
 * Before anything runs, asks every target some step will run on whether it answers (in
 * parallel, each within the probe's timeout). With the policy `fail`, one that does not
 * fails the process here — nothing has changed anywhere, the previous release keeps serving.
 * With `skip`, those targets are left out (their ids are returned).
 */
async function probeBeforeStart(context: RunnerContext): Promise<{ failed?: string; leftOut: string[] }> {
  const { run, services } = context;
  const unavailable = run.unavailableTargets;
  if (!unavailable) return { leftOut: [] };
  const used = new Map<string, TargetInfo>();
  for (const step of run.steps) {
    if (!stepRunsIn(step, run.scope.environment.slug)) continue;
    for (const info of targetsOfStep(step, run.targets)) if (info) used.set(info.id, info);
  }
  if (used.size === 0) return { leftOut: [] };
  const answers = await Promise.all(
    [...used.values()].map(async (info) => {
      const target = services.target(info);
      await context.touch(target);
      return { info, reason: await unavailable.probe(target, run.task.signal) };
    }),
  );
  run.task.signal.throwIfAborted();
  const down = answers.filter((answer) => answer.reason !== undefined);
  if (down.length === 0) return { leftOut: [] };
  const list = down.map((answer) => `'${answer.info.name}' (${answer.reason})`).join(", ");
  const environment = run.scope.environment;
  if (unavailable.policy === "fail") {
    const message = `cannot reach target${down.length > 1 ? "s" : ""} ${list}; nothing was deployed. ${environment.name}'s policy for unavailable targets is fail: bring the host back, or set it to skip to deploy without it (ferry env update ${environment.slug} --unavailable-targets skip)`;
    run.task.log.error(message);
    return { failed: message, leftOut: [] };
  }
  for (const answer of down) {
    run.task.log.warn(
      `target '${answer.info.name}' cannot be reached (${answer.reason}): left out of this deployment (${environment.name}'s policy for unavailable targets is skip)`,
    );
  }
  return { leftOut: down.map((answer) => answer.info.id) };
}

/**
 * A rolling step: its targets in batches of the window's size, each batch in parallel, a
 * pause between batches. The batch is a barrier: when a target of it failed (and guided
 * failure, if on, did not resolve that), no later batch starts.
 */
async function runRolling(
  context: RunnerContext,
  step: Step,
  rolling: RollingConfig,
  targets: readonly TargetInfo[],
  variablesOf: (info: TargetInfo) => () => ReadonlyMap<string, string>,
  settle: (step: Step, info: TargetInfo, outcome: TargetOutcome) => boolean,
): Promise<void> {
  const { task } = context.run;
  const batches = rollingBatches(targets, rolling.window);
  task.log.info(
    `step '${step.name}' rolls over ${targets.length} target(s) in ${batches.length} batch(es) of up to ${windowSize(rolling.window, targets.length)} (window ${rolling.window})`,
  );
  for (const [index, batch] of batches.entries()) {
    if (index > 0 && rolling.pauseSeconds > 0) {
      task.log.info(`pausing ${rolling.pauseSeconds} s before batch ${index + 1}`);
      await sleep(rolling.pauseSeconds * 1000, undefined, { signal: task.signal });
    }
    task.log.info(`batch ${index + 1} of ${batches.length}: ${batch.map((info) => info.name).join(", ")}`);
    // Every target of the batch at once; failures are dealt with afterwards, one by one,
    // since a person answers guided failure for one target at a time.
    const first = await Promise.all(
      batch.map((info) => runOnTarget(context, step, info, variablesOf(info), "unguided")),
    );
    let batchFailed = false;
    for (const [position, info] of batch.entries()) {
      let outcome = first[position] as TargetOutcome;
      if (outcome.kind === "failed") {
        outcome = await resolveFailure(context, step, info, outcome.error, () =>
          runOnTarget(context, step, info, variablesOf(info), "unguided"),
        );
      }
      if (settle(step, info, outcome)) batchFailed = true;
    }
    if (batchFailed) {
      const rest = batches.slice(index + 1).flat();
      if (rest.length > 0) {
        task.log.error(
          `batch ${index + 1} of step '${step.name}' failed: no later batch starts (${rest.map((info) => info.name).join(", ")} not deployed)`,
        );
      }
      return;
    }
  }
}

/**
 * Runs a step on one target (or the server's host). A failure is dealt with at once
 * (`guided`: guided failure and the policy for unreachable targets), or returned as is
 * (`unguided`) for the caller to deal with once the targets running beside it are done.
 */
async function runOnTarget(
  context: RunnerContext,
  step: Step,
  info: TargetInfo | undefined,
  variables: () => ReadonlyMap<string, string>,
  mode: "guided" | "unguided",
): Promise<TargetOutcome> {
  const { services, run } = context;
  const target = services.target(info);
  const attempt = async (): Promise<TargetOutcome> => {
    try {
      await context.touch(target);
      const result = await runStep(context, step, info, target, variables(), mode === "unguided" && info !== undefined);
      return { kind: "succeeded", outputs: result.outputs ?? {} };
    } catch (error) {
      if (run.task.signal.aborted) throw error;
      return { kind: "failed", error };
    }
  };
  const outcome = await attempt();
  if (outcome.kind !== "failed" || mode === "unguided") return outcome;
  return resolveFailure(context, step, info, outcome.error, attempt);
}

/**
 * What becomes of a step that failed on a target. The target cannot be reached and the
 * environment's policy is skip: it is left out. Otherwise, with guided failure on a required
 * step, a person chooses: retry (runs it again), skip (the step, there), exclude (the
 * target, from the rest of the process) or abort. Else the failure stands.
 */
async function resolveFailure(
  context: RunnerContext,
  step: Step,
  info: TargetInfo | undefined,
  error: unknown,
  retry: () => Promise<TargetOutcome>,
): Promise<TargetOutcome> {
  const { run, services } = context;
  const { task } = run;
  if (error instanceof FinalFailure) return { kind: "failed", error };
  const unavailable = run.unavailableTargets;
  if (info && unavailable?.policy === "skip") {
    const reason = await unavailable.probe(services.target(info), task.signal);
    if (reason !== undefined) {
      return {
        kind: "unavailable",
        message: `step '${step.name}' failed on ${info.name}, which cannot be reached now (${reason}): left out of the rest of this deployment (${run.scope.environment.name}'s policy for unavailable targets is skip)`,
      };
    }
  }
  if (!run.guidedFailure || !step.required) return { kind: "failed", error };
  let current = error;
  for (;;) {
    const decision = await context.waitForDecision({
      kind: "failure",
      prompt: `step '${step.name}'${info ? ` on ${info.name}` : ""} failed: ${messageOf(current)}`,
      allowed: info ? ["retry", "skip", "exclude", "abort"] : ["retry", "skip", "abort"],
    });
    if (decision.decision === "skip") {
      return {
        kind: "skipped",
        message: `step '${step.name}'${info ? ` on ${info.name}` : ""} failed and was skipped`,
      };
    }
    if (decision.decision === "exclude" && info) {
      return {
        kind: "excluded",
        message: `step '${step.name}' failed on ${info.name}: ${info.name} was excluded from the rest of this deployment`,
      };
    }
    if (decision.decision !== "retry") return { kind: "failed", error: current };
    const again = await retry();
    if (again.kind !== "failed") return again;
    if (again.error instanceof FinalFailure) return again;
    current = again.error;
  }
}

const messageOf = (error: unknown) => (error instanceof Error ? error.message : String(error));

function assertNever(value: never): never {
  throw new Error(`unexpected outcome ${JSON.stringify(value)}`);
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
  context: RunnerContext,
  step: Step,
  infos: readonly TargetInfo[],
  earlierOutputs: ReadonlyMap<string, string>,
): Promise<{ failed: string | undefined; outputs: Record<string, string> }> {
  const { services, run } = context;
  const { task } = run;
  const meeting = new AllAtOnce(infos.length);
  task.log.info(`step '${step.name}' runs on ${infos.map((info) => info.name).join(", ")} all at once`);
  const outcomes = await Promise.allSettled(
    infos.map(async (info) => {
      const target = services.target(info);
      try {
        await context.touch(target);
        return await runStep(context, step, info, target, run.variables(step, info, earlierOutputs), false, meeting);
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

/**
 * Runs a step on a target. `lane`: it runs beside other targets (a rolling batch), so its
 * lines go to a lane of the log that names the target on each line.
 */
async function runStep(
  context: RunnerContext,
  step: Step,
  info: TargetInfo | undefined,
  target: Target,
  variables: ReadonlyMap<string, string>,
  lane: boolean,
  allAtOnce?: AllAtOnce,
  nested?: NestedRun,
) {
  const { services, run } = context;
  const { task } = run;
  const kind = stepKind(step.kind);
  if (!kind) throw new TaskFailure(`this server does not know step kind '${step.kind}'`);
  const config = parseStoredStepConfig(kind, step);
  const name = info ? `${step.name} on ${info.name}` : step.name;
  const laneLog = lane ? task.log.lane(name) : undefined;
  // Targets running together write to one log at once: each line says which target it is about.
  const log = laneLog ?? (allAtOnce && info ? prefixedLog(task.log, `[${info.name}] `) : task.log);
  let stepContext: StepRunContext = {
    taskId: task.taskId,
    stepName: step.name,
    signal: task.signal,
    log,
    variables,
    render: (template) => renderTemplate(template, variables),
    // The lifecycle phase's default for separation of duties, unless the step says otherwise.
    waitForDecision: (question) =>
      context.waitForDecision({
        ...question,
        separateFromStarter: question.separateFromStarter ?? run.separateApprover,
      }),
    registryCredentials: services.registryCredentials,
    registryClient: services.registryClient,
    scope: run.scope,
    target,
    // The target too: two targets on one host must each find only what was made for them.
    labels: {
      ...scopeLabels(run.scope, task.taskId),
      ...(info && { [TARGET_LABEL]: info.slug }),
      ...nested?.isolation.labels,
    },
    ...(services.outbound && { outbound: services.outbound }),
    ...(nested?.outbound && { outbound: nested.outbound }),
    ...(nested && { isolation: nested.isolation }),
    runNestedSteps: (steps, inner) => runNestedSteps(context, info, target, steps, inner),
    ...(allAtOnce && { allAtOnce }),
    environmentTarget: async (name) => {
      const other = run.targets.find((candidate) => candidate.slug === name || candidate.name === name);
      if (!other) {
        throw new TaskFailure(
          `no target '${name}' in ${run.scope.environment.name}; use one of: ${run.targets.map((candidate) => candidate.slug).join(", ") || "(none)"}`,
        );
      }
      const reached = services.target(other);
      // Recorded like a step's own target: clean-up after a crash visits its host too.
      await context.touch(reached);
      return reached;
    },
    artifacts: services.artifacts
      ? services.artifacts.forStep({
          taskId: task.taskId,
          stepName: step.name,
          scope: run.scope,
          target,
          log,
          signal: task.signal,
        })
      : noArtifacts,
    packages: services.packagesFor?.(run.scope) ?? noPackages,
  };
  // The file the kind takes as its input (a compose step's composeFile) is handed to it, not written.
  const input = kind.inputFile?.(config);
  const inputFile = input === undefined ? undefined : step.files?.find((file) => file.file === input)?.content;
  if (inputFile !== undefined) stepContext = { ...stepContext, inputFile };
  const files = (step.files ?? []).filter((file) => file.file !== input);
  // Template files (ADR 0051): rendered for this target and written before the step runs,
  // or, for a step that unpacks a package, into the directory it unpacked.
  const unpacks = kind.unpackedPackage !== undefined;
  const work =
    files.length === 0
      ? () => kind.run(stepContext, config)
      : async () => {
          if (!unpacks) await writeStepFiles(stepContext, step, files);
          const result = await kind.run(stepContext, config);
          if (unpacks) await writeStepFiles(stepContext, step, files, result.outputs?.directory);
          return result;
        };
  if (allAtOnce) return work();
  return laneLog ? laneLog.run(work) : task.log.step(name, work);
}

/**
 * The steps of a group (an isolated test group, ADR 0045) on the group's target, one after
 * another: each sees the group's variables and the outputs of the nested steps before it,
 * and runs by its own condition. A required step's failure fails the group (the later
 * steps with condition `failure` or `always` still run: they may collect logs); an optional
 * one's is a warning. Guided failure does not reach inside a group: the group's clean-up
 * must not wait on a person.
 */
async function runNestedSteps(
  context: RunnerContext,
  info: TargetInfo | undefined,
  target: Target,
  steps: readonly Step[],
  nested: NestedRun,
): Promise<{ failed: string | undefined }> {
  const { task } = context.run;
  const variables = new Map(nested.variables);
  let failed: string | undefined;
  for (const step of steps) {
    if (!shouldRun(step, failed !== undefined, variables)) {
      task.log.info(`skipping step '${step.name}': its run condition is not met`);
      continue;
    }
    try {
      const result = await runStep(context, step, info, target, variables, false, undefined, nested);
      for (const [key, value] of Object.entries(result.outputs ?? {})) {
        variables.set(`Ferry.Step[${step.name}].Output.${key}`, value);
      }
    } catch (error) {
      if (task.signal.aborted) throw error;
      if (step.required) {
        const reason = `step '${step.name}' failed: ${messageOf(error)}`;
        failed ??= reason;
        task.log.error(reason);
      } else {
        task.log.warn(`optional step '${step.name}' failed (${messageOf(error)}); continuing`);
      }
    }
  }
  return { failed };
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
