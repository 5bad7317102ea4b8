import {
  PATTERN_CHECK_TIMEOUT_MS,
  type PatternVerdict,
  parameterPatternChecks,
  type ResolvedParameters,
  type RunbookParameter,
  resolveParameters,
} from "../domain/runbooks.js";
import { testPatternsOffThread } from "../steps/patternWorker.js";

/**
 * A run's parameter values checked with a bounded cost (issue 11, finding 5; ADR 0064):
 * pattern checks cheap enough run at once on the event loop; the others run together on a
 * worker thread for at most PATTERN_CHECK_TIMEOUT_MS, and one not done by then is refused
 * as not checked in time. Throws InputError as resolveParameters does.
 */
export async function checkRunParameters(
  parameters: readonly RunbookParameter[],
  given: Readonly<Record<string, string | number | boolean>>,
): Promise<ResolvedParameters> {
  const checks = parameterPatternChecks(parameters, given);
  const outcomes = await testPatternsOffThread(checks, { timeoutMs: PATTERN_CHECK_TIMEOUT_MS });
  const verdicts = new Map<string, PatternVerdict>(
    checks.map((check, index) => [check.name, outcomes[index]?.kind ?? "timed-out"]),
  );
  return resolveParameters(parameters, given, verdicts);
}
