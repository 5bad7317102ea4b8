import type { FastifyRequest } from "fastify";
import type { AuditDiff } from "../domain/audit.js";
import { appendAuditEvent } from "../store/audit.js";
import type { StoreContext } from "../store/common.js";

/** Audit actions of sign-ins (a sign-out is `session.delete`); `?resource=session:<username>` lists one name's. */
const SIGNED_IN = "session.sign-in";
const SIGN_IN_FAILED = "session.sign-in-failed";

type SignInMethod = "password" | "oidc";

type SignInOutcome =
  | {
      signedIn: true;
      method: SignInMethod;
      user: { id: string; username: string };
      sessionId: string;
    }
  | {
      signedIn: false;
      method: SignInMethod;
      /** The username tried (password), or the Ferry user the provider's identity is linked to (OIDC); null when unknown. */
      username: string | null;
      /** OIDC: the provider's subject, once its ID token was checked. */
      oidcSubject?: string | undefined;
      /** OIDC: why Ferry refused (the text the browser was shown). A password failure gives none, as its answer does not. */
      reason?: string | undefined;
    };

/**
 * Writes a sign-in, successful or failed, to the audit log, with the client's address as
 * its source. Sign-in routes are public, which the generic recorder (src/api/audit.ts)
 * passes by, so they call this themselves. Never the password: a failed password sign-in
 * records the username tried. Only attempts that were checked are recorded: one refused by
 * the sign-in limit (429) checked nothing, and recording those would let anyone write to
 * the log without limit. As for every other entry, a failure to write is logged at error
 * level and the sign-in's own answer stands.
 */
export async function recordSignIn(context: StoreContext, request: FastifyRequest, outcome: SignInOutcome) {
  const diff: AuditDiff = { method: { from: null, to: outcome.method } };
  const entry = outcome.signedIn
    ? {
        actor: { id: outcome.user.id, name: outcome.user.username },
        action: SIGNED_IN,
        resource: { type: "session", id: outcome.sessionId, name: outcome.user.username },
      }
    : {
        actor: { id: null, name: "anonymous" },
        action: SIGN_IN_FAILED,
        resource: { type: "session", id: null, name: outcome.username },
      };
  if (!outcome.signedIn) {
    if (outcome.oidcSubject !== undefined) diff.oidcSubject = { from: null, to: outcome.oidcSubject };
    if (outcome.reason !== undefined) diff.reason = { from: null, to: outcome.reason };
  }
  try {
    await appendAuditEvent(context, { ...entry, source: request.ip, diff });
  } catch (error) {
    request.log.error(
      { err: error, audit: entry.action, resource: entry.resource },
      "the sign-in was answered but could not be written to the audit log",
    );
  }
}
