import { Access } from "../domain/access.js";
import { InputError } from "../domain/errors.js";
import { stepRunsIn } from "../domain/process.js";
import { releaseSnapshotSchema } from "../domain/releases.js";
import { rollingBatches, windowSize } from "../domain/rolling.js";
import { describeStepFile, substituteStepFile } from "../domain/stepFiles.js";
import { renderTemplate, templateVariables } from "../domain/templates.js";
import { parseStoredStepConfig, stepKind } from "../steps/registry.js";
import { findNamed } from "../store/common.js";
import { environmentTargets } from "../store/deployments.js";
import { getReleaseRow } from "../store/releases.js";
import { type DeploymentServices, stepVariables } from "./deployments.js";
import { MASK } from "./logMasker.js";
import { targetsOfStep } from "./processRunner.js";

interface PlannedStep {
  name: string;
  kind: string;
  runs: boolean;
  reason?: string;
  targets: string[];
  actions: string[];
}

export interface DeploymentPlan {
  project: string;
  release: string;
  environment: string;
  steps: PlannedStep[];
  variables: { name: string; value: string; sensitive: boolean }[];
}

/**
 * What a deployment would do, without doing it: each step, whether it runs, on which
 * targets, its actions with variables substituted, and the resolved variables. Sensitive
 * values are never opened here: they show as the mask.
 *
 * A caller without viewSensitiveNames on the project × environment does not learn that a
 * sensitive variable exists, as in the variables list (ADR 0020): it is left out of the
 * plan's variables, and in the actions every name it cannot see a value of, sensitive or
 * not defined at all, shows as the mask, so the two cannot be told apart.
 */
export async function planDeployment(
  services: DeploymentServices,
  request: { project: string; release: string; environment: string },
  access: Access = Access.everything(),
): Promise<DeploymentPlan> {
  const { db } = services.context;
  const project = await findNamed(db, "projects", request.project);
  const environment = await findNamed(db, "environments", request.environment);
  const showsSensitiveNames = access.allows({
    permission: "viewSensitiveNames",
    project: project.id,
    environment: environment.id,
  });
  const release = await getReleaseRow(db, project.id, request.release);
  if (!release) {
    throw new InputError(`project '${project.name}' has no release '${request.release}'`, [
      { pointer: "/release", detail: "list releases with 'ferry release list'", in: "query" },
    ]);
  }
  const snapshot = releaseSnapshotSchema.parse(JSON.parse(release.snapshot));
  const sensitiveNames = new Set(snapshot.variables.filter((variable) => variable.sensitive).map((v) => v.name));
  const masked = snapshot.variables.map((variable) => ({
    ...variable,
    value: variable.sensitive ? MASK : variable.value,
  }));
  const targets = await environmentTargets(db, environment.id);
  const system = {
    releaseNumber: release.version,
    environmentName: environment.name,
    environmentSlug: environment.slug,
    projectName: project.name,
    projectSlug: project.slug,
    deploymentId: "(planned)",
  };
  const steps: PlannedStep[] = snapshot.process.steps.map((step) => {
    const base = { name: step.name, kind: step.kind, targets: [] as string[], actions: [] as string[] };
    if (!stepRunsIn(step, environment.slug)) {
      return { ...base, runs: false, reason: `does not run in ${environment.name}` };
    }
    const stepTargets = targetsOfStep(step, targets);
    if (stepTargets.length === 0) {
      return { ...base, runs: false, reason: `no target in ${environment.name} has role ${step.roles.join(" or ")}` };
    }
    const kind = stepKind(step.kind);
    const actions: string[] = [];
    if (step.rolling) {
      // What a rolling step's batches will be, in the order they run.
      const batches = rollingBatches(stepTargets, step.rolling.window);
      actions.push(
        `rolling: ${batches.length} batch(es) of up to ${windowSize(step.rolling.window, stepTargets.length)} (window ${step.rolling.window}${step.rolling.pauseSeconds > 0 ? `, ${step.rolling.pauseSeconds} s between batches` : ""}): ${batches.map((batch) => batch.map((target) => target?.name ?? "(server)").join(", ")).join(" | ")}`,
      );
    }
    for (const target of stepTargets) {
      const variables = stepVariables(
        masked,
        { environmentId: environment.id, target, stepName: step.name },
        {
          ...system,
          ...(target && { targetName: target.name }),
        },
        new Map(),
        snapshot.images,
        snapshot.packages,
      );
      // Outputs of earlier steps are unknown until they run; show them as placeholders.
      const render = (template: string) => {
        const lookup = new Map(variables);
        for (const name of templateVariables(template)) {
          if (name.startsWith("Ferry.Step[") && !lookup.has(name)) lookup.set(name, `<${name}>`);
          else if (!showsSensitiveNames && (sensitiveNames.has(name) || !lookup.has(name))) lookup.set(name, MASK);
        }
        return renderTemplate(template, lookup);
      };
      try {
        const described = kind ? kind.plan(parseStoredStepConfig(kind, step), render) : [];
        actions.push(...described.map((action) => (target ? `${target.name}: ` : "") + action.description));
      } catch (error) {
        actions.push(`error: ${error instanceof Error ? error.message : String(error)}`);
      }
      // Template files (ADR 0051): where each goes, and a template that would fail says so now.
      // The rendered text is never shown; sensitive values are masked in the lookup anyway.
      for (const file of step.files ?? []) {
        try {
          actions.push((target ? `${target.name}: ` : "") + describeStepFile(file, render));
          if (file.content !== undefined) {
            const templates = [...(file.substitute ? [file.content] : []), ...Object.values(file.replace)];
            const lookup = new Map(variables);
            for (const name of templates.flatMap(templateVariables)) {
              if (name.startsWith("Ferry.Step[") && !lookup.has(name)) lookup.set(name, `<${name}>`);
              else if (sensitiveNames.has(name)) lookup.set(name, MASK);
              else if (!showsSensitiveNames && !lookup.has(name)) lookup.set(name, MASK);
            }
            substituteStepFile(file, file.content, lookup);
          }
        } catch (error) {
          actions.push(`error: ${error instanceof Error ? error.message : String(error)}`);
        }
      }
    }
    const condition = typeof step.condition === "string" ? step.condition : `if ${step.condition.variable}`;
    return {
      ...base,
      runs: true,
      ...(condition !== "success" && { reason: `runs when: ${condition}` }),
      targets: stepTargets.map((target) => target?.name ?? "(server)"),
      actions,
    };
  });
  const variables = stepVariables(masked, { environmentId: environment.id, target: undefined, stepName: "" }, system);
  return {
    project: project.slug,
    release: release.version,
    environment: environment.slug,
    steps,
    variables: [...variables]
      .filter(([name]) => showsSensitiveNames || !sensitiveNames.has(name))
      .map(([name, value]) => ({ name, value, sensitive: sensitiveNames.has(name) }))
      .sort((a, b) => a.name.localeCompare(b.name)),
  };
}
