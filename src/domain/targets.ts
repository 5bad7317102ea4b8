import { z } from "zod";
import { atLeastOneField, nameSchema, referenceSchema, roleSchema, slugSchema, timestampsShape } from "./common.js";

/** How Ferry reaches the host. Only the server's own host for now; ssh and agent follow. */
const transportKinds = ["local"] as const;
/** What the target can run. */
const runtimeKinds = ["docker", "process"] as const;

export const targetSchema = z.object({
  id: z.string(),
  slug: z.string(),
  name: z.string(),
  environments: z.array(z.string()).describe("environment slugs"),
  roles: z.array(z.string()),
  transport: z.enum(transportKinds),
  runtimes: z.array(z.enum(runtimeKinds)),
  ...timestampsShape,
});
export type Target = z.infer<typeof targetSchema>;

const uniqueList = <T extends z.ZodType<string>>(item: T, what: string) =>
  z.array(item).refine((values) => new Set(values).size === values.length, {
    message: `list each ${what} once`,
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

export const createTargetSchema = z.strictObject({
  ...targetFields,
  slug: targetFields.slug.optional(),
  roles: targetFields.roles.default([]),
  transport: targetFields.transport.default("local"),
  runtimes: targetFields.runtimes.default(["docker"]),
});
export type CreateTarget = z.infer<typeof createTargetSchema>;

export const updateTargetSchema = atLeastOneField(targetFields);
export type UpdateTarget = z.infer<typeof updateTargetSchema>;
