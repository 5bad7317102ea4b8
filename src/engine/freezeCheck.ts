import type { Access } from "../domain/access.js";
import { ForbiddenError, PreconditionError } from "../domain/errors.js";
import { frozenMessage } from "../domain/freezes.js";
import type { Executor } from "../store/common.js";
import { activeFreeze } from "../store/freezes.js";

/** A request refused because a deployment freeze is in effect (automatic deployments skip instead of failing). */
export class FrozenError extends PreconditionError {}

/**
 * Refuses a deployment or runbook run while a freeze covers the environment, unless the
 * request overrides it with a reason and its caller has overrideFreezes there. Returns the
 * override to record (the freeze's name and the reason), or null when no freeze applied.
 */
export async function checkFreeze(
  db: Executor,
  request: {
    project: { id: string; slug: string };
    environment: { id: string; name: string };
    what: "deployment" | "runbook";
    /** Shown in the message: "deploying web 1.2" / "running runbook backup". */
    action: string;
    override?: string | undefined;
    /** The caller's grants; absent for the engine's own requests (auto-deploy), which may not override. */
    access?: Access | undefined;
  },
): Promise<{ freeze: string; reason: string } | null> {
  const freeze = await activeFreeze(db, request.project.id, request.environment.id, request.what);
  if (!freeze) return null;
  if (request.override === undefined) {
    throw new FrozenError(frozenMessage(freeze, request.action, request.environment.name));
  }
  const allowed = request.access?.allows({
    permission: "overrideFreezes",
    project: request.project.id,
    environment: request.environment.id,
  });
  if (!allowed) {
    throw new ForbiddenError(
      `deployment freeze '${freeze.name}' is in effect on ${request.environment.name}, and overriding it needs the 'overrideFreezes' permission on project '${request.project.slug}' there; ask an administrator, or wait until the freeze ends`,
    );
  }
  return { freeze: freeze.name, reason: request.override };
}
