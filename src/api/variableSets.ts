import { ALL } from "../domain/access.js";
import {
  createVariableSetSchema,
  projectVariableSetsSchema,
  putProjectVariableSetsSchema,
  setVariableSchema,
  updateVariableSetSchema,
  variableSetSchema,
} from "../domain/variableSets.js";
import { createVariableSchema, updateVariableSchema } from "../domain/variables.js";
import type { StoreContext } from "../store/common.js";
import * as sets from "../store/variableSets.js";
import { collectionRoutes } from "./crud.js";
import { defineRoute, pathParams, type RouteSpec } from "./route.js";

/**
 * Variable sets (ADR 0047). A set reaches every project that includes it, so changing one
 * needs `editVariableSets` on every project and environment; any signed-in caller reads
 * them (sensitive values show as "set", like everywhere). Which sets a project includes
 * changes that project's variables in every environment: `editVariables` on all of them.
 */
const changeSets = { kind: "everywhere", permission: "editVariableSets" } as const;
const readSets = { kind: "signedIn" } as const;

export function variableSetRoutes(context: StoreContext): RouteSpec[] {
  return [
    ...collectionRoutes({
      tag: "Variable sets",
      // Audited as variable-set.create|update|delete.
      noun: "variable-set",
      path: "/api/v1/variable-sets",
      itemParam: "set",
      itemSchema: variableSetSchema,
      createSchema: createVariableSetSchema,
      updateSchema: updateVariableSetSchema,
      access: { list: readSets, read: readSets, create: changeSets, change: changeSets },
      list: (_, paging) => sets.listVariableSets(context, paging),
      create: (_, body) => sets.createVariableSet(context, body),
      get: (_, reference) => sets.getVariableSet(context, reference),
      update: (_, reference, body) => sets.updateVariableSet(context, reference, body),
      remove: (_, reference) => sets.deleteVariableSet(context, reference),
    }),
    ...collectionRoutes({
      tag: "Variable sets",
      noun: "variable set variable",
      path: "/api/v1/variable-sets/:set/variables",
      scope: ["set"],
      itemParam: "variable",
      itemSchema: setVariableSchema,
      createSchema: createVariableSchema,
      updateSchema: updateVariableSchema,
      access: { list: readSets, read: readSets, create: changeSets, change: changeSets },
      list: ([set = ""], paging) => sets.listSetVariables(context, set, paging),
      create: ([set = ""], body) => sets.createSetVariable(context, set, body),
      get: ([set = ""], reference) => sets.getSetVariable(context, set, reference),
      update: ([set = ""], reference, body) => sets.updateSetVariable(context, set, reference, body),
      remove: ([set = ""], reference) => sets.deleteSetVariable(context, set, reference),
      secretFields: (variable) => (variable.sensitive ? ["value"] : []),
    }),
    defineRoute({
      method: "GET",
      path: "/api/v1/projects/:project/variable-sets",
      tag: "Variable sets",
      summary: "The variable sets a project includes, in precedence order (an earlier set wins a tie)",
      access: { kind: "project", permission: "view", project: (params) => params.project },
      params: pathParams("project"),
      response: projectVariableSetsSchema,
      handler: ({ params }) => sets.getProjectVariableSets(context, params.project),
    }),
    defineRoute({
      method: "PUT",
      path: "/api/v1/projects/:project/variable-sets",
      tag: "Variable sets",
      summary:
        "Replace the list of variable sets a project includes (in precedence order); needs editVariables on the project in every environment",
      access: {
        kind: "project",
        permission: "editVariables",
        project: (params) => params.project,
        // A set's values apply in every environment the set scopes them to: all of them.
        environment: () => ALL,
      },
      params: pathParams("project"),
      body: putProjectVariableSetsSchema,
      response: projectVariableSetsSchema,
      audit: {
        action: "project.variable-sets",
        before: ({ params }) => sets.getProjectVariableSets(context, params.project),
        change: ({ params, before, result }) => ({
          resource: { type: "project", name: params.project },
          before: before as Record<string, unknown> | undefined,
          after: result as Record<string, unknown>,
        }),
      },
      handler: ({ params, body }) => sets.setProjectVariableSets(context, params.project, body),
    }),
  ];
}
