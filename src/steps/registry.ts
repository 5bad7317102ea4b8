import { type FieldIssue, InputError } from "../domain/errors.js";
import type { Step } from "../domain/process.js";
import { toFieldIssues } from "../domain/validation.js";
import { TaskFailure } from "../engine/types.js";
import { approvalStep } from "./approval.js";
import { collectLogsStep } from "./collectLogs.js";
import { composeDownStep } from "./compose/composeDownStep.js";
import { composeStep } from "./compose/composeStep.js";
import { containerStep } from "./container/containerStep.js";
import { execStep } from "./exec.js";
import { healthCheckStep } from "./healthCheck.js";
import { httpTestStep } from "./httpTest.js";
import { makeIsolatedStep } from "./isolated/isolatedStep.js";
import { mysqlBackupStep } from "./mysqlBackup.js";
import { packageStep } from "./package.js";
import { postgresBackupStep } from "./postgresBackup.js";
import { processStep } from "./process/processStep.js";
import { registryRetagStep } from "./registryRetag.js";
import { restartStep } from "./restart.js";
import { restoreVerifyStep } from "./restoreVerify.js";
import { runContainerStep } from "./runContainer.js";
import { scriptStep } from "./script.js";
import type { StepKind } from "./types.js";

/** Every step kind Ferry knows: one line each. */
const stepKinds: readonly StepKind[] = [
  scriptStep as StepKind,
  approvalStep as StepKind,
  containerStep as StepKind,
  healthCheckStep as StepKind,
  httpTestStep as StepKind,
  processStep as StepKind,
  registryRetagStep as StepKind,
  collectLogsStep as StepKind,
  postgresBackupStep as StepKind,
  mysqlBackupStep as StepKind,
  restoreVerifyStep as StepKind,
  execStep as StepKind,
  restartStep as StepKind,
  composeStep as StepKind,
  composeDownStep as StepKind,
  runContainerStep as StepKind,
  makeIsolatedStep(validateNestedConfig) as StepKind,
  packageStep as StepKind,
];

const byKind = new Map(stepKinds.map((kind) => [kind.kind, kind]));

/** The problems of a step's config by its kind (an isolated group's nested steps), as pointers into the step. */
function validateNestedConfig(kindName: string, config: unknown): FieldIssue[] {
  const kind = byKind.get(kindName);
  if (!kind) {
    return [
      { pointer: "/kind", detail: `unknown step kind '${kindName}'; use one of: ${[...byKind.keys()].join(", ")}` },
    ];
  }
  const result = kind.config.safeParse(config ?? {});
  if (result.success) return [];
  return toFieldIssues(result.error).map((issue) => ({ pointer: `/config${issue.pointer}`, detail: issue.detail }));
}

export function stepKind(kind: string): StepKind | undefined {
  return byKind.get(kind);
}

/**
 * A stored step's config parsed by its kind, for a run or a plan. The process was read with
 * storedProcessSchema (ADR 0073), which leaves step configs to their kinds: a config saved
 * before one of its kind's checks became stricter (an http-test's `bodyMatches` that RE2
 * cannot run) fails here, at this step, naming the field and what to do, while the rest of
 * the project keeps working.
 */
export function parseStoredStepConfig(kind: StepKind, step: Step): unknown {
  const result = kind.config.safeParse(step.config);
  if (result.success) return result.data;
  const problems = toFieldIssues(result.error).map((issue) => `${issue.pointer || "/"}: ${issue.detail}`);
  throw new TaskFailure(
    `the ${step.kind} step's config was saved before a check it now fails: config ${problems.join("; config ")}; fix the step where it is defined (ferry.yml, the project's process or the runbook), then create a new release or publish the runbook again`,
  );
}

/**
 * Validates each step's `config` with its kind's schema, returning the steps with their
 * configs parsed (defaults applied). Problems point into the process ("/steps/2/config/script").
 */
export function validateSteps(
  steps: readonly Step[],
  pointerBase = "/steps",
  options: { filesBesideFerryYml?: boolean } = {},
): Step[] {
  const issues: FieldIssue[] = [];
  const parsed = steps.map((step, index) => {
    const kind = byKind.get(step.kind);
    if (!kind) {
      issues.push({
        pointer: `${pointerBase}/${index}/kind`,
        detail: `unknown step kind '${step.kind}'; use one of: ${[...byKind.keys()].join(", ")}`,
      });
      return step;
    }
    const result = kind.config.safeParse(step.config);
    if (!result.success) {
      for (const issue of toFieldIssues(result.error)) {
        issues.push({ pointer: `${pointerBase}/${index}/config${issue.pointer}`, detail: issue.detail });
      }
      return step;
    }
    issues.push(...fileIssues(step, kind, result.data, `${pointerBase}/${index}`, options));
    return { ...step, config: result.data as Record<string, unknown> };
  });
  if (issues.length > 0) throw new InputError("the process has invalid steps; fix the fields listed", issues);
  return parsed;
}

/**
 * The problems of a step's template files (ADR 0051) given its kind: only kinds that deploy
 * files take them; a package's file only on the step that unpacks that package; through the
 * API a file beside ferry.yml must come with its content (`ferry apply` reads it).
 */
function fileIssues(
  step: Step,
  kind: StepKind,
  config: unknown,
  stepPointer: string,
  options: { filesBesideFerryYml?: boolean },
): FieldIssue[] {
  const files = step.files ?? [];
  const input = kind.inputFile?.(config);
  if (files.length === 0 && input === undefined) return [];
  const pointer = `${stepPointer}/files`;
  const unpacked = kind.unpackedPackage?.(config);
  if (!kind.deploysFiles && unpacked === undefined) {
    const kinds = stepKinds.filter((other) => other.deploysFiles || other.unpackedPackage).map((other) => other.kind);
    return [
      {
        pointer,
        detail: `a ${kind.kind} step writes no files; put template files on a step of kind ${kinds.join(", ")}`,
      },
    ];
  }
  const issues: FieldIssue[] = [];
  if (input !== undefined) issues.push(...inputFileIssues(kind, files, input, stepPointer, options));
  files.forEach((file, index) => {
    if (file.file === input) return;
    if (file.package !== undefined && file.package !== unpacked) {
      issues.push({
        pointer: `${pointer}/${index}/package`,
        detail: `${file.file} is in package ${file.package}: put it on the package step that unpacks ${file.package}${unpacked ? ` (this one unpacks ${unpacked})` : ""}`,
      });
    }
    if (file.package === undefined && file.content === undefined && !options.filesBesideFerryYml) {
      issues.push({
        pointer: `${pointer}/${index}/content`,
        detail: `give ${file.file}'s template text as content (ferry apply reads it from beside ferry.yml), or name the package it is in`,
      });
    }
    if (file.path === undefined && file.package === undefined && unpacked === undefined) {
      issues.push({
        pointer: `${pointer}/${index}/path`,
        detail: `say where ${file.file} goes on the target (an absolute path, e.g. /srv/app/${file.file.split("/").pop()})`,
      });
    }
  });
  return issues;
}

/**
 * The problems of the file a step's config takes as its input (the compose step's
 * `composeFile`): one of the step's files, captured from beside ferry.yml, read as it is
 * (the kind renders it), and valid for the kind once its text is there.
 */
function inputFileIssues(
  kind: StepKind,
  files: readonly NonNullable<Step["files"]>[number][],
  input: string,
  stepPointer: string,
  options: { filesBesideFerryYml?: boolean },
): FieldIssue[] {
  const index = files.findIndex((file) => file.file === input);
  const file = files[index];
  if (!file) {
    return [
      {
        pointer: `${stepPointer}/config`,
        detail: `the step's files have no ${input}; add { file: ${input} } to its files`,
      },
    ];
  }
  const pointer = `${stepPointer}/files/${index}`;
  if (file.package !== undefined || Object.keys(file.replace).length > 0 || file.path !== undefined) {
    return [
      {
        pointer,
        detail: `${input} is the step's own input: give it from beside ferry.yml, without package, path or replace (#{…} in its values are rendered by the step)`,
      },
    ];
  }
  if (file.content === undefined) {
    return options.filesBesideFerryYml
      ? []
      : [{ pointer: `${pointer}/content`, detail: `give ${input}'s text as content (ferry apply reads it)` }];
  }
  return (kind.checkInputFile?.(file.content) ?? []).map((issue) => ({
    pointer: `${pointer}/content${issue.pointer}`,
    detail: issue.detail,
  }));
}
