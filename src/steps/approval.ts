import { z } from "zod";
import { escapeControlCharacters } from "../domain/text.js";
import { FinalFailure } from "../engine/types.js";
import type { StepKind } from "./types.js";

const approvalConfigSchema = z.strictObject({
  /** What the approver should check; a template rendered with the deployment's variables. */
  instructions: z.string().min(1).max(10_000),
  /**
   * Separation of duties: true refuses an approval from the person who started the
   * deployment, false allows it; left out, the lifecycle phase's `separateApprover` decides.
   */
  separateApprover: z.boolean().optional(),
});
type ApprovalConfig = z.infer<typeof approvalConfigSchema>;

/**
 * Waits for a person to approve or reject, with a comment. The task shows as "waiting"
 * meanwhile; a rejection fails the deployment with the approver's comment, and is final:
 * no one can retry or skip it (guided failure), and it fails an optional step too.
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
      separateFromStarter: config.separateApprover,
    });
    if (decision.decision !== "approve") {
      throw new FinalFailure(
        // Escaped: the message becomes a log line, which a comment's newline would split into a forged one.
        `rejected by ${escapeControlCharacters(decision.decidedBy ?? "someone")}${decision.comment ? `: ${escapeControlCharacters(decision.comment)}` : ""}`,
      );
    }
    return { outputs: { ApprovedBy: decision.decidedBy ?? "" } };
  },
};
