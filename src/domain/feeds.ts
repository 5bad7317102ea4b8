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

// Built from text: Biome refuses control characters in regular expression literals.
const controls = "\\u0000-\\u001f\\u007f";
const spaceOrControlCharacter = new RegExp(`[\\s${controls}]`);
const colonOrControlCharacter = new RegExp(`[:${controls}]`);

/**
 * An http(s) URL the server calls (a feed's, a webhook's), stored exactly as it is called:
 * the URL parser drops tabs and line breaks and encodes spaces, so a URL holding one would be
 * stored as written but called as something else. `message` says what else a URL must be.
 */
export function serviceUrlSchema(message: string) {
  return z
    .string()
    .max(2000)
    .refine((value) => !spaceOrControlCharacter.test(value), {
      message: "remove the space, line break, tab or control character: a URL cannot hold one (percent-encode it)",
      abort: true,
    })
    .refine(
      (value) => {
        try {
          const url = new URL(value);
          return (url.protocol === "http:" || url.protocol === "https:") && url.username === "" && url.password === "";
        } catch {
          return false;
        }
      },
      { message },
    );
}

const feedFields = {
  name: nameSchema,
  slug: slugSchema,
  type: z.enum(feedTypes),
  url: serviceUrlSchema("use an http:// or https:// URL without credentials in it (put them in username and password)"),
  /** Sent as HTTP Basic "username:password", where a ':' would end the name and a line break end the header. */
  username: z
    .string()
    .min(1)
    .max(200)
    .refine((username) => !colonOrControlCharacter.test(username), {
      message: "remove the ':' or line break: HTTP Basic authentication cannot carry one in a username",
    })
    .nullable(),
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
