import type { FastifyReply, FastifyRequest } from "fastify";
import type { z } from "zod";
import { pageSchema, pagingSchema } from "../domain/common.js";
import { CsrfError, ForbiddenError, NotFoundError, UnauthenticatedError } from "../domain/errors.js";
import {
  apiKeySchema,
  changePasswordSchema,
  createApiKeySchema,
  createdApiKeySchema,
  createUserSchema,
  sessionSchema,
  signInSchema,
  type User,
  updateUserSchema,
  userSchema,
} from "../domain/users.js";
import { generateApiKey } from "../security/apiKeys.js";
import { type Identity, insertApiKey, listApiKeys, revokeApiKey } from "../store/apiKeys.js";
import type { StoreContext } from "../store/common.js";
import { verifyCredentialsWithinLimits } from "../store/signInAttempts.js";
import * as users from "../store/users.js";
import { defineRoute, pathParams, type RouteSpec } from "./route.js";
import { recordSignIn } from "./signInAudit.js";

const SESSION_COOKIE = "ferry_session";

/** The identity the auth hook attached (every non-public route has one). */
function identityOf(request: FastifyRequest): Identity {
  if (!request.identity) throw new UnauthenticatedError("sign in or send an API key");
  return request.identity;
}

/** The user behind the request; a key that belongs to no user has none. */
function requireUser(request: FastifyRequest): string {
  const identity = identityOf(request);
  if (identity.userId === null) {
    throw new NotFoundError("this API key belongs to no user; use a user's key or sign in as the user");
  }
  return identity.userId;
}

/**
 * The origin the browser saw when it loaded the page: scheme and Host of this request. An
 * Origin header that differs from it comes from another site.
 */
function ownOrigin(request: FastifyRequest): string {
  return `${request.protocol}://${request.host}`.toLowerCase();
}

/** Refuses a request whose Origin header (when present) is not this server's own. */
export function checkOrigin(request: FastifyRequest): void {
  const origin = request.headers.origin;
  if (origin !== undefined && origin.toLowerCase() !== ownOrigin(request)) {
    throw new CsrfError("the request comes from another site (its Origin header is not this server's); it was refused");
  }
}

export function setSessionCookie(
  request: FastifyRequest,
  reply: FastifyReply,
  token: string,
  maxAgeSeconds: number,
): void {
  const attributes = [
    `${SESSION_COOKIE}=${token}`,
    "Path=/",
    "HttpOnly",
    "SameSite=Lax",
    `Max-Age=${maxAgeSeconds}`,
    // Over plain HTTP a Secure cookie would never be sent back; over TLS it must be Secure.
    ...(request.protocol === "https" ? ["Secure"] : []),
  ];
  reply.header("set-cookie", attributes.join("; "));
}

function clearSessionCookie(request: FastifyRequest, reply: FastifyReply): void {
  setSessionCookie(request, reply, "", 0);
}

const userChange = (user: User | undefined | null) => (user ? { ...user, password: "set" } : null);

/** Users, sign-in sessions and per-user API keys (docs/security.md "Users and sessions", "API keys"). */
export function userRoutes(context: StoreContext): RouteSpec[] {
  return [
    defineRoute({
      method: "POST",
      path: "/api/v1/users",
      tag: "Users",
      summary: "Create a local user (admins only); the password is stored as an scrypt hash",
      access: { kind: "administer" },
      body: createUserSchema,
      response: userSchema,
      status: 201,
      audit: {
        action: "user.create",
        change: ({ result }) => {
          const user = result as User;
          return {
            resource: { type: "user", id: user.id, name: user.username },
            after: userChange(user),
            sensitive: ["password"],
          };
        },
      },
      handler: ({ body }) => users.createUser(context, body),
    }),
    defineRoute({
      method: "GET",
      path: "/api/v1/users",
      tag: "Users",
      summary: "List users (admins only)",
      access: { kind: "administer" },
      query: pagingSchema,
      response: pageSchema(userSchema),
      handler: ({ query }) => users.listUsers(context, query),
    }),
    defineRoute({
      method: "GET",
      path: "/api/v1/users/:user",
      tag: "Users",
      summary: "One user by id or username (admins, or the user themself)",
      access: { kind: "signedIn" },
      params: pathParams("user"),
      response: userSchema,
      handler: async ({ params, access, request }) => {
        if (access.isAdministrator)
          return users.getUser(context, params.user === "me" ? requireUser(request) : params.user);
        // Anyone else may read themself only, and is answered the same for every other name
        // or id whether it exists or not: 403 for a user and 404 for none would tell which
        // usernames exist. Other users are not even looked up, so the time says nothing either.
        const self = await users.getUser(context, requireUser(request));
        if (params.user === "me" || params.user === self.id || params.user === self.username) return self;
        throw users.noSuchUser(params.user);
      },
    }),
    defineRoute({
      method: "PATCH",
      path: "/api/v1/users/:user",
      tag: "Users",
      summary: "Change a user (admins only); a new password, disabling or losing admin ends their sessions",
      access: { kind: "administer" },
      params: pathParams("user"),
      body: updateUserSchema,
      response: userSchema,
      audit: {
        action: "user.update",
        before: ({ params }) => users.getUser(context, params.user),
        change: ({ body, before, result }) => {
          const user = result as User;
          return {
            resource: { type: "user", id: user.id, name: user.username },
            before: userChange(before as User | undefined),
            after: userChange(user),
            sensitive: ["password"],
            written: Object.keys(body),
          };
        },
      },
      handler: ({ params, body }) => users.updateUser(context, params.user, body),
    }),
    defineRoute({
      method: "DELETE",
      path: "/api/v1/users/:user",
      tag: "Users",
      summary: "Delete a user with their sessions and API keys (admins only)",
      access: { kind: "administer" },
      params: pathParams("user"),
      status: 204,
      audit: {
        action: "user.delete",
        before: ({ params }) => users.getUser(context, params.user),
        change: ({ params, before }) => {
          const user = before as User | undefined;
          return {
            resource: { type: "user", id: user?.id ?? null, name: user?.username ?? params.user },
            before: userChange(user),
            sensitive: ["password"],
          };
        },
      },
      handler: async ({ params, request }) => {
        const identity = identityOf(request);
        const user = await users.getUser(context, params.user);
        if (identity.userId === user.id) {
          throw new ForbiddenError("you cannot delete yourself; ask another administrator");
        }
        await users.deleteUser(context, user.id);
      },
    }),
    defineRoute({
      method: "POST",
      path: "/api/v1/users/me/password",
      tag: "Users",
      summary: "Change your own password (needs the current one); your other sessions end",
      access: { kind: "signedIn" },
      body: changePasswordSchema,
      status: 204,
      audit: {
        action: "user.password",
        change: ({ result }) => {
          const user = result as User;
          return {
            resource: { type: "user", id: user.id, name: user.username },
            before: { password: "set" },
            after: { password: "set" },
            sensitive: ["password"],
            written: ["password"],
          };
        },
      },
      handler: async ({ body, request }) => {
        const identity = identityOf(request);
        const user = await users.getUser(context, requireUser(request));
        // Under the sign-in limits, counted with sign-ins: a stolen session must not be a way
        // to guess the password faster than the sign-in page allows.
        const verified = await verifyCredentialsWithinLimits(context, user.username, body.currentPassword, request.ip);
        if (!verified) throw new ForbiddenError("the current password is not correct");
        await users.setPassword(context, user.id, body.newPassword, identity.session?.id);
        return user;
      },
    }),

    defineRoute({
      method: "POST",
      path: "/api/v1/session",
      tag: "Users",
      summary: "Sign in with username and password: sets the ferry_session cookie, returns the CSRF token",
      access: { kind: "public" },
      body: signInSchema,
      response: sessionSchema,
      handler: async ({ body, request, reply }) => {
        // A sign-in from another site would sign the browser in as the attacker (login CSRF).
        checkOrigin(request);
        // Throws 429 before the password's hash is computed once the limits are reached.
        const user = await verifyCredentialsWithinLimits(context, body.username, body.password, request.ip);
        if (!user) {
          await recordSignIn(context, request, { signedIn: false, method: "password", username: body.username });
          // The same words whether the username exists, the password is wrong or the user is disabled.
          throw new UnauthenticatedError("the username or password is not correct");
        }
        const session = await users.createSession(context, user.id);
        await recordSignIn(context, request, { signedIn: true, method: "password", user, sessionId: session.id });
        setSessionCookie(request, reply, session.token, session.maxAgeSeconds);
        return { user, csrfToken: session.csrfToken };
      },
    }),
    defineRoute({
      method: "GET",
      path: "/api/v1/session",
      tag: "Users",
      summary: "The signed-in user and the session's CSRF token",
      access: { kind: "signedIn" },
      response: sessionSchema,
      handler: async ({ request }) => {
        const identity = identityOf(request);
        if (!identity.session || identity.userId === null) {
          throw new NotFoundError(
            "this request has no session (it used an API key); sign in with POST /api/v1/session",
          );
        }
        return { user: await users.getUser(context, identity.userId), csrfToken: identity.session.csrfToken };
      },
    }),
    defineRoute({
      method: "DELETE",
      path: "/api/v1/session",
      tag: "Users",
      summary: "Sign out: ends the session and clears the cookie",
      access: { kind: "signedIn" },
      status: 204,
      audit: {
        action: "session.delete",
        change: ({ result }) => ({ resource: { type: "session", name: String(result ?? "") } }),
      },
      handler: async ({ request, reply }) => {
        const identity = identityOf(request);
        if (!identity.session) throw new NotFoundError("this request has no session (it used an API key)");
        await users.deleteSession(context, identity.session.id);
        clearSessionCookie(request, reply);
        return identity.name;
      },
    }),

    defineRoute({
      method: "POST",
      path: "/api/v1/api-keys",
      tag: "API keys",
      summary: "Create an API key for yourself; the key is in this answer only",
      access: { kind: "signedIn" },
      body: createApiKeySchema,
      response: createdApiKeySchema,
      status: 201,
      audit: {
        action: "api-key.create",
        change: ({ result }) => {
          // Never the key: only what the list shows.
          const { key: _key, ...apiKey } = result as z.infer<typeof createdApiKeySchema>;
          return { resource: { type: "api-key", id: apiKey.id, name: apiKey.name }, after: apiKey };
        },
      },
      handler: async ({ body, access, request }) => {
        const identity = identityOf(request);
        if (body.user !== undefined) {
          // A key for someone else (a service account in a team): administrators only.
          if (!access.isAdministrator) {
            throw new ForbiddenError("only an administrator may create a key for another user; leave out 'user'");
          }
          const owner = await users.getUser(context, body.user);
          const key = generateApiKey();
          const created = await insertApiKey(context, key, {
            name: body.name,
            role: "user",
            userId: owner.id,
            expiresAt: expiryOf(body.expiresInDays),
          });
          return { ...created.apiKey, key };
        }
        // A key made by a key without a user is a service key (no user), with that key's role.
        const key = generateApiKey();
        const created = await insertApiKey(context, key, {
          name: body.name,
          role: identity.userId === null ? (identity.isAdmin ? "admin" : "service") : "user",
          userId: identity.userId,
          expiresAt: expiryOf(body.expiresInDays),
        });
        return { ...created.apiKey, key };
      },
    }),
    defineRoute({
      method: "GET",
      path: "/api/v1/api-keys",
      tag: "API keys",
      summary: "List API keys: your own, or every key for admins (prefix only, never the key)",
      access: { kind: "signedIn" },
      query: pagingSchema,
      response: pageSchema(apiKeySchema),
      handler: ({ query, access, request }) => {
        const identity = identityOf(request);
        return listApiKeys(context, access.isAdministrator ? undefined : { userId: identity.userId }, query);
      },
    }),
    defineRoute({
      method: "DELETE",
      path: "/api/v1/api-keys/:key",
      tag: "API keys",
      summary: "Revoke an API key (yours, or any for admins); it is refused from then on",
      access: { kind: "signedIn" },
      params: pathParams("key"),
      status: 204,
      audit: {
        action: "api-key.revoke",
        change: ({ result }) => {
          const apiKey = result as z.infer<typeof apiKeySchema>;
          return {
            resource: { type: "api-key", id: apiKey.id, name: apiKey.name },
            before: { revokedAt: null },
            after: { revokedAt: apiKey.revokedAt },
          };
        },
      },
      handler: ({ params, access, request }) => {
        const identity = identityOf(request);
        return revokeApiKey(context, params.key, access.isAdministrator ? undefined : { userId: identity.userId });
      },
    }),
  ];
}

function expiryOf(days: number | undefined): string | null {
  return days === undefined ? null : new Date(Date.now() + days * 24 * 60 * 60 * 1000).toISOString();
}

/** Reads the session cookie's token from a Cookie header. */
export function sessionTokenOf(request: FastifyRequest): string | undefined {
  const header = request.headers.cookie;
  if (!header) return undefined;
  for (const part of header.split(";")) {
    const [name, ...value] = part.trim().split("=");
    if (name === SESSION_COOKIE) {
      const token = value.join("=");
      return token === "" ? undefined : token;
    }
  }
  return undefined;
}
