import { type QueryClient, useQuery, useQueryClient } from "@tanstack/react-query";
import { ApiError, api, setCsrfToken } from "./api/client";
import type { Session, SignInMethods } from "./api/types";

export const SESSION_KEY = ["session"] as const;

/** The signed-in user and the CSRF token, or null when signed out (the API answered 401). */
async function fetchSession(): Promise<Session | null> {
  // Asked first, so that a signed-out visit is not a refused request (which browsers log as errors).
  const methods = await api<SignInMethods>("GET", "/session/methods");
  if (!methods.signedIn) {
    setCsrfToken(undefined);
    return null;
  }
  try {
    const session = await api<Session>("GET", "/session");
    setCsrfToken(session.csrfToken);
    return session;
  } catch (error) {
    if (error instanceof ApiError && (error.status === 401 || error.status === 404)) {
      setCsrfToken(undefined);
      return null;
    }
    throw error;
  }
}

export function useSession() {
  return useQuery({ queryKey: SESSION_KEY, queryFn: fetchSession, staleTime: Number.POSITIVE_INFINITY, retry: 1 });
}

/** The signed-in user (inside the signed-in layout, where there always is one). */
export function useUser() {
  const { data } = useSession();
  if (!data) throw new Error("useUser outside a signed-in page");
  return data.user;
}

export function signedIn(client: QueryClient, session: Session): void {
  setCsrfToken(session.csrfToken);
  client.setQueryData(SESSION_KEY, session);
}

/** Set when the person signed out: the next sign-in starts at the dashboard, not on the page they left. */
let leftOnPurpose = false;

/** True once after a deliberate sign-out (a session that merely ended keeps its page to come back to). */
export function takeLeftOnPurpose(): boolean {
  const left = leftOnPurpose;
  leftOnPurpose = false;
  return left;
}

/** Forgets everything the session could see; the sign-in page shows next. */
export function signedOut(client: QueryClient): void {
  setCsrfToken(undefined);
  // The signed-in pages leave first (and stop asking); then what they had is dropped.
  client.setQueryData(SESSION_KEY, null);
  setTimeout(() => client.removeQueries({ predicate: (query) => query.queryKey[0] !== SESSION_KEY[0] }), 0);
}

export function useSignOut() {
  const client = useQueryClient();
  return async () => {
    leftOnPurpose = true;
    // The signed-in pages leave first and stop asking (a poll or a live update could start a
    // request at any moment), then whatever is still in flight is stopped, and only then
    // does the session end: a request that outlived it would come back 401, and the browser
    // logs each. The CSRF token stays until the DELETE is sent.
    client.setQueryData(SESSION_KEY, null);
    await new Promise((resolve) => setTimeout(resolve, 0));
    await client.cancelQueries({ predicate: (query) => query.queryKey[0] !== SESSION_KEY[0] });
    try {
      await api("DELETE", "/session");
    } finally {
      signedOut(client);
    }
  };
}
