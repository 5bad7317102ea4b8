import { type ApiClient, segment } from "../cli/client.js";
import { OperationError } from "../cli/errors.js";
import type { Team } from "../domain/access.js";
import type { ArtifactRetention } from "../domain/artifacts.js";
import type { Environment } from "../domain/environments.js";
import type { Feed } from "../domain/feeds.js";
import { canonicalJson, type FieldChange, fieldChanges } from "../domain/fieldDiff.js";
import type { Lifecycle } from "../domain/lifecycles.js";
import type { Step } from "../domain/process.js";
import type { Project } from "../domain/projects.js";
import type { Retention, Schedule } from "../domain/runbookSchedules.js";
import { MASKED, type Runbook } from "../domain/runbooks.js";
import { MAX_STEP_FILE_BYTES } from "../domain/stepFiles.js";
import type { Target } from "../domain/targets.js";
import type { ProjectVariableSets, SetVariable, VariableSet } from "../domain/variableSets.js";
import type { Variable } from "../domain/variables.js";
import { type Webhook, webhookUrlOrigin } from "../domain/webhooks.js";
import { type FerryFile, type RunbookFile, variableKey } from "./ferryFile.js";

/**
 * `ferry apply`: makes the server match a parsed ferry.yml through the REST API, creating
 * what is missing and updating what differs. Applying the same file twice changes nothing
 * the second time.
 *
 * Fields the file leaves out are left as they are; lists the file gives (phases, a target's
 * environments, steps, images, the project's variables) are made exactly so. Project variables not
 * in the file are deleted, and said so.
 *
 * Secrets: the API never returns them, so apply cannot tell whether a stored one differs
 * from the environment variable the file names. It writes a secret when it has to (the
 * variable or feed password does not exist yet, or a variable becomes sensitive) or when
 * asked to (`updateSecrets`, for rotation), and otherwise keeps the stored one, which is
 * what makes a second run a no-op.
 */

type Action = "created" | "updated" | "deleted" | "unchanged" | "skipped";
type Resource =
  | "environment"
  | "feed"
  | "target"
  | "lifecycle"
  | "project"
  | "process"
  | "variable"
  | "variable set"
  | "runbook"
  | "schedule"
  | "retention"
  | "artifact-retention"
  | "webhook"
  | "team";

export interface AppliedChange {
  action: Action;
  resource: Resource;
  /** The slug, or for a variable its name and scope. */
  name: string;
  /** What changed, or a note on what was left alone. */
  detail?: string;
  /** Something in the file could not be carried out; the run went on. */
  warning?: string;
  /** An update's fields: each one's value before and after (a secret's: only that it changed). */
  fields?: FieldChange[];
}

interface ApplyOptions {
  /** Write every sensitive value and feed password the file refers to, even those already stored (rotation). */
  updateSecrets?: boolean;
  /** Reads a file the ferry.yml names (an SSH private key), relative to the ferry.yml; undefined when it cannot. */
  readFile?: (path: string) => Promise<string | undefined>;
  /** Also delete what the project owns and the file leaves out: its runbooks (ADR 0040). */
  prune?: boolean;
  /**
   * The whole apply runs in one transaction (the server's POST /api/v1/config/apply): a refusal
   * undoes every change before it, and the error says so.
   */
  atomic?: boolean;
}

interface Run {
  readonly client: ApiClient;
  readonly environment: Readonly<Record<string, string | undefined>>;
  readonly updateSecrets: boolean;
  readonly changes: AppliedChange[];
  readonly readFile: (path: string) => Promise<string | undefined>;
  readonly prune: boolean;
  readonly atomic: boolean;
}

/** One line for people: "created environment dev", "updated lifecycle hello (phases)". */
export function describeChange(change: AppliedChange): string {
  return `${change.action} ${change.resource} ${change.name}${change.detail ? ` (${change.detail})` : ""}`;
}

/**
 * Applies the file in dependency order (environments, feeds, targets, lifecycle, project,
 * process, variables) and returns what was done to each thing it names. Stops at the first
 * request the server refuses, with the changes made before it in the error's details.
 */
export async function applyFerryFile(
  client: ApiClient,
  config: FerryFile,
  environment: Readonly<Record<string, string | undefined>>,
  options: ApplyOptions = {},
): Promise<AppliedChange[]> {
  const run: Run = {
    client,
    environment,
    updateSecrets: options.updateSecrets ?? false,
    changes: [],
    readFile: options.readFile ?? (async () => undefined),
    prune: options.prune ?? false,
    atomic: options.atomic ?? false,
  };
  const environments = await applyPart(run, "environments", () => applyEnvironments(run, config.environments));
  if (config.feeds.length > 0) {
    const feeds = await client.getAll<Feed>("/api/v1/feeds");
    for (const feed of config.feeds) await applyPart(run, `feed ${feed.slug}`, () => applyFeed(run, feed, feeds));
  }
  if (config.targets.length > 0) {
    const targets = await client.getAll<Target>("/api/v1/targets");
    for (const target of config.targets) {
      await applyPart(run, `target ${target.slug}`, () => applyTarget(run, target, targets));
    }
  }
  await applyPart(run, `lifecycle ${config.lifecycle.slug}`, () => applyLifecycle(run, config.lifecycle, environments));
  // Before the project: it may include the sets the file declares.
  for (const set of config.variableSets ?? []) {
    await applyPart(run, `variable set ${set.slug}`, () => applyVariableSet(run, set));
  }
  const projectPath = `/api/v1/projects/${segment(config.project.slug)}`;
  await applyPart(run, `project ${config.project.slug}`, () =>
    applyProject(run, config.project, config.lifecycle.slug, config.versionPattern),
  );
  if (config.steps !== undefined || config.images !== undefined || config.packages !== undefined) {
    await applyPart(run, `process of ${config.project.slug}`, () =>
      applyProcess(run, projectPath, config.project.slug, {
        steps: config.steps,
        images: config.images,
        packages: config.packages,
      }),
    );
  }
  const variables = config.variables;
  if (variables !== undefined) {
    await applyPart(run, `variables of ${config.project.slug}`, () => applyVariables(run, projectPath, variables));
  }
  const includedSets = config.project.variableSets;
  if (includedSets !== undefined) {
    await applyPart(run, `variable sets of ${config.project.slug}`, () =>
      applyIncludedSets(run, projectPath, config.project.slug, includedSets),
    );
  }
  // After the variables: a runbook published here snapshots the variables just applied.
  for (const runbook of config.runbooks ?? []) {
    await applyPart(run, `runbook ${runbook.slug}`, () => applyRunbookFields(run, projectPath, runbook));
  }
  if (run.prune) {
    await applyPart(run, `runbooks of ${config.project.slug}`, () =>
      pruneRunbooks(run, projectPath, new Set((config.runbooks ?? []).map((runbook) => runbook.slug))),
    );
  }
  // Last: they name the project (and its environments) made above.
  const webhooks = config.webhooks;
  if (webhooks !== undefined) {
    await applyPart(run, `webhooks of ${config.project.slug}`, () => applyWebhooks(run, projectPath, webhooks));
  }
  const grants = config.teams;
  if (grants !== undefined) {
    await applyPart(run, `team grants on ${config.project.slug}`, () =>
      applyTeamGrants(run, config.project.slug, grants),
    );
  }
  return run.changes;
}

/**
 * The project's webhooks become the file's, each known by its URL. The events are compared;
 * the signing secret cannot be (the API never shows it): it is written when the webhook is
 * created, or with --update-secrets. A change names the webhook by its URL's origin only: a
 * chat service's path is its credential, and apply's output lands in CI logs.
 */
async function applyWebhooks(run: Run, projectPath: string, wanted: NonNullable<FerryFile["webhooks"]>) {
  const collection = `${projectPath}/webhooks`;
  const existing = await run.client.getAll<Webhook>(collection);
  const matched = new Set<Webhook>();
  for (const webhook of wanted) {
    const name = webhookUrlOrigin(webhook.url);
    const value = secret(run, webhook.secretFrom.env);
    const current = existing.find((candidate) => candidate.url === webhook.url && !matched.has(candidate));
    if (!current) {
      if (value === undefined) {
        run.changes.push({
          action: "skipped",
          resource: "webhook",
          name,
          warning: `$${webhook.secretFrom.env} is not set, so the webhook was not created; set it and apply again`,
        });
        continue;
      }
      await run.client.request("POST", collection, { url: webhook.url, events: webhook.events, secret: value });
      run.changes.push({
        action: "created",
        resource: "webhook",
        name,
        detail: `${webhook.events.join(", ")}; secret from $${webhook.secretFrom.env}`,
      });
      continue;
    }
    matched.add(current);
    const body: Record<string, unknown> = {};
    const fields: FieldChange[] = [];
    if (!sameSet(current.events, webhook.events)) {
      body.events = webhook.events;
      fields.push({ field: "events", from: current.events, to: webhook.events });
    }
    if (run.updateSecrets && value !== undefined) {
      body.secret = value;
      fields.push({ field: "secret", sensitive: true });
    }
    if (Object.keys(body).length === 0) {
      run.changes.push({ action: "unchanged", resource: "webhook", name });
      continue;
    }
    await run.client.request("PATCH", `${collection}/${segment(current.id)}`, body);
    run.changes.push({
      action: "updated",
      resource: "webhook",
      name,
      detail: Object.keys(body).join(", "),
      fields,
    });
  }
  for (const webhook of existing) {
    if (matched.has(webhook)) continue;
    await run.client.request("DELETE", `${collection}/${segment(webhook.id)}`);
    run.changes.push({
      action: "deleted",
      resource: "webhook",
      name: webhookUrlOrigin(webhook.url),
      detail: "not in ferry.yml",
    });
  }
}

/** A team's role assignment as the API shows it. */
type Assignment = Team["roles"][number];

/** Grants the file manages: those that name this project, and only it. */
function grantsOnlyOn(assignment: Assignment, project: string): boolean {
  return assignment.projects !== null && assignment.projects.length === 1 && assignment.projects[0] === project;
}

/** A grant as a comparable text: role and environments (sorted; null for every environment). */
function grantKey(assignment: Pick<Assignment, "role" | "environments">): string {
  return canonical([assignment.role, assignment.environments === null ? null : [...assignment.environments].sort()]);
}

function grantLabel(assignment: Pick<Assignment, "role" | "environments">): string {
  return assignment.environments === null
    ? assignment.role
    : `${assignment.role} [environments ${[...assignment.environments].sort().join(",")}]`;
}

/**
 * Each team's grants on this project become the file's (ADR 0070). A team's other
 * assignments (other projects, several, or every project) are kept as they are: the API
 * replaces a team's assignments as a whole, so they are sent back unchanged. A team the
 * file names that does not exist is created without members (people are this server's own:
 * `ferry team add-member`).
 */
async function applyTeamGrants(run: Run, project: string, wanted: NonNullable<FerryFile["teams"]>) {
  const teams = await run.client.getAll<Team>("/api/v1/teams");
  const wantedBy = new Map<string, Assignment[]>();
  for (const grant of wanted) {
    const list = wantedBy.get(grant.team) ?? [];
    list.push({ role: grant.role, projects: [project], environments: grant.environments ?? null });
    wantedBy.set(grant.team, list);
  }
  const involved = [
    ...new Set([
      ...wanted.map((grant) => grant.team),
      ...teams.filter((team) => team.roles.some((role) => grantsOnlyOn(role, project))).map((team) => team.slug),
    ]),
  ];
  for (const slug of involved) {
    const desired = wantedBy.get(slug) ?? [];
    const current = teams.find((team) => team.slug === slug);
    const asInput = (assignment: Assignment) => ({
      role: assignment.role,
      ...(assignment.projects !== null && { projects: assignment.projects }),
      ...(assignment.environments !== null && { environments: assignment.environments }),
    });
    if (!current) {
      await run.client.request("POST", "/api/v1/teams", { name: slug, slug, roles: desired.map(asInput) });
      run.changes.push({
        action: "created",
        resource: "team",
        name: slug,
        detail: `no members; grants ${desired.map(grantLabel).join(", ")}`,
      });
      continue;
    }
    const before = current.roles.filter((role) => grantsOnlyOn(role, project));
    const sortedKeys = (list: readonly Assignment[]) => list.map(grantKey).sort();
    if (canonical(sortedKeys(before)) === canonical(sortedKeys(desired))) {
      run.changes.push({ action: "unchanged", resource: "team", name: slug, detail: `grants on ${project}` });
      continue;
    }
    const kept = current.roles.filter((role) => !grantsOnlyOn(role, project));
    await run.client.request("PATCH", `/api/v1/teams/${segment(slug)}`, {
      roles: [...kept, ...desired].map(asInput),
    });
    run.changes.push({
      action: "updated",
      resource: "team",
      name: slug,
      detail: `grants on ${project}`,
      fields: [
        {
          field: `grants[${project}]`,
          from: before.map(grantLabel).sort(),
          to: desired.map(grantLabel).sort(),
        },
      ],
    });
  }
}

/**
 * The runbook's schedules become the file's: created, changed, paused/resumed (when it says),
 * removed. A sensitive parameter's value comes from the environment variable its
 * parametersFrom names (the API shows it only as ******** and cannot compare it): written
 * when the schedule is created, when the parameters must be sent anyway (they are sent
 * whole), or with --update-secrets; otherwise the stored value is kept.
 */
async function applySchedules(
  run: Run,
  runbookPath: string,
  runbookSlug: string,
  wanted: NonNullable<RunbookFile["schedules"]>,
): Promise<void> {
  const existing = await run.client.get<Schedule[]>(`${runbookPath}/schedules`);
  for (const schedule of wanted) {
    const name = `${runbookSlug}/${schedule.name}`;
    const path = `${runbookPath}/schedules/${segment(schedule.name)}`;
    const { paused, name: _name, environment, parametersFrom, parameters, ...settings } = schedule;
    const references = Object.entries(parametersFrom ?? {});
    const secrets: Record<string, string> = {};
    const unset: string[] = [];
    for (const [parameter, reference] of references) {
      const value = secret(run, reference.env);
      if (value === undefined) unset.push(`$${reference.env}`);
      else secrets[parameter] = value;
    }
    const fromNote =
      references.length > 0
        ? `sensitive parameters from ${references.map(([, r]) => `$${r.env}`).join(", ")}`
        : undefined;
    let current = existing.find((candidate) => candidate.name === schedule.name);
    // A schedule moves to another environment as a new one: its firings ran there under other grants.
    if (current && current.environment !== environment) {
      await run.client.request("DELETE", path);
      current = undefined;
    }
    if (!current) {
      if (unset.length > 0) {
        run.changes.push({
          action: "skipped",
          resource: "schedule",
          name,
          warning: `${unset.join(", ")} ${unset.length === 1 ? "is" : "are"} not set, so the schedule was not created; set ${unset.length === 1 ? "it" : "them"} and apply again`,
        });
        continue;
      }
      await run.client.request<Schedule>("POST", `${runbookPath}/schedules`, {
        ...settings,
        name: schedule.name,
        environment,
        parameters: { ...parameters, ...secrets },
        paused: paused ?? false,
      });
      run.changes.push({ action: "created", resource: "schedule", name, ...(fromNote && { detail: fromNote }) });
      continue;
    }
    const body = differences(current, { ...settings, targets: settings.targets ?? null });
    // The stored parameters: plain values as they are, sensitive ones only by name.
    const storedPlain = Object.fromEntries(Object.entries(current.parameters).filter(([, value]) => value !== MASKED));
    const storedSensitive = Object.keys(current.parameters).filter((key) => current.parameters[key] === MASKED);
    const parametersDiffer =
      canonical(storedPlain) !== canonical(parameters) ||
      canonical([...storedSensitive].sort()) !== canonical(references.map(([key]) => key).sort());
    let warning: string | undefined;
    if (parametersDiffer || (run.updateSecrets && references.length > 0)) {
      if (unset.length === 0) body.parameters = { ...parameters, ...secrets };
      else if (parametersDiffer) {
        warning = `${unset.join(", ")} ${unset.length === 1 ? "is" : "are"} not set, so the schedule's parameters were left as they are (they are sent whole, sensitive values too); set ${unset.length === 1 ? "it" : "them"} and apply again`;
      }
    }
    if (Object.keys(body).length > 0) {
      await run.client.request<Schedule>("PATCH", path, body);
      // What the plan shows: sensitive values as the API shows them.
      const shown = {
        ...body,
        ...(body.parameters !== undefined && {
          parameters: { ...parameters, ...Object.fromEntries(references.map(([key]) => [key, MASKED])) },
        }),
      };
      run.changes.push({
        action: "updated",
        resource: "schedule",
        name,
        detail: Object.keys(body).join(", "),
        fields: fieldChanges(pick(current, Object.keys(body)), shown),
        ...(warning && { warning }),
      });
    }
    if (paused !== undefined && paused !== current.paused) {
      await run.client.request<Schedule>("POST", `${path}/${paused ? "pause" : "resume"}`);
      run.changes.push({ action: "updated", resource: "schedule", name, detail: paused ? "paused" : "resumed" });
    } else if (Object.keys(body).length === 0) {
      run.changes.push({ action: "unchanged", resource: "schedule", name, ...(warning && { warning }) });
    }
  }
  for (const schedule of existing) {
    if (wanted.some((candidate) => candidate.name === schedule.name)) continue;
    await run.client.request("DELETE", `${runbookPath}/schedules/${segment(schedule.name)}`);
    run.changes.push({ action: "deleted", resource: "schedule", name: `${runbookSlug}/${schedule.name}` });
  }
}

async function applyRetention(
  run: Run,
  runbookPath: string,
  runbookSlug: string,
  policies: Retention["policies"],
): Promise<void> {
  const current = await run.client.get<Retention>(`${runbookPath}/retention`);
  const sorted = (list: Retention["policies"]) =>
    [...list].sort((a, b) => (a.environment < b.environment ? -1 : a.environment > b.environment ? 1 : 0));
  if (canonical(sorted(current.policies)) === canonical(sorted(policies))) {
    run.changes.push({ action: "unchanged", resource: "retention", name: runbookSlug });
    return;
  }
  await run.client.request<Retention>("PUT", `${runbookPath}/retention`, { policies });
  run.changes.push({ action: "updated", resource: "retention", name: runbookSlug });
}

/** Policies by environment ('*' too), for a field-level diff: `prod.keepRuns: 5 → 8`. */
function byEnvironment(policies: ArtifactRetention["policies"]): Record<string, unknown> {
  return Object.fromEntries(policies.map(({ environment, ...limits }) => [environment, limits] as const));
}

/** The runbook's artifact retention becomes the file's (ADR 0037), compared as a set of policies. */
async function applyArtifactRetention(
  run: Run,
  runbookPath: string,
  runbookSlug: string,
  policies: ArtifactRetention["policies"],
): Promise<void> {
  const current = await run.client.get<ArtifactRetention>(`${runbookPath}/artifact-retention`);
  const sorted = (list: ArtifactRetention["policies"]) =>
    [...list].sort((a, b) => (a.environment < b.environment ? -1 : a.environment > b.environment ? 1 : 0));
  if (canonical(sorted(current.policies)) === canonical(sorted(policies))) {
    run.changes.push({ action: "unchanged", resource: "artifact-retention", name: runbookSlug });
    return;
  }
  await run.client.request<ArtifactRetention>("PUT", `${runbookPath}/artifact-retention`, { policies });
  run.changes.push({
    action: "updated",
    resource: "artifact-retention",
    name: runbookSlug,
    fields: fieldChanges(byEnvironment(current.policies), byEnvironment(policies)),
  });
}

/**
 * `ferry runbook create|update -f FILE`: the runbook a file declares, created (refused when
 * it exists) or updated (only the fields the file gives); published, and its schedules and
 * retention applied, as `ferry apply` does for a runbooks: entry.
 */
export async function applyRunbookFile(
  client: ApiClient,
  project: string,
  runbook: RunbookFile,
  options: {
    mode: "create" | "update";
    fields: readonly string[];
    publish: boolean;
    /** Where parametersFrom references are read (the CLI's environment). */
    environment?: Readonly<Record<string, string | undefined>>;
  },
): Promise<AppliedChange[]> {
  const run: Run = {
    client,
    environment: options.environment ?? {},
    updateSecrets: false,
    changes: [],
    readFile: async () => undefined,
    prune: false,
    atomic: false,
  };
  const projectPath = `/api/v1/projects/${segment(project)}`;
  const collection = `${projectPath}/runbooks`;
  const exists = (await client.get<Runbook[]>(collection)).some((candidate) => candidate.slug === runbook.slug);
  if (options.mode === "create" && exists) {
    throw new OperationError(`project '${project}' already has a runbook '${runbook.slug}'`, [
      `change it with: ferry runbook update --project ${project} -f FILE`,
    ]);
  }
  if (options.mode === "update" && !exists) {
    throw new OperationError(`project '${project}' has no runbook '${runbook.slug}'`, [
      `create it with: ferry runbook create --project ${project} -f FILE (list them with 'ferry runbook list')`,
    ]);
  }
  // An update sends only what the file gives: a field left out stays as it is.
  const given = new Set(options.fields);
  const wanted: RunbookFile =
    options.mode === "update"
      ? (Object.fromEntries(
          Object.entries(runbook).filter(
            ([key]) => key === "name" || key === "slug" || given.has(key) || (key === "publish" && options.publish),
          ),
        ) as RunbookFile)
      : runbook;
  await applyRunbookFields(run, projectPath, { ...wanted, publish: options.publish || runbook.publish });
  return run.changes;
}

/** --prune: the project's runbooks the file does not list are deleted. */
async function pruneRunbooks(run: Run, projectPath: string, listed: ReadonlySet<string>): Promise<void> {
  const collection = `${projectPath}/runbooks`;
  for (const runbook of await run.client.get<Runbook[]>(collection)) {
    if (listed.has(runbook.slug)) continue;
    await run.client.request("DELETE", `${collection}/${segment(runbook.slug)}`);
    run.changes.push({
      action: "deleted",
      resource: "runbook",
      name: runbook.slug,
      detail: "not in ferry.yml (--prune)",
    });
  }
}

/**
 * Creates the runbook or updates its draft where it differs from the file's, then publishes
 * it when the file says so and the draft is not what is published, then makes its schedules
 * and retention what the file says (when it says): schedules are checked against the
 * published version, so they come after the publish.
 * Only the fields present are compared and sent (an update's part, or the whole file's).
 */
async function applyRunbookFields(
  run: Run,
  projectPath: string,
  wanted: Partial<RunbookFile> & Pick<RunbookFile, "slug" | "name">,
) {
  const collection = `${projectPath}/runbooks`;
  const { steps, images, packages, publish, slug, schedules, retention, artifactRetention, ...fields } = wanted;
  const existing = (await run.client.get<Runbook[]>(collection)).find((runbook) => runbook.slug === slug);
  const current = existing?.process;
  // The parts of the process the file gives replace the runbook's; the others stay as they are.
  const desired: Record<string, unknown> = {
    ...fields,
    ...((steps !== undefined || images !== undefined || packages !== undefined) && {
      process: {
        images: images ?? current?.images ?? [],
        steps: steps !== undefined ? await captureStepFiles(run, steps) : (current?.steps ?? []),
        // A server with the package feed shows a runbook's process with packages (ADR 0068);
        // an older one has no such field, and would refuse it.
        ...((packages !== undefined || (current !== undefined && "packages" in current)) && {
          packages: packages ?? current?.packages ?? [],
        }),
      },
    }),
  };
  let applied: Runbook;
  if (!existing) {
    applied = await run.client.request<Runbook>("POST", collection, { ...desired, slug });
    run.changes.push({ action: "created", resource: "runbook", name: slug });
  } else {
    const body = differences(existing, desired);
    if (Object.keys(body).length > 0) {
      applied = await run.client.request<Runbook>("PATCH", `${collection}/${segment(slug)}`, body);
      run.changes.push({
        action: "updated",
        resource: "runbook",
        name: slug,
        detail: Object.keys(body).join(", "),
        fields: fieldChanges(pick(existing, Object.keys(body)), body),
      });
    } else {
      applied = existing;
      run.changes.push({ action: "unchanged", resource: "runbook", name: slug });
    }
  }
  if (publish && (applied.draftChanged || applied.published === null)) {
    const published = await run.client.request<Runbook>("POST", `${collection}/${segment(slug)}/publish`);
    run.changes.push({
      action: "updated",
      resource: "runbook",
      name: slug,
      detail: `published version ${published.published?.version}`,
    });
  }
  const runbookPath = `${collection}/${segment(slug)}`;
  if (schedules !== undefined) await applySchedules(run, runbookPath, slug, schedules);
  if (retention !== undefined) await applyRetention(run, runbookPath, slug, retention);
  if (artifactRetention !== undefined) await applyArtifactRetention(run, runbookPath, slug, artifactRetention);
}

/** Runs one part of the apply; a refused request names the part and lists what was done before it. */
async function applyPart<T>(run: Run, what: string, apply: () => Promise<T>): Promise<T> {
  try {
    return await apply();
  } catch (error) {
    if (!(error instanceof OperationError)) throw error;
    const done = run.changes.filter((change) => change.action !== "unchanged" && change.action !== "skipped");
    const before = run.atomic
      ? ["nothing was changed: the apply is all or nothing, and every change before this one was undone"]
      : done.length > 0
        ? ["changes made before this one (they stay):", ...done.map((change) => `  ${describeChange(change)}`)]
        : ["nothing was changed before this"];
    throw new OperationError(`could not apply ${what}: ${error.message}`, [...error.details, ...before], error.status);
  }
}

/** The fields of `wanted` that are given and differ from `current`. */
function differences(current: object, wanted: Record<string, unknown>): Record<string, unknown> {
  const body: Record<string, unknown> = {};
  for (const [key, value] of Object.entries(wanted)) {
    if (value !== undefined && canonical((current as Record<string, unknown>)[key]) !== canonical(value)) {
      body[key] = value;
    }
  }
  return body;
}

const canonical = canonicalJson;

/** The fields of `value` named in `keys`, for the "before" side of a field-level diff. */
function pick(value: object, keys: readonly string[]): Record<string, unknown> {
  return Object.fromEntries(keys.map((key) => [key, (value as Record<string, unknown>)[key]]));
}

function sameSet(a: readonly string[], b: readonly string[]): boolean {
  return canonical([...new Set(a)].sort()) === canonical([...new Set(b)].sort());
}

/** A secret from the environment; an empty one counts as not set. */
/** Where a sensitive variable's value comes from, as the apply's notes say it ("$NAME", "file PATH"). */
function variableSource(variable: WantedVariable): string {
  const from = variable.valueFrom;
  if (!from) return "";
  return "env" in from ? `$${from.env}` : `file ${from.file}`;
}

/** A sensitive variable's value: its environment variable's, or its file's (without the final newline). */
async function variableSecret(run: Run, variable: WantedVariable): Promise<string | undefined> {
  const from = variable.valueFrom;
  if (!from) return undefined;
  if ("env" in from) return secret(run, from.env);
  const text = await run.readFile(from.file);
  const value = text?.replace(/\r?\n$/, "");
  return value === undefined || value === "" ? undefined : value;
}

function secret(run: Run, name: string): string | undefined {
  const value = run.environment[name];
  return value === undefined || value === "" ? undefined : value;
}

/**
 * Creates, or updates when `body` (only what differs) has fields, and records which. The
 * detail of an update defaults to the names of the fields sent.
 */
async function createOrUpdate(
  run: Run,
  resource: Resource,
  name: string,
  target:
    | { create: { path: string; body: Record<string, unknown> } }
    | { update: { path: string; body: Record<string, unknown>; current: object } },
  extra: { detail?: string; warning?: string } = {},
): Promise<void> {
  if ("create" in target) {
    await run.client.request("POST", target.create.path, target.create.body);
    run.changes.push({ action: "created", resource, name, ...extra });
    return;
  }
  const fields = Object.keys(target.update.body);
  if (fields.length === 0) {
    run.changes.push({ action: "unchanged", resource, name, ...extra });
    return;
  }
  await run.client.request("PATCH", target.update.path, target.update.body);
  run.changes.push({
    action: "updated",
    resource,
    name,
    detail: fields.join(", "),
    ...extra,
    fields: fieldChanges(pick(target.update.current, fields), target.update.body),
  });
}

/**
 * Creates the missing environments in the file's order: each goes right after the one
 * listed before it, or before the first listed one that exists, so the global order keeps
 * the file's order for what the file adds.
 */
async function applyEnvironments(run: Run, wanted: FerryFile["environments"]): Promise<Map<string, Environment>> {
  let existing = await run.client.getAll<Environment>("/api/v1/environments");
  for (const [index, environment] of wanted.entries()) {
    const current = existing.find((item) => item.slug === environment.slug);
    const path = `/api/v1/environments/${segment(environment.slug)}`;
    if (current) {
      const body = differences(current, {
        name: environment.name,
        description: environment.description,
        unavailableTargets: environment.unavailableTargets,
        ephemeral: environment.ephemeral,
        ttlMinutes: environment.ttlMinutes,
      });
      await createOrUpdate(run, "environment", environment.slug, { update: { path, body, current } });
      continue;
    }
    const before = wanted
      .slice(0, index)
      .reverse()
      .map((item) => existing.find((other) => other.slug === item.slug))
      .find((item) => item !== undefined);
    const after = wanted
      .slice(index + 1)
      .map((item) => existing.find((other) => other.slug === item.slug))
      .find((item) => item !== undefined);
    const position = before ? before.position + 1 : after?.position;
    await createOrUpdate(run, "environment", environment.slug, {
      create: {
        path: "/api/v1/environments",
        body: {
          name: environment.name,
          slug: environment.slug,
          ...(environment.description !== undefined && { description: environment.description }),
          ...(environment.unavailableTargets !== undefined && { unavailableTargets: environment.unavailableTargets }),
          ...(environment.ephemeral !== undefined && { ephemeral: environment.ephemeral }),
          ...(environment.ttlMinutes !== undefined && { ttlMinutes: environment.ttlMinutes }),
          ...(position !== undefined && { position }),
        },
      },
    });
    // Creating shifts the positions after it: read them again for the next insertion.
    existing = await run.client.getAll<Environment>("/api/v1/environments");
  }
  existing = await run.client.getAll<Environment>("/api/v1/environments");
  return new Map(existing.map((item) => [item.slug, item]));
}

async function applyFeed(run: Run, feed: FerryFile["feeds"][number], existing: readonly Feed[]): Promise<void> {
  const current = existing.find((item) => item.slug === feed.slug);
  const from = feed.passwordFrom?.env;
  // The stored password cannot be read back: write it when there is none yet, or when asked.
  const needsPassword = from !== undefined && (!current || current.password === null || run.updateSecrets);
  const password = needsPassword ? secret(run, from) : undefined;
  const warning =
    needsPassword && password === undefined
      ? `$${from} is not set, so the feed's password was not ${current?.password ? "replaced" : "set"}; set it and apply again`
      : undefined;
  const extra = warning === undefined ? {} : { warning };
  if (!current) {
    const body = {
      name: feed.name,
      slug: feed.slug,
      url: feed.url,
      ...(feed.username !== undefined && { username: feed.username }),
      ...(password !== undefined && { password }),
    };
    const detail = password !== undefined ? { detail: `password from $${from}` } : {};
    await createOrUpdate(run, "feed", feed.slug, { create: { path: "/api/v1/feeds", body } }, { ...detail, ...extra });
    return;
  }
  const body = differences(current, { name: feed.name, url: feed.url, username: feed.username });
  const notes = Object.keys(body);
  if (password !== undefined) {
    body.password = password;
    notes.push(`password from $${from}`);
  } else if (from !== undefined && !needsPassword && secret(run, from) !== undefined) {
    notes.push(`password kept; --update-secrets writes $${from}`);
  }
  const detail = notes.length > 0 ? { detail: notes.join(", ") } : {};
  await createOrUpdate(
    run,
    "feed",
    feed.slug,
    { update: { path: `/api/v1/feeds/${segment(feed.slug)}`, body, current } },
    { ...detail, ...extra },
  );
}

async function applyTarget(run: Run, target: FerryFile["targets"][number], existing: readonly Target[]): Promise<void> {
  const current = existing.find((item) => item.slug === target.slug);
  const ssh = await sshChanges(run, target, current);
  if (!current) {
    if (ssh?.missingKey) {
      run.changes.push({
        action: "skipped",
        resource: "target",
        name: target.slug,
        warning: `not created: ${ssh.missingKey}; an ssh target needs its private key`,
      });
      return;
    }
    await createOrUpdate(
      run,
      "target",
      target.slug,
      {
        create: {
          path: "/api/v1/targets",
          body: {
            name: target.name,
            slug: target.slug,
            environments: target.environments,
            ...(target.roles !== undefined && { roles: target.roles }),
            ...(target.transport !== undefined && { transport: target.transport }),
            ...(target.runtimes !== undefined && { runtimes: target.runtimes }),
            ...(ssh && { ssh: ssh.body }),
            ...(target.router && { router: target.router }),
          },
        },
      },
      ssh?.notes.length ? { detail: ssh.notes.join(", ") } : {},
    );
    return;
  }
  // Environments, roles and runtimes are sets: their order means nothing.
  const changedSet = (wanted: string[] | undefined, stored: string[]) =>
    wanted !== undefined && !sameSet(wanted, stored) ? wanted : undefined;
  const body = differences(current, {
    name: target.name,
    environments: changedSet(target.environments, current.environments),
    roles: changedSet(target.roles, current.roles),
    transport: target.transport,
    runtimes: changedSet(target.runtimes, current.runtimes),
  });
  // The router is replaced as a whole when it differs; a file without one leaves the server's as it is.
  if (target.router && JSON.stringify(sortedKeys(target.router)) !== JSON.stringify(sortedKeys(current.router ?? {}))) {
    body.router = target.router;
  }
  const notes = Object.keys(body);
  if (ssh && Object.keys(ssh.body).length > 0) {
    body.ssh = ssh.body;
    notes.push(...ssh.notes);
  } else if (ssh) notes.push(...ssh.notes.filter((note) => note.startsWith("private key kept")));
  const extra = {
    ...(notes.length > 0 && { detail: notes.join(", ") }),
    ...(ssh?.missingKey && { warning: `${ssh.missingKey}, so the private key was not replaced` }),
  };
  await createOrUpdate(
    run,
    "target",
    target.slug,
    { update: { path: `/api/v1/targets/${segment(target.slug)}`, body, current } },
    extra,
  );
}

/**
 * What the ssh settings of a file's target change on the server: every setting that differs,
 * and the private key (with its passphrase) when the target has none stored yet or when
 * asked to (`--update-secrets`), read from where the file says. The stored key cannot be
 * read back, so otherwise it is kept, which keeps a second apply a no-op.
 */
async function sshChanges(
  run: Run,
  target: FerryFile["targets"][number],
  current: Target | undefined,
): Promise<{ body: Record<string, unknown>; notes: string[]; missingKey?: string } | undefined> {
  const { ssh } = target;
  if (!ssh) return undefined;
  const stored = current?.ssh ?? null;
  const wanted = {
    host: ssh.host,
    port: ssh.port ?? 22,
    user: ssh.user,
    jumpHost: ssh.jumpHost ?? null,
    ...(ssh.hostKey !== undefined && { hostKey: ssh.hostKey }),
  };
  const body: Record<string, unknown> = {};
  if (!stored) Object.assign(body, wanted);
  else {
    for (const field of ["host", "port", "user", "hostKey"] as const) {
      if (wanted[field] !== undefined && wanted[field] !== stored[field]) body[field] = wanted[field];
    }
    const jump = stored.jumpHost;
    const wantedJump = wanted.jumpHost;
    const sameJump =
      wantedJump === null
        ? jump === null
        : jump !== null &&
          jump.host === wantedJump.host &&
          jump.port === wantedJump.port &&
          jump.user === wantedJump.user &&
          (wantedJump.hostKey === undefined || wantedJump.hostKey === jump.hostKey);
    if (!sameJump) body.jumpHost = wantedJump;
  }
  if (body.jumpHost === null && !stored) delete body.jumpHost;
  // A new target's settings go without saying; an existing one's changes are named.
  const notes = stored ? Object.keys(body).map((field) => `ssh.${field}`) : [];
  const from = ssh.privateKeyFrom;
  const source = "env" in from ? `$${from.env}` : from.file;
  const needsKey = !stored || run.updateSecrets;
  if (!needsKey) {
    notes.push(`private key kept; --update-secrets writes it from ${source}`);
    return { body, notes };
  }
  const key = "env" in from ? secret(run, from.env) : await run.readFile(from.file);
  if (key === undefined) {
    return { body, notes, missingKey: "env" in from ? `$${from.env} is not set` : `cannot read ${from.file}` };
  }
  body.privateKey = key;
  notes.push(`private key from ${source}`);
  if (ssh.passphraseFrom) {
    const passphrase = secret(run, ssh.passphraseFrom.env);
    if (passphrase !== undefined) body.passphrase = passphrase;
  }
  return { body, notes };
}

async function applyLifecycle(
  run: Run,
  lifecycle: FerryFile["lifecycle"],
  environments: ReadonlyMap<string, Environment>,
): Promise<void> {
  // A phase without a name is named after its first environment: compare with that name.
  const phases = lifecycle.phases.map((phase) => ({
    name: phase.name ?? environments.get(phase.environments[0] ?? "")?.name ?? "",
    environments: phase.environments,
    autoDeploy: phase.autoDeploy,
    optional: phase.optional,
    acceptSkippedSteps: phase.acceptSkippedSteps ?? false,
    separateApprover: phase.separateApprover ?? false,
  }));
  const current = (await run.client.getAll<Lifecycle>("/api/v1/lifecycles")).find(
    (item) => item.slug === lifecycle.slug,
  );
  if (!current) {
    await createOrUpdate(run, "lifecycle", lifecycle.slug, {
      create: {
        path: "/api/v1/lifecycles",
        body: {
          name: lifecycle.name,
          slug: lifecycle.slug,
          ...(lifecycle.description !== undefined && { description: lifecycle.description }),
          phases,
        },
      },
    });
    return;
  }
  const body = differences(current, { name: lifecycle.name, description: lifecycle.description, phases });
  await createOrUpdate(run, "lifecycle", lifecycle.slug, {
    update: { path: `/api/v1/lifecycles/${segment(lifecycle.slug)}`, body, current },
  });
}

async function applyProject(
  run: Run,
  project: FerryFile["project"],
  lifecycleSlug: string,
  versionPattern: string | undefined,
): Promise<void> {
  const current = (await run.client.getAll<Project>("/api/v1/projects")).find((item) => item.slug === project.slug);
  if (!current) {
    await createOrUpdate(run, "project", project.slug, {
      create: {
        path: "/api/v1/projects",
        body: {
          name: project.name,
          slug: project.slug,
          ...(project.description !== undefined && { description: project.description }),
          lifecycle: lifecycleSlug,
          ...(versionPattern !== undefined && { versionPattern }),
        },
      },
    });
    return;
  }
  const body = differences(current, {
    name: project.name,
    description: project.description,
    lifecycle: lifecycleSlug,
    versionPattern,
  });
  await createOrUpdate(run, "project", project.slug, {
    update: { path: `/api/v1/projects/${segment(project.slug)}`, body, current },
  });
}

/**
 * The process as the API shows it. `images` is optional: a server from before images were
 * part of the process has none, and apply then leaves them out rather than be refused.
 */
interface StoredProcess {
  steps: Step[];
  images?: unknown[];
  /** Absent on a server from before the package feed (ADR 0044). */
  packages?: unknown[];
}

/**
 * Replaces the process (its steps and its images) when it differs from the file's. A part
 * the file leaves out (no `steps`, or no `images`) is sent back as it is, since the API
 * replaces the process as a whole.
 */
async function applyProcess(
  run: Run,
  projectPath: string,
  projectSlug: string,
  wanted: { steps: FerryFile["steps"]; images: FerryFile["images"]; packages: FerryFile["packages"] },
): Promise<void> {
  const current = await run.client.get<StoredProcess>(`${projectPath}/process`);
  const imagesKnown = current.images !== undefined;
  const packagesKnown = current.packages !== undefined;
  const desired = {
    ...(imagesKnown && { images: wanted.images ?? current.images }),
    ...(packagesKnown && { packages: wanted.packages ?? current.packages }),
    steps: wanted.steps !== undefined ? await captureStepFiles(run, wanted.steps) : current.steps,
  };
  const warning =
    !imagesKnown && wanted.images !== undefined && wanted.images.length > 0
      ? { warning: "this server's process has no images yet, so the file's images were not sent" }
      : !packagesKnown && wanted.packages !== undefined && wanted.packages.length > 0
        ? { warning: "this server has no package feed yet, so the file's packages were not sent" }
        : {};
  // Both sides carry every default (the file's steps went through validateSteps as the API's do).
  if (
    canonical(desired) ===
    canonical({
      ...(imagesKnown && { images: current.images }),
      ...(packagesKnown && { packages: current.packages }),
      steps: current.steps,
    })
  ) {
    run.changes.push({ action: "unchanged", resource: "process", name: projectSlug, ...warning });
    return;
  }
  await run.client.request("PUT", `${projectPath}/process`, desired);
  const wasEmpty = current.steps.length === 0 && (current.images ?? []).length === 0;
  const count = (amount: number, noun: string) => `${amount} ${noun}${amount === 1 ? "" : "s"}`;
  run.changes.push({
    action: wasEmpty ? "created" : "updated",
    resource: "process",
    name: projectSlug,
    detail: [
      count(desired.steps.length, "step"),
      ...(desired.images !== undefined ? [count(desired.images.length, "image")] : []),
      ...(desired.packages !== undefined && desired.packages.length > 0
        ? [count(desired.packages.length, "package")]
        : []),
    ].join(", "),
    ...warning,
    fields: fieldChanges(
      { images: current.images, ...(packagesKnown && { packages: current.packages }), steps: current.steps },
      desired,
    ),
  });
}

/**
 * The steps with each template file beside the ferry.yml read into its `content` (ADR 0051):
 * the process, and so each release made from it, holds the template's text as it was at this
 * apply; a later edit of the file changes the process at the next apply, never a release.
 */
async function captureStepFiles(run: Run, steps: readonly Step[]): Promise<Step[]> {
  const captured: Step[] = [];
  for (const step of steps) {
    if (!step.files?.some((file) => file.content === undefined && file.package === undefined)) {
      captured.push(step);
      continue;
    }
    const files = [];
    for (const file of step.files) {
      if (file.content !== undefined || file.package !== undefined) {
        files.push(file);
        continue;
      }
      const content = await run.readFile(file.file);
      if (content === undefined) {
        throw new OperationError(
          `step '${step.name}': cannot read template file ${file.file} beside the ferry.yml (or it is empty); create it, or correct files[].file`,
          [],
          400,
        );
      }
      if (Buffer.byteLength(content) > MAX_STEP_FILE_BYTES) {
        throw new OperationError(
          `step '${step.name}': template file ${file.file} is larger than ${MAX_STEP_FILE_BYTES / 1024} KiB; keep templates to configuration files`,
          [],
          400,
        );
      }
      files.push({ ...file, content });
    }
    captured.push({ ...step, files });
  }
  return captured;
}

type WantedVariable = NonNullable<FerryFile["variables"]>[number];

function variableLabel(variable: { name: string; scope: WantedVariable["scope"] }): string {
  const parts = (["environments", "roles", "targets"] as const)
    .filter((kind) => variable.scope[kind].length > 0)
    .map((kind) => `${kind} ${[...variable.scope[kind]].sort().join(",")}`);
  return parts.length === 0 ? variable.name : `${variable.name} [${parts.join("; ")}]`;
}

/**
 * Makes the project's variables exactly the file's. A variable is the same one when name
 * and scope match; failing that, an unmatched one of the same name is updated in place
 * (its scope changed), which keeps a stored secret instead of deleting it.
 */
async function applyVariables(
  run: Run,
  ownerPath: string,
  wanted: readonly WantedVariable[],
  /** "common/" for a variable set's, so the change says whose variable it is. */
  prefix = "",
): Promise<void> {
  const collection = `${ownerPath}/variables`;
  const existing = await run.client.getAll<Variable | SetVariable>(collection);
  const byKey = new Map(existing.map((variable) => [variableKey(variable.name, variable.scope), variable]));
  const matched = new Set<Variable | SetVariable>();
  const pairs = wanted.map((variable) => {
    const current = byKey.get(variableKey(variable.name, variable.scope));
    if (current) matched.add(current);
    return { variable, current };
  });
  for (const pair of pairs) {
    if (pair.current) continue;
    pair.current = existing.find((variable) => variable.name === pair.variable.name && !matched.has(variable));
    if (pair.current) matched.add(pair.current);
  }
  for (const { variable, current } of pairs) {
    if (current) await updateVariable(run, `${collection}/${segment(current.id)}`, current, variable, prefix);
    else await createVariable(run, collection, variable, prefix);
  }
  for (const variable of existing) {
    if (matched.has(variable)) continue;
    await run.client.request("DELETE", `${collection}/${segment(variable.id)}`);
    run.changes.push({
      action: "deleted",
      resource: "variable",
      name: prefix + variableLabel(variable),
      detail: "not in ferry.yml",
    });
  }
}

async function createVariable(run: Run, collection: string, variable: WantedVariable, prefix: string): Promise<void> {
  const name = prefix + variableLabel(variable);
  let value = variable.value;
  if (variable.sensitive) {
    const from = variableSource(variable);
    value = await variableSecret(run, variable);
    if (value === undefined) {
      run.changes.push({
        action: "skipped",
        resource: "variable",
        name,
        warning: `${from} ${variable.valueFrom && "file" in variable.valueFrom ? "cannot be read or is empty" : "is not set"}, so the sensitive variable was not created; set it and apply again`,
      });
      return;
    }
  }
  await run.client.request("POST", collection, {
    name: variable.name,
    value: value ?? "",
    sensitive: variable.sensitive,
    scope: variable.scope,
  });
  run.changes.push({
    action: "created",
    resource: "variable",
    name,
    ...(variable.sensitive && { detail: `sensitive, from ${variableSource(variable)}` }),
  });
}

async function updateVariable(
  run: Run,
  path: string,
  current: Pick<Variable, "name" | "value" | "sensitive" | "scope">,
  variable: WantedVariable,
  prefix: string,
): Promise<void> {
  const name = prefix + variableLabel(variable);
  const body: Record<string, unknown> = {};
  const notes: string[] = [];
  const fields: FieldChange[] = [];
  let warning: string | undefined;
  if (!sameScope(current.scope, variable.scope)) {
    body.scope = variable.scope;
    notes.push(`scope was ${variableLabel(current)}`);
    fields.push(...fieldChanges(current.scope, variable.scope, "scope"));
  }
  if (!variable.sensitive) {
    if (current.sensitive) {
      Object.assign(body, { sensitive: false, value: variable.value });
      notes.push("no longer sensitive");
      fields.push({ field: "sensitive", from: true, to: false }, { field: "value", sensitive: true });
    } else if (current.value !== variable.value) {
      body.value = variable.value;
      notes.push("value");
      fields.push({ field: "value", from: current.value, to: variable.value });
    }
  } else {
    const from = variableSource(variable);
    const value = await variableSecret(run, variable);
    // A stored secret cannot be compared: it is written only when it has to be, or when asked.
    const needsValue = !current.sensitive || run.updateSecrets;
    if (needsValue && value !== undefined) {
      Object.assign(body, { sensitive: true, value });
      notes.push(current.sensitive ? `value from ${from}` : `now sensitive, value from ${from}`);
      if (!current.sensitive) fields.push({ field: "sensitive", from: false, to: true });
      fields.push({ field: "value", sensitive: true });
    } else if (needsValue) {
      warning = current.sensitive
        ? `${from} is not set, so the stored value was kept`
        : `ferry.yml says it is sensitive but it is stored in clear; set ${from} and apply again`;
    } else if (value !== undefined && Object.keys(body).length === 0) {
      notes.push(`sensitive value kept; --update-secrets writes ${from}`);
    }
  }
  const changed = Object.keys(body).length > 0;
  if (changed) await run.client.request("PATCH", path, body);
  run.changes.push({
    action: changed ? "updated" : "unchanged",
    resource: "variable",
    name,
    ...(notes.length > 0 && { detail: notes.join("; ") }),
    ...(warning !== undefined && { warning }),
    ...(changed && { fields }),
  });
}

/** Creates or updates a variable set the file declares, and makes its variables exactly the file's. */
async function applyVariableSet(run: Run, set: NonNullable<FerryFile["variableSets"]>[number]): Promise<void> {
  const current = (await run.client.getAll<VariableSet>("/api/v1/variable-sets")).find(
    (item) => item.slug === set.slug,
  );
  const path = `/api/v1/variable-sets/${segment(set.slug)}`;
  if (!current) {
    await createOrUpdate(run, "variable set", set.slug, {
      create: {
        path: "/api/v1/variable-sets",
        body: {
          name: set.name,
          slug: set.slug,
          ...(set.description !== undefined && { description: set.description }),
        },
      },
    });
  } else {
    const body = differences(current, { name: set.name, description: set.description });
    await createOrUpdate(run, "variable set", set.slug, { update: { path, body, current } });
  }
  await applyVariables(run, path, set.variables, `${set.slug}/`);
}

/** Makes the project's list of included variable sets the file's (order counts: it is precedence). */
async function applyIncludedSets(
  run: Run,
  projectPath: string,
  projectSlug: string,
  wanted: readonly string[],
): Promise<void> {
  const current = await run.client.get<ProjectVariableSets>(`${projectPath}/variable-sets`);
  if (canonical(current.sets) === canonical(wanted)) {
    run.changes.push({ action: "unchanged", resource: "project", name: projectSlug, detail: "variable sets" });
    return;
  }
  await run.client.request("PUT", `${projectPath}/variable-sets`, { sets: wanted });
  run.changes.push({
    action: "updated",
    resource: "project",
    name: projectSlug,
    detail: "variable sets",
    fields: [{ field: "variableSets", from: current.sets, to: [...wanted] }],
  });
}

function sameScope(a: Variable["scope"], b: WantedVariable["scope"]): boolean {
  return sameSet(a.environments, b.environments) && sameSet(a.roles, b.roles) && sameSet(a.targets, b.targets);
}

/** An object with its keys in order, for comparing two settings whatever order they were written in. */
function sortedKeys(value: object): Record<string, unknown> {
  return Object.fromEntries(Object.entries(value).sort(([a], [b]) => a.localeCompare(b)));
}
