import { z } from "zod";
import { TaskFailure } from "../engine/types.js";
import type { StepKind } from "./types.js";

const approvalConfigSchema = z.strictObject({
  /** What the approver should check; a template rendered with the deployment's variables. */
  instructions: z.string().min(1).max(10_000),
});
type ApprovalConfig = z.infer<typeof approvalConfigSchema>;

/**
 * Waits for a person to approve or reject, with a comment. The task shows as "waiting"
 * meanwhile; a rejection fails the step with the approver's comment.
 */
export const approvalStep: StepKind<ApprovalConfig> = {
  kind: "approval",
  config: approvalConfigSchema,

  plan(config, render) {
    return [{ description: `wait for approval: ${render(config.instructions)}` }];
  },

  async run(context, config) {
    const instructions = context.render(config.instructions);
    const decision = await context.waitForDecision({
      kind: "approval",
      prompt: instructions,
      allowed: ["approve", "reject"],
    });
    if (decision.decision !== "approve") {
      throw new TaskFailure(
        `rejected by ${decision.decidedBy ?? "someone"}${decision.comment ? `: ${decision.comment}` : ""}`,
      );
    }
    return { outputs: { ApprovedBy: decision.decidedBy ?? "" } };
  },
};
