import { randomBytes } from "node:crypto";
import { chmod, cp, mkdir, rm } from "node:fs/promises";
import { join } from "node:path";
import { setTimeout as sleep } from "node:timers/promises";
import { fileURLToPath } from "node:url";
import { createLifecycleSchema } from "../domain/lifecycles.js";
import { isTerminal } from "../domain/tasks.js";
import { autoDeployNewRelease, promote } from "../engine/deploymentRequests.js";
import type { DeploymentServices } from "../engine/deployments.js";
import { pinImages } from "../feeds/images.js";
import { defaultOutboundPolicy } from "../security/outboundGuard.js";
import { validateSteps } from "../steps/registry.js";
import type { StoreContext } from "../store/common.js";
import { countRows } from "../store/common.js";
import { createEnvironment } from "../store/environments.js";
import { createFeed, getFeed, updateFeed } from "../store/feeds.js";
import { createLifecycle } from "../store/lifecycles.js";
import { createProject } from "../store/projects.js";
import { createRelease, getProcess, setProcess } from "../store/releases.js";
import { createTarget } from "../store/targets.js";
import { getTaskRow, toTask } from "../store/tasks.js";
import { createUser, getUser, setPassword } from "../store/users.js";
import { createVariable, listVariables, updateVariable } from "../store/variables.js";

/** The demo's project, and the environments its app is deployed to, in order. */
export const DEMO_PROJECT = "hello";
export const DEMO_ENVIRONMENTS = ["dev", "test", "prod"] as const;
/** The variable holding where the demo app's files are staged on this host (copyFrom of its process step). */
const APP_DIRECTORY_VARIABLE = "DemoAppDirectory";
/** How long one of the demo's deployments may take. */
const DEPLOYMENT_TIMEOUT_MS = 120_000;

/** The route host of an environment's demo app: curl and browsers resolve *.localhost to this machine. */
export function demoAppHost(environment: string): string {
  return `${environment}.localhost`;
}

/**
 * Seeds the demo install: dev → test → prod, a lifecycle over them, this host as a
 * target, and a project whose process deploys the demo web app (examples/demo-app)
 * blue/green as a supervised process, one route per environment, then says hello in a
 * script. Only into an empty store, so restarting the demo keeps what the user changed.
 */
/** How the demo runs its app: supervised processes, or containers from the demo's registry. */
export type DemoRuntime = { kind: "process" } | { kind: "docker"; registryUrl: string };

/** The feed of the demo's own registry (containers only) and the repository of its image. */
const DEMO_FEED = "demo-images";
export const DEMO_REPOSITORY = "demo/hello";
export const DEMO_IMAGE_TAG = "1.0.0";

export async function seedDemo(
  context: StoreContext,
  appDirectory: string,
  runtime: DemoRuntime = { kind: "process" },
): Promise<boolean> {
  if ((await countRows(context.db, "projects")) > 0 || (await countRows(context.db, "environments")) > 0) return false;
  for (const name of ["Development", "Test", "Production"]) {
    await createEnvironment(context, {
      name,
      slug: name.slice(0, name === "Production" ? 4 : name === "Test" ? 4 : 3).toLowerCase(),
      description: `${name} environment (demo)`,
    });
  }
  await createLifecycle(
    context,
    createLifecycleSchema.parse({
      name: "Default",
      description: "dev deploys by itself; test and prod are promoted",
      phases: [{ environments: ["dev"], autoDeploy: true }, { environments: ["test"] }, { environments: ["prod"] }],
    }),
  );
  await createTarget(context, {
    name: "This host",
    slug: "local",
    environments: ["dev", "test", "prod"],
    roles: ["web"],
    transport: "local",
    runtimes: ["process", "docker"],
  });
  await createProject(context, {
    name: "Hello",
    description: "A small web app promoted dev → test → prod with zero downtime",
    lifecycle: "default",
    // 1.0.0, then 1.1.0 (the demo's second release), then 1.2.0 from `ferry release create`.
    versionPattern: "1.#{n}.0",
  });
  const empty = { environments: [], roles: [], targets: [] };
  await createVariable(context, DEMO_PROJECT, {
    name: "Greeting",
    value: "Hello from Ferry",
    sensitive: false,
    scope: empty,
  });
  await createVariable(context, DEMO_PROJECT, {
    name: "Greeting",
    value: "Hello from production",
    sensitive: false,
    scope: { ...empty, environments: ["prod"] },
  });
  await createVariable(context, DEMO_PROJECT, {
    name: APP_DIRECTORY_VARIABLE,
    value: appDirectory,
    sensitive: false,
    scope: empty,
  });
  await createVariable(context, DEMO_PROJECT, {
    name: "DatabasePassword",
    value: `demo-${randomBytes(9).toString("base64url")}`,
    sensitive: true,
    scope: empty,
  });
  const step = {
    roles: ["web"],
    environments: [],
    excludeEnvironments: [],
    condition: "success" as const,
    required: true,
  };
  const appEnvironment = {
    RELEASE: "#{Ferry.Release.Number}",
    ENVIRONMENT: "#{Ferry.Environment.Name}",
    GREETING: "#{Greeting}",
  };
  const blueGreen = {
    healthCheck: { path: "/health", intervalMs: 200, deadlineSeconds: 30 },
    drainSeconds: 10,
    retain: 2,
    keepPreviousRunning: true,
  };
  if (runtime.kind === "docker") {
    await createFeed(context, { name: "Demo images", slug: DEMO_FEED, type: "docker", url: runtime.registryUrl });
  }
  const web =
    runtime.kind === "docker"
      ? {
          ...step,
          name: "web",
          kind: "container",
          config: {
            strategy: "blueGreen",
            image: "#{Ferry.Image[web]}",
            env: appEnvironment,
            memoryMb: 128,
            route: { host: "#{Ferry.Environment.Slug}.localhost", port: 8080 },
            blueGreen,
            settleSeconds: 1,
          },
        }
      : {
          ...step,
          name: "web",
          kind: "process",
          config: {
            strategy: "blueGreen",
            command: "node",
            args: ["server.js"],
            copyFrom: `#{${APP_DIRECTORY_VARIABLE}}`,
            env: appEnvironment,
            limits: { openFiles: 1024 },
            route: { host: "#{Ferry.Environment.Slug}.localhost" },
            blueGreen,
            settleSeconds: 1,
          },
        };
  await setProcess(context, DEMO_PROJECT, {
    images:
      runtime.kind === "docker"
        ? [{ name: "web", feed: DEMO_FEED, repository: DEMO_REPOSITORY, version: { kind: "regex", pattern: ".+" } }]
        : [],
    steps: validateSteps([
      web,
      {
        ...step,
        name: "Say hello",
        kind: "script",
        config: {
          script:
            'echo "$GREETING (release $RELEASE in $ENVIRONMENT, serving at $UPSTREAM)"\necho "the password is $PASSWORD — masked in this log"',
          env: {
            GREETING: "#{Greeting}",
            RELEASE: "#{Ferry.Release.Number}",
            ENVIRONMENT: "#{Ferry.Environment.Name}",
            UPSTREAM: "#{Ferry.Step[web].Output.upstream}",
            PASSWORD: "#{DatabasePassword}",
          },
        },
      },
    ]),
  });
  return true;
}

/**
 * Puts the demo app's files (examples/demo-app) where the account its processes run as can
 * copy them: the work root, which that account may pass through (a checkout under /root
 * cannot be read by it). Done at every start, so an upgraded checkout brings its app.
 */
export async function stageDemoApp(services: DeploymentServices, context: StoreContext): Promise<string> {
  const directory = join(services.workRoot, "demo-app");
  await rm(directory, { recursive: true, force: true });
  await mkdir(directory, { recursive: true, mode: 0o755 });
  await cp(fileURLToPath(new URL("../../examples/demo-app/", import.meta.url)), directory, { recursive: true });
  await chmod(directory, 0o755);
  for (const file of ["server.js", "package.json"]) await chmod(join(directory, file), 0o644);
  // A store seeded with another work root (FERRY_WORK_DIR changed) points the variable here.
  const variables = await listVariables(context, DEMO_PROJECT, { limit: 100, offset: 0 }).catch(() => undefined);
  const variable = variables?.items.find((candidate) => candidate.name === APP_DIRECTORY_VARIABLE);
  if (variable && variable.value !== directory)
    await updateVariable(context, DEMO_PROJECT, variable.id, { value: directory });
  return directory;
}

/** How one of the demo's deployments ended. */
export interface DemoDeployment {
  environment: string;
  state: string;
  taskId: string;
}

/**
 * The demo's next release (1.0.0, then 1.1.0 by the project's version pattern), deployed dev →
 * test → prod: created (the lifecycle deploys it to dev by itself), then promoted to test and
 * to prod, each once the one before succeeded. Stops at the first deployment that does not
 * succeed.
 */
export async function deployDemoRelease(
  services: DeploymentServices,
  notes: string,
  onEnded: (deployment: DemoDeployment) => void,
): Promise<{ version: string; deployments: DemoDeployment[] }> {
  const { context } = services;
  // As the API does it: the registry is asked first (a container demo's image is pinned by digest).
  const process = await getProcess(context, DEMO_PROJECT);
  const images = await pinImages(context, process.images, {}, services.outbound ?? defaultOutboundPolicy);
  const release = await createRelease(context, DEMO_PROJECT, { notes, images: {} }, "demo", { process, images });
  const ended: DemoDeployment[] = [];
  for (const environment of DEMO_ENVIRONMENTS) {
    const queued =
      environment === "dev"
        ? (await autoDeployNewRelease(services, DEMO_PROJECT, release.version, "demo"))[0]
        : await promote(services, { project: DEMO_PROJECT, to: environment, createdBy: "demo" });
    if (!queued) throw new Error("the demo's lifecycle did not deploy its release to dev");
    const state = await waitForTask(context, queued.taskId);
    const deployment = { environment, state, taskId: queued.taskId };
    ended.push(deployment);
    onEnded(deployment);
    if (state !== "succeeded") break;
  }
  return { version: release.version, deployments: ended };
}

async function waitForTask(context: StoreContext, taskId: string): Promise<string> {
  const deadline = Date.now() + DEPLOYMENT_TIMEOUT_MS;
  for (;;) {
    const { state } = toTask(await getTaskRow(context.db, taskId));
    if (isTerminal(state)) return state;
    // An approval or a guided failure waits for a person: the dashboard shows it.
    if (state === "waiting" || Date.now() > deadline) return state;
    await sleep(200);
  }
}

/**
 * The dashboard's sign-in for this run: the `admin` user (created on the first run) gets a
 * new random password at every start of the demo, shown once; it signs out its earlier
 * sessions. Only the demo does this: `ferry server` never sets a password by itself.
 */
export async function demoAdminSignIn(context: StoreContext): Promise<{ username: string; password: string }> {
  const username = "admin";
  const password = randomBytes(12).toString("base64url");
  const existing = await getUser(context, username).catch(() => undefined);
  if (existing) await setPassword(context, existing.id, password);
  else await createUser(context, { username, displayName: "Demo administrator", password, isAdmin: true });
  return { username, password };
}

/**
 * The runtime a seeded demo uses (what its first run chose), and for containers points the
 * demo's feed at this run's registry (its port is new at every start).
 */
export async function demoRuntimeOf(
  context: StoreContext,
  registryUrl: string | undefined,
): Promise<"process" | "docker"> {
  const feed = await getFeed(context, DEMO_FEED).catch(() => undefined);
  if (!feed) return "process";
  if (registryUrl !== undefined && feed.url !== registryUrl) await updateFeed(context, DEMO_FEED, { url: registryUrl });
  return "docker";
}
