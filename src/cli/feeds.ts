import type { Command } from "commander";
import type { Feed } from "../domain/feeds.js";
import { segment } from "./client.js";
import { addResourceGroup, type CliContext, pick, type ResourceGroupSpec, sendAndPrint } from "./resourceGroup.js";
import { readSecretFromStdin } from "./stdin.js";

const spec: ResourceGroupSpec<Feed> = {
  group: "feed",
  description: "feeds: Docker registries that artifacts come from",
  noun: "feed",
  collectionPath: () => "/api/v1/feeds",
  columns: [
    ["slug", (feed) => feed.slug],
    ["name", (feed) => feed.name],
    ["type", (feed) => feed.type],
    ["url", (feed) => feed.url],
    ["username", (feed) => feed.username ?? "-"],
    ["password", (feed) => feed.password ?? "-"],
  ],
  fields: (feed) => [
    ["id", feed.id],
    ["slug", feed.slug],
    ["name", feed.name],
    ["type", feed.type],
    ["url", feed.url],
    ["username", feed.username ?? "-"],
    ["password", feed.password ?? "-"],
  ],
};

const fieldOptions = { name: "name", slug: "slug", url: "url", username: "username" };

async function withPassword(options: Record<string, unknown>): Promise<Record<string, unknown>> {
  const body = pick(options, fieldOptions);
  if (options.passwordStdin) body.password = await readSecretFromStdin("registry password");
  if (options.clearPassword) body.password = null;
  return body;
}

export function addFeedCommands(program: Command, context: CliContext): void {
  const group = addResourceGroup(program, context, spec);
  group
    .command("create")
    .description("add a Docker registry feed")
    .argument("<name>")
    .requiredOption("--url <url>", "registry URL, e.g. https://registry.example.com")
    .option("--username <name>")
    .option("--password-stdin", "read the password from standard input")
    .option("--slug <slug>")
    .option("--json", "print JSON")
    .action(async (name: string, options: Record<string, unknown>) =>
      sendAndPrint(
        context,
        spec,
        "POST",
        spec.collectionPath(options),
        { name, ...(await withPassword(options)) },
        options,
      ),
    );
  group
    .command("update")
    .description("change a feed")
    .argument("<ref>", "id or slug")
    .option("--name <name>")
    .option("--url <url>")
    .option("--username <name>")
    .option("--password-stdin", "read a new password from standard input")
    .option("--clear-password", "remove the stored password")
    .option("--slug <slug>")
    .option("--json", "print JSON")
    .action(async (reference: string, options: Record<string, unknown>) =>
      sendAndPrint(
        context,
        spec,
        "PATCH",
        `${spec.collectionPath(options)}/${segment(reference)}`,
        await withPassword(options),
        options,
      ),
    );
}
