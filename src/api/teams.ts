import {
  accessRoleSchema,
  createAccessRoleSchema,
  createTeamSchema,
  teamSchema,
  updateAccessRoleSchema,
  updateTeamSchema,
} from "../domain/access.js";
import type { StoreContext } from "../store/common.js";
import * as teams from "../store/teams.js";
import { collectionRoutes } from "./crud.js";
import type { RouteSpec } from "./route.js";

/** Administrators only, reading included: who may do what is itself sensitive. */
const administrators = {
  list: { kind: "administer" },
  read: { kind: "administer" },
  create: { kind: "administer" },
  change: { kind: "administer" },
} as const;

/** Roles (sets of permissions) and teams (users granted roles on projects × environments); ADR 0020. */
export function teamRoutes(context: StoreContext): RouteSpec[] {
  return [
    ...collectionRoutes({
      tag: "Teams and roles",
      noun: "role",
      path: "/api/v1/roles",
      itemParam: "role",
      itemSchema: accessRoleSchema,
      createSchema: createAccessRoleSchema,
      updateSchema: updateAccessRoleSchema,
      access: administrators,
      list: (_, paging) => teams.listRoles(context, paging),
      create: (_, body) => teams.createRole(context, body),
      get: (_, reference) => teams.getRole(context, reference),
      update: (_, reference, body) => teams.updateRole(context, reference, body),
      remove: (_, reference) => teams.deleteRole(context, reference),
    }),
    ...collectionRoutes({
      tag: "Teams and roles",
      noun: "team",
      path: "/api/v1/teams",
      itemParam: "team",
      itemSchema: teamSchema,
      createSchema: createTeamSchema,
      updateSchema: updateTeamSchema,
      access: administrators,
      list: (_, paging) => teams.listTeams(context, paging),
      create: (_, body) => teams.createTeam(context, body),
      get: (_, reference) => teams.getTeam(context, reference),
      update: (_, reference, body) => teams.updateTeam(context, reference, body),
      remove: (_, reference) => teams.deleteTeam(context, reference),
    }),
  ];
}
