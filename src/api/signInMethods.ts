import { z } from "zod";
import type { OidcClient } from "../security/oidc.js";
import type { StoreContext } from "../store/common.js";
import { authenticateSession } from "../store/users.js";
import { defineRoute, type RouteSpec } from "./route.js";
import { sessionTokenOf } from "./users.js";

/**
 * What a sign-in page asks first: which ways of signing in this server offers, and whether
 * the browser's session cookie is still good. Public, so that a page can ask without being
 * refused (a 401 that a browser logs as an error); it tells the cookie's holder only about
 * their own cookie.
 */
export function signInMethodRoutes(context: StoreContext, oidc: OidcClient | undefined): RouteSpec[] {
  return [
    defineRoute({
      method: "GET",
      path: "/api/v1/session/methods",
      tag: "Users",
      summary:
        "How one may sign in here (password; OIDC when configured) and whether this request's session cookie is signed in",
      access: { kind: "public" },
      response: z.object({ password: z.boolean(), oidc: z.boolean(), signedIn: z.boolean() }),
      handler: async ({ request }) => {
        const token = sessionTokenOf(request);
        const session = token === undefined ? undefined : await authenticateSession(context, token);
        return { password: true, oidc: oidc !== undefined, signedIn: session !== undefined };
      },
    }),
  ];
}
