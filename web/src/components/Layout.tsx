import { useEffect, useRef } from "react";
import { Link, NavLink, Outlet, useLocation } from "react-router";
import { useLiveConnection, useLiveStatus } from "../live";
import { useSession, useSignOut } from "../session";
import { Logo } from "./Logo";

/** The signed-in frame: navigation, who is signed in, whether updates are live, and the page. */
export function Layout() {
  useLiveConnection();
  const { data: session } = useSession();
  const signOut = useSignOut();
  const live = useLiveStatus();
  const location = useLocation();
  const main = useRef<HTMLElement>(null);
  const firstRender = useRef(true);

  // After navigating, move focus to the new page (as a full page load would), so that a
  // keyboard or screen-reader user starts at its top instead of on the link they left.
  // biome-ignore lint/correctness/useExhaustiveDependencies: runs on each navigation on purpose
  useEffect(() => {
    if (firstRender.current) {
      firstRender.current = false;
      return;
    }
    main.current?.focus({ preventScroll: true });
  }, [location.pathname]);

  if (!session) return null;
  const isAdmin = session.user.isAdmin;
  return (
    <>
      <a className="skip-link" href="#main">
        Skip to content
      </a>
      <header className="top-bar">
        <Link to="/" className="brand" aria-label="Ferry dashboard">
          <Logo /> Ferry
        </Link>
        <nav aria-label="Main">
          <ul className="nav-list">
            <li>
              <NavLink to="/" end>
                Dashboard
              </NavLink>
            </li>
            <li>
              <NavLink to="/targets">Targets</NavLink>
            </li>
            <li>
              <NavLink to="/insights">Insights</NavLink>
            </li>
            {isAdmin && (
              <li>
                <NavLink to="/audit">Audit</NavLink>
              </li>
            )}
            {isAdmin && (
              <li>
                <NavLink to="/admin">Users &amp; teams</NavLink>
              </li>
            )}
          </ul>
        </nav>
        <div className="top-bar-end">
          <span className={`live live-${live}`} role="status" title="Updates from the server">
            <span aria-hidden="true">{live === "live" ? "●" : "○"}</span>{" "}
            {live === "live" ? "Live" : live === "connecting" ? "Connecting…" : "Reconnecting…"}
          </span>
          <span className="who" title={session.user.isAdmin ? "administrator" : undefined}>
            {session.user.displayName || session.user.username}
          </span>
          <button type="button" className="button button-quiet" onClick={() => void signOut()}>
            Sign out
          </button>
        </div>
      </header>
      <main id="main" ref={main} tabIndex={-1}>
        <Outlet />
      </main>
    </>
  );
}
