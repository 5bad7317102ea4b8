import { useQuery } from "@tanstack/react-query";
import { api, query } from "./client";
import type {
  Environment,
  Page,
  Permission,
  Project,
  ProjectProgression,
  Runbook,
  RunbookListed,
  RunbookRunSummary,
} from "./types";

export function useProject(reference: string | null | undefined) {
  return useQuery({
    queryKey: ["project", reference],
    queryFn: () => api<Project>("GET", `/projects/${encodeURIComponent(reference ?? "")}`),
    enabled: Boolean(reference),
    staleTime: 60_000,
  });
}

export function useEnvironments() {
  return useQuery({
    queryKey: ["environments"],
    queryFn: () => api<Page<Environment>>("GET", `/environments${query({ limit: 500 })}`),
    staleTime: 60_000,
  });
}

/** A project's progression: its lifecycle's environments, releases and the caller's permissions. */
export function useProgression(project: string | null | undefined, page = { limit: 20, offset: 0 }) {
  return useQuery({
    queryKey: ["progression", project, page.limit, page.offset],
    queryFn: () =>
      api<ProjectProgression>("GET", `/projects/${encodeURIComponent(project ?? "")}/progression${query(page)}`),
    enabled: Boolean(project),
  });
}

/** What the caller may do on a project in an environment (by id or slug); undefined while unknown. */
export function permissionsIn(
  progression: ProjectProgression | undefined,
  environment: string | null | undefined,
): Set<Permission> | undefined {
  if (!progression) return undefined;
  const found = progression.environments.find(
    (each) => each.environment.id === environment || each.environment.slug === environment,
  );
  return new Set(found?.permissions ?? []);
}

/*
 * Runbooks: every key starts with "runbooks" and the project, so a finished run (live.ts)
 * or a publish refreshes all of a project's runbook views at once.
 */

export function useRunbooks(project: string) {
  return useQuery({
    queryKey: ["runbooks", project],
    queryFn: () => api<RunbookListed[]>("GET", `/projects/${encodeURIComponent(project)}/runbooks`),
  });
}

export function useRunbook(project: string, runbook: string) {
  return useQuery({
    queryKey: ["runbooks", project, runbook],
    queryFn: () =>
      api<Runbook>("GET", `/projects/${encodeURIComponent(project)}/runbooks/${encodeURIComponent(runbook)}`),
  });
}

/** A page of a runbook's runs, newest first; one more than `limit` is asked for, to know whether there is an older page. */
export function useRunbookRuns(project: string, runbook: string, page: { limit: number; offset: number }) {
  return useQuery({
    queryKey: ["runbooks", project, runbook, "runs", page.limit, page.offset],
    queryFn: async () => {
      const runs = await api<RunbookRunSummary[]>(
        "GET",
        `/projects/${encodeURIComponent(project)}/runbooks/${encodeURIComponent(runbook)}/runs${query({ limit: page.limit + 1, offset: page.offset })}`,
      );
      return { runs: runs.slice(0, page.limit), older: runs.length > page.limit };
    },
  });
}
