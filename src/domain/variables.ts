import { z } from "zod";
import { referenceSchema, roleSchema, timestampsShape } from "./common.js";
import { SECRET_SET } from "./feeds.js";

const variableNameSchema = z
  .string()
  .regex(/^[A-Za-z_][A-Za-z0-9_.-]{0,199}$/, {
    message: "start with a letter or '_' and use letters, digits, '_', '.' and '-' (at most 200)",
  })
  .refine((name) => !name.toLowerCase().startsWith("ferry."), {
    message: "names starting with 'Ferry.' are reserved for system variables",
  });

const variableScopeSchema = z.object({
  environments: z.array(z.string()).describe("environment slugs"),
  roles: z.array(z.string()),
  targets: z.array(z.string()).describe("target slugs"),
});

export const variableSchema = z.object({
  id: z.string(),
  project: z.string().describe("project slug"),
  name: z.string(),
  /** The value, or "set" for a sensitive variable (its value is never returned). */
  value: z.string(),
  sensitive: z.boolean(),
  scope: variableScopeSchema,
  ...timestampsShape,
});
export type Variable = z.infer<typeof variableSchema>;

const scopeInputSchema = z.strictObject({
  environments: z.array(referenceSchema).max(100).default([]),
  roles: z.array(roleSchema).max(100).default([]),
  targets: z.array(referenceSchema).max(100).default([]),
});
export type VariableScopeInput = z.infer<typeof scopeInputSchema>;

const variableValueSchema = z.string().max(65536, { message: "must be at most 64 KiB" });

export const createVariableSchema = z.strictObject({
  name: variableNameSchema,
  value: variableValueSchema,
  sensitive: z.boolean().default(false),
  scope: scopeInputSchema.default({ environments: [], roles: [], targets: [] }),
});
export type CreateVariable = z.infer<typeof createVariableSchema>;

export const updateVariableSchema = z
  .strictObject({
    name: variableNameSchema,
    value: variableValueSchema,
    sensitive: z.boolean(),
    scope: scopeInputSchema,
  })
  .partial()
  .refine((body) => Object.keys(body).length > 0, { message: "send at least one field to change" });
export type UpdateVariable = z.infer<typeof updateVariableSchema>;

/**
 * Canonical text of a resolved scope, so "same name, same scope" can be a unique index:
 * two variables may share a name only when their scopes differ.
 */
export function scopeKey(scope: { environmentIds: string[]; roles: string[]; targetIds: string[] }): string {
  const part = (values: string[]) => [...new Set(values)].sort().join(",");
  return `e=${part(scope.environmentIds)};r=${part(scope.roles)};t=${part(scope.targetIds)}`;
}

/** What a variable shows through the API: sensitive values never leave the server. */
export function displayedValue(sensitive: boolean, plainValue: string | null): string {
  return sensitive ? SECRET_SET : (plainValue ?? "");
}
