import { isIP } from "node:net";
import { z } from "zod";
import { agentStatusSchema } from "./agents.js";
import { atLeastOneField, nameSchema, referenceSchema, roleSchema, slugSchema, timestampsShape } from "./common.js";
import { SECRET_SET } from "./feeds.js";

/**
 * How Ferry reaches the host: the server's own (`local`), over SSH (`ssh`, agentless), or
 * through `ferry agent` on the host, which dials out (`agent`; such targets are made by
 * enrolling, never created directly).
 */
export const transportKinds = ["local", "ssh", "agent"] as const;
export type TransportKind = (typeof transportKinds)[number];
/** What the target can run. */
const runtimeKinds = ["docker", "process"] as const;

/** A host key as OpenSSH prints it (`ssh-keygen -lf`, `ssh -v`): SHA256: and unpadded base64 of its SHA-256. */
export const hostKeyFingerprintSchema = z.string().regex(/^SHA256:[A-Za-z0-9+/]{43}$/, {
  message:
    "write the fingerprint as OpenSSH prints it: SHA256: and 43 characters (on the host: ssh-keygen -lf /etc/ssh/ssh_host_ed25519_key.pub)",
});

/** A host name or an IP address; never anything a resolver or a command line could read otherwise. */
const sshHostSchema = z
  .string()
  .min(1)
  .max(253)
  .refine(
    (host) =>
      isIP(host) !== 0 ||
      /^(?=.{1,253}$)[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?(\.[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*$/.test(
        host,
      ),
    { message: "write a host name (web-1.example.com) or an IP address (10.0.0.5, fd00::5), without a port or user" },
  );

const sshPortSchema = z
  .number()
  .int()
  .min(1)
  .max(65535, { message: "use a port from 1 to 65535" })
  .describe("SSH port, 22 when left out");

/** The account work runs as on the host: a POSIX user name. */
const sshUserSchema = z.string().regex(/^[A-Za-z_][A-Za-z0-9_.-]{0,31}$/, {
  message:
    "write a user name of the host: up to 32 letters, digits, '.', '_' and '-', not starting with a digit or '-'",
});

/** An OpenSSH or PEM private key; whether it can be read (and with which passphrase) is checked when it is saved. */
const privateKeySchema = z
  .string()
  .max(16_384, { message: "a private key is at most 16 KiB: is this the right file?" })
  .refine((key) => /^-----BEGIN [A-Z0-9 ]*PRIVATE KEY-----/.test(key.trim()), {
    message:
      "give the private key in OpenSSH or PEM form, starting with -----BEGIN … PRIVATE KEY----- (the file ssh-keygen wrote, not the .pub one)",
  });

const passphraseSchema = z.string().min(1).max(1024);

/** How a target's SSH settings are shown: the key and passphrase only as "set". */
const sshSettingsSchema = z.object({
  host: z.string(),
  port: z.number().int(),
  user: z.string(),
  jumpHost: z
    .object({
      host: z.string(),
      port: z.number().int(),
      user: z.string(),
      hostKey: z.string().nullable().describe("The jump host's trusted host key; null until `ferry target trust`"),
    })
    .nullable(),
  privateKey: z.literal(SECRET_SET).describe("Never the key itself"),
  passphrase: z.literal(SECRET_SET).nullable(),
  hostKey: z.string().nullable().describe("The trusted host key (SHA256:…); null until `ferry target trust`"),
});
export type SshSettings = z.infer<typeof sshSettingsSchema>;

/**
 * The last scheduled check of a target (src/engine/targetHealth.ts): `up` when the host could
 * be reached and every part it uses answered, `down` when it could not be reached or a part
 * failed (`error` says which), `unknown` before the first check.
 */
const targetHealthStates = ["up", "down", "unknown"] as const;
const targetHealthSchema = z.object({
  state: z.enum(targetHealthStates),
  checkedAt: z.string().nullable().describe("When the last check ended; null before the first"),
  reachable: z.boolean().nullable().describe("Whether a process could be run on the host; null before the first check"),
  dockerVersion: z
    .string()
    .nullable()
    .describe("The Docker engine's version; null when the target has no docker runtime or it did not answer"),
  diskFreeBytes: z.number().nullable().describe("Free space where the host keeps Ferry's work files"),
  router: z
    .enum(["up", "down"])
    .nullable()
    .describe("Whether the host's traffic router answered; null when the target has no router in use"),
  error: z.string().nullable().describe("What failed at the last check"),
  lastUpAt: z.string().nullable().describe("When a check last found the target up"),
});
export type TargetHealth = z.infer<typeof targetHealthSchema>;
/** "0.0.0.0:80", "127.0.0.1:8000", "[::]:80": where a router on the host takes traffic. */
const listenAddressSchema = z.string().refine(
  (value) => {
    const match = /^(\[([0-9A-Fa-f:.]+)\]|([0-9.]+)):(\d{1,5})$/.exec(value);
    if (!match) return false;
    const address = match[2] ?? match[3] ?? "";
    const port = Number(match[4]);
    return isIP(address) !== 0 && port >= 1 && port <= 65535;
  },
  { message: "write the address traffic arrives on as ADDRESS:PORT: 0.0.0.0:80, 127.0.0.1:8000 or [::]:80" },
);

/** A program on the host: a path or a name on its PATH, never anything a shell or env would read otherwise. */
const hostProgramSchema = (what: string, example: string) =>
  z.string().regex(/^[A-Za-z0-9_./+][A-Za-z0-9_./+-]{0,254}$/, {
    message: `write ${what} as a name on its PATH (${example}) or a path (/usr/local/bin/${example}): letters, digits, '/', '.', '_', '+', '-', not starting with '-'`,
  });
const hostCommandSchema = hostProgramSchema("the ferry program on the host", "ferry");

/** An absolute path on the host without . or .. segments. */
const hostPathSchema = (example: string) =>
  z
    .string()
    .max(1024)
    .regex(/^\/[^\0\n]*$/, { message: `write an absolute path on the host, such as ${example}` })
    .refine((path) => !path.split("/").some((segment) => segment === ".." || segment === "."), {
      message: "write the path without . or .. segments",
    });

/**
 * A path nginx's config names (the access log beside the sites directory is written into
 * it): only characters that need no quoting there.
 */
const nginxPathSchema = (example: string, program = "nginx") =>
  hostPathSchema(example).regex(/^[A-Za-z0-9._~/+-]*$/, {
    message: `write the path with letters, digits and . _ ~ / + - only (it goes into ${program}'s config)`,
  });

/** `ferry proxy`, which Ferry starts on the host (detached, so it outlives the server and the SSH connection). */
const builtinRouterSchema = z.strictObject({
  driver: z.literal("builtin"),
  listen: listenAddressSchema.default("0.0.0.0:80").describe("Where the proxy takes traffic on the host"),
  adminPort: z
    .number()
    .int()
    .min(1)
    .max(65535, { message: "use a port from 1 to 65535" })
    .default(7999)
    .describe(
      "The proxy's admin API listens on the host's 127.0.0.1 at this port (bearer token in its state directory)",
    ),
  stateDir: hostPathSchema("/var/lib/ferry/proxy")
    .optional()
    .describe("The proxy's routes and admin token on the host; default ~/.local/state/ferry/proxy of the SSH user"),
  workers: z
    .number({ message: "give how many processes serve traffic: a whole number from 1 to 64" })
    .int({ message: "give how many processes serve traffic: a whole number from 1 to 64" })
    .min(1, { message: "give how many processes serve traffic: a whole number from 1 to 64" })
    .max(64, { message: "give how many processes serve traffic: a whole number from 1 to 64" })
    .optional()
    .describe(
      "Processes serving traffic when Ferry starts the proxy (ferry proxy --workers, ADR 0055); default 1, one process",
    ),
  command: hostCommandSchema
    .default("ferry")
    .describe("The ferry program on the host (Node.js and Ferry installed there)"),
});

/**
 * The host's own nginx (ADR 0039), driven by `ferry nginx-router` run there through the
 * transport: Ferry writes its files in `sitesDir`, checks them with `nginx -t` and reloads.
 */
const nginxRouterSchema = z.strictObject({
  driver: z.literal("nginx"),
  listen: listenAddressSchema.default("0.0.0.0:80").describe("Where Ferry's server blocks take traffic on the host"),
  config: nginxPathSchema("/etc/nginx/nginx.conf").describe(
    "The host's main nginx.conf (nginx -c), which includes <sitesDir>/*.conf inside http {}",
  ),
  sitesDir: nginxPathSchema("/etc/nginx/ferry").describe(
    "The directory Ferry owns on the host: one file per route host; the main config includes it",
  ),
  pidFile: nginxPathSchema("/run/nginx.pid").describe("The pid file the main config names: how the master is found"),
  binary: hostProgramSchema("the nginx program on the host", "nginx")
    .default("nginx")
    .describe("The nginx program on the host"),
  clientKeepalive: z
    .boolean()
    .default(false)
    .describe(
      "Keep idle client connections open between requests; off: a reload never resets an idle keep-alive connection (docs/zero-downtime.md)",
    ),
  command: hostCommandSchema
    .default("ferry")
    .describe("The ferry program on the host, which writes the files and reloads nginx there"),
});

/**
 * A HAProxy Ferry starts and owns on the host (ADR 0048), driven by `ferry haproxy-router`
 * run there through the transport: Ferry writes haproxy.cfg in `stateDir` and switches
 * through the runtime API socket beside it, never reloading for a switch.
 */
const haproxyRouterSchema = z.strictObject({
  driver: z.literal("haproxy"),
  listen: listenAddressSchema.default("0.0.0.0:80").describe("Where HAProxy takes traffic on the host"),
  stateDir: nginxPathSchema("/var/lib/ferry/haproxy", "HAProxy")
    .max(90, { message: "keep the path under 90 characters: the runtime API socket inside it must fit in 107 bytes" })
    .describe("The directory Ferry owns on the host: haproxy.cfg, the runtime API socket, haproxy.pid, access.log"),
  binary: hostProgramSchema("the haproxy program on the host", "haproxy")
    .default("haproxy")
    .describe("The haproxy program on the host (2.6 or later)"),
  command: hostCommandSchema
    .default("ferry")
    .describe("The ferry program on the host, which writes haproxy.cfg and drives HAProxy there"),
});

/**
 * The traffic router on a remote target's host, which blue/green steps there switch
 * (docs/decisions/0031, 0039, 0048): the builtin `ferry proxy`, the host's nginx or a HAProxy
 * Ferry runs there. Each is driven only through the target's transport.
 */
export const targetRouterSchema = z.discriminatedUnion(
  "driver",
  [builtinRouterSchema, nginxRouterSchema, haproxyRouterSchema],
  {
    error: (issue) =>
      issue.code === "invalid_union"
        ? 'choose driver "builtin" (ferry proxy, started on the host by Ferry), "nginx" (the host\'s nginx, with config, sitesDir and pidFile) or "haproxy" (a HAProxy Ferry starts on the host, with stateDir)'
        : undefined,
  },
);
export type TargetRouter = z.infer<typeof targetRouterSchema>;
export type BuiltinTargetRouter = Extract<TargetRouter, { driver: "builtin" }>;

export const targetSchema = z.object({
  id: z.string(),
  slug: z.string(),
  name: z.string(),
  environments: z.array(z.string()).describe("environment slugs"),
  roles: z.array(z.string()),
  transport: z.enum(transportKinds),
  runtimes: z.array(z.enum(runtimeKinds)),
  ssh: sshSettingsSchema.nullable().describe("How the host is reached over SSH; null for a local target"),
  health: targetHealthSchema.describe("The last scheduled health check (docs/targets.md#health)"),
  router: targetRouterSchema
    .nullable()
    .describe("The traffic router on the host for blue/green; null: none (a local target uses the server's own)"),
  agent: agentStatusSchema.nullable().describe("The agent's link (transport agent); null for other targets"),
  ...timestampsShape,
});
export type Target = z.infer<typeof targetSchema>;

/** The fields of the private key and passphrase inside `ssh`: write-only, recorded in the audit log as set or changed. */
export const TARGET_SECRET_FIELDS = ["ssh.privateKey", "ssh.passphrase"] as const;

const uniqueList = <T extends z.ZodType<string>>(item: T, what: string) =>
  z.array(item).refine((values) => new Set(values).size === values.length, {
    message: `list each ${what} once`,
  });

const jumpHostSchema = z.strictObject({
  host: sshHostSchema,
  port: sshPortSchema.default(22),
  user: sshUserSchema,
  hostKey: hostKeyFingerprintSchema.optional().describe("Trust this host key now instead of with `ferry target trust`"),
});

const createSshSchema = z.strictObject({
  host: sshHostSchema,
  port: sshPortSchema.default(22),
  user: sshUserSchema.describe("The account work runs as on the host"),
  jumpHost: jumpHostSchema
    .optional()
    .describe("Reach the host through this one (as ssh -J); the same key signs in on both"),
  privateKey: privateKeySchema.describe("Write-only: stored encrypted, never shown again"),
  passphrase: passphraseSchema.optional().describe("The private key's passphrase, when it has one (write-only)"),
  hostKey: hostKeyFingerprintSchema
    .optional()
    .describe("Trust this host key now instead of with `ferry target trust` (SHA256:…)"),
});

/** `null` clears an optional field (jumpHost, passphrase, hostKey); a field left out keeps what is stored. */
const updateSshSchema = z.strictObject({
  host: sshHostSchema.optional(),
  port: sshPortSchema.optional(),
  user: sshUserSchema.optional(),
  jumpHost: jumpHostSchema.nullable().optional(),
  privateKey: privateKeySchema.optional(),
  passphrase: passphraseSchema.nullable().optional(),
  hostKey: hostKeyFingerprintSchema.nullable().optional(),
});

const targetFields = {
  name: nameSchema,
  slug: slugSchema,
  environments: uniqueList(referenceSchema, "environment").min(1, {
    message: "a target belongs to at least one environment",
  }),
  roles: uniqueList(roleSchema, "role").max(50),
  transport: z.enum(transportKinds),
  runtimes: uniqueList(z.enum(runtimeKinds), "runtime").min(1, { message: "name at least one runtime" }),
};

export const createTargetSchema = z
  .strictObject({
    ...targetFields,
    slug: targetFields.slug.optional(),
    roles: targetFields.roles.default([]),
    transport: targetFields.transport.default("local"),
    runtimes: targetFields.runtimes.default(["docker"]),
    ssh: createSshSchema.optional().describe("Required when transport is ssh"),
    router: targetRouterSchema.optional().describe("The host's traffic router, for blue/green steps on an ssh target"),
  })
  .superRefine((target, context) => {
    if (target.transport === "ssh" && !target.ssh) {
      context.addIssue({
        code: "custom",
        path: ["ssh"],
        message: "an ssh target needs ssh: { host, user, privateKey } (and port, jumpHost when they apply)",
      });
    }
    if (target.transport === "local" && target.router) {
      context.addIssue({
        code: "custom",
        path: ["router"],
        message:
          "a local target uses the server's own router (FERRY_ROUTER and its settings): leave router out, or use it on an ssh or agent target",
      });
    }
    if (target.transport === "agent") {
      context.addIssue({
        code: "custom",
        path: ["transport"],
        message:
          "an agent target is made by enrolling: create a token with 'ferry agent-token create', then run 'ferry agent' on the host (docs/targets.md)",
      });
    }
    if (target.transport !== "ssh" && target.ssh) {
      context.addIssue({
        code: "custom",
        path: ["transport"],
        message: 'set transport to "ssh" to use the ssh settings, or leave ssh out',
      });
    }
  });
export type CreateTarget = z.infer<typeof createTargetSchema>;

/**
 * Fields sent change; `ssh` changes only the SSH settings it names. Moving the target to
 * another host or port forgets its trusted host key unless `hostKey` comes with it: the key
 * belongs to the host it was trusted for.
 */
export const updateTargetSchema = atLeastOneField({
  ...targetFields,
  ssh: updateSshSchema,
  // null: no router on the host any more (blue/green steps there fail, saying so).
  router: targetRouterSchema.nullable(),
});
export type UpdateTarget = z.infer<typeof updateTargetSchema>;
