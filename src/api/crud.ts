import type { z } from "zod";
import { Access } from "../domain/access.js";
import type { AuditResource } from "../domain/audit.js";
import { type Page, type Paging, pageSchema, pagingSchema } from "../domain/common.js";
import type { RouteAccess } from "./access.js";
import { defineRoute, pathParams, type RouteSpec } from "./route.js";

type Params = Record<string, string>;

/**
 * The five routes of a resource collection: list (paged), create, show, update, delete.
 * `scope` names the path parameters of a parent ("project" for a project's variables);
 * every store function receives their values first.
 */
export interface CollectionSpec<Item, Create, Update> {
  tag: string;
  /** Singular noun for summaries: "environment". */
  noun: string;
  /** Collection path, e.g. "/api/v1/environments" or "/api/v1/projects/:project/variables". */
  path: string;
  /** Name of the item path parameter, e.g. "environment". */
  itemParam: string;
  scope?: string[];
  itemSchema: z.ZodType<Item>;
  createSchema: z.ZodType<Create>;
  updateSchema: z.ZodType<Update>;
  /** Who may list, read, create, and update or delete (src/api/access.ts). */
  access: {
    list: RouteAccess<Params>;
    read: RouteAccess<Params>;
    create: RouteAccess<Params, unknown, Create>;
    change: RouteAccess<Params>;
  };
  list(scope: string[], paging: Paging, access: Access): Promise<Page<Item>>;
  create(scope: string[], body: Create, access: Access): Promise<Item>;
  get(scope: string[], reference: string, access: Access): Promise<Item>;
  update(scope: string[], reference: string, body: Update, access: Access): Promise<Item>;
  remove(scope: string[], reference: string, access: Access): Promise<void>;
  /**
   * Fields of an item whose values are secrets (the API shows "set" in them): the audit
   * log records that they were set or changed, never a value. None when absent. A field
   * inside an object is named by its path ("ssh.privateKey"): the diff records it apart from
   * the object's other fields.
   */
  secretFields?(item: Item): readonly string[];
}

export function collectionRoutes<Item, Create, Update>(spec: CollectionSpec<Item, Create, Update>): RouteSpec[] {
  const scopeNames = spec.scope ?? [];
  const scopeParams = pathParams(...scopeNames);
  const itemParams = pathParams(...scopeNames, spec.itemParam);
  const scopeValues = (params: Record<string, string>) => scopeNames.map((name) => params[name] ?? "");
  const itemPath = `${spec.path}/:${spec.itemParam}`;
  const reference = (params: Record<string, string>) => params[spec.itemParam] ?? "";
  // Audit entries: "variable.update" on resource "variable" (the noun's last word).
  const type = spec.noun.split(" ").at(-1) ?? spec.noun;
  const secretFields = (item: unknown) => (item === undefined ? [] : (spec.secretFields?.(item as Item) ?? []));
  const resourceOf = (item: unknown, fallbackName: string | null): AuditResource => {
    const fields = (item ?? {}) as Record<string, unknown>;
    const own = text(fields.slug) ?? text(fields.name);
    // A project's or a variable set's variable is named with its owner: "shop/Port", "common/Port".
    const project = text(fields.project) ?? text(fields.set);
    return {
      type,
      id: text(fields.id) ?? null,
      name: (project && own ? `${project}/${own}` : (own ?? project)) ?? fallbackName,
    };
  };
  const representation = (item: unknown, nested: readonly string[] = []) => liftFields(item, nested);
  /** Secret fields inside objects, on either side of a change. */
  const nestedSecrets = (...items: unknown[]) => [
    ...new Set(items.flatMap((item) => secretFields(item)).filter((field) => field.includes("."))),
  ];
  const writtenFields = (body: unknown, nested: readonly string[]) => [
    ...Object.keys(body as object),
    ...nested.filter((path) => valueAt(body, path) !== undefined),
  ];
  return [
    defineRoute({
      method: "GET",
      path: spec.path,
      tag: spec.tag,
      summary: `List ${spec.noun}s (paged)`,
      params: scopeParams,
      query: pagingSchema,
      response: pageSchema(spec.itemSchema),
      access: spec.access.list,
      handler: ({ params, query, access }) => spec.list(scopeValues(params), query, access),
    }),
    defineRoute({
      method: "POST",
      path: spec.path,
      tag: spec.tag,
      summary: `Create a ${spec.noun}`,
      params: scopeParams,
      body: spec.createSchema,
      response: spec.itemSchema,
      status: 201,
      audit: {
        action: `${type}.create`,
        change: ({ body, result }) => {
          const nested = nestedSecrets(result);
          return {
            resource: resourceOf(result, null),
            after: representation(result, nested),
            sensitive: secretFields(result),
            written: writtenFields(body, nested),
          };
        },
      },
      access: spec.access.create,
      handler: ({ params, body, access }) => spec.create(scopeValues(params), body, access),
    }),
    defineRoute({
      method: "GET",
      path: itemPath,
      tag: spec.tag,
      summary: `Show a ${spec.noun}`,
      params: itemParams,
      response: spec.itemSchema,
      access: spec.access.read,
      handler: ({ params, access }) => spec.get(scopeValues(params), reference(params), access),
    }),
    defineRoute({
      method: "PATCH",
      path: itemPath,
      tag: spec.tag,
      summary: `Update a ${spec.noun} (only the fields sent change)`,
      params: itemParams,
      body: spec.updateSchema,
      response: spec.itemSchema,
      audit: {
        action: `${type}.update`,
        before: ({ params }) => spec.get(scopeValues(params), reference(params), Access.everything()),
        change: ({ params, body, before, result }) => {
          const nested = nestedSecrets(before, result);
          return {
            resource: resourceOf(result, reference(params)),
            before: representation(before, nested),
            after: representation(result, nested),
            // A variable turned sensitive (or not) hides its value on both sides.
            sensitive: [...secretFields(before), ...secretFields(result)],
            written: writtenFields(body, nested),
          };
        },
      },
      access: spec.access.change,
      handler: ({ params, body, access }) => spec.update(scopeValues(params), reference(params), body, access),
    }),
    defineRoute({
      method: "DELETE",
      path: itemPath,
      tag: spec.tag,
      summary: `Delete a ${spec.noun} (refused while something uses it)`,
      params: itemParams,
      status: 204,
      audit: {
        action: `${type}.delete`,
        before: ({ params }) => spec.get(scopeValues(params), reference(params), Access.everything()),
        change: ({ params, before }) => ({
          resource: resourceOf(before, reference(params)),
          before: representation(before, nestedSecrets(before)),
          after: null,
          sensitive: secretFields(before),
        }),
      },
      access: spec.access.change,
      handler: async ({ params, access }) => {
        await spec.remove(scopeValues(params), reference(params), access);
        return undefined;
      },
    }),
  ];
}

/**
 * The item with each field inside an object (`paths`: "ssh.privateKey") moved out to a
 * top-level field of that name, so the audit diff records a secret's change on its own even
 * when the rest of its object did not change.
 */
function liftFields(item: unknown, paths: readonly string[]): Record<string, unknown> | undefined {
  if (item === undefined || item === null) return item as undefined;
  const lifted: Record<string, unknown> = { ...(item as Record<string, unknown>) };
  for (const path of paths) {
    const [parent = "", field = ""] = path.split(".");
    const inner = lifted[parent];
    if (inner !== null && typeof inner === "object") {
      const { [field]: value, ...rest } = inner as Record<string, unknown>;
      lifted[parent] = rest;
      lifted[path] = value ?? null;
    } else {
      lifted[path] = null;
    }
  }
  return lifted;
}

function valueAt(body: unknown, path: string): unknown {
  const [parent = "", field = ""] = path.split(".");
  const inner = (body as Record<string, unknown> | undefined)?.[parent];
  return inner !== null && typeof inner === "object" ? (inner as Record<string, unknown>)[field] : undefined;
}

function text(value: unknown): string | undefined {
  return typeof value === "string" && value !== "" ? value : undefined;
}
