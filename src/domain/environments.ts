import { z } from "zod";
import { atLeastOneField, descriptionSchema, nameSchema, slugSchema, timestampsShape } from "./common.js";

export const environmentSchema = z.object({
  id: z.string(),
  slug: z.string(),
  name: z.string(),
  description: z.string(),
  /** 0-based place in the ordered list (dev before test before prod). */
  position: z.number().int(),
  ...timestampsShape,
});
export type Environment = z.infer<typeof environmentSchema>;

const environmentFields = {
  name: nameSchema,
  slug: slugSchema,
  description: descriptionSchema,
  position: z.number().int().min(0),
};

export const createEnvironmentSchema = z.strictObject({
  ...environmentFields,
  slug: environmentFields.slug.optional(),
  description: environmentFields.description.default(""),
  /** Where to insert; the end of the list when absent. */
  position: environmentFields.position.optional(),
});
export type CreateEnvironment = z.infer<typeof createEnvironmentSchema>;

export const updateEnvironmentSchema = atLeastOneField(environmentFields);
export type UpdateEnvironment = z.infer<typeof updateEnvironmentSchema>;
