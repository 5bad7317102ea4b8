import { type Command, InvalidArgumentError } from "commander";
import type { ApiKey, User } from "../domain/users.js";
import { printFields, printJson, printTable, writeOutput } from "./output.js";
import type { CliContext } from "./resourceGroup.js";
import { readSecretFromStdin } from "./stdin.js";

function parseDays(value: string): number {
  if (!/^\d{1,4}$/.test(value) || Number(value) < 1)
    throw new InvalidArgumentError("expected a number of days (1 or more)");
  return Number(value);
}

/** `ferry admin create-user`: the password comes from standard input, never argv. */
export function addUserCommands(admin: Command, context: CliContext): void {
  admin
    .command("create-user")
    .description('create a local user; pipe the password in: printf %s "$PASSWORD" | ferry admin create-user …')
    .requiredOption("--username <username>", "the user's sign-in name")
    .option("--display-name <name>", "the name shown for the user (default: the username)")
    .option("--admin", "make the user an administrator")
    .option("--json", "print the user as JSON")
    .action(async (options: { username: string; displayName?: string; admin?: boolean; json?: boolean }) => {
      const password = await readSecretFromStdin("password");
      const client = await context.client();
      const user = await client.request<User>("POST", "/api/v1/users", {
        username: options.username,
        password,
        isAdmin: options.admin === true,
        ...(options.displayName !== undefined && { displayName: options.displayName }),
      });
      if (options.json) printJson(user);
      else writeOutput(`created user ${user.username} (${user.id})${user.isAdmin ? ", administrator" : ""}\n`);
    });
}

/** `ferry api-key create|list|revoke`: keys of the caller (admins: every key). */
export function addApiKeyCommands(program: Command, context: CliContext): void {
  const group = program.command("api-key").description("your API keys: create (shown once), list, revoke");

  group
    .command("create")
    .description("create an API key; it is printed this once")
    .requiredOption("--name <name>", "what the key is for, e.g. 'ci'")
    .option("--expires-in-days <days>", "the key stops working after this many days", parseDays)
    .option("--user <username>", "administrators: a key for this user (a service account in a team)")
    .option("--json", "print the key and its details as JSON")
    .action(async (options: { name: string; expiresInDays?: number; user?: string; json?: boolean }) => {
      const client = await context.client();
      const created = await client.request<ApiKey & { key: string }>("POST", "/api/v1/api-keys", {
        name: options.name,
        ...(options.expiresInDays !== undefined && { expiresInDays: options.expiresInDays }),
        ...(options.user !== undefined && { user: options.user }),
      });
      if (options.json) {
        printJson(created);
        return;
      }
      printFields([
        ["id", created.id],
        ["name", created.name],
        ["expires", created.expiresAt ?? "never"],
      ]);
      writeOutput(`\nthe key (shown this once; only its hash is kept):\n\n    ${created.key}\n\n`);
    });

  group
    .command("list")
    .description("list API keys (prefix only): yours, or every key for an administrator")
    .option("--json", "print JSON")
    .action(async (options: { json?: boolean }) => {
      const client = await context.client();
      const keys = await client.getAll<ApiKey>("/api/v1/api-keys");
      if (options.json) {
        printJson(keys);
        return;
      }
      printTable(keys, [
        ["id", (key) => key.id],
        ["name", (key) => key.name],
        ["prefix", (key) => `${key.prefix}…`],
        ["expires", (key) => key.expiresAt ?? "never"],
        ["last used", (key) => key.lastUsedAt ?? "never"],
        ["revoked", (key) => key.revokedAt ?? "-"],
      ]);
    });

  group
    .command("revoke")
    .description("revoke an API key by id; it is refused from then on")
    .argument("<id>", "the key's id (ferry api-key list)")
    .action(async (id: string) => {
      const client = await context.client();
      await client.request("DELETE", `/api/v1/api-keys/${encodeURIComponent(id)}`);
      writeOutput(`revoked API key ${id}\n`);
    });
}
