import { z } from "zod";
import { findControlCharacter } from "./text.js";

/** URL-safe identifier used in paths and references: "prod", "web-api". */
export const slugSchema = z.string().regex(/^[a-z0-9](?:[a-z0-9-]{0,62}[a-z0-9])?$/, {
  message: "use 1-64 lowercase letters, digits and dashes, starting and ending with a letter or digit",
});

/**
 * A name shown to people (a project's, a role's, an API key's): one line of text with no
 * control characters and no bidirectional overrides (src/domain/text.ts), so that printed
 * in a table, a log line or a terminal it shows exactly what it is.
 */
export function displayNameSchema(maxLength: number) {
  return z
    .string()
    .trim()
    .min(1, { message: "must not be empty" })
    .max(maxLength, { message: `must be at most ${maxLength} characters` })
    .superRefine((value, context) => {
      const found = findControlCharacter(value);
      if (found) {
        context.addIssue({
          code: "custom",
          message: `must be one line without control characters or bidirectional overrides: remove the ${found.codePoint} at character ${found.position}`,
        });
      }
    });
}

export const nameSchema = displayNameSchema(100);

/**
 * A description: free text that may keep its paragraphs (newlines) and tabs, but no other
 * control character (a carriage return would let one line overwrite another on a terminal)
 * and no bidirectional override.
 */
export const descriptionSchema = z
  .string()
  .max(2000, { message: "must be at most 2000 characters" })
  .superRefine((value, context) => {
    const found = findControlCharacter(value, true);
    if (found) {
      context.addIssue({
        code: "custom",
        message: `must not contain control characters other than newlines and tabs, nor bidirectional overrides: remove the ${found.codePoint} at character ${found.position}${found.codePoint === "U+000D" ? " (end lines with \\n alone)" : ""}`,
      });
    }
  });

/** A reference to another resource, by its id or its slug. */
export const referenceSchema = z.string().min(1).max(100);

export const roleSchema = z.string().regex(/^[a-z0-9][a-z0-9._-]{0,62}$/, {
  message: "use lowercase letters, digits, '.', '_' and '-', starting with a letter or digit",
});

export const pagingSchema = z.strictObject({
  limit: z.coerce.number().int().min(1).max(500).default(50),
  offset: z.coerce.number().int().min(0).default(0),
});
export type Paging = z.infer<typeof pagingSchema>;

export interface Page<T> {
  items: T[];
  total: number;
  limit: number;
  offset: number;
}

export function pageSchema<T extends z.ZodType>(item: T) {
  return z.object({
    items: z.array(item),
    total: z.number().int(),
    limit: z.number().int(),
    offset: z.number().int(),
  });
}

/** Derives a slug from a display name: "Web API (EU)" → "web-api-eu". */
export function slugify(name: string): string {
  const slug = name
    .normalize("NFKD")
    .replace(/[\u0300-\u036f]/g, "")
    .toLowerCase()
    .replace(/[^a-z0-9]+/g, "-")
    .replace(/^-+|-+$/g, "")
    .slice(0, 64)
    .replace(/-+$/, "");
  return slug;
}

/** Body of an update: every field optional, at least one present. */
export function atLeastOneField<T extends z.ZodRawShape>(shape: T) {
  return z
    .strictObject(shape)
    .partial()
    .refine((body) => Object.keys(body).length > 0, {
      message: "send at least one field to change",
    });
}

export const timestampsShape = {
  createdAt: z.string(),
  updatedAt: z.string(),
};
