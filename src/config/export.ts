import { stringify } from "yaml";
import { type ApiClient, segment } from "../cli/client.js";
import { OperationError } from "../cli/errors.js";
import type { Team } from "../domain/access.js";
import type { ArtifactRetention } from "../domain/artifacts.js";
import type { Environment } from "../domain/environments.js";
import type { Feed } from "../domain/feeds.js";
import type { Lifecycle } from "../domain/lifecycles.js";
import type { ProjectImage, Step } from "../domain/process.js";
import type { Project } from "../domain/projects.js";
import type { Retention, Schedule } from "../domain/runbookSchedules.js";
import { MASKED, type Runbook } from "../domain/runbooks.js";
import type { Target } from "../domain/targets.js";
import type { ProjectVariableSets, SetVariable, VariableSet } from "../domain/variableSets.js";
import type { Variable } from "../domain/variables.js";
import type { Webhook } from "../domain/webhooks.js";

/**
 * `ferry export --project P`: the server's project written back as a ferry.yml that
 * round-trips — `ferry plan -f` of it reports no change (ADR 0040). It holds what `apply`
 * compares: the project, its lifecycle and the lifecycle's environments, the targets in
 * them (and their environments), the feeds its images come from, its images, steps,
 * variables, runbooks, the variable sets it includes (with their variables: ADR 0047), its
 * webhooks and the teams' grants on it alone (ADR 0070).
 *
 * Secrets are never read back (the API cannot): each becomes a reference to an environment
 * variable, named after what it is (`FERRY_SECRET_DBPASSWORD`), which apply reads when it
 * is set and otherwise keeps the stored secret — so the exported file, applied as it is,
 * keeps every secret as it is.
 */
export async function exportProject(client: ApiClient, projectReference: string): Promise<string> {
  const project = await client.get<Project>(`/api/v1/projects/${segment(projectReference)}`);
  const projectPath = `/api/v1/projects/${segment(project.slug)}`;
  const [environments, lifecycles, feeds, targets, variables, process, runbooks] = await Promise.all([
    client.getAll<Environment>("/api/v1/environments"),
    client.getAll<Lifecycle>("/api/v1/lifecycles"),
    client.getAll<Feed>("/api/v1/feeds"),
    client.getAll<Target>("/api/v1/targets"),
    client.getAll<Variable>(`${projectPath}/variables`),
    client.get<{ steps: Step[]; images?: ProjectImage[]; packages?: { name: string }[] }>(`${projectPath}/process`),
    client.get<Runbook[]>(`${projectPath}/runbooks`),
  ]);
  const included = (await client.get<ProjectVariableSets>(`${projectPath}/variable-sets`)).sets;
  const sets = await Promise.all(
    included.map(async (slug) => {
      const setPath = `/api/v1/variable-sets/${segment(slug)}`;
      const [set, setVariables] = await Promise.all([
        client.get<VariableSet>(setPath),
        client.getAll<SetVariable>(`${setPath}/variables`),
      ]);
      return { set, variables: setVariables };
    }),
  );
  // Each runbook's schedules and both retentions (ADR 0043): what apply makes them, so the round trip holds.
  const operations = await Promise.all(
    runbooks.map(async (runbook) => {
      const runbookPath = `${projectPath}/runbooks/${segment(runbook.slug)}`;
      const [schedules, retention, artifactRetention] = await Promise.all([
        client.get<Schedule[]>(`${runbookPath}/schedules`),
        client.get<Retention>(`${runbookPath}/retention`),
        client.get<ArtifactRetention>(`${runbookPath}/artifact-retention`),
      ]);
      return { schedules, retention: retention.policies, artifactRetention: artifactRetention.policies };
    }),
  );
  const webhooks = await client.getAll<Webhook>(`${projectPath}/webhooks`);
  // Someone who may not administer the project sees a webhook's origin only (its path may be
  // a credential): such a URL cannot be written back, so the webhooks are left out, and a
  // file without them leaves them alone.
  const webhooksHidden = webhooks.some((webhook) => webhook.url.endsWith("/…"));
  const grants = await teamGrants(client, project.slug);
  const lifecycle = lifecycles.find((item) => item.slug === project.lifecycle);
  if (!lifecycle) throw new Error(`the project's lifecycle '${project.lifecycle}' is not visible to this API key`);

  const lifecycleEnvironments = new Set(lifecycle.phases.flatMap((phase) => phase.environments));
  const exportedTargets = targets.filter((target) =>
    target.environments.some((slug) => lifecycleEnvironments.has(slug)),
  );
  // Everything the file refers to must be listed under environments (ferry.yml's rule).
  const referenced = new Set([
    ...lifecycleEnvironments,
    ...exportedTargets.flatMap((target) => target.environments),
    ...variables.flatMap((variable) => variable.scope.environments),
    ...sets.flatMap(({ variables: setVariables }) => setVariables.flatMap((variable) => variable.scope.environments)),
    ...process.steps.flatMap((step) => [...step.environments, ...step.excludeEnvironments]),
    ...runbooks.flatMap((runbook) => [
      ...runbook.environments,
      ...runbook.process.steps.flatMap((step) => [...step.environments, ...step.excludeEnvironments]),
    ]),
    ...(grants ?? []).flatMap((grant) => grant.environments ?? []),
    ...operations.flatMap((operation) => [
      ...operation.schedules.map((schedule) => schedule.environment),
      ...[...operation.retention, ...operation.artifactRetention]
        .map((policy) => policy.environment)
        .filter((environment) => environment !== "*"),
    ]),
  ]);
  const images = process.images ?? [];
  const feedOf = (reference: string) => feeds.find((feed) => feed.slug === reference || feed.id === reference);
  // The feeds the project's images and its runbooks' images come from.
  const imageFeeds = [...images, ...runbooks.flatMap((runbook) => runbook.process.images)].map((image) => image.feed);
  const usedFeeds = feeds.filter((feed) => imageFeeds.some((reference) => feedOf(reference) === feed));
  const secretNames = new SecretNames();

  const file: Record<string, unknown> = {
    project: {
      name: project.name,
      slug: project.slug,
      ...(project.description !== "" && { description: project.description }),
      ...(included.length > 0 && { variableSets: included }),
    },
    environments: environments
      .filter((environment) => referenced.has(environment.slug))
      .sort((a, b) => a.position - b.position)
      .map((environment) => ({
        name: environment.name,
        slug: environment.slug,
        ...(environment.description !== "" && { description: environment.description }),
        unavailableTargets: environment.unavailableTargets,
        ...(environment.ephemeral && { ephemeral: true, ttlMinutes: environment.ttlMinutes }),
      })),
    lifecycle: {
      name: lifecycle.name,
      slug: lifecycle.slug,
      ...(lifecycle.description !== "" && { description: lifecycle.description }),
      phases: lifecycle.phases.map((phase) => ({
        name: phase.name,
        environments: phase.environments,
        autoDeploy: phase.autoDeploy,
        optional: phase.optional,
        acceptSkippedSteps: phase.acceptSkippedSteps,
        separateApprover: phase.separateApprover,
      })),
    },
    ...(usedFeeds.length > 0 && {
      feeds: usedFeeds.map((feed) => ({
        name: feed.name,
        slug: feed.slug,
        url: feed.url,
        ...(feed.username !== null && { username: feed.username }),
        ...(feed.password !== null &&
          feed.username !== null && { passwordFrom: { env: secretNames.take(`FEED_${feed.slug}_PASSWORD`) } }),
      })),
    }),
    ...(exportedTargets.length > 0 && {
      targets: exportedTargets.map((target) => exportTarget(target, secretNames)),
    }),
    images: images.map((image) => ({
      name: image.name,
      feed: feedOf(image.feed)?.slug ?? image.feed,
      repository: image.repository,
      version: image.version.kind === "semver" ? { semver: image.version.range } : { regex: image.version.pattern },
    })),
    ...((process.packages ?? []).length > 0 && {
      packages: (process.packages ?? []).map((item) => ({ name: item.name })),
    }),
    variables: exportVariables(variables, secretNames, ""),
    ...(sets.length > 0 && {
      variableSets: sets.map(({ set, variables: setVariables }) => ({
        name: set.name,
        slug: set.slug,
        ...(set.description !== "" && { description: set.description }),
        variables: exportVariables(setVariables, secretNames, `SET_${set.slug}_`),
      })),
    }),
    versionPattern: project.versionPattern,
    steps: process.steps,
    ...(runbooks.length > 0 && {
      runbooks: runbooks.map((runbook, index) => ({
        name: runbook.name,
        slug: runbook.slug,
        description: runbook.description,
        environments: runbook.environments,
        parameters: runbook.parameters,
        overlapDeployments: runbook.overlapDeployments,
        overlapItself: runbook.overlapItself,
        steps: runbook.process.steps,
        ...(runbook.process.images.length > 0 && {
          images: runbook.process.images.map((image) => ({
            name: image.name,
            feed: feedOf(image.feed)?.slug ?? image.feed,
            repository: image.repository,
            version:
              image.version.kind === "semver" ? { semver: image.version.range } : { regex: image.version.pattern },
          })),
        }),
        ...((runbook.process.packages ?? []).length > 0 && {
          packages: (runbook.process.packages ?? []).map((item) => ({ name: item.name })),
        }),
        // Published and unchanged since: apply has nothing to publish. A draft that differs
        // from what is published stays a draft (publish: true would publish it).
        publish: runbook.published !== null && !runbook.draftChanged,
        schedules: (operations[index]?.schedules ?? []).map((schedule) =>
          exportSchedule(runbook.slug, schedule, secretNames),
        ),
        retention: operations[index]?.retention ?? [],
        artifactRetention: operations[index]?.artifactRetention ?? [],
      })),
    }),
    ...(!webhooksHidden &&
      webhooks.length > 0 && {
        webhooks: webhooks.map((webhook) => ({
          url: webhook.url,
          events: webhook.events,
          secretFrom: { env: secretNames.take(`WEBHOOK_${new URL(webhook.url).host}_SECRET`) },
        })),
      }),
    ...(grants !== undefined && grants.length > 0 && { teams: grants }),
  };
  const header = [
    `# ferry.yml of project ${project.slug}, written by \`ferry export\`.`,
    "# Secrets are references: apply reads each $FERRY_SECRET_* that is set, and keeps the stored secret otherwise.",
    ...(webhooksHidden
      ? [
          "# Webhooks left out: only the project's administrators see their whole URLs (a file without them leaves them alone).",
        ]
      : []),
    ...(grants === undefined
      ? ["# Team grants left out: only administrators see teams (a file without them leaves them alone)."]
      : []),
    "",
  ].join("\n");
  return header + stringify(file, { lineWidth: 0 });
}

/**
 * The teams' grants on this project alone, as ferry.yml's `teams` lists them; undefined when
 * the caller may not see teams (administrators only).
 */
async function teamGrants(
  client: ApiClient,
  project: string,
): Promise<{ team: string; role: string; environments?: string[] }[] | undefined> {
  let teams: Team[];
  try {
    teams = await client.getAll<Team>("/api/v1/teams");
  } catch (error) {
    if (error instanceof OperationError && error.status === 403) return undefined;
    throw error;
  }
  return teams.flatMap((team) =>
    team.roles
      .filter((role) => role.projects !== null && role.projects.length === 1 && role.projects[0] === project)
      .map((role) => ({
        team: team.slug,
        role: role.role,
        ...(role.environments !== null && { environments: role.environments }),
      })),
  );
}

function exportTarget(target: Target, secretNames: SecretNames): Record<string, unknown> {
  const ssh = target.ssh;
  return {
    name: target.name,
    slug: target.slug,
    environments: target.environments,
    roles: target.roles,
    transport: target.transport,
    runtimes: target.runtimes,
    ...(ssh && {
      ssh: {
        host: ssh.host,
        port: ssh.port,
        user: ssh.user,
        ...(ssh.jumpHost && {
          jumpHost: {
            host: ssh.jumpHost.host,
            port: ssh.jumpHost.port,
            user: ssh.jumpHost.user,
            ...(ssh.jumpHost.hostKey && { hostKey: ssh.jumpHost.hostKey }),
          },
        }),
        privateKeyFrom: { env: secretNames.take(`TARGET_${target.slug}_PRIVATE_KEY`) },
        ...(ssh.passphrase !== null && {
          passphraseFrom: { env: secretNames.take(`TARGET_${target.slug}_PASSPHRASE`) },
        }),
        ...(ssh.hostKey && { hostKey: ssh.hostKey }),
      },
    }),
    ...(target.router && { router: target.router }),
  };
}

/** Variables by name; a sensitive one as a reference named after it (and its set: `SET_<slug>_`). */
function exportVariables(
  variables: readonly (Variable | SetVariable)[],
  secretNames: SecretNames,
  secretPrefix: string,
): Record<string, unknown>[] {
  return [...variables]
    .sort((a, b) => a.name.localeCompare(b.name))
    .map((variable) => ({
      name: variable.name,
      ...(variable.sensitive
        ? { sensitive: true, valueFrom: { env: secretNames.take(`${secretPrefix}${variable.name}`) } }
        : { value: variable.value }),
      ...(hasScope(variable.scope) && { scope: compactScope(variable.scope) }),
    }));
}

/**
 * A schedule as ferry.yml writes it; a sensitive parameter's value (shown only as ********)
 * becomes a reference, FERRY_SECRET_SCHEDULE_<RUNBOOK>_<SCHEDULE>_<PARAMETER>.
 */
function exportSchedule(runbook: string, schedule: Schedule, secretNames: SecretNames): Record<string, unknown> {
  const plain = Object.entries(schedule.parameters).filter(([, value]) => value !== MASKED);
  const sensitive = Object.keys(schedule.parameters).filter((name) => schedule.parameters[name] === MASKED);
  return {
    name: schedule.name,
    environment: schedule.environment,
    cron: schedule.cron,
    timeZone: schedule.timeZone,
    ...(plain.length > 0 && { parameters: Object.fromEntries(plain) }),
    ...(sensitive.length > 0 && {
      parametersFrom: Object.fromEntries(
        sensitive.map((name) => [name, { env: secretNames.take(`SCHEDULE_${runbook}_${schedule.name}_${name}`) }]),
      ),
    }),
    ...(schedule.targets !== null && { targets: schedule.targets }),
    missed: schedule.missed,
    paused: schedule.paused,
  };
}

function hasScope(scope: Variable["scope"]): boolean {
  return scope.environments.length + scope.roles.length + scope.targets.length > 0;
}

function compactScope(scope: Variable["scope"]): Record<string, string[]> {
  return Object.fromEntries(Object.entries(scope).filter(([, values]) => values.length > 0));
}

/**
 * Environment variable names for the secrets of one export: FERRY_SECRET_ and what the secret
 * is, in capitals with '_' for anything else; a name taken twice (one variable, several
 * scopes) gets _2, _3 … in the order written.
 */
class SecretNames {
  private readonly taken = new Set<string>();

  take(what: string): string {
    const base = `FERRY_SECRET_${what.toUpperCase().replace(/[^A-Z0-9]+/g, "_")}`;
    let name = base;
    for (let count = 2; this.taken.has(name); count++) name = `${base}_${count}`;
    this.taken.add(name);
    return name;
  }
}
