import { z } from "zod";
import { atLeastOneField, nameSchema, slugSchema, timestampsShape } from "./common.js";

/** What the API shows in place of a stored secret. */
export const SECRET_SET = "set";

const feedTypes = ["docker"] as const;

export const feedSchema = z.object({
  id: z.string(),
  slug: z.string(),
  name: z.string(),
  type: z.enum(feedTypes),
  url: z.string(),
  username: z.string().nullable(),
  /** Never the password itself: "set" when one is stored, null otherwise. */
  password: z.literal(SECRET_SET).nullable(),
  ...timestampsShape,
});
export type Feed = z.infer<typeof feedSchema>;

const feedUrlSchema = z
  .string()
  .max(2000)
  .refine(
    (value) => {
      try {
        const url = new URL(value);
        return (url.protocol === "http:" || url.protocol === "https:") && url.username === "" && url.password === "";
      } catch {
        return false;
      }
    },
    { message: "use an http:// or https:// URL without credentials in it (put them in username and password)" },
  );

const feedFields = {
  name: nameSchema,
  slug: slugSchema,
  type: z.enum(feedTypes),
  url: feedUrlSchema,
  username: z.string().min(1).max(200).nullable(),
  password: z.string().min(1).max(4096).nullable(),
};

export const createFeedSchema = z
  .strictObject({
    ...feedFields,
    slug: feedFields.slug.optional(),
    type: feedFields.type.default("docker"),
    username: feedFields.username.optional(),
    password: feedFields.password.optional(),
  })
  .refine((feed) => !feed.password || feed.username, {
    message: "a password needs a username; set username too",
    path: ["username"],
  });
export type CreateFeed = z.infer<typeof createFeedSchema>;

/** `password: null` clears a stored password; leaving it out keeps it. */
export const updateFeedSchema = atLeastOneField(feedFields);
export type UpdateFeed = z.infer<typeof updateFeedSchema>;
