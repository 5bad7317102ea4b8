import { createHash, timingSafeEqual } from "node:crypto";
import type { FastifyReply, FastifyRequest } from "fastify";
import { z } from "zod";
import {
  FerryError,
  ForbiddenError,
  InputError,
  NotFoundError,
  PreconditionError,
  UnauthenticatedError,
} from "../domain/errors.js";
import type { User } from "../domain/users.js";
import { newLoginSecrets, OIDC_CALLBACK_PATH, type OidcClient, type OidcIdentity } from "../security/oidc.js";
import { appendAuditEvent } from "../store/audit.js";
import type { StoreContext } from "../store/common.js";
import {
  createOidcUser,
  findUserByOidcIdentity,
  linkOidcIdentity,
  OIDC_LOGIN_MAX_AGE_SECONDS,
  type OidcLink,
  saveOidcLogin,
  takeOidcLogin,
  unlinkOidcIdentity,
} from "../store/oidc.js";
import { createSession } from "../store/users.js";
import { defineRoute, pathParams, type RouteSpec } from "./route.js";
import { recordSignIn } from "./signInAudit.js";
import { setSessionCookie } from "./users.js";

/**
 * Binds a sign-in to the browser that started it: the callback must come with this cookie
 * holding the same `state` as its query. Without it, someone could send a victim the
 * callback URL of their own sign-in and sign the victim's browser in as themselves (login
 * CSRF). Sent only to the OIDC routes; SameSite=Lax still sends it on the provider's
 * top-level redirect back.
 */
const STATE_COOKIE = "ferry_oidc_state";
const STATE_COOKIE_PATH = "/api/v1/session/oidc";

const NOT_CONFIGURED =
  "OIDC sign-in is not configured on this server (FERRY_OIDC_ISSUER and the other FERRY_OIDC_* settings); sign in with POST /api/v1/session";

const startQuerySchema = z.strictObject({
  returnTo: z
    .string()
    .max(2000)
    .optional()
    .describe("where to go after signing in: a path on this server, such as /projects (default /)"),
});

/**
 * What the provider sends back. Providers add parameters of their own (session_state,
 * scope, error_description…), so unknown ones are dropped, not refused; error_description
 * is the provider's text and never shown.
 */
const callbackQuerySchema = z.object({
  code: z.string().min(1).max(4096).optional(),
  state: z.string().min(1).max(512).optional(),
  error: z.string().max(200).optional(),
  iss: z.string().max(2000).optional(),
});

const linkSchema = z.strictObject({
  subject: z.string().min(1).max(255).describe("the provider's `sub` for this person (its stable user id)"),
});

const linkResponseSchema = z.object({
  userId: z.string(),
  issuer: z.string().describe("FERRY_OIDC_ISSUER when the link was made"),
  subject: z.string(),
});

/** OIDC sign-in (optional) and linking users to OIDC identities (docs/security.md "Users and sessions"). */
export function oidcRoutes(context: StoreContext, oidc: OidcClient | undefined): RouteSpec[] {
  return [
    defineRoute({
      method: "GET",
      path: "/api/v1/session/oidc/start",
      tag: "Users",
      summary: "Sign in with the OIDC provider: redirects (302) to it; it sends the browser back to the callback",
      access: { kind: "public" },
      query: startQuerySchema,
      handler: async ({ query, request, reply }) => {
        if (!oidc) throw new NotFoundError(NOT_CONFIGURED);
        const returnTo = checkReturnPath(query.returnTo ?? "/");
        const secrets = newLoginSecrets();
        // Discovery first: when the provider is down, no row is left behind.
        const url = await oidc.authorizationUrl(secrets);
        await saveOidcLogin(context, secrets.state, {
          codeVerifier: secrets.codeVerifier,
          nonce: secrets.nonce,
          returnTo,
        });
        setStateCookie(request, reply, secrets.state, OIDC_LOGIN_MAX_AGE_SECONDS);
        reply.header("cache-control", "no-store");
        return reply.redirect(url.toString(), 302);
      },
    }),
    defineRoute({
      method: "GET",
      path: OIDC_CALLBACK_PATH,
      tag: "Users",
      summary:
        "Where the OIDC provider sends the browser back: checks the sign-in, sets the ferry_session cookie and redirects to the return path",
      access: { kind: "public" },
      query: callbackQuerySchema,
      handler: async ({ query, request, reply }) => {
        if (!oidc) throw new NotFoundError(NOT_CONFIGURED);
        reply.header("cache-control", "no-store");
        // Whatever happens next, this sign-in is over: its cookie goes.
        setStateCookie(request, reply, "", 0);
        const state = query.state;
        if (state === undefined) {
          throw new UnauthenticatedError(
            "the provider's answer has no state; start again at /api/v1/session/oidc/start",
          );
        }
        const cookieState = cookieValue(request, STATE_COOKIE);
        if (cookieState === undefined || !sameSecret(cookieState, state)) {
          throw new UnauthenticatedError(
            "this sign-in was not started in this browser (its state does not match); start again at /api/v1/session/oidc/start",
          );
        }
        const login = await takeOidcLogin(context, state);
        if (!login) {
          throw new UnauthenticatedError(
            "this sign-in is unknown, was used already or has expired; start again at /api/v1/session/oidc/start",
          );
        }
        // From here on this is a sign-in that was started in this browser: its outcome is
        // audited. (The failures above are requests nobody could tie to a sign-in, so
        // anyone could send them without end; they write nothing.)
        let identity: OidcIdentity | undefined;
        let user: User | undefined;
        try {
          if (query.error !== undefined) {
            const code = /^[a-z_]{1,64}$/.test(query.error) ? query.error : "an error";
            throw new UnauthenticatedError(`the identity provider did not sign you in (${code}); start again`);
          }
          // RFC 9207: a provider that names itself must name the configured one (mix-up defence).
          if (query.iss !== undefined && query.iss !== oidc.settings.issuer) {
            throw new UnauthenticatedError("the answer comes from another issuer than FERRY_OIDC_ISSUER; start again");
          }
          if (query.code === undefined) {
            throw new UnauthenticatedError("the provider's answer has no authorization code; start again");
          }
          identity = await oidc.signIn(query.code, login.codeVerifier, login.nonce);
          user = await userFor(context, oidc, identity, request.ip);
          if (user.disabled) throw new ForbiddenError("this Ferry user is disabled; ask an administrator");
        } catch (error) {
          await recordSignIn(context, request, {
            signedIn: false,
            method: "oidc",
            username: user?.username ?? null,
            oidcSubject: identity?.subject,
            reason: error instanceof FerryError ? error.message : "the sign-in could not be completed",
          });
          throw error;
        }
        // The same session as a password sign-in.
        const session = await createSession(context, user.id);
        await recordSignIn(context, request, { signedIn: true, method: "oidc", user, sessionId: session.id });
        setSessionCookie(request, reply, session.token, session.maxAgeSeconds);
        return reply.redirect(login.returnTo, 302);
      },
    }),
    defineRoute({
      method: "PUT",
      path: "/api/v1/users/:user/oidc",
      tag: "Users",
      summary: "Link a user to an OIDC subject of FERRY_OIDC_ISSUER, so they can sign in with it (admins only)",
      access: { kind: "administer" },
      params: pathParams("user"),
      body: linkSchema,
      response: linkResponseSchema,
      audit: {
        action: "user.oidc-link",
        change: ({ result }) => {
          const link = result as OidcLink;
          return {
            resource: { type: "user", id: link.userId },
            after: { oidcIssuer: link.issuer, oidcSubject: link.subject },
          };
        },
      },
      handler: async ({ params, body }) => {
        if (!oidc) throw new PreconditionError(NOT_CONFIGURED);
        return linkOidcIdentity(context, params.user, oidc.settings.issuer, body.subject);
      },
    }),
    defineRoute({
      method: "DELETE",
      path: "/api/v1/users/:user/oidc",
      tag: "Users",
      summary: "Unlink a user from their OIDC subject; they can no longer sign in with it (admins only)",
      access: { kind: "administer" },
      params: pathParams("user"),
      status: 204,
      audit: {
        action: "user.oidc-unlink",
        change: ({ params, result }) => {
          const link = result as OidcLink | null;
          return {
            resource: { type: "user", id: link?.userId ?? null, name: params.user },
            before: link ? { oidcIssuer: link.issuer, oidcSubject: link.subject } : null,
          };
        },
      },
      handler: ({ params }) => unlinkOidcIdentity(context, params.user),
    }),
  ];
}

/**
 * A request URL for the log: the OIDC callback's query (the provider's authorization code
 * and the state) is left out. The code is single use and worthless without the PKCE verifier
 * and the client secret, but logs are read by more people than the database.
 */
export function logSafeUrl(url: string): string {
  const separator = url.indexOf("?");
  if (separator < 0) return url;
  const path = url.slice(0, separator);
  let decoded = path;
  try {
    decoded = decodeURIComponent(path);
  } catch {
    // a path with broken escapes matches no route; judged as it is
  }
  return decoded.toLowerCase().includes("/session/oidc/callback") ? `${path}?[redacted]` : url;
}

/** The linked user, or a new one when FERRY_OIDC_CREATE_USERS allows it. */
async function userFor(context: StoreContext, oidc: OidcClient, identity: OidcIdentity, address: string) {
  const linked = await findUserByOidcIdentity(context, identity.issuer, identity.subject);
  if (linked) return linked;
  if (!oidc.settings.createUsers) {
    throw new ForbiddenError(
      `no Ferry user is linked to this OIDC identity (subject ${JSON.stringify(identity.subject)}); ask an administrator to link it with PUT /api/v1/users/{user}/oidc`,
    );
  }
  const user = await createOidcUser(context, {
    issuer: identity.issuer,
    subject: identity.subject,
    usernames: usernameCandidates(identity),
    displayName: (identity.name ?? identity.preferredUsername ?? identity.email ?? identity.subject).slice(0, 200),
  });
  // A new user is a change like POST /api/v1/users; the provider vouched for the person, who is the actor.
  await appendAuditEvent(context, {
    actor: { id: user.id, name: user.username },
    source: address,
    action: "user.create",
    resource: { type: "user", id: user.id, name: user.username },
    diff: {
      username: { from: null, to: user.username },
      isAdmin: { from: null, to: false },
      oidcIssuer: { from: null, to: identity.issuer },
      oidcSubject: { from: null, to: identity.subject },
    },
  });
  return user;
}

const USERNAME = /^[a-z0-9][a-z0-9._@-]{0,62}$/;

/**
 * Usernames to try for a new OIDC user: the provider's preferred_username or email made to
 * fit Ferry's rules, then with a suffix from the identity. A local user with the same name
 * is never taken over: the insert fails on the unique username and the next name is tried.
 */
function usernameCandidates(identity: OidcIdentity): string[] {
  const suffix = createHash("sha256").update(`${identity.issuer}\n${identity.subject}`).digest("hex");
  const fitted = [identity.preferredUsername, identity.email]
    .map((name) =>
      (name ?? "")
        .toLowerCase()
        .replace(/[^a-z0-9._@-]+/g, "-")
        .replace(/^[^a-z0-9]+/, "")
        .slice(0, 54),
    )
    .find((name) => USERNAME.test(name) && name !== "me");
  const base = fitted ?? "oidc";
  return [...(fitted ? [fitted] : []), `${base}-${suffix.slice(0, 8)}`, `oidc-${suffix.slice(0, 20)}`];
}

/**
 * Only a path on this server: "/projects?x=1" yes; "https://elsewhere", "//elsewhere" and
 * "/\elsewhere" (which browsers read as another host) no. An open redirect would let a link
 * to Ferry's sign-in send the freshly signed-in browser anywhere.
 */
function checkReturnPath(path: string): string {
  const base = "http://ferry.invalid";
  let sameOrigin = false;
  try {
    sameOrigin = new URL(path, base).origin === base;
  } catch {
    sameOrigin = false;
  }
  if (!sameOrigin || !/^\/(?![/\\])[\x21-\x7e]*$/.test(path) || path.includes("\\")) {
    throw new InputError("returnTo must be a path on this server, such as /projects (another site is not allowed)", [
      { pointer: "/returnTo", detail: "use a path that starts with a single /", in: "query" },
    ]);
  }
  return path;
}

function setStateCookie(request: FastifyRequest, reply: FastifyReply, state: string, maxAgeSeconds: number): void {
  const attributes = [
    `${STATE_COOKIE}=${state}`,
    `Path=${STATE_COOKIE_PATH}`,
    "HttpOnly",
    "SameSite=Lax",
    `Max-Age=${maxAgeSeconds}`,
    ...(request.protocol === "https" ? ["Secure"] : []),
  ];
  reply.header("set-cookie", attributes.join("; "));
}

function cookieValue(request: FastifyRequest, name: string): string | undefined {
  for (const part of (request.headers.cookie ?? "").split(";")) {
    const [key, ...value] = part.trim().split("=");
    if (key === name) return value.join("=") || undefined;
  }
  return undefined;
}

function sameSecret(a: string, b: string): boolean {
  const left = Buffer.from(a);
  const right = Buffer.from(b);
  return left.length === right.length && timingSafeEqual(left, right);
}
