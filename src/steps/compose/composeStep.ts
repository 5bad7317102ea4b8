import { setTimeout as sleep } from "node:timers/promises";
import { TaskFailure } from "../../engine/types.js";
import { COMPOSE_PROJECT_LABEL, COMPOSE_SERVICE_LABEL } from "../../runtimes/colours.js";
import type { ContainerSpec, DockerRuntime } from "../../runtimes/docker.js";
import {
  dockerColours,
  IMAGE_LABEL,
  PORT_LABEL,
  startedColour,
  waitUntilSettled,
} from "../../runtimes/dockerColours.js";
import { DOCKER_HUB_REGISTRY, formatImageReference, parseImageReference } from "../../runtimes/imageReference.js";
import { routeNameSchema } from "../../traffic/proxyState.js";
import { blueGreenOptionsSchema } from "../blueGreen/config.js";
import { describeSwitch, runBlueGreen } from "../blueGreen/strategy.js";
import { logContainerTail, pullImage } from "../container/shared.js";
import { ownershipLabels } from "../ownership.js";
import type { StepKind, StepRunContext } from "../types.js";
import {
  type ComposeApplication,
  ComposeFileError,
  type ComposeService,
  definitionHash,
  loadComposeApplication,
} from "./composeFile.js";
import { type ComposeConfig, composeConfigSchema, composeDocument, composeFileIssues } from "./config.js";

/** The hash of a service's definition as deployed: it is recreated only when this changes. */
const COMPOSE_HASH_LABEL = "ferry.compose.hash";

const HEALTH_POLL_MS = 250;
const projectNamePattern = /^[a-z0-9][a-z0-9_-]{0,62}$/;

/**
 * Deploys a Compose application on the target's Docker engine (through the target's
 * runtime, never a local shortcut): networks and named volumes first, then each service
 * in dependency order — those with an `x-ferry.route` blue/green through the shared
 * strategy, the others recreated only when their definition changed (a hash label).
 */
export const composeStep: StepKind<ComposeConfig> = {
  kind: "compose",
  deploysFiles: true,
  config: composeConfigSchema,
  inputFile: (config) => config.composeFile,
  checkInputFile: composeFileIssues,
  plan(config, render) {
    if (config.compose === undefined) {
      return [{ description: `deploy the Compose file ${config.composeFile} (captured into the release)` }];
    }
    const application = loadComposeApplication(composeDocument(config.compose));
    return application.services.map((service) => ({
      description: service.ferry
        ? `service ${service.name}: blue/green from ${render(service.image)}, ${describeSwitch(
            service.ferry.blueGreen ?? blueGreenOptionsSchema.parse({}),
            service.ferry.route,
            render,
          )}`
        : `service ${service.name}: recreate from ${render(service.image)} only if its definition changed`,
    }));
  },
  run: runCompose,
};

async function runCompose(context: StepRunContext, config: ComposeConfig) {
  const { log, signal } = context;
  const docker = context.target.runtime("docker");
  const projectName = composeProjectName(context, config.projectName);
  // Everything is rendered and checked before anything changes: a missing variable or an
  // invalid rendered value must not leave half an application.
  let application: ComposeApplication;
  // Inline, or the step's template file (ADR 0051): either way rendered in its values only.
  const compose = config.compose ?? context.inputFile;
  if (compose === undefined) {
    throw new TaskFailure(`the step has no Compose file ${config.composeFile ?? ""} among its files`);
  }
  try {
    application = loadComposeApplication(renderStrings(composeDocument(compose), context.render));
  } catch (error) {
    if (error instanceof ComposeFileError) throw new TaskFailure(`${error.message} (after rendering its templates)`);
    throw error;
  }
  const pinnedImages = pinToRelease(context, application);
  const ownership = { ...ownershipLabels(context.scope), [COMPOSE_PROJECT_LABEL]: projectName };

  for (const [key, network] of Object.entries(application.networks)) {
    const name = `${projectName}_${key}`;
    const created = await docker.ensureNetwork(
      name,
      { labels: { ...network.labels, ...ownership }, driver: network.driver, internal: network.internal },
      { signal },
    );
    log.info(created ? `created network ${name}` : `network ${name} exists`);
  }
  for (const [key, volume] of Object.entries(application.volumes)) {
    const name = `${projectName}_${key}`;
    const created = await docker.ensureVolume(
      name,
      { labels: { ...volume.labels, ...ownership }, driver: volume.driver },
      { signal },
    );
    log.info(created ? `created volume ${name}` : `volume ${name} exists (kept, with its data)`);
  }

  const existing = await docker.listByLabel(COMPOSE_PROJECT_LABEL, projectName, { signal });
  const outputs: Record<string, string> = { projectName };
  const containerOf = new Map<string, string>();
  for (const service of application.services) {
    await waitForDependencies(context, docker, config, service, containerOf);
    const image = pinnedImages.get(service.name) ?? service.image;
    const spec = containerSpec(projectName, service, image, ownership);
    const hash = definitionHash({ ...spec, name: undefined, labels: service.labels, route: service.ferry?.route });
    if (service.ferry) {
      const result = await deployRouted(context, config, docker, service, spec, hash);
      containerOf.set(service.name, (result.outputs as Record<string, string>).containerId ?? "");
      for (const [key, value] of Object.entries(result.outputs)) outputs[`${service.name}.${key}`] = value;
      continue;
    }
    const current = existing.filter(
      (container) =>
        container.labels[COMPOSE_SERVICE_LABEL] === service.name && container.labels[PORT_LABEL] === undefined,
    );
    const same = current.find((container) => container.labels[COMPOSE_HASH_LABEL] === hash);
    if (same && current.length === 1) {
      if (same.state !== "running") {
        log.info(`service ${service.name}: definition unchanged; starting its stopped container ${same.name}`);
        await docker.startContainer(same.id, { signal });
      } else {
        log.info(`service ${service.name}: definition unchanged; container ${same.name} kept (not recreated)`);
      }
      containerOf.set(service.name, same.id);
      outputs[`${service.name}.container`] = same.name;
      outputs[`${service.name}.recreated`] = "false";
      continue;
    }
    await pullIfMissing(context, config, docker, image);
    for (const container of current) {
      log.info(`service ${service.name}: definition changed; stopping and removing ${container.name}`);
      await docker.stopAndRemove(container.id, { stopTimeoutSeconds: config.stopTimeoutSeconds, signal });
    }
    log.info(`service ${service.name}: starting container ${spec.name} from ${image}${describeEnvironment(spec)}`);
    const started = await docker.createAndStart(
      {
        ...spec,
        labels: {
          ...spec.labels,
          ...context.labels,
          "ferry.step": context.stepName,
          [COMPOSE_HASH_LABEL]: hash,
        },
      },
      { signal },
    );
    const settled = await waitUntilSettled(docker, started.id, config.settleSeconds * 1000, signal);
    if (settled.failure !== undefined) {
      await logContainerTail(context, docker, spec.name);
      throw new TaskFailure(
        `service ${service.name}: container ${spec.name} ${settled.failure}; its last log lines are in the task log`,
      );
    }
    containerOf.set(service.name, started.id);
    outputs[`${service.name}.container`] = spec.name;
    outputs[`${service.name}.recreated`] = "true";
  }

  // Services no longer in the file: their containers go (not the routed ones' colours: a
  // router may send them traffic, and rollback may need them).
  const inFile = new Set(application.services.map((service) => service.name));
  for (const container of existing) {
    const service = container.labels[COMPOSE_SERVICE_LABEL];
    if (service === undefined || inFile.has(service) || container.labels[PORT_LABEL] !== undefined) continue;
    log.info(`service ${service} is no longer in the Compose file: removing its container ${container.name}`);
    await docker.stopAndRemove(container.id, { stopTimeoutSeconds: config.stopTimeoutSeconds, signal });
  }
  return { outputs };
}

/** A routed service: a new colour beside the live one, through the blue/green strategy every runtime shares. */
async function deployRouted(
  context: StepRunContext,
  config: ComposeConfig,
  docker: DockerRuntime,
  service: ComposeService,
  spec: ContainerSpec,
  hash: string,
) {
  const ferry = service.ferry;
  if (!ferry) throw new Error("deployRouted needs a routed service");
  const { project, environment } = context.scope;
  const route = {
    ...ferry.route,
    name: ferry.route.name ?? routeNameSchema.parse(`${project.slug}-${environment.slug}-${service.name}`.slice(0, 63)),
  };
  const router = await context.target.router();
  context.log.info(`service ${service.name}: blue/green behind route ${route.name}`);
  return runBlueGreen(
    context,
    {
      route,
      options: ferry.blueGreen ?? blueGreenOptionsSchema.parse({}),
      settleSeconds: config.settleSeconds,
      stopTimeoutSeconds: config.stopTimeoutSeconds,
      instance: service.name,
    },
    dockerColours(docker),
    {
      // A retained colour is reused only when its whole definition is the same.
      runs: { label: COMPOSE_HASH_LABEL, value: hash },
      reuseSpares: "no pull",
      async start(name, labels) {
        await pullIfMissing(context, config, docker, spec.image);
        const colourLabels = { ...labels, [PORT_LABEL]: String(ferry.route.port), [IMAGE_LABEL]: spec.image };
        context.log.info(
          `service ${service.name}: starting colour ${name} from ${spec.image}${describeEnvironment(spec)}`,
        );
        const container = await docker.createAndStart(
          {
            ...spec,
            name,
            ports: [
              { containerPort: ferry.route.port, hostIp: "127.0.0.1", protocol: "tcp" },
              ...(spec.ports ?? []).filter(
                (port) => !(port.containerPort === ferry.route.port && (port.protocol ?? "tcp") === "tcp"),
              ),
            ],
            labels: { ...spec.labels, ...colourLabels },
          },
          { signal: context.signal },
        );
        return startedColour(container.id, container.name, colourLabels, container.ports);
      },
    },
    router,
  );
}

/**
 * Waits for what a service's depends_on asks of services started before it: running
 * (service_started), healthy by its health check (service_healthy), or exited with 0
 * (service_completed_successfully).
 */
async function waitForDependencies(
  context: StepRunContext,
  docker: DockerRuntime,
  config: ComposeConfig,
  service: ComposeService,
  containerOf: ReadonlyMap<string, string>,
) {
  const { log, signal } = context;
  for (const dependency of service.dependsOn) {
    const id = containerOf.get(dependency.service);
    if (id === undefined || dependency.condition === "service_started") continue;
    const deadline = Date.now() + config.healthyWithinSeconds * 1000;
    const wanted = dependency.condition === "service_healthy" ? "healthy" : "exited with code 0";
    log.info(`service ${service.name}: waiting for ${dependency.service} to be ${wanted}`);
    for (;;) {
      const status = await docker.inspectContainer(id, { signal });
      if (status === undefined)
        throw new TaskFailure(`service ${dependency.service}: its container was removed by someone else`);
      if (dependency.condition === "service_healthy") {
        if (status.health === undefined) {
          throw new TaskFailure(
            `service ${service.name} waits for ${dependency.service} to be healthy, but ${dependency.service} has no healthcheck: give it one, or use condition: service_started`,
          );
        }
        if (status.health === "healthy") break;
      } else if (!status.running) {
        if (status.exitCode === 0) break;
        await logContainerTail(context, docker, status.name);
        throw new TaskFailure(
          `service ${dependency.service} exited with code ${status.exitCode}; ${service.name} needs it to succeed`,
        );
      }
      if (Date.now() > deadline) {
        await logContainerTail(context, docker, status.name);
        throw new TaskFailure(
          `service ${dependency.service} was not ${wanted} within ${config.healthyWithinSeconds} s (health: ${status.health ?? status.status}); its last log lines are in the task log`,
        );
      }
      await sleep(HEALTH_POLL_MS, undefined, { signal });
    }
    log.info(`service ${dependency.service} is ${wanted}`);
  }
}

/** The engine's container for a service, as Compose would make it (names prefixed with the project). */
function containerSpec(
  projectName: string,
  service: ComposeService,
  image: string,
  ownership: Readonly<Record<string, string>>,
): ContainerSpec & { image: string } {
  return {
    name: `${projectName}-${service.name}-1`,
    image,
    env: service.environment,
    ports: service.ports.map((port) => ({
      containerPort: port.container,
      ...(port.host !== undefined && { hostPort: port.host }),
      hostIp: port.hostIp,
      protocol: port.protocol,
    })),
    volumes: service.mounts.map((mount) => ({
      source: mount.kind === "volume" ? `${projectName}_${mount.source}` : mount.source,
      target: mount.target,
      readOnly: mount.readOnly,
    })),
    networks: service.networks.map((network) => `${projectName}_${network}`),
    networkAliases: [service.name],
    ...(service.cpus !== undefined && { cpus: service.cpus }),
    ...(service.memoryMb !== undefined && { memoryMb: service.memoryMb }),
    restartPolicy: service.restart,
    ...(service.command !== undefined && { command: service.command }),
    ...(service.entrypoint !== undefined && { entrypoint: service.entrypoint }),
    ...(service.workingDir !== undefined && { workingDir: service.workingDir }),
    ...(service.user !== undefined && { user: service.user }),
    ...(service.healthcheck !== undefined && { healthcheck: service.healthcheck }),
    labels: { ...service.labels, ...ownership, [COMPOSE_SERVICE_LABEL]: service.name },
  };
}

/**
 * Services whose image is one of the release's images (same registry and repository, any
 * tag) run exactly the release's digest; others run what the file says.
 */
function pinToRelease(context: StepRunContext, application: ComposeApplication): Map<string, string> {
  const releaseImages: { key: string; reference: string; name: string }[] = [];
  for (const [variable, value] of context.variables) {
    const match = /^Ferry\.Image\[([^\]]+)\]$/.exec(variable);
    if (!match) continue;
    const reference = parseImageReference(value);
    releaseImages.push({ key: repositoryKey(reference), reference: value, name: match[1] ?? "" });
  }
  const pinned = new Map<string, string>();
  for (const service of application.services) {
    let reference: ReturnType<typeof parseImageReference>;
    try {
      reference = parseImageReference(service.image);
    } catch (error) {
      throw new TaskFailure(`service ${service.name}: ${(error as Error).message}`);
    }
    const release = releaseImages.find((image) => image.key === repositoryKey(reference));
    if (release) {
      context.log.info(
        `service ${service.name}: image ${service.image} is the release's image ${release.name}: ${release.reference}`,
      );
      pinned.set(service.name, release.reference);
    } else {
      pinned.set(service.name, formatImageReference(reference));
    }
  }
  return pinned;
}

function repositoryKey(reference: ReturnType<typeof parseImageReference>): string {
  return `${reference.registry ?? DOCKER_HUB_REGISTRY}/${reference.repository}`;
}

/** Compose's pull policy "missing": an image the engine has is used as it is (pinned ones are exactly that content). */
async function pullIfMissing(context: StepRunContext, config: ComposeConfig, docker: DockerRuntime, image: string) {
  if (await docker.hasImage(image, { signal: context.signal })) return;
  const reference = parseImageReference(image);
  await pullImage(
    context,
    config,
    docker,
    image,
    reference.registry ?? DOCKER_HUB_REGISTRY,
    reference.digest !== undefined,
  );
}

/** The rendered Compose project name; default "<project>-<environment>". */
export function composeProjectName(context: StepRunContext, template: string | undefined): string {
  const name =
    template === undefined
      ? `${context.scope.project.slug}-${context.scope.environment.slug}`.toLowerCase()
      : context.render(template);
  if (!projectNamePattern.test(name)) {
    throw new TaskFailure(
      `'${name.slice(0, 100)}' is not a Compose project name: use up to 63 lowercase letters, digits, '_' and '-', starting with a letter or digit`,
    );
  }
  return name;
}

/** Every string of a document rendered as a template (keys are not: a variable never adds or renames a key). */
function renderStrings(document: unknown, render: (template: string) => string): unknown {
  if (typeof document === "string") return render(document);
  if (Array.isArray(document)) return document.map((item) => renderStrings(item, render));
  if (document !== null && typeof document === "object") {
    return Object.fromEntries(Object.entries(document).map(([key, value]) => [key, renderStrings(value, render)]));
  }
  return document;
}

/** "; env A, B": values may be secrets, so only the names. */
function describeEnvironment(spec: ContainerSpec): string {
  const names = Object.keys(spec.env ?? {});
  return names.length > 0 ? `; env ${names.join(", ")}` : "";
}
