import { createHash } from "node:crypto";
import { TaskFailure } from "../../engine/types.js";
import { type DockerRuntime, publishedOrigin } from "../../runtimes/docker.js";
import { waitUntilSettled } from "../../runtimes/dockerColours.js";
import { formatImageReference, parseImageReference } from "../../runtimes/imageReference.js";
import { allowingOrigin, defaultOutboundPolicy, type OutboundPolicy } from "../../security/outboundGuard.js";
import { logContainerTail, pullImage } from "../container/shared.js";
import { probeUntilHealthy } from "../healthProbe.js";
import type { Isolation, StepKind, StepRunContext } from "../types.js";
import { type IsolatedConfig, type IsolatedService, isolatedConfigSchema } from "./config.js";

/** The label naming the isolated group a container, network or volume belongs to (its name prefix). */
const ISOLATED_LABEL = "ferry.isolated";

/**
 * The isolated test group (ADR 0045): deploys the release's services under names and a
 * Docker network that belong to this task alone, each with CPU, memory and pids limits,
 * exposes their addresses to the steps inside it (#{Ferry.Isolated.Url},
 * #{Ferry.Isolated.Service[web].Url}, ….InternalUrl), runs those steps, and then removes
 * everything labelled with the group — whether the steps passed, failed or the task was
 * cancelled. What a killed server leaves is removed by the task's clean-up at the next start
 * (engine/taskCleanup.ts: by the ferry.task label, networks and volumes included).
 */
export function makeIsolatedStep(
  validateNested: (kind: string, config: unknown) => { pointer: string; detail: string }[],
): StepKind<IsolatedConfig> {
  return {
    kind: "isolated",
    config: isolatedConfigSchema(validateNested),
    plan(config, render) {
      const limits = `cpus ${config.limits.cpus}, memory ${config.limits.memoryMb} MiB, pids ${config.limits.pids}`;
      return [
        ...config.services.map((service) => ({
          description: `start ${service.name} from ${render(service.image)} on the task's own network (${limits})`,
        })),
        { description: `run ${config.steps.length} step(s): ${config.steps.map((step) => step.name).join(", ")}` },
        { description: "remove every container, network and volume of the group" },
      ];
    },
    run: runIsolated,
  };
}

async function runIsolated(context: StepRunContext, config: IsolatedConfig) {
  const { log, signal } = context;
  if (!context.runNestedSteps)
    throw new TaskFailure("an isolated group runs only inside a deployment or runbook process");
  const docker = context.target.runtime("docker");
  const namePrefix = groupPrefix(context);
  const isolation: Isolation = {
    network: namePrefix,
    limits: config.limits,
    labels: { [ISOLATED_LABEL]: namePrefix },
    namePrefix,
  };
  const labels = { ...context.labels, ...isolation.labels, "ferry.step": context.stepName };
  // Every template first: a missing variable fails before anything exists.
  const services = config.services.map((service) => renderService(context, service));
  log.info(
    `isolated group ${namePrefix}: ${services.length} service(s) with cpus ${config.limits.cpus}, memory ${config.limits.memoryMb} MiB, pids ${config.limits.pids} each`,
  );
  let outcome: { failed: string | undefined } | undefined;
  try {
    // The group's own network: its containers reach each other by name, and nothing else
    // joins it. One of that name already (left by a run of this very group the server lost)
    // would mix two runs: refused, as the engine refused it before ensureNetwork served both
    // Compose and this; removeGroup below removes it by label.
    if (!(await docker.ensureNetwork(isolation.network, { labels, driver: "bridge" }, { signal }))) {
      throw new TaskFailure(
        `network ${isolation.network} exists already (left by an earlier run of this group); it is removed now: run the step again`,
      );
    }
    const variables = new Map(context.variables);
    variables.set("Ferry.Isolated.Network", isolation.network);
    let outbound: OutboundPolicy = context.outbound ?? defaultOutboundPolicy;
    for (const service of services) {
      const started = await startService(context, config, docker, isolation, labels, service);
      const key = `Ferry.Isolated.Service[${service.name}]`;
      variables.set(`${key}.Name`, started.name);
      if (service.port !== undefined) {
        variables.set(`${key}.InternalUrl`, `http://${service.name}:${service.port}`);
      }
      if (started.url !== undefined) {
        variables.set(`${key}.Url`, started.url);
        // The first service with a port is the group's address.
        if (!variables.has("Ferry.Isolated.Url")) variables.set("Ferry.Isolated.Url", started.url);
        // The steps inside may call what the group published, as a blue/green check calls its colour.
        outbound = allowingOrigin(outbound, new URL(started.url));
      }
    }
    outcome = await context.runNestedSteps(config.steps, { variables, isolation, outbound });
  } finally {
    await removeGroup(context, docker, namePrefix);
  }
  if (outcome.failed !== undefined) throw new TaskFailure(`isolated group: ${outcome.failed}`);
  log.info(`isolated group ${namePrefix}: every step passed`);
  return { outputs: { network: isolation.network } };
}

interface RenderedService {
  name: string;
  image: string;
  registry: string;
  pinned: boolean;
  env: Record<string, string>;
  source: IsolatedService;
  port: number | undefined;
}

function renderService(context: StepRunContext, service: IsolatedService): RenderedService {
  const reference = parseImageReference(context.render(service.image));
  const env: Record<string, string> = {};
  for (const [name, template] of Object.entries(service.env)) env[name] = context.render(template);
  return {
    name: service.name,
    image: formatImageReference(reference),
    registry: reference.registry ?? "docker.io",
    pinned: reference.digest !== undefined,
    env,
    source: service,
    port: service.port,
  };
}

/** Starts one service on the group's network with the group's limits; waits until it is healthy (or settled). */
async function startService(
  context: StepRunContext,
  config: IsolatedConfig,
  docker: DockerRuntime,
  isolation: Isolation,
  labels: Readonly<Record<string, string>>,
  service: RenderedService,
): Promise<{ name: string; url: string | undefined }> {
  const { log, signal } = context;
  await pullImage(context, config, docker, service.image, service.registry, service.pinned);
  const name = `${isolation.namePrefix}-${service.name}`;
  const volumes = [];
  for (const [index, volume] of service.source.volumes.entries()) {
    const volumeName = `${name}-${index + 1}`;
    await docker.ensureVolume(volumeName, { labels }, { signal });
    volumes.push({ source: volumeName, target: volume.target });
  }
  const names = Object.keys(service.env);
  log.info(
    `starting ${name} from ${service.image}${service.port !== undefined ? `; port ${service.port} on 127.0.0.1` : ""}${
      names.length > 0 ? `; env ${names.join(", ")}` : ""
    }`,
  );
  const started = await docker.createAndStart(
    {
      name,
      image: service.image,
      env: service.env,
      ...(service.source.command && { command: service.source.command }),
      ports: service.port === undefined ? [] : [{ containerPort: service.port, hostIp: "127.0.0.1" }],
      volumes,
      networks: [isolation.network],
      networkAliases: [service.name],
      cpus: isolation.limits.cpus,
      memoryMb: isolation.limits.memoryMb,
      noSwap: true,
      pidsLimit: isolation.limits.pids,
      labels: { ...labels, "ferry.service": service.name },
      // A test deployment that crashes must show it, not come back.
      restartPolicy: "no",
    },
    { signal },
  );
  const url = service.port === undefined ? undefined : publishedOrigin(started.ports, service.port);
  const health = service.source.healthCheck;
  if (health && url !== undefined) {
    const probed = await probeUntilHealthy(
      context,
      new URL(health.path, url),
      health,
      allowingOrigin(context.outbound ?? defaultOutboundPolicy, new URL(url)),
    );
    if (!probed.healthy) {
      await explainStop(context, docker, name);
      throw new TaskFailure(
        `service ${service.name} of the isolated group did not answer HTTP ${health.expectedStatus} on ${health.path} within ${health.deadlineSeconds} s (last: ${probed.last}); its last log lines are in the task log`,
      );
    }
  } else {
    const settled = await waitUntilSettled(docker, started.id, service.source.settleSeconds * 1000, signal);
    if (settled.failure !== undefined) {
      await explainStop(context, docker, name);
      throw new TaskFailure(`service ${service.name} of the isolated group ${settled.failure}`);
    }
  }
  log.info(`${name} is up${url !== undefined ? ` at ${url}` : ""}`);
  return { name, url };
}

/** The service's last log lines, and whether its memory limit killed it. */
async function explainStop(context: StepRunContext, docker: DockerRuntime, name: string) {
  const status = await docker.inspectContainer(name, { signal: context.signal }).catch(() => undefined);
  if (status?.oomKilled) {
    context.log.error(`${name} was killed for going beyond its memory limit (OOMKilled)`);
  }
  await logContainerTail(context, docker, name);
}

/**
 * Removes what the group made, found by its label (never by name: a container someone
 * started under a similar name is not ours). Runs after a cancel too, so it does not follow
 * the task's signal; a failure is logged and left to the task's clean-up, which finds the
 * same things by the task's label.
 */
async function removeGroup(context: StepRunContext, docker: DockerRuntime, namePrefix: string) {
  const { log } = context;
  try {
    const containers = await docker.removeByLabel(ISOLATED_LABEL, namePrefix);
    const resources = await docker.removeResourcesByLabel(ISOLATED_LABEL, namePrefix);
    const left = await docker.listByLabel(ISOLATED_LABEL, namePrefix);
    const removed = [...containers.map((name) => `container ${name}`), ...resources];
    log.info(
      `isolated group ${namePrefix}: removed ${removed.length > 0 ? removed.join(", ") : "nothing (nothing had started)"}`,
    );
    if (left.length > 0) log.warn(`isolated group ${namePrefix}: ${left.length} container(s) could not be removed yet`);
  } catch (error) {
    log.warn(
      `isolated group ${namePrefix}: could not remove everything (${error instanceof Error ? error.message : error}); the task's clean-up removes the rest`,
    );
  }
}

/**
 * "ferry-iso-<task>-<group>": the task's id keeps two pipelines apart, the step's name and
 * target (hashed, 8 hex) keep two groups of one task apart, also on one host.
 */
function groupPrefix(context: StepRunContext): string {
  const task = context.taskId.replace(/^task_/, "");
  const group = createHash("sha256")
    .update(`${context.stepName}\0${context.target.id ?? ""}`)
    .digest("hex")
    .slice(0, 8);
  return `ferry-iso-${task}-${group}`;
}
