import { createBrowserRouter, Navigate, Outlet, useLocation } from "react-router";
import { ErrorNotice, Loading } from "./components/ErrorNotice";
import { Layout } from "./components/Layout";
import { SignInPage } from "./pages/SignIn";
import { takeLeftOnPurpose, useSession } from "./session";

/**
 * Every page has its own URL (deep links, back and forward work); the server answers each
 * of these paths with index.html (src/api/webUi.ts lists the same prefixes). Pages other
 * than the dashboard and sign-in load on first visit, keeping the first download small.
 */
export function createRouter() {
  return createBrowserRouter([
    { path: "/sign-in", Component: SignInPage },
    {
      Component: RequireSession,
      children: [
        {
          Component: Layout,
          children: [
            { index: true, lazy: async () => ({ Component: (await import("./pages/Dashboard")).DashboardPage }) },
            {
              path: "projects/:project",
              lazy: async () => ({ Component: (await import("./pages/Project")).ProjectPage }),
            },
            {
              path: "projects/:project/releases/:release",
              lazy: async () => ({ Component: (await import("./pages/Release")).ReleasePage }),
            },
            {
              path: "projects/:project/runbooks",
              lazy: async () => ({ Component: (await import("./pages/Runbooks")).RunbooksPage }),
            },
            {
              path: "projects/:project/runbooks/:runbook",
              lazy: async () => ({ Component: (await import("./pages/Runbook")).RunbookPage }),
            },
            {
              path: "projects/:project/triggers",
              lazy: async () => ({ Component: (await import("./pages/Triggers")).TriggersPage }),
            },
            {
              path: "projects/:project/variables",
              lazy: async () => ({ Component: (await import("./pages/Variables")).VariablesPage }),
            },
            { path: "tasks/:task", lazy: async () => ({ Component: (await import("./pages/Task")).TaskPage }) },
            { path: "targets", lazy: async () => ({ Component: (await import("./pages/Targets")).TargetsPage }) },
            { path: "audit", lazy: async () => ({ Component: (await import("./pages/Audit")).AuditPage }) },
            { path: "insights", lazy: async () => ({ Component: (await import("./pages/Insights")).InsightsPage }) },
            { path: "admin", element: <Navigate to="/admin/users" replace /> },
            { path: "admin/:section", lazy: async () => ({ Component: (await import("./pages/Admin")).AdminPage }) },
            { path: "*", Component: NotFound },
          ],
        },
      ],
    },
  ]);
}

/** Signed-in pages: without a session, the sign-in page, which comes back here afterwards. */
function RequireSession() {
  const { data: session, isPending, error } = useSession();
  const location = useLocation();
  if (isPending) return <Loading what="your session" />;
  if (error) return <ErrorNotice error={error} what="Ferry could not be reached" />;
  if (!session) {
    // Whoever signs in after a sign-out starts at the dashboard; after an expired session, back here.
    const returnTo = takeLeftOnPurpose() ? "/" : `${location.pathname}${location.search}${location.hash}`;
    return <Navigate to={`/sign-in${returnTo === "/" ? "" : `?returnTo=${encodeURIComponent(returnTo)}`}`} replace />;
  }
  return <Outlet />;
}

function NotFound() {
  return (
    <section className="page">
      <h1>Page not found</h1>
      <p>
        There is no page at this address. Go to the <a href="/">dashboard</a>.
      </p>
    </section>
  );
}
