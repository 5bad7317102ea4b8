import { z } from "zod";
import type { MasterKeyRotation } from "../engine/masterKeyRotation.js";
import { defineRoute, type RouteSpec } from "./route.js";

const rotationSchema = z.object({
  from: z.string().describe("The old master key's id (it no longer decrypts anything)"),
  to: z.string().describe("The new master key's id"),
  resealed: z.object({
    values: z.record(z.string(), z.number().int()).describe("Values sealed again, per table.column"),
    auditEntries: z.number().int().describe("Audit entries chained again under the new key"),
  }),
});

/** POST /api/v1/admin/master-key/rotate (ADR 0046); only when the server has its data directory. */
export function masterKeyRoutes(rotation: MasterKeyRotation | undefined): RouteSpec[] {
  if (!rotation) return [];
  return [
    defineRoute({
      method: "POST",
      path: "/api/v1/admin/master-key/rotate",
      tag: "Admin",
      summary:
        "Rotate the master key: every sensitive value re-encrypted and the audit log re-chained under a new key, in one transaction",
      access: { kind: "administer" },
      response: rotationSchema,
      audit: {
        action: "master-key.rotate",
        change: ({ result }) => {
          const rotated = result as z.infer<typeof rotationSchema>;
          return {
            resource: { type: "master-key", name: rotated.to },
            before: { keyId: rotated.from },
            after: { keyId: rotated.to },
          };
        },
      },
      handler: () => rotation.rotate(),
    }),
  ];
}
