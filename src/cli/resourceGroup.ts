import { type Command, InvalidArgumentError } from "commander";
import type { ApiClient } from "./client.js";
import { segment } from "./client.js";
import { type Column, printFields, printJson, printTable, writeOutput } from "./output.js";

/** What every command needs: the API client (created lazily, so --help works without a key). */
export interface CliContext {
  client(): Promise<ApiClient>;
}

export interface ResourceGroupSpec<T> {
  /** Command group name: "env". */
  group: string;
  description: string;
  /** Singular noun for help texts: "environment". */
  noun: string;
  /** Collection path for the given options (a project's variables need --project). */
  collectionPath(options: Record<string, unknown>): string;
  columns: Column<T>[];
  fields(item: T): [string, string][];
  /** Options every subcommand of the group takes (e.g. --project). */
  commonOptions?: (command: Command) => Command;
}

/**
 * Adds `<group> list | show | delete` and returns the group so the caller can add
 * `create` and `update`, whose options differ per resource.
 */
export function addResourceGroup<T>(program: Command, context: CliContext, spec: ResourceGroupSpec<T>): Command {
  const group = program.command(spec.group).description(spec.description);
  const withCommon = (command: Command) => (spec.commonOptions ? spec.commonOptions(command) : command);

  withCommon(group.command("list").description(`list ${spec.noun}s`))
    .option("--json", "print JSON (an array)")
    .action(async (options: Record<string, unknown>) => {
      const client = await context.client();
      const items = await client.getAll<T>(spec.collectionPath(options));
      if (options.json) printJson(items);
      else printTable(items, spec.columns);
    });

  withCommon(group.command("show").description(`show one ${spec.noun}`))
    .argument("<ref>", "id or slug")
    .option("--json", "print JSON")
    .action(async (reference: string, options: Record<string, unknown>) => {
      const client = await context.client();
      const item = await client.get<T>(`${spec.collectionPath(options)}/${segment(reference)}`);
      printItem(spec, item, options);
    });

  withCommon(group.command("delete").description(`delete a ${spec.noun}`))
    .argument("<ref>", "id or slug")
    .action(async (reference: string, options: Record<string, unknown>) => {
      const client = await context.client();
      await client.request("DELETE", `${spec.collectionPath(options)}/${segment(reference)}`);
      writeOutput(`deleted ${spec.noun} ${reference}\n`);
    });

  return group;
}

function printItem<T>(spec: ResourceGroupSpec<T>, item: T, options: Record<string, unknown>): void {
  if (options.json) printJson(item);
  else printFields(spec.fields(item));
}

/** Sends a create or update and prints the result the way `show` does. */
export async function sendAndPrint<T>(
  context: CliContext,
  spec: ResourceGroupSpec<T>,
  method: "POST" | "PATCH",
  path: string,
  body: Record<string, unknown>,
  options: Record<string, unknown>,
): Promise<void> {
  const client = await context.client();
  const item = await client.request<T>(method, path, body);
  printItem(spec, item, options);
}

export function parseNonNegativeInteger(value: string): number {
  if (!/^\d+$/.test(value)) throw new InvalidArgumentError("expected a whole number ≥ 0");
  return Number(value);
}

export function collect(value: string, previous: string[] = []): string[] {
  return [...previous, value];
}

/** Only the options the user actually gave, renamed to API fields. */
export function pick(options: Record<string, unknown>, mapping: Record<string, string>): Record<string, unknown> {
  const body: Record<string, unknown> = {};
  for (const [option, field] of Object.entries(mapping)) {
    if (options[option] !== undefined) body[field] = options[option];
  }
  return body;
}
