import type { RunScope } from "../engine/processRunner.js";

/**
 * Labels that say which Ferry project and environment own a network or volume a step makes:
 * tearing the environment down (ADR 0045) removes what carries them. Never a task's or a
 * release's label: a data volume outlives the run that made it (task clean-up removes by
 * `ferry.task`).
 */
export function ownershipLabels(scope: RunScope): Record<string, string> {
  return { "ferry.project": scope.project.slug, "ferry.env": scope.environment.slug };
}
