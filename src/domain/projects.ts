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
  ...timestampsShape,
});
export type Project = z.infer<typeof projectSchema>;

const projectFields = {
  name: nameSchema,
  slug: slugSchema,
  description: descriptionSchema,
  lifecycle: referenceSchema.describe("lifecycle id or slug"),
};

export const createProjectSchema = z.strictObject({
  ...projectFields,
  slug: projectFields.slug.optional(),
  description: projectFields.description.default(""),
});
export type CreateProject = z.infer<typeof createProjectSchema>;

export const updateProjectSchema = atLeastOneField(projectFields);
export type UpdateProject = z.infer<typeof updateProjectSchema>;
