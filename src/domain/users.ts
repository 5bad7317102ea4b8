import { z } from "zod";
import { atLeastOneField, displayNameSchema, timestampsShape } from "./common.js";

/** A local user as the API shows it: never the password or its hash. */
export const userSchema = z.object({
  id: z.string(),
  username: z.string(),
  displayName: z.string(),
  isAdmin: z.boolean(),
  disabled: z.boolean(),
  ...timestampsShape,
});
export type User = z.infer<typeof userSchema>;

const usernameSchema = z
  .string()
  .regex(/^[a-z0-9][a-z0-9._@-]{0,62}$/, {
    message: "use 1–63 lowercase letters, digits, '.', '_', '@' and '-', starting with a letter or digit",
  })
  // "/api/v1/users/me" means the caller.
  .refine((name) => name !== "me", { message: "'me' is reserved; choose another username" });

/** Long enough to resist guessing; the upper bound keeps scrypt's input sane. */
const passwordSchema = z
  .string()
  .min(12, { message: "use at least 12 characters" })
  .max(1024, { message: "use at most 1024 characters" });

export const createUserSchema = z.strictObject({
  username: usernameSchema,
  displayName: displayNameSchema(200).optional(),
  password: passwordSchema.describe("write-only; stored as an scrypt hash"),
  isAdmin: z.boolean().default(false),
});
export type CreateUser = z.infer<typeof createUserSchema>;

export const updateUserSchema = atLeastOneField({
  displayName: displayNameSchema(200),
  password: passwordSchema.describe("write-only; signs the user out everywhere"),
  isAdmin: z.boolean(),
  disabled: z.boolean().describe("a disabled user cannot sign in; their sessions and keys stop working"),
});
export type UpdateUser = z.infer<typeof updateUserSchema>;

export const changePasswordSchema = z.strictObject({
  currentPassword: z.string().min(1).max(1024),
  newPassword: passwordSchema,
});

export const signInSchema = z.strictObject({
  username: z.string().min(1).max(200),
  password: z.string().min(1).max(1024),
});

export const sessionSchema = z.object({
  user: userSchema,
  csrfToken: z.string().describe("send it back in X-CSRF-Token on every POST, PUT, PATCH and DELETE"),
});

/** An API key as listed: its prefix tells keys apart; the key itself is shown only when created. */
export const apiKeySchema = z.object({
  id: z.string(),
  name: z.string(),
  prefix: z.string(),
  userId: z.string().nullable().describe("null for the bootstrap admin key and service keys"),
  createdAt: z.string(),
  expiresAt: z.string().nullable(),
  lastUsedAt: z.string().nullable().describe("updated at most once a minute"),
  revokedAt: z.string().nullable(),
});
export type ApiKey = z.infer<typeof apiKeySchema>;

export const createApiKeySchema = z.strictObject({
  name: displayNameSchema(200),
  expiresInDays: z.number().int().min(1).max(3650).optional(),
  user: z
    .string()
    .min(1)
    .max(200)
    .optional()
    .describe("administrators: a key for this user (a service account: a user nobody signs in as)"),
});

export const createdApiKeySchema = apiKeySchema.extend({
  key: z.string().describe("the key itself, shown this once"),
});
