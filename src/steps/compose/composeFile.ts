import { createHash } from "node:crypto";
import { Ajv } from "ajv";
import { parse as parseYaml } from "yaml";
import { z } from "zod";
import { blueGreenOptionsSchema, routeShape } from "../blueGreen/config.js";
import { composeSpecSchema } from "./composeSpecSchema.js";

/*
 * A Compose file as Ferry deploys it: checked against the Compose Specification's JSON
 * schema (the file is a Compose file, not a look-alike), then against the keys Ferry
 * drives the engine for (a key it would silently ignore is refused by name), then made
 * into one plain model per service. No I/O here: the step renders, pins and runs it.
 */

/** A problem with the file: where (a JSON pointer into the Compose file) and what to do. */
export interface ComposeIssue {
  pointer: string;
  detail: string;
}

export class ComposeFileError extends Error {
  override readonly name = "ComposeFileError";
  constructor(readonly issues: readonly ComposeIssue[]) {
    super(
      `the Compose file is not one Ferry can deploy: ${issues
        .slice(0, 10)
        .map((issue) => `${issue.pointer || "/"}: ${issue.detail}`)
        .join("; ")}${issues.length > 10 ? ` (and ${issues.length - 10} more)` : ""}`,
    );
  }
}

const ajv = new Ajv({ allErrors: true, strict: false, validateFormats: false });
const validateSpec = ajv.compile(composeSpecSchema);

/** Top-level keys Ferry supports (besides x-* extensions, which Compose itself ignores). */
const TOP_LEVEL_KEYS = new Set(["version", "name", "services", "networks", "volumes"]);
/** Service keys Ferry drives the engine for; anything else of the specification is refused by name. */
const SERVICE_KEYS = new Set([
  "image",
  "command",
  "entrypoint",
  "environment",
  "ports",
  "volumes",
  "networks",
  "depends_on",
  "healthcheck",
  "deploy",
  "cpus",
  "mem_limit",
  "restart",
  "labels",
  "working_dir",
  "user",
  "x-ferry",
]);
const DEPLOY_KEYS = new Set(["resources"]);
const RESOURCES_KEYS = new Set(["limits"]);
const LIMITS_KEYS = new Set(["cpus", "memory"]);
const NETWORK_KEYS = new Set(["driver", "labels", "internal"]);
const VOLUME_KEYS = new Set(["driver", "labels"]);

/** The x-ferry extension of a service: a route makes it blue/green. */
const ferryExtensionSchema = z.strictObject({
  route: z.strictObject({
    ...routeShape,
    /** The container port the service listens on; each colour publishes it on 127.0.0.1 at a port the engine picks. */
    port: z.number().int().min(1).max(65535),
  }),
  blueGreen: blueGreenOptionsSchema.optional(),
});
type FerryExtension = z.infer<typeof ferryExtensionSchema>;

interface ComposePort {
  container: number;
  host?: number;
  hostIp: string;
  protocol: "tcp" | "udp";
}

interface ComposeMount {
  /** A named volume of the file (the key under `volumes:`) or an absolute host path. */
  source: string;
  kind: "volume" | "bind";
  target: string;
  readOnly: boolean;
}

interface ComposeHealthcheck {
  /** The engine's form: ["CMD", …], ["CMD-SHELL", "…"] or ["NONE"]. */
  test: string[];
  intervalMs?: number;
  timeoutMs?: number;
  retries?: number;
  startPeriodMs?: number;
}

type DependencyCondition = "service_started" | "service_healthy" | "service_completed_successfully";

export interface ComposeService {
  name: string;
  image: string;
  command?: string[];
  entrypoint?: string[];
  environment: Record<string, string>;
  ports: ComposePort[];
  mounts: ComposeMount[];
  /** Networks of the file the service joins (by their key); "default" when it names none. */
  networks: string[];
  dependsOn: { service: string; condition: DependencyCondition }[];
  healthcheck?: ComposeHealthcheck;
  cpus?: number;
  memoryMb?: number;
  restart: "no" | "always" | "unless-stopped" | "on-failure";
  labels: Record<string, string>;
  workingDir?: string;
  user?: string;
  /** Set when the service is deployed blue/green behind a route. */
  ferry?: FerryExtension;
}

export interface ComposeApplication {
  services: ComposeService[];
  /** Networks by their key in the file (always with "default" when a service uses it). */
  networks: Record<string, { driver?: string; internal: boolean; labels: Record<string, string> }>;
  volumes: Record<string, { driver?: string; labels: Record<string, string> }>;
}

/** Parses Compose YAML text into a plain object (a YAML error names its line). */
export function parseComposeText(text: string): unknown {
  try {
    return parseYaml(text, { maxAliasCount: 100 });
  } catch (error) {
    throw new ComposeFileError([{ pointer: "", detail: `not valid YAML: ${(error as Error).message}` }]);
  }
}

/**
 * Validates a Compose document (already rendered) and returns its model with services in
 * dependency order (a service after those it depends on). Every problem is listed at once.
 */
export function loadComposeApplication(document: unknown): ComposeApplication {
  if (!validateSpec(document)) {
    throw new ComposeFileError(
      (validateSpec.errors ?? []).slice(0, 20).map((error) => ({
        pointer: error.instancePath,
        detail: `${error.message ?? "invalid"} (Compose specification${
          error.params && "additionalProperty" in error.params ? `: '${error.params.additionalProperty}'` : ""
        })`,
      })),
    );
  }
  const file = document as Record<string, unknown>;
  const issues: ComposeIssue[] = [];
  refuseUnsupported(file, TOP_LEVEL_KEYS, "", issues, "Ferry deploys services, networks and volumes");
  const services = (file.services ?? {}) as Record<string, Record<string, unknown>>;
  if (Object.keys(services).length === 0) issues.push({ pointer: "/services", detail: "name at least one service" });
  const networks: ComposeApplication["networks"] = {};
  for (const [name, value] of Object.entries((file.networks ?? {}) as Record<string, Record<string, unknown> | null>)) {
    const network = value ?? {};
    refuseUnsupported(network, NETWORK_KEYS, `/networks/${name}`, issues, "Ferry creates a network with these");
    networks[name] = {
      ...(typeof network.driver === "string" && { driver: network.driver }),
      internal: network.internal === true,
      labels: stringMap(network.labels),
    };
  }
  const volumes: ComposeApplication["volumes"] = {};
  for (const [name, value] of Object.entries((file.volumes ?? {}) as Record<string, Record<string, unknown> | null>)) {
    const volume = value ?? {};
    refuseUnsupported(volume, VOLUME_KEYS, `/volumes/${name}`, issues, "Ferry creates a volume with these");
    volumes[name] = {
      ...(typeof volume.driver === "string" && { driver: volume.driver }),
      labels: stringMap(volume.labels),
    };
  }
  const model: ComposeService[] = [];
  for (const [name, service] of Object.entries(services)) {
    const parsed = loadService(name, service, networks, volumes, issues);
    if (parsed) model.push(parsed);
  }
  for (const service of model) {
    for (const dependency of service.dependsOn) {
      if (!(dependency.service in services)) {
        issues.push({
          pointer: `/services/${service.name}/depends_on`,
          detail: `depends on '${dependency.service}', which is not a service of this file`,
        });
      }
    }
  }
  if (model.some((service) => service.networks.includes("default")) && !("default" in networks)) {
    networks.default = { internal: false, labels: {} };
  }
  const routes = new Map<string, string>();
  for (const service of model) {
    const route = service.ferry?.route;
    if (!route) continue;
    const key = `${route.name ?? ""} ${route.host} ${route.pathPrefix}`;
    const other = routes.get(key);
    if (other) {
      issues.push({
        pointer: `/services/${service.name}/x-ferry/route`,
        detail: `service ${other} has the same route; give each routed service its own host or pathPrefix`,
      });
    }
    routes.set(key, service.name);
  }
  if (issues.length > 0) throw new ComposeFileError(issues);
  return { services: dependencyOrder(model), networks, volumes };
}

function loadService(
  name: string,
  service: Record<string, unknown>,
  networks: ComposeApplication["networks"],
  volumes: ComposeApplication["volumes"],
  issues: ComposeIssue[],
): ComposeService | undefined {
  const at = `/services/${name}`;
  const before = issues.length;
  refuseUnsupported(service, SERVICE_KEYS, at, issues, "Ferry does not drive the engine for it");
  if (typeof service.image !== "string") {
    issues.push({ pointer: `${at}/image`, detail: "give the service an image (Ferry does not build images)" });
  }
  const deploy = (service.deploy ?? {}) as Record<string, unknown>;
  refuseUnsupported(deploy, DEPLOY_KEYS, `${at}/deploy`, issues, "only deploy.resources.limits is used");
  const resources = (deploy.resources ?? {}) as Record<string, unknown>;
  refuseUnsupported(resources, RESOURCES_KEYS, `${at}/deploy/resources`, issues, "only limits are used");
  const limits = (resources.limits ?? {}) as Record<string, unknown>;
  refuseUnsupported(limits, LIMITS_KEYS, `${at}/deploy/resources/limits`, issues, "only cpus and memory are used");

  const cpusText = limits.cpus ?? service.cpus;
  const cpus = cpusText === undefined ? undefined : Number(cpusText);
  if (cpus !== undefined && !(cpus > 0))
    issues.push({ pointer: `${at}/deploy/resources/limits/cpus`, detail: "use a number of CPUs above 0, e.g. 0.5" });
  const memoryText = limits.memory ?? service.mem_limit;
  const memoryMb = memoryText === undefined ? undefined : toMebibytes(memoryText);
  if (memoryText !== undefined && memoryMb === undefined) {
    issues.push({
      pointer: `${at}/deploy/resources/limits/memory`,
      detail: "use a size such as 64m or 1g (at least 6m)",
    });
  }

  const serviceNetworks = Array.isArray(service.networks)
    ? (service.networks as string[])
    : service.networks
      ? Object.keys(service.networks as object)
      : ["default"];
  if (service.networks && !Array.isArray(service.networks)) {
    for (const [network, settings] of Object.entries(service.networks as Record<string, unknown>)) {
      if (settings !== null && typeof settings === "object" && Object.keys(settings).length > 0) {
        issues.push({
          pointer: `${at}/networks/${network}`,
          detail: `network settings (${Object.keys(settings).join(", ")}) are not supported; list the network only`,
        });
      }
    }
  }
  for (const network of serviceNetworks) {
    if (network !== "default" && !(network in networks)) {
      issues.push({ pointer: `${at}/networks`, detail: `network '${network}' is not under the file's networks:` });
    }
  }

  const mounts: ComposeMount[] = [];
  for (const [index, entry] of ((service.volumes ?? []) as unknown[]).entries()) {
    const mount = toMount(entry);
    if (typeof mount === "string") {
      issues.push({ pointer: `${at}/volumes/${index}`, detail: mount });
      continue;
    }
    if (mount.kind === "volume" && !(mount.source in volumes)) {
      issues.push({
        pointer: `${at}/volumes/${index}`,
        detail: `volume '${mount.source}' is not under the file's volumes: (a bind mount needs an absolute path)`,
      });
    }
    mounts.push(mount);
  }

  const ports: ComposePort[] = [];
  for (const [index, entry] of ((service.ports ?? []) as unknown[]).entries()) {
    const port = toPort(entry);
    if (typeof port === "string") issues.push({ pointer: `${at}/ports/${index}`, detail: port });
    else ports.push(port);
  }

  let ferry: FerryExtension | undefined;
  if (service["x-ferry"] !== undefined) {
    const parsed = ferryExtensionSchema.safeParse(service["x-ferry"]);
    if (parsed.success) ferry = parsed.data;
    else {
      for (const issue of parsed.error.issues) {
        issues.push({ pointer: `${at}/x-ferry/${issue.path.join("/")}`, detail: issue.message });
      }
    }
    if (ferry?.blueGreen?.switch === "allAtOnce") {
      issues.push({
        pointer: `${at}/x-ferry/blueGreen/switch`,
        detail:
          "a compose step switches its routed services target by target; leave switch out (allAtOnce is for container and process steps)",
      });
    }
    if (ferry && ports.some((port) => port.host !== undefined)) {
      issues.push({
        pointer: `${at}/ports`,
        detail:
          "a routed service runs two colours side by side, so they cannot share a host port; leave the host port out and send traffic through the route",
      });
    }
  }

  const restart = service.restart ?? "no";
  if (!["no", "always", "unless-stopped", "on-failure"].includes(String(restart))) {
    issues.push({ pointer: `${at}/restart`, detail: "use no, always, unless-stopped or on-failure" });
  }

  let healthcheck: ComposeHealthcheck | undefined;
  if (service.healthcheck !== undefined) {
    const check = service.healthcheck as Record<string, unknown>;
    const test =
      check.disable === true
        ? ["NONE"]
        : typeof check.test === "string"
          ? ["CMD-SHELL", check.test]
          : ((check.test as string[] | undefined) ?? []);
    healthcheck = { test };
    for (const [key, field] of [
      ["interval", "intervalMs"],
      ["timeout", "timeoutMs"],
      ["start_period", "startPeriodMs"],
    ] as const) {
      if (check[key] === undefined) continue;
      const milliseconds = toMilliseconds(String(check[key]));
      if (milliseconds === undefined)
        issues.push({ pointer: `${at}/healthcheck/${key}`, detail: "use a duration such as 1s, 500ms or 1m30s" });
      else healthcheck[field] = milliseconds;
    }
    if (typeof check.retries === "number") healthcheck.retries = check.retries;
  }

  if (issues.length > before) return undefined;
  return {
    name,
    image: service.image as string,
    ...(service.command !== undefined && { command: toArgv(service.command) }),
    ...(service.entrypoint !== undefined && { entrypoint: toArgv(service.entrypoint) }),
    environment: toEnvironment(service.environment),
    ports,
    mounts,
    networks: serviceNetworks,
    dependsOn: toDependencies(service.depends_on),
    ...(healthcheck && { healthcheck }),
    ...(cpus !== undefined && { cpus }),
    ...(memoryMb !== undefined && { memoryMb }),
    restart: restart as ComposeService["restart"],
    labels: stringMap(service.labels),
    ...(typeof service.working_dir === "string" && { workingDir: service.working_dir }),
    ...(typeof service.user === "string" && { user: service.user }),
    ...(ferry && { ferry }),
  };
}

function refuseUnsupported(
  object: Record<string, unknown>,
  supported: ReadonlySet<string>,
  pointer: string,
  issues: ComposeIssue[],
  why: string,
) {
  for (const key of Object.keys(object)) {
    if (supported.has(key) || (key.startsWith("x-") && pointer === "")) continue;
    issues.push({
      pointer: `${pointer}/${key}`,
      detail: `'${key}' is valid Compose but not supported by Ferry's compose step (${why}); remove it`,
    });
  }
}

/** A service's definition as a short hash: a service is recreated only when it changes. */
export function definitionHash(definition: unknown): string {
  return createHash("sha256").update(canonicalJson(definition)).digest("hex").slice(0, 16);
}

function canonicalJson(value: unknown): string {
  if (Array.isArray(value)) return `[${value.map(canonicalJson).join(",")}]`;
  if (value !== null && typeof value === "object") {
    return `{${Object.keys(value)
      .sort()
      .map((key) => `${JSON.stringify(key)}:${canonicalJson((value as Record<string, unknown>)[key])}`)
      .join(",")}}`;
  }
  return JSON.stringify(value) ?? "null";
}

/** Services after the ones they depend on (the file's order otherwise); a cycle is an error naming it. */
function dependencyOrder(services: ComposeService[]): ComposeService[] {
  const byName = new Map(services.map((service) => [service.name, service]));
  const ordered: ComposeService[] = [];
  const state = new Map<string, "visiting" | "done">();
  const visit = (service: ComposeService, path: string[]) => {
    if (state.get(service.name) === "done") return;
    if (state.get(service.name) === "visiting") {
      throw new ComposeFileError([
        {
          pointer: `/services/${service.name}/depends_on`,
          detail: `depends_on has a cycle: ${[...path, service.name].join(" → ")}`,
        },
      ]);
    }
    state.set(service.name, "visiting");
    for (const dependency of service.dependsOn) {
      const next = byName.get(dependency.service);
      if (next) visit(next, [...path, service.name]);
    }
    state.set(service.name, "done");
    ordered.push(service);
  };
  for (const service of services) visit(service, []);
  return ordered;
}

function toDependencies(value: unknown): ComposeService["dependsOn"] {
  if (value === undefined) return [];
  if (Array.isArray(value)) return value.map((service) => ({ service: String(service), condition: "service_started" }));
  return Object.entries(value as Record<string, { condition?: DependencyCondition }>).map(([service, settings]) => ({
    service,
    condition: settings?.condition ?? "service_started",
  }));
}

function toEnvironment(value: unknown): Record<string, string> {
  const environment: Record<string, string> = {};
  if (Array.isArray(value)) {
    for (const entry of value as string[]) {
      const equals = entry.indexOf("=");
      // "NAME" alone takes the value from the shell running compose: Ferry has none to give, so it is empty.
      if (equals === -1) environment[entry] = "";
      else environment[entry.slice(0, equals)] = entry.slice(equals + 1);
    }
  } else if (value && typeof value === "object") {
    for (const [name, entry] of Object.entries(value)) environment[name] = entry === null ? "" : String(entry);
  }
  return environment;
}

function stringMap(value: unknown): Record<string, string> {
  return toEnvironment(value);
}

function toArgv(value: unknown): string[] {
  // A string command is run by a shell in Compose too (docker-compose splits it shell-style; Ferry keeps it whole).
  return Array.isArray(value) ? value.map(String) : ["/bin/sh", "-c", String(value)];
}

function toPort(entry: unknown): ComposePort | string {
  if (typeof entry === "number") return { container: entry, hostIp: "127.0.0.1", protocol: "tcp" };
  if (typeof entry === "object" && entry !== null) {
    const long = entry as { target?: number; published?: number | string; host_ip?: string; protocol?: string };
    if (typeof long.target !== "number") return "give the port a target (the container port)";
    return {
      container: long.target,
      ...(long.published !== undefined && { host: Number(long.published) }),
      hostIp: long.host_ip ?? "127.0.0.1",
      protocol: long.protocol === "udp" ? "udp" : "tcp",
    };
  }
  const match = /^(?:(?:\[?([0-9a-fA-F.:]+?)\]?:)?(\d+):)?(\d+)(?:\/(tcp|udp))?$/.exec(String(entry));
  if (!match)
    return `'${String(entry).slice(0, 100)}' is not a port Ferry publishes: write CONTAINER, HOST:CONTAINER or IP:HOST:CONTAINER (no ranges)`;
  const [, hostIp, host, container, protocol] = match;
  // Compose publishes on every address when no IP is written; Ferry publishes only on loopback unless asked.
  return {
    container: Number(container),
    ...(host !== undefined && { host: Number(host) }),
    hostIp: hostIp ?? "127.0.0.1",
    protocol: protocol === "udp" ? "udp" : "tcp",
  };
}

function toMount(entry: unknown): ComposeMount | string {
  if (typeof entry === "object" && entry !== null) {
    const long = entry as { type?: string; source?: string; target?: string; read_only?: boolean };
    if (long.type !== "volume" && long.type !== "bind") return "use type volume or bind";
    if (!long.source || !long.target) return "give the mount a source and a target";
    return { source: long.source, kind: long.type, target: long.target, readOnly: long.read_only === true };
  }
  const parts = String(entry).split(":");
  if (parts.length < 2 || parts.length > 3) {
    return "write SOURCE:TARGET[:ro] (an anonymous volume is not supported: name it under volumes:)";
  }
  const [source = "", target = "", mode] = parts;
  if (mode !== undefined && mode !== "ro" && mode !== "rw") return `mode '${mode}' is not supported; use ro or rw`;
  if (source.startsWith(".") || source.startsWith("~")) return "a bind mount needs an absolute host path";
  return { source, kind: source.startsWith("/") ? "bind" : "volume", target, readOnly: mode === "ro" };
}

function toMebibytes(value: unknown): number | undefined {
  const match = /^(\d+(?:\.\d+)?)\s*([bkmg]?)b?$/i.exec(String(value).trim());
  if (!match) return undefined;
  const factor = { "": 1 / (1024 * 1024), b: 1 / (1024 * 1024), k: 1 / 1024, m: 1, g: 1024 }[
    (match[2] ?? "").toLowerCase() as "" | "b" | "k" | "m" | "g"
  ];
  const mebibytes = Math.floor(Number(match[1]) * factor);
  return mebibytes >= 6 ? mebibytes : undefined;
}

function toMilliseconds(value: string): number | undefined {
  if (!/^(\d+(\.\d+)?(h|m|s|ms|us|ns))+$/.test(value)) return undefined;
  const units: Record<string, number> = { h: 3_600_000, m: 60_000, s: 1000, ms: 1, us: 0.001, ns: 0.000001 };
  let total = 0;
  for (const match of value.matchAll(/(\d+(?:\.\d+)?)(h|ms|m|s|us|ns)/g))
    total += Number(match[1]) * (units[match[2] ?? "s"] ?? 0);
  return Math.round(total);
}

/**
 * The bind-mount sources of a Compose file (a volume entry that is an absolute path, or a
 * template that a variable could make one): saving a process with any needs the administer
 * permission everywhere (ADR 0020), as a container step's.
 */
export function composeHostPaths(config: { compose?: unknown }): string[] {
  let document: unknown;
  try {
    document = typeof config.compose === "string" ? parseComposeText(config.compose) : config.compose;
  } catch {
    return [];
  }
  const services = (document as { services?: Record<string, { volumes?: unknown[] }> } | undefined)?.services;
  if (!services || typeof services !== "object") return [];
  return Object.values(services).flatMap((service) =>
    (Array.isArray(service?.volumes) ? service.volumes : []).flatMap((entry) => {
      const source =
        typeof entry === "object" && entry !== null
          ? String((entry as { source?: unknown }).source ?? "")
          : (String(entry).split(":")[0] ?? "");
      return source.startsWith("/") || source.includes("#{") ? [source] : [];
    }),
  );
}
