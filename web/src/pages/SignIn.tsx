import { useQuery, useQueryClient } from "@tanstack/react-query";
import { type FormEvent, useId, useState } from "react";
import { Navigate, useSearchParams } from "react-router";
import { api, describeError } from "../api/client";
import type { Session, SignInMethods } from "../api/types";
import { Logo } from "../components/Logo";
import { useTitle } from "../lib/title";
import { signedIn, useSession } from "../session";

/** Only a path on this server: never send someone elsewhere after signing in. */
function safeReturnPath(value: string | null): string {
  if (!value?.startsWith("/") || value.startsWith("//") || value.startsWith("/\\")) return "/";
  return value;
}

export function SignInPage() {
  useTitle("Sign in");
  const [search] = useSearchParams();
  const returnTo = safeReturnPath(search.get("returnTo"));
  const client = useQueryClient();
  const session = useSession();
  const methods = useQuery({
    queryKey: ["sign-in-methods"],
    queryFn: () => api<SignInMethods>("GET", "/session/methods"),
    staleTime: Number.POSITIVE_INFINITY,
  });
  const [username, setUsername] = useState("");
  const [password, setPassword] = useState("");
  const [error, setError] = useState<string | undefined>();
  const [busy, setBusy] = useState(false);
  const errorId = useId();

  if (session.data) return <Navigate to={returnTo} replace />;

  const submit = async (event: FormEvent) => {
    event.preventDefault();
    setBusy(true);
    setError(undefined);
    try {
      const created = await api<Session>("POST", "/session", { username, password });
      setPassword("");
      signedIn(client, created);
    } catch (failure) {
      setError(describeError(failure));
    } finally {
      setBusy(false);
    }
  };

  return (
    <main id="main" className="sign-in">
      <div className="sign-in-card">
        <h1>
          <Logo /> Sign in to Ferry
        </h1>
        <form onSubmit={(event) => void submit(event)} aria-describedby={error ? errorId : undefined}>
          <label>
            Username
            <input
              name="username"
              autoComplete="username"
              required
              value={username}
              onChange={(event) => setUsername(event.target.value)}
            />
          </label>
          <label>
            Password
            <input
              name="password"
              type="password"
              autoComplete="current-password"
              required
              value={password}
              onChange={(event) => setPassword(event.target.value)}
            />
          </label>
          {error && (
            <p id={errorId} className="notice notice-error" role="alert">
              {error}
            </p>
          )}
          <button type="submit" className="button button-primary" disabled={busy}>
            {busy ? "Signing in…" : "Sign in"}
          </button>
        </form>
        {methods.data?.oidc && (
          <>
            <p className="divider">
              <span>or</span>
            </p>
            <a
              className="button button-wide"
              href={`/api/v1/session/oidc/start?returnTo=${encodeURIComponent(returnTo)}`}
            >
              Sign in with single sign-on (OIDC)
            </a>
          </>
        )}
      </div>
    </main>
  );
}
