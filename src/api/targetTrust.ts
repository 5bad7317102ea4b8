import { z } from "zod";
import { InputError, PreconditionError } from "../domain/errors.js";
import { hostKeyFingerprintSchema } from "../domain/targets.js";
import { TaskFailure } from "../engine/types.js";
import type { StoreContext } from "../store/common.js";
import { sshConnectionSettingsOf, trustHostKeys } from "../store/targets.js";
import { type PresentedHostKey, presentedHostKeys, type SshTimeouts } from "../transports/ssh.js";
import { defineRoute, pathParams, type RouteSpec } from "./route.js";

const trustBodySchema = z.strictObject({
  fingerprint: hostKeyFingerprintSchema
    .optional()
    .describe("The host key to trust; it must be the one the host presents now. Left out: only show it"),
  jumpHostFingerprint: hostKeyFingerprintSchema
    .optional()
    .describe("The jump host's key to trust; it must be the one the jump host presents now"),
});

const presentedSchema = z.object({ fingerprint: z.string(), type: z.string() });

const hostKeyStateSchema = z.object({
  address: z.string().describe("user@host:port"),
  presented: presentedSchema.nullable().describe("What the host presents now; null when it could not be reached"),
  trusted: z.string().nullable().describe("The key Ferry trusts (after this request)"),
});

const trustAnswerSchema = z.object({
  target: z.string(),
  host: hostKeyStateSchema,
  jumpHost: hostKeyStateSchema.nullable(),
  changed: z.boolean().describe("Whether this request stored a key"),
});

const address = (user: string, host: string, port: number) =>
  `${user}@${host.includes(":") ? `[${host}]` : host}:${port}`;

/**
 * `POST /targets/:target/trust`: shows the host keys an ssh target (and its jump host)
 * presents now, and stores the ones the caller confirms. A fingerprint sent must equal
 * what the host presents at this moment: a key is never trusted from the caller's word alone,
 * nor without the caller having seen it.
 */
export function targetTrustRoutes(context: StoreContext, sshTimeouts?: SshTimeouts): RouteSpec[] {
  return [
    defineRoute({
      method: "POST",
      path: "/api/v1/targets/:target/trust",
      tag: "Targets",
      summary: "Show the SSH host keys a target presents, and trust the ones confirmed",
      params: pathParams("target"),
      body: trustBodySchema,
      response: trustAnswerSchema,
      access: { kind: "administer" },
      audit: {
        action: "target.trust",
        change: ({ params, before, result }) => {
          const answer = result as z.infer<typeof trustAnswerSchema>;
          const previous = before as { hostKey: string | null; jumpHostKey: string | null } | undefined;
          return {
            resource: { type: "target", name: answer.target ?? params.target },
            before: { hostKey: previous?.hostKey ?? null, jumpHostKey: previous?.jumpHostKey ?? null },
            after: { hostKey: answer.host.trusted, jumpHostKey: answer.jumpHost?.trusted ?? null },
          };
        },
        before: async ({ params }) => {
          const settings = await sshConnectionSettingsOf(context, params.target);
          return { hostKey: settings.hostKey, jumpHostKey: settings.jumpHost?.hostKey ?? null };
        },
      },
      handler: async ({ params, body }) => {
        const settings = await sshConnectionSettingsOf(context, params.target);
        const jump = settings.jumpHost;
        let presented: { host: PresentedHostKey | undefined; jumpHost: PresentedHostKey | undefined };
        try {
          presented = await presentedHostKeys(settings, body.jumpHostFingerprint ?? jump?.hostKey, sshTimeouts);
        } catch (error) {
          if (error instanceof TaskFailure) throw new PreconditionError(error.message);
          throw error;
        }
        const mismatch = (field: string, what: string, given: string, now: PresentedHostKey | undefined) =>
          new InputError(`${what} presents ${now?.fingerprint ?? "no key"}, not ${given}: nothing was trusted`, [
            {
              pointer: `/${field}`,
              detail: `${what} presents ${now ? `${now.type} ${now.fingerprint}` : "no key we could read"}; compare it with the host's own (ssh-keygen -lf /etc/ssh/ssh_host_ed25519_key.pub) before trusting it`,
            },
          ]);
        if (body.jumpHostFingerprint !== undefined) {
          if (!jump) {
            throw new InputError("this target has no jump host", [
              { pointer: "/jumpHostFingerprint", detail: "leave it out: the target is reached directly" },
            ]);
          }
          if (presented.jumpHost?.fingerprint !== body.jumpHostFingerprint) {
            throw mismatch("jumpHostFingerprint", "the jump host", body.jumpHostFingerprint, presented.jumpHost);
          }
        }
        if (body.fingerprint !== undefined) {
          if (!presented.host) {
            throw new PreconditionError(
              `the jump host presents ${presented.jumpHost?.fingerprint ?? "no key"}, which is not trusted: trust it first (send jumpHostFingerprint too, or run ferry target trust ${settings.targetName})`,
            );
          }
          if (presented.host.fingerprint !== body.fingerprint) {
            throw mismatch("fingerprint", "the host", body.fingerprint, presented.host);
          }
        }
        const keys = {
          ...(body.fingerprint !== undefined && body.fingerprint !== settings.hostKey && { hostKey: body.fingerprint }),
          ...(body.jumpHostFingerprint !== undefined &&
            body.jumpHostFingerprint !== jump?.hostKey && { jumpHostKey: body.jumpHostFingerprint }),
        };
        const changed = Object.keys(keys).length > 0;
        const stored = changed
          ? await trustHostKeys(
              context,
              settings.targetId,
              { host: settings.host, port: settings.port, jumpHost: jump && { host: jump.host, port: jump.port } },
              keys,
            )
          : undefined;
        return {
          target: stored?.slug ?? params.target,
          host: {
            address: address(settings.user, settings.host, settings.port),
            presented: presented.host ?? null,
            trusted: stored ? (stored.ssh?.hostKey ?? null) : settings.hostKey,
          },
          jumpHost: jump
            ? {
                address: address(jump.user, jump.host, jump.port),
                presented: presented.jumpHost ?? null,
                trusted: stored ? (stored.ssh?.jumpHost?.hostKey ?? null) : jump.hostKey,
              }
            : null,
          changed,
        };
      },
    }),
  ];
}
