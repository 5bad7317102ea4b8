import { z } from "zod";
import {
  atLeastOneField,
  descriptionSchema,
  nameSchema,
  referenceSchema,
  slugSchema,
  timestampsShape,
} from "./common.js";

export const projectSchema = z.object({
  id: z.string(),
  slug: z.string(),
  name: z.string(),
  description: z.string(),
  lifecycle: z.string().describe("lifecycle slug"),
  /** How the next release version is made when none is given: "1.0.#{n}". */
  versionPattern: z.string(),
  ...timestampsShape,
});
export type Project = z.infer<typeof projectSchema>;

const projectFields = {
  name: nameSchema,
  slug: slugSchema,
  description: descriptionSchema,
  lifecycle: referenceSchema.describe("lifecycle id or slug"),
  versionPattern: z
    .string()
    .max(100)
    .refine((pattern) => pattern.split("#{n}").length === 2, {
      message: "use #{n} exactly once, e.g. 1.0.#{n}",
    })
    .refine((pattern) => /^[0-9A-Za-z.+_-]*$/.test(pattern.replace("#{n}", "0")), {
      message: "use letters, digits, '.', '+', '_' and '-' around #{n}",
    }),
};

export const createProjectSchema = z.strictObject({
  ...projectFields,
  slug: projectFields.slug.optional(),
  description: projectFields.description.default(""),
  versionPattern: projectFields.versionPattern.default("0.0.#{n}"),
});
export type CreateProject = z.infer<typeof createProjectSchema>;

export const updateProjectSchema = atLeastOneField(projectFields);
export type UpdateProject = z.infer<typeof updateProjectSchema>;
