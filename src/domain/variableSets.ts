import { z } from "zod";
import {
  atLeastOneField,
  descriptionSchema,
  nameSchema,
  referenceSchema,
  slugSchema,
  timestampsShape,
} from "./common.js";
import { variableSchema } from "./variables.js";

/**
 * Variable sets (issue 16 part 2, ADR 0047): values shared by several projects, scoped like
 * a project's own (environments, roles, targets). A project includes sets in an order; its
 * own values beat a set's as specific, and an earlier set beats a later one.
 */
export const variableSetSchema = z.object({
  id: z.string(),
  slug: z.string(),
  name: z.string(),
  description: z.string(),
  ...timestampsShape,
});
export type VariableSet = z.infer<typeof variableSetSchema>;

const setFields = { name: nameSchema, slug: slugSchema, description: descriptionSchema };

export const createVariableSetSchema = z.strictObject({
  ...setFields,
  slug: setFields.slug.optional(),
  description: setFields.description.default(""),
});
export type CreateVariableSet = z.infer<typeof createVariableSetSchema>;

export const updateVariableSetSchema = atLeastOneField(setFields);
export type UpdateVariableSet = z.infer<typeof updateVariableSetSchema>;

/** A set's variable as the API shows it: a project variable with `set` instead of `project`. */
export const setVariableSchema = variableSchema.omit({ project: true }).extend({
  set: z.string().describe("variable set slug"),
});
export type SetVariable = z.infer<typeof setVariableSchema>;

/** The sets a project includes, first first: on a tie in specificity the earlier set's value wins. */
export const projectVariableSetsSchema = z.object({
  project: z.string().describe("project slug"),
  sets: z.array(z.string()).describe("variable set slugs, in precedence order"),
});
export type ProjectVariableSets = z.infer<typeof projectVariableSetsSchema>;

export const putProjectVariableSetsSchema = z.strictObject({
  sets: z
    .array(referenceSchema)
    .max(50)
    .refine((sets) => new Set(sets).size === sets.length, { message: "name each variable set once" })
    .describe("variable set slugs or ids, in precedence order (earlier wins a tie); [] includes none"),
});
export type PutProjectVariableSets = z.infer<typeof putProjectVariableSetsSchema>;
